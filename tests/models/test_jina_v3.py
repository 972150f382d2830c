"""jina-embeddings-v3 on a tiny random checkpoint in the official layout.

Parity is checked against an independent float64 formulation written here from the raw safetensors:
LoRA merged by hand into the weights of the task, rotary positions as complex rotations, post-norm
blocks, mean pooling.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from uniembed.core.vectors import normalize
from uniembed.embedder import Embedder, EncodeOptions
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.inputs.items import TextItem
from uniembed.models.base import Row
from uniembed.models.jina_v3.config import DEFAULT_INSTRUCTIONS, parse_config
from uniembed.models.jina_v3.layout import convert_official, official_modules
from uniembed.models.jina_v3.model import JinaV3Model, load_jina_v3
from uniembed.models.jina_v3.processor import NO_TASK
from uniembed.models.loading import read_json
from uniembed.models.lora import NO_ADAPTER
from uniembed.testing.jina_v3 import TASKS, write_tiny_jina_v3

TEXTS = [
    "how do solar panels work?",
    "hello world",
    "Die Sonne scheint.",
    "a",
    "the evidence of light cells",
]
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_jina_v3(tmp_path_factory.mktemp("jina_v3") / "snapshot", seed=3)


@pytest.fixture(scope="module")
def model(snapshot: Path) -> JinaV3Model:
    return load(snapshot)


def load(snapshot: Path) -> JinaV3Model:
    return load_jina_v3(
        snapshot,
        read_json(snapshot / "config.json"),
        name="tiny-v3",
        device=CPU,
        dtype=torch.float32,
    )


@pytest.fixture()
def copy(snapshot: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(snapshot, tmp_path / "copy"))


# --------------------------------------------------------------------------- independent reference
class Reference:
    """jina-embeddings-v3 in plain float64 PyTorch, straight from the official tensors."""

    def __init__(self, snapshot: Path) -> None:
        self.config = json.loads((snapshot / "config.json").read_text())
        self.tensors = {
            k: v.double() for k, v in load_file(str(snapshot / "model.safetensors")).items()
        }
        self.scaling = self.config["lora_alpha"] / self.config["lora_rank"]

    def weight(self, module: str, task: int | None, embedding: bool = False) -> torch.Tensor:
        base = self.tensors[f"roberta.{module}.parametrizations.weight.original"]
        if task is None:
            return base
        a = self.tensors[f"roberta.{module}.parametrizations.weight.0.lora_A"][task]
        b = self.tensors[f"roberta.{module}.parametrizations.weight.0.lora_B"][task]
        return base + self.scaling * (a @ b if embedding else b @ a)

    def linear(self, x: torch.Tensor, module: str, task: int | None) -> torch.Tensor:
        return x @ self.weight(module, task).T + self.tensors[f"roberta.{module}.bias"]

    def norm(self, x: torch.Tensor, module: str) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        w, b = self.tensors[f"roberta.{module}.weight"], self.tensors[f"roberta.{module}.bias"]
        return (x - mean) / torch.sqrt(var + self.config["layer_norm_eps"]) * w + b

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """(seq, heads, d): dims i and i + d/2 form a complex number turned by pos ·
        base^(-2i/d)."""
        seq, _, d = x.shape
        half = d // 2
        freqs = self.config["rotary_emb_base"] ** (
            -2.0 * torch.arange(half, dtype=torch.float64) / d
        )
        angles = torch.arange(seq, dtype=torch.float64)[:, None] * freqs[None, :]  # (seq, half)
        turned = (
            torch.complex(x[..., :half], x[..., half:])
            * torch.polar(torch.ones_like(angles), angles)[:, None]
        )
        return torch.cat([turned.real, turned.imag], dim=-1)

    def states(self, ids: list[int], task: int | None) -> torch.Tensor:
        heads = self.config["num_attention_heads"]
        ids_t = torch.tensor(ids)
        x = self.weight("embeddings.word_embeddings", task, True)[ids_t]
        x = x + self.weight("embeddings.token_type_embeddings", task, True)[0]
        x = self.norm(x, "emb_ln")
        for i in range(self.config["num_hidden_layers"]):
            layer = f"encoder.layers.{i}"
            q, k, v = self.linear(x, f"{layer}.mixer.Wqkv", task).chunk(3, dim=-1)
            q, k, v = (t.reshape(len(ids), heads, -1) for t in (q, k, v))
            q, k = self.rotate(q), self.rotate(k)
            scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
            attended = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(len(ids), -1)
            x = self.norm(
                x + self.linear(attended, f"{layer}.mixer.out_proj", task), f"{layer}.norm1"
            )
            inner = self.linear(x, f"{layer}.mlp.fc1", task)
            inner = 0.5 * inner * (1 + torch.erf(inner / math.sqrt(2)))  # exact gelu
            x = self.norm(x + self.linear(inner, f"{layer}.mlp.fc2", task), f"{layer}.norm2")
        return x  # (seq, hidden)


@pytest.fixture(scope="module")
def reference(snapshot: Path) -> Reference:
    return Reference(snapshot)


def run_one(model: JinaV3Model, text: str, adapter: int, **kw: object) -> torch.Tensor:
    row = Row(
        torch.tensor(model.tokenize(text).ids), adapter, ((0, len(model.tokenize(text).ids)),), **kw
    )
    return model.forward([row])[0].pooled[0]


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("task", [None, *TASKS])
def test_matches_independent_formulation_for_every_task_and_no_task(model, reference, task):
    spec = model.resolve_task(task)
    assert spec.adapter == (NO_ADAPTER if task is None else TASKS.index(task))
    for text in TEXTS[:3]:
        ids = model.tokenize(spec.prefix + text).ids
        whole = model.forward([model.text_sequence(ids, spec)])[0].pooled
        per_token = model.forward(
            [model.text_sequence(ids, spec, [(i, i + 1) for i in range(len(ids))])]
        )[0].pooled
        expected = reference.states(ids, None if task is None else spec.adapter)
        assert per_token.dtype == torch.float32
        torch.testing.assert_close(per_token, expected.float(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            whole, expected.mean(0, keepdim=True).float(), atol=1e-5, rtol=1e-5
        )


def test_tasks_give_different_vectors(model):
    vectors = torch.stack([run_one(model, TEXTS[0], adapter) for adapter in range(-1, len(TASKS))])
    cosines = normalize(vectors) @ normalize(vectors).T
    off_diagonal = cosines[~torch.eye(len(vectors), dtype=torch.bool)]
    assert off_diagonal.max() < 0.999


def test_spans_are_mean_pooled_separately(model, reference):
    ids = model.tokenize(TEXTS[4]).ids
    spans = ((0, 2), (2, len(ids) - 1), (len(ids) - 1, len(ids)))
    out = model.forward([model.text_sequence(ids, model.resolve_task("separation"), spans)])[0]
    states = reference.states(ids, TASKS.index("separation"))
    expected = torch.stack([states[s:e].mean(0) for s, e in spans]).float()
    torch.testing.assert_close(out.pooled, expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- batching
def test_mixed_tasks_in_one_batch_equal_single_rows(model):
    adapters = [0, 4, -1, 2, 0]
    rows = [model.text_sequence(model.tokenize(t).ids, model.resolve_task(None)) for t in TEXTS]
    for row, adapter in zip(rows, adapters):
        row.adapter = adapter
    batched = model.forward(rows)
    for text, adapter, out in zip(TEXTS, adapters, batched):
        torch.testing.assert_close(
            out.pooled[0], run_one(model, text, adapter), atol=1e-5, rtol=1e-5
        )


@settings(max_examples=15, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.text(alphabet="abcdefghij solarpnw?", max_size=30),
            st.integers(NO_ADAPTER, len(TASKS) - 1),
        ),
        min_size=1,
        max_size=5,
    ),
    order=st.randoms(use_true_random=False),
)
def test_rows_do_not_depend_on_padding_or_order(model, rows, order):
    sequences = [
        Row(torch.tensor(model.tokenize(t).ids), a, ((0, len(model.tokenize(t).ids)),))
        for t, a in rows
    ]
    permutation = list(range(len(rows)))
    order.shuffle(permutation)
    outputs = model.forward([sequences[i] for i in permutation])
    for position, index in enumerate(permutation):
        text, adapter = rows[index]
        torch.testing.assert_close(
            outputs[position].pooled[0], run_one(model, text, adapter), atol=1e-5, rtol=1e-5
        )


def test_empty_batch_gives_no_outputs(model):
    assert model.forward([]) == []


# --------------------------------------------------------------------------- through the facade
def test_embedder_prepends_the_instruction_and_cuts_matryoshka_prefixes(model, reference):
    embedder = Embedder(model)
    dims = model.info.matryoshka_dims
    assert dims == (4, 8, 16, 32) and model.info.max_tokens == 8194 and model.info.dim == 32
    full = embedder.run(embedder.plan([TextItem(TEXTS[0])], "retrieval.query")).embeddings[0]
    ids = model.tokenize(DEFAULT_INSTRUCTIONS["retrieval.query"] + TEXTS[0]).ids
    raw = reference.states(ids, TASKS.index("retrieval.query")).mean(0).float()
    torch.testing.assert_close(full, normalize(raw), atol=1e-5, rtol=1e-5)
    for dim in dims:
        options = EncodeOptions(dimensions=dim)
        cut = embedder.run(
            embedder.plan([TextItem(TEXTS[0])], "retrieval.query", options)
        ).embeddings[0]
        assert cut.shape == (dim,)
        torch.testing.assert_close(cut, normalize(full[:dim]), atol=1e-6, rtol=1e-5)


def test_no_task_uses_base_weights_and_no_instruction(model, reference):
    embedder = Embedder(model)
    vector = embedder.run(embedder.plan([TextItem(TEXTS[1])], None)).embeddings[0]
    expected = normalize(reference.states(model.tokenize(TEXTS[1]).ids, None).mean(0).float())
    torch.testing.assert_close(vector, expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- tasks and tokens
def test_resolve_task_gives_adapter_and_instruction(model):
    none = model.resolve_task(None)
    assert (none.name, none.adapter, none.prefix) == (NO_TASK, NO_ADAPTER, "")
    for index, task in enumerate(TASKS):
        spec = model.resolve_task(task)
        assert (spec.name, spec.adapter, spec.prefix) == (task, index, DEFAULT_INSTRUCTIONS[task])
    assert (
        model.resolve_task("retrieval.query").prefix
        == "Represent the query for retrieving evidence documents: "
    )


def test_resolved_task_names_resolve_back_to_themselves(model):
    """No task's name is NO_TASK, never None: a None name would make the check below the
    tautology ``resolve_task(None) == resolve_task(None)``."""
    for task in [None, *TASKS]:
        spec = model.resolve_task(task)
        assert spec.name == (NO_TASK if task is None else task)
        assert model.resolve_task(spec.name) == spec


def test_official_style_encode_text(model, reference):
    embedder = Embedder(model)
    vectors = embedder.encode_text([TEXTS[0], TEXTS[1]], task="retrieval.passage", truncate_dim=8)
    instruction = DEFAULT_INSTRUCTIONS["retrieval.passage"]
    assert len(vectors) == 2
    for vector, text in zip(vectors, TEXTS[:2], strict=True):  # each row, not only the last one
        raw = reference.states(
            model.tokenize(instruction + text).ids, TASKS.index("retrieval.passage")
        ).mean(0)
        torch.testing.assert_close(vector, normalize(raw[:8].float()), atol=1e-5, rtol=1e-5)
    base = embedder.encode_text(TEXTS[1])  # no task: base weights, no instruction
    expected = normalize(reference.states(model.tokenize(TEXTS[1]).ids, None).mean(0).float())
    torch.testing.assert_close(base, expected, atol=1e-5, rtol=1e-5)


def test_unknown_task_lists_the_valid_ones(model):
    with pytest.raises(
        InvalidInput, match="valid tasks: retrieval.query, retrieval.passage, separation"
    ):
        model.resolve_task("code.query")


def test_prompt_name_is_refused(model):
    with pytest.raises(InvalidInput, match="no prompt_name"):
        model.resolve_task("retrieval.query", prompt_name="query")


def test_images_and_multivectors_are_refused(model):
    from PIL import Image

    with pytest.raises(InvalidInput, match="text only"):
        model.image_sequence(Image.new("RGB", (4, 4)), model.resolve_task(None))
    row = model.text_sequence(model.tokenize("a").ids, model.resolve_task(None))
    row.multivector = True
    with pytest.raises(InvalidInput, match="no multi-vector"):
        model.forward([row])


def test_out_of_range_adapter_and_empty_rows_are_refused(model):
    with pytest.raises(InvalidInput, match="adapter 5 does not exist"):
        model.forward([Row(torch.tensor([0, 2]), 5, ((0, 2),))])
    with pytest.raises(InvalidInput, match="empty"):
        model.forward([Row(torch.tensor([], dtype=torch.long), 0, ())])


def test_tokenize_wraps_in_bos_eos_with_character_offsets(model):
    text = "Represent the query:  sun light"
    tokens = model.tokenize(text)
    assert tokens.ids[0] == 0 and tokens.ids[-1] == 2
    assert tokens.special == [True] + [False] * (len(tokens.ids) - 2) + [True]
    assert tokens.offsets[0] == (0, 0) and tokens.offsets[-1] == (0, 0)
    pieces = [text[s:e] for (s, e), special in zip(tokens.offsets, tokens.special) if not special]
    assert pieces == [
        "Represent",
        " the",
        " query",
        ":",
        " sun",
        " light",
    ]  # runs of spaces collapse
    assert model.tokenize("中").ids == [0, 4, 3, 2]  # "▁" then <unk>


def test_custom_task_instructions_from_config(copy):
    config = read_json(copy / "config.json")
    config["task_instructions"] = {t: f"<{t}> " for t in TASKS}
    custom = load_jina_v3(copy, config, name="x", device=CPU, dtype=torch.float32)
    assert custom.resolve_task("separation").prefix == "<separation> "
    del config["task_instructions"]
    defaults = load_jina_v3(copy, config, name="x", device=CPU, dtype=torch.float32)
    assert (
        defaults.resolve_task("retrieval.passage").prefix
        == "Represent the document for retrieval: "
    )


# --------------------------------------------------------------------------- key layout and files
def test_official_modules_map_onto_transformers_names():
    pairs = {m.official: (m.native, m.kind) for m in official_modules(2)}
    assert pairs["emb_ln"] == (("embeddings.LayerNorm",), "norm")
    assert pairs["encoder.layers.1.mixer.Wqkv"] == (
        ("layers.1.self_attn.q_proj", "layers.1.self_attn.k_proj", "layers.1.self_attn.v_proj"),
        "linear",
    )
    assert pairs["encoder.layers.0.mixer.out_proj"] == (("layers.0.self_attn.o_proj",), "linear")
    assert pairs["encoder.layers.0.norm1"] == (("layers.0.post_attention_layernorm",), "norm")
    assert pairs["encoder.layers.0.norm2"] == (("layers.0.post_mlp_layernorm",), "norm")
    assert pairs["embeddings.word_embeddings"] == (("embeddings.word_embeddings",), "embedding")
    assert len(pairs) == 3 + 2 * 6


def test_conversion_splits_fused_qkv_and_its_lora(snapshot):
    config = parse_config(read_json(snapshot / "config.json"), snapshot / "config.json")
    tensors = load_file(str(snapshot / "model.safetensors"))
    converted = convert_official(tensors, config, snapshot)
    fused = "roberta.encoder.layers.0.mixer.Wqkv.parametrizations.weight"
    hidden = config.hidden_size
    k_weight = converted.state["layers.0.self_attn.k_proj.weight"]
    torch.testing.assert_close(k_weight, tensors[f"{fused}.original"][hidden : 2 * hidden])
    lora_v = converted.linear_lora["layers.0.self_attn.v_proj"]
    torch.testing.assert_close(lora_v.B, tensors[f"{fused}.0.lora_B"][:, 2 * hidden :])
    torch.testing.assert_close(lora_v.A, tensors[f"{fused}.0.lora_A"])
    assert lora_v.scaling == 3.0 / 4
    assert not any("pooler" in key for key in converted.state)
    unprefixed = convert_official(
        {k.removeprefix("roberta."): v for k, v in tensors.items()}, config, snapshot
    )
    assert unprefixed.state.keys() == converted.state.keys()


def test_writer_is_deterministic(tmp_path, snapshot):
    again = write_tiny_jina_v3(tmp_path / "again", seed=3)
    other = write_tiny_jina_v3(tmp_path / "other", seed=4)
    files = (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    )
    for name in files:
        assert (again / name).read_bytes() == (snapshot / name).read_bytes()
    assert (other / "model.safetensors").read_bytes() != (
        snapshot / "model.safetensors"
    ).read_bytes()
    keys = load_file(str(snapshot / "model.safetensors")).keys()
    assert "roberta.embeddings.word_embeddings.parametrizations.weight.0.lora_A" in keys
    assert "roberta.encoder.layers.1.mlp.fc2.parametrizations.weight.0.lora_B" in keys
    config = read_json(snapshot / "config.json")
    assert (
        config["architectures"] == ["XLMRobertaLoRA"]
        and config["lora_alpha"] != config["lora_rank"]
    )


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json"])
def test_missing_file_is_named(copy, name):
    (copy / name).unlink()
    with pytest.raises(CheckpointError, match=f"missing file: .*{name}"):
        load(copy)


def test_malformed_tokenizer_is_named(copy):
    (copy / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="malformed tokenizer file .*tokenizer.json"):
        load(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lora_adaptations": "retrieval.query"}, "lora_adaptations must be a non-empty list"),
        ({"lora_adaptations": ["separation", "separation"]}, "names a task twice"),
        ({"hidden_size": None}, "hidden_size must be a non-negative integer"),
        ({"num_attention_heads": 5}, "not a multiple of num_attention_heads"),
        ({"matryoshka_dimensions": [8, 64]}, "matryoshka_dimensions must be a list of sizes"),
        ({"task_instructions": {"retrieval.query": ""}}, "task_instructions must map every task"),
        ({"position_embedding_type": "absolute"}, "must be 'rotary'"),
        ({"lora_rank": 8}, "implies 5 tasks of rank 8"),
        ({"hidden_size": 64}, "config.json implies"),
        ({"vocab_size": 10}, "more than vocab_size 10"),
        ({"hidden_act": "swishy"}, "unknown hidden_act 'swishy'"),
    ],
)
def test_malformed_config_is_refused(copy, change, message):
    config = {**read_json(copy / "config.json"), **change}
    with pytest.raises(CheckpointError, match=message):
        load_jina_v3(copy, config, name="x", device=CPU, dtype=torch.float32)


def test_native_transformers_layout_is_not_supported_yet(copy):
    config = {
        **read_json(copy / "config.json"),
        "model_type": "jina_embeddings_v3",
        "architectures": ["JinaEmbeddingsV3Model"],
    }
    with pytest.raises(CheckpointError, match="not supported yet"):
        load_jina_v3(copy, config, name="x", device=CPU, dtype=torch.float32)


def test_missing_tensor_is_named(copy):
    key = "roberta.encoder.layers.1.mlp.fc1.parametrizations.weight.0.lora_B"
    tensors = load_file(str(copy / "model.safetensors"))
    del tensors[key]
    save_file(tensors, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"lack tensor '{key}'"):
        load(copy)


def test_wrong_number_of_task_adapters_is_refused(copy):
    config = {**read_json(copy / "config.json"), "lora_adaptations": list(TASKS[:4])}
    with pytest.raises(CheckpointError, match="implies 4 tasks of rank 4"):
        load_jina_v3(copy, config, name="x", device=CPU, dtype=torch.float32)
