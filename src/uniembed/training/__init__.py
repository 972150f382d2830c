"""Fine-tuning the task adapters of jina-embeddings-v4/v3, and adding tasks of one's own.

The backbone stays frozen; only one task's LoRA factors train (for v4 with the multi-vector
projector's). The run is transformers' ``Trainer`` with the published losses; the result is an
adapter folder that ``uniembed.load(base, adapters={name: folder})`` serves beside the official
tasks, and optionally a full snapshot in the official layout. See docs/training.md.

>>> from uniembed.training import TrainConfig
>>> TrainConfig(model="m", data="d.jsonl", output="out", task="my-domain").loss
'auto'
"""

from __future__ import annotations

from uniembed.training.config import TrainConfig
from uniembed.training.export import export_snapshot, save_adapter
from uniembed.training.run import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "export_snapshot", "save_adapter", "train"]
