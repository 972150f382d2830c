"""The settings of one training run: a frozen object, checked once, built by the CLI or by
callers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from uniembed.core.checks import check_int
from uniembed.errors import InvalidInput
from uniembed.models.base import check_task_name

LossName = Literal["auto", "infonce", "joint", "cosent"]
LOSSES = ("auto", "infonce", "joint", "cosent")
# Temperatures per task, as published: v4 code τ 0.02; v3 classification (extended InfoNCE) 0.02,
# separation (a CoSENT variant) 0.02, retrieval and text-matching 0.05. v4's others are not
# published; 0.05 is used for them and for new tasks started fresh.
TEMPERATURES = {"code": 0.02, "classification": 0.02, "separation": 0.02}
DEFAULT_TEMPERATURE = 0.05
FRESH = "none"  # --init-from none: a new task starts at the base weights (PEFT initialisation)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a run needs; see docs/training.md for what each setting does."""

    model: str  # base snapshot folder or hub id
    data: Path  # JSONL / Parquet / datasets folder
    output: Path  # run folder: checkpoints/, adapter/, snapshot/, training.json
    task: str  # the task trained: an existing one (with overwrite) or a new name
    eval_data: Path | None = None  # BEIR folder or the same forms as `data`
    eval_split: str = "test"
    data_split: str = "train"  # for datasets folders holding several splits
    init_from: str | None = (
        None  # task whose factors start the new one; None: the task itself if it
    )
    # exists, else fresh; "none": fresh
    overwrite: bool = False  # allow training (and exporting) a task that exists, e.g. retrieval
    symmetric: bool | None = (
        None  # None: as the task being continued, else graded pairs → symmetric
    )
    loss: LossName = "auto"  # auto: graded → cosent; pairs → joint (v4) / infonce (v3)
    temperature: float | None = None  # None: per TEMPERATURES
    bidirectional: bool = False  # InfoNCE both ways (v3's pair stage)
    joint_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # dense NCE, late NCE, KL
    matryoshka: bool = True  # weight the dense loss over the model's trained sizes
    negatives: int | None = None  # hard negatives per pair (None: as many as every pair has)
    batch_size: int = 32
    mini_batch_size: int | None = None  # cached (GradCache) mini-batches of this many rows
    gradient_accumulation: int = 1
    learning_rate: float = 5e-4  # v3 report, retrieval adapters
    weight_decay: float = 0.0
    warmup: float = 0.1  # share of the steps (< 1) or a number of steps
    scheduler: str = "linear"  # any transformers lr_scheduler_type
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    eval_steps: int = 100
    save_steps: int | None = None  # None: eval_steps with an eval split, else 500
    keep_checkpoints: int = 2  # the best and the newest are always kept
    logging_steps: int = 10
    seed: int = 42
    max_tokens: int = 512  # per text; longer texts are cut
    max_pixels: int | None = None  # per image (v4); None: the model's default
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # None: on CUDA
    device: str | None = None  # None: CUDA when available
    dtype: str | None = None  # of the frozen base; None: bfloat16 with bf16, else float32
    resume: bool = False  # continue the newest checkpoint in output/checkpoints
    export_snapshot: bool = False  # also write output/snapshot in the official layout
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "output", Path(self.output))
        if self.eval_data is not None:
            object.__setattr__(self, "eval_data", Path(self.eval_data))
        check_task_name(self.task)
        if self.loss not in LOSSES:
            raise InvalidInput(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in (
            "batch_size",
            "gradient_accumulation",
            "eval_steps",
            "keep_checkpoints",
            "logging_steps",
            "max_tokens",
        ):
            check_int(name, getattr(self, name))
        for name in ("mini_batch_size", "max_steps", "save_steps", "max_pixels"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.temperature is not None and not 0 < self.temperature <= 10:
            raise InvalidInput(f"temperature must be in (0, 10], got {self.temperature}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InvalidInput(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup < 0 or self.epochs <= 0:
            raise InvalidInput("warmup must be >= 0 and epochs > 0")
        if len(self.joint_weights) != 3 or any(w < 0 for w in self.joint_weights):
            raise InvalidInput(
                f"joint_weights are three non-negative numbers, got {self.joint_weights}"
            )
        if self.negatives is not None and self.negatives < 0:
            raise InvalidInput(f"negatives must be 0 or more, got {self.negatives}")

    def temperature_for(self, source_task: str | None) -> float:
        """The configured temperature, else the published one of the task the run starts from."""
        if self.temperature is not None:
            return self.temperature
        return TEMPERATURES.get((source_task or "").split(".")[0], DEFAULT_TEMPERATURE)

    def as_record(self) -> dict[str, Any]:
        """JSON-ready settings (paths as strings), for training.json and resume checks."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


# settings a resumed run must share with the run it continues
RESUME_KEYS = (
    "model",
    "data",
    "task",
    "init_from",
    "symmetric",
    "loss",
    "temperature",
    "bidirectional",
    "joint_weights",
    "matryoshka",
    "negatives",
    "batch_size",
    "mini_batch_size",
    "gradient_accumulation",
    "learning_rate",
    "weight_decay",
    "warmup",
    "scheduler",
    "epochs",
    "max_steps",
    "seed",
    "max_tokens",
    "max_pixels",
)
