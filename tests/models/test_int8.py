"""``dtype="int8"``: int8 linears on the CPU (:mod:`uniembed.models.quantized`) for v4 and v3.

Bounds are what the tiny random checkpoints give with margin (measured: single vectors ≥ 0.9994,
v4's per-token multi-vectors ≥ 0.990); the mid and full sizes are measured by benchmarks/int8.py
(BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import uniembed
from tests.helpers import load_benchmark
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.models.loading import load_tensors, weight_files
from uniembed.models.lora import MultiLoRALinear, routed_layers
from uniembed.models.quantized import Int8Linear, Int8Weight, quantize_weight
from uniembed.models.registry import load_model

SINGLE_BOUND = 0.995  # cosine of an int8 single vector to the float32 one
TOKEN_BOUND = 0.98  # cosine of an int8 multi-vector token to the float32 one
TEXTS = [
    "solar panels turn light into power",
    "a much longer passage about batteries, inverters and the grid " * 6,
    "x",
]


@pytest.fixture(scope="module")
def int8_v4(tiny_v4_path: Path) -> Embedder:
    return uniembed.load(tiny_v4_path, device="cpu", dtype="int8")


@pytest.fixture(scope="module")
def int8_v3(tiny_v3_path: Path) -> Embedder:
    return uniembed.load(tiny_v3_path, device="cpu", dtype="int8")


def _image(seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (56, 84, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _cosines(a: list, b: list) -> torch.Tensor:
    return torch.stack(
        [
            torch.nn.functional.cosine_similarity(torch.as_tensor(x), torch.as_tensor(y), dim=-1)
            for x, y in zip(a, b)
        ]
    )


def test_v4_int8_agrees_with_float32_for_every_task_modality_and_output(
    tiny_v4: Embedder, int8_v4: Embedder
) -> None:
    items = [*TEXTS, _image(0), _image(1)]
    for task in tiny_v4.info.tasks:
        reference = tiny_v4.encode(items, task=task, output="both")
        got = int8_v4.encode(items, task=task, output="both")
        single = _cosines(got.embeddings, reference.embeddings)
        assert single.min() >= SINGLE_BOUND, (task, single)
        assert single.min() < 1 - 1e-7  # quantization really ran: not the float32 path
        for mine, theirs in zip(got.multivectors, reference.multivectors):
            assert mine.shape == theirs.shape
            tokens = torch.nn.functional.cosine_similarity(mine, theirs, dim=-1)
            assert tokens.min() >= TOKEN_BOUND, (task, tokens.min())
    late = tiny_v4.encode(TEXTS, task="retrieval.passage", late_chunking=True)
    late_int8 = int8_v4.encode(TEXTS, task="retrieval.passage", late_chunking=True)
    assert _cosines(late_int8.embeddings, late.embeddings).min() >= SINGLE_BOUND


def test_v3_int8_agrees_with_float32_for_every_task(tiny_v3: Embedder, int8_v3: Embedder) -> None:
    for task in [*tiny_v3.info.tasks, None]:  # None: the base weights, no adapter
        reference = tiny_v3.encode(TEXTS, task=task).embeddings
        got = int8_v3.encode(TEXTS, task=task).embeddings
        cosines = _cosines(got, reference)
        assert cosines.min() >= SINGLE_BOUND and cosines.min() < 1 - 1e-7, (task, cosines)
    late = tiny_v3.encode(TEXTS, task="retrieval.passage", late_chunking=True).embeddings
    late_int8 = int8_v3.encode(TEXTS, task="retrieval.passage", late_chunking=True).embeddings
    assert _cosines(late_int8, late).min() >= SINGLE_BOUND


@pytest.mark.parametrize("family", ["v4", "v3"])
def test_int8_keeps_every_task_adapter_routed(family: str, request: pytest.FixtureRequest) -> None:
    """Each task's int8 vectors are nearer the same task's float32 vectors than another task's:
    the LoRA delta still runs over the int8 base (a dropped adapter would fail this)."""
    reference: Embedder = request.getfixturevalue(f"tiny_{family}")
    quantized: Embedder = request.getfixturevalue(f"int8_{family}")
    tasks = ["retrieval.query", "text-matching"]
    ref = {t: torch.stack(list(reference.encode(TEXTS, task=t).embeddings)) for t in tasks}
    got = {t: torch.stack(list(quantized.encode(TEXTS, task=t).embeddings)) for t in tasks}
    for task, other in (tasks, tasks[::-1]):
        own = (got[task] - ref[task]).norm(dim=-1)
        crossed = (got[task] - ref[other]).norm(dim=-1)
        assert bool((own < crossed).all()), (task, own, crossed)
    # per-row routing in a mixed batch; not bit-equal to the row's own batch: an activation's int8
    # scale is the whole batch's (docs/cpu.md), so batch mates move it within quantization noise
    mixed = quantized.encode(TEXTS, task=[tasks[0], tasks[1], tasks[0]]).embeddings
    alone = torch.nn.functional.cosine_similarity(mixed[1], got[tasks[1]][1], dim=0)
    assert alone >= 0.999


def test_int8_replaces_every_backbone_linear_and_keeps_lora_float(int8_v4: Embedder) -> None:
    model = int8_v4._model
    layers = routed_layers(model.network)
    language = [p for p in layers if p.startswith("backbone.language_model.")]
    assert language and all(isinstance(layers[p].base, Int8Linear) for p in language)
    assert all(layers[p].lora_A[0].dtype == torch.float32 for p in language)
    plain = [m for m in model.network.backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert plain == []  # the vision tower's linears too
    assert isinstance(model.network.projector, MultiLoRALinear)
    assert isinstance(model.network.projector.base, torch.nn.Linear)  # projector kept float
    assert model.dtype == torch.float32


def test_the_weights_digest_tells_int8_from_float32(tiny_v4: Embedder, int8_v4: Embedder) -> None:
    assert tiny_v4.weights_digest() != int8_v4.weights_digest()  # caches keyed on it never mix


def test_int8_linear_matches_its_dequantized_weight() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 32, generator=generator)
    bias = torch.randn(48, generator=generator)
    quantized = quantize_weight(weight)
    assert quantized.values.dtype == torch.int8 and quantized.scale.shape == (48,)
    error = (quantized.dequantize() - weight).abs()
    assert bool((error <= quantized.scale[:, None] / 2 + 1e-7).all())  # round to nearest
    layer = Int8Linear(quantized, bias)
    x = torch.randn(2, 5, 32, generator=generator)  # (batch, seq, in)
    expected = torch.nn.functional.linear(x, quantized.dequantize(), bias)
    got = layer(x)
    assert got.shape == (2, 5, 48) and got.dtype == torch.float32
    # activations quantized with one scale: |error| ≤ ½ step × Σ|w| per output
    bound = (x.abs().max() / 127 / 2) * quantized.dequantize().abs().sum(1) + 1e-5
    assert bool(((got - expected).abs() <= bound).all())
    assert bool(((got - expected).abs() > 0).any())  # the int8 kernel ran, not a float matmul
    assert torch.equal(layer(torch.zeros(3, 32)), bias.expand(3, -1))
    assert layer(torch.zeros(0, 32)).shape == (0, 48)


def test_int8_weight_splits_like_a_fused_weight() -> None:
    weight = torch.randn(6, 4)
    parts = quantize_weight(weight).chunk(3)
    assert [p.shape for p in parts] == [torch.Size([2, 4])] * 3
    assert torch.equal(
        torch.cat([p.dequantize() for p in parts]), quantize_weight(weight).dequantize()
    )


def test_weights_are_quantized_as_they_are_read(tiny_v4_path: Path) -> None:
    key = "model.layers.0.mlp.up_proj.weight"
    tensors = load_tensors(weight_files(tiny_v4_path), torch.float32, {key}.__contains__)
    assert isinstance(tensors[key], Int8Weight)
    assert not any(isinstance(v, Int8Weight) for k, v in tensors.items() if k != key)
    with pytest.raises(ValueError, match="needs the dtype"):
        load_tensors(weight_files(tiny_v4_path), None, {key}.__contains__)


def test_int8_off_the_cpu_and_unknown_dtypes_are_refused(tiny_v4_path: Path) -> None:
    with pytest.raises(InvalidInput, match="int8 runs on the CPU only"):
        load_model(tiny_v4_path, device="cuda", dtype="int8")
    with pytest.raises(InvalidInput, match="int8 runs on the CPU only"):
        uniembed.load(tiny_v4_path, device="meta", dtype=torch.int8)
    with pytest.raises(ValueError, match=r"unknown dtype 'int3'.*'int8'"):
        uniembed.load(tiny_v4_path, device="cpu", dtype="int3")


def test_training_refuses_an_int8_base(tiny_v4_path: Path, tmp_path: Path) -> None:
    from uniembed.training.config import TrainConfig
    from uniembed.training.run import _load_model

    config = TrainConfig(
        model=str(tiny_v4_path), data=tmp_path, output=tmp_path, task="t", dtype="int8"
    )
    with pytest.raises(InvalidInput, match="int8 linears have no backward"):
        _load_model(config)


@pytest.mark.parametrize("model", ["tiny", "v3-tiny"])
def test_the_int8_benchmark_runs_and_measures_agreement(tmp_path: Path, model: str) -> None:
    result = _run_benchmark(tmp_path, model, "--no-eval", "--no-onnx")
    rows = result["rows"]
    assert set(rows) == {"uniembed float32", "uniembed int8"} and result["tokens"] > 0
    assert rows["uniembed float32"]["cosine"] == pytest.approx((1.0, 1.0), abs=1e-6)
    assert SINGLE_BOUND <= rows["uniembed int8"]["cosine"][0] < 1 - 1e-7
    assert rows["uniembed int8"]["weights"] < rows["uniembed float32"]["weights"]
    if model == "tiny":
        assert rows["uniembed int8"]["token_cosine"][0] >= TOKEN_BOUND


def _run_benchmark(tmp_path: Path, model: str, *flags: str) -> dict:
    return load_benchmark("int8").main(
        ["--model", model, "--texts", "6", "--images", "1", "--repeat", "1", "--eval-docs", "12"]
        + ["--dir", str(tmp_path), *flags]
    )


@pytest.mark.slow
def test_the_int8_benchmark_measures_ranking_agreement_with_uniembed_eval(tmp_path: Path) -> None:
    """``uniembed eval retrieval --dtype float32`` and ``--dtype int8`` on one corpus."""
    settings = {row["setting"]: row for row in _run_benchmark(tmp_path, "tiny")["agreement"]}
    assert set(settings) == {"dense:64", "maxsim"}
    for row in settings.values():
        assert 0.5 <= row["top-10 overlap"] <= 1
        assert abs(row["ndcg@10 int8"] - row["ndcg@10 float32"]) <= 0.2


@pytest.mark.slow
def test_the_int8_benchmark_runs_onnx_runtime_beside_uniembed(tmp_path: Path) -> None:
    rows = _run_benchmark(tmp_path, "v3-tiny", "--no-eval")["rows"]
    assert rows["onnxruntime float32"]["cosine"][0] >= 0.9999  # the same model, exported
    assert rows["onnxruntime int8"]["cosine"][0] >= 0.99


def test_the_onnx_runtime_baseline_batches_under_a_padded_token_budget() -> None:
    """Longest first, at most ORT_BATCH rows and ORT_TOKENS padded tokens (a longer row alone),
    every row once and in order."""
    int8 = load_benchmark("int8")
    lengths = [9000, 3000, 2000, 2000, 1000, *([10] * 70)]
    order = list(range(len(lengths)))
    batches = int8.ort_batches(lengths, order)
    assert [i for batch in batches for i in batch] == order
    assert batches[:3] == [[0], [1, 2], [3, 4, 5, 6]]  # 2 × 3,000 and 4 × 2,000 padded
    for batch in batches:
        assert len(batch) <= int8.ORT_BATCH
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= int8.ORT_TOKENS
