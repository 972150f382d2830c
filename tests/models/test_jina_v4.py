"""jina-embeddings-v4 against an independent formulation: transformers' own Qwen2.5-VL loaded with
its own key conversion, each task's LoRA merged into the weights by hand, pooled by the published
rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from uniembed.embedder import EncodeOptions
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.inputs.items import ImageItem, TextItem
from uniembed.models.jina_v4.layout import adapter_module, backbone_key

TASKS = ("retrieval", "text-matching", "code")
ATOL = 2e-5


class Reference:
    """transformers Qwen2.5-VL with one task's LoRA merged: W' = W + (alpha / r) · B @ A."""

    def __init__(self, snapshot: Path, task: str) -> None:
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        self.config = json.loads((snapshot / "config.json").read_text())
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            snapshot, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(snapshot)
        pre = json.loads((snapshot / "preprocessor_config.json").read_text())
        self.processor = Qwen2VLImageProcessorPil(
            min_pixels=pre["min_pixels"], max_pixels=pre["max_pixels"]
        )
        shards = [load_file(p) for p in snapshot.glob("model-*.safetensors")]
        weights = {k: v.float() for shard in shards for k, v in shard.items()}
        self.projector = torch.nn.Linear(weights["multi_vector_projector.weight"].shape[1], 128)
        self.projector.weight.data = weights["multi_vector_projector.weight"].clone()
        self.projector.bias.data = weights["multi_vector_projector.bias"].clone()
        self._merge(snapshot / "adapters", task)

    def _merge(self, adapters: Path, task: str) -> None:
        settings = json.loads((adapters / "adapter_config.json").read_text())
        scaling = settings["lora_alpha"] / settings["r"]
        lora = {k: v.float() for k, v in load_file(adapters / "adapter_model.safetensors").items()}
        pattern = re.compile(rf"base_model\.model\.(.+)\.lora_A\.{re.escape(task)}\.weight")
        modules = dict(self.model.named_modules())
        for key, a in lora.items():
            match = pattern.fullmatch(key)
            if not match:
                continue
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            target = self.projector if match[1] == "multi_vector_projector" else modules[match[1]]
            target.weight.data += scaling * (b @ a)

    @torch.no_grad()
    def text(self, text: str, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer([f"{prefix}: {text}"], return_tensors="pt")
        hidden = self.model.model(**batch, use_cache=False).last_hidden_state[0]
        return self._pool(hidden, torch.ones(hidden.shape[0], dtype=torch.bool))

    @torch.no_grad()
    def image(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.processor(images=[image], return_tensors="pt")
        count = int(feats["image_grid_thw"].prod()) // 4
        text = (
            "<|im_start|>user\n<|vision_start|>"
            + "<|image_pad|>" * count
            + "<|vision_end|>Describe the image.<|im_end|>\n"
        )
        batch = self.tokenizer([text], return_tensors="pt")
        ids = batch["input_ids"]
        mm_types = (ids == self.config["image_token_id"]).int()
        hidden = self.model.model(
            **batch,
            pixel_values=feats["pixel_values"],
            image_grid_thw=feats["image_grid_thw"],
            mm_token_type_ids=mm_types,
            use_cache=False,
        ).last_hidden_state[0]
        start = int((ids[0] == self.config["vision_start_token_id"]).nonzero()[0])
        end = int((ids[0] == self.config["vision_end_token_id"]).nonzero()[0])
        span = torch.zeros(hidden.shape[0], dtype=torch.bool)
        span[start : end + 1] = True
        return self._pool(hidden, span)

    def _pool(self, hidden: torch.Tensor, span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        single = torch.nn.functional.normalize(hidden[span].mean(0), dim=-1)
        multi = torch.nn.functional.normalize(self.projector(hidden), dim=-1)
        return single, multi


@pytest.fixture(scope="module", params=TASKS)
def reference(request: pytest.FixtureRequest, tiny_v4_path: Path) -> tuple[str, Reference]:
    return request.param, Reference(tiny_v4_path, request.param)


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.BILINEAR)


TEXTS = [
    "how do solar panels work",
    "Photovoltaic cells turn sunlight into electricity. " * 3,
    "太陽光パネルは電気を作ります。",
    "def encode(texts): return model(texts)",
]


@pytest.mark.parametrize("prompt", ["query", "passage"])
def test_text_matches_reference(tiny_v4, reference, prompt: str) -> None:
    task, ref = reference
    prefix = "Query" if task == "text-matching" else prompt.capitalize()
    singles = tiny_v4.encode_text(TEXTS, task=task, prompt_name=prompt)
    multis = tiny_v4.encode_text(TEXTS, task=task, prompt_name=prompt, return_multivector=True)
    for text, single, multi in zip(TEXTS, singles, multis):
        want_single, want_multi = ref.text(text, prefix)
        torch.testing.assert_close(single, want_single, atol=ATOL, rtol=0)
        torch.testing.assert_close(multi, want_multi, atol=ATOL, rtol=0)


def test_images_match_reference(tiny_v4, reference) -> None:
    task, ref = reference
    images = [photo(1, (120, 90)), photo(2, (57, 200)), photo(3, (300, 300))]
    singles = tiny_v4.encode_image(images, task=task)
    multis = tiny_v4.encode_image(images, task=task, return_multivector=True)
    for image, single, multi in zip(images, singles, multis):
        want_single, want_multi = ref.image(image)
        torch.testing.assert_close(single, want_single, atol=ATOL, rtol=0)
        torch.testing.assert_close(multi, want_multi, atol=ATOL, rtol=0)


def test_adapters_change_embeddings(tiny_v4) -> None:
    vectors = [tiny_v4.encode_text("same text", task=t, prompt_name="query") for t in TASKS]
    assert float(vectors[0] @ vectors[2]) < 0.999 and float(vectors[0] @ vectors[1]) < 0.999


def test_mixed_tasks_and_modalities_in_one_batch_equal_single_rows(tiny_v4) -> None:
    items = [
        TextItem("alpha beta"),
        ImageItem(photo(4, (80, 80))),
        TextItem("gamma " * 20),
        TextItem("delta"),
    ]
    tasks = ["retrieval.query", "code.passage", "text-matching", "retrieval.passage"]
    options = EncodeOptions(output="single")
    together = tiny_v4.run(tiny_v4.plan(items, tasks, options)).embeddings
    for item, task, vector in zip(items, tasks, together):
        alone = tiny_v4.run(tiny_v4.plan([item], task, options)).embeddings[0]
        torch.testing.assert_close(vector, alone, atol=1e-5, rtol=0)


def test_official_task_names_and_api_names_agree(tiny_v4) -> None:
    a = tiny_v4.encode_text("x y z", task="code", prompt_name="passage")
    b = tiny_v4.run(tiny_v4.plan([TextItem("x y z")], "code.passage")).embeddings[0]
    torch.testing.assert_close(a, b)
    matching_q = tiny_v4.encode_text("x y z", task="text-matching", prompt_name="passage")
    matching = tiny_v4.run(tiny_v4.plan([TextItem("x y z")], "text-matching")).embeddings[0]
    torch.testing.assert_close(matching_q, matching)  # text-matching always uses the Query prefix


def test_matryoshka_is_a_renormalised_prefix(tiny_v4) -> None:
    full = tiny_v4.encode_text("matryoshka", task="retrieval")
    for dim in tiny_v4.info.matryoshka_dims:
        cut = tiny_v4.encode_text("matryoshka", task="retrieval", truncate_dim=dim)
        torch.testing.assert_close(cut, torch.nn.functional.normalize(full[:dim], dim=0))
    with pytest.raises(InvalidInput, match="truncate_dim"):
        tiny_v4.encode_text("x", task="retrieval", truncate_dim=3)


def test_multivector_length_is_the_token_count(tiny_v4, tiny_v4_model) -> None:
    texts = ["a", "a b c d e f", "longer " * 30]
    multis = tiny_v4.encode_text(texts, task="code", return_multivector=True)
    for text, multi in zip(texts, multis):
        assert multi.shape == (len(tiny_v4_model.tokenize("Query: " + text).ids), 128)
        torch.testing.assert_close(multi.norm(dim=-1), torch.ones(multi.shape[0]))


def test_return_numpy_and_single_input_shapes(tiny_v4) -> None:
    array = tiny_v4.encode_text(["a", "b"], task="retrieval", return_numpy=True)
    assert isinstance(array, np.ndarray) and array.shape == (2, tiny_v4.info.dim)
    single = tiny_v4.encode_text("a", task="retrieval")
    assert isinstance(single, torch.Tensor) and single.shape == (tiny_v4.info.dim,)
    np.testing.assert_allclose(array[0], single.numpy(), atol=1e-6)


def test_unknown_task_and_prompt_are_clear_errors(tiny_v4) -> None:
    with pytest.raises(InvalidInput, match="valid tasks: retrieval.query") as refused:
        tiny_v4.encode_text("x", task="classification")
    valid = str(refused.value).split("valid tasks: ")[1].split(", ")
    assert len(valid) == len(set(valid)) and "text-matching" in valid  # each name once
    with pytest.raises(InvalidInput, match="prompt_name"):
        tiny_v4.encode_text("x", task="retrieval", prompt_name="document")


def test_patch_grid_marks_the_image_pad_tokens_of_the_merged_grid(tiny_v4, tiny_v4_model) -> None:
    image = photo(3, (300, 170))  # resized to multiples of 28: 308 x 168 -> 11 x 6 merged cells
    row = tiny_v4_model.image_sequence(image, tiny_v4_model.resolve_task("retrieval.passage"))
    grid, (t, h, w) = row.patches, row.image.grid_thw
    assert (grid.height, grid.width) == (t * h // 2, w // 2) == (6, 11)
    ids = row.input_ids.tolist()
    image_pad = tiny_v4_model.processor.template.image_token
    assert ids[grid.start : grid.stop] == [image_pad] * (grid.height * grid.width)
    assert image_pad not in ids[: grid.start] + ids[grid.stop :]
    result = tiny_v4.encode([image], output="both")
    assert result.patch_grids == [grid] and result.multivectors[0].shape[0] == len(ids)


def test_the_aspect_ratio_limit_and_its_message_agree(tiny_v4_model) -> None:
    task = tiny_v4_model.resolve_task("retrieval.passage")
    assert tiny_v4_model.image_sequence(Image.new("RGB", (200 * 28, 28)), task).num_tokens > 0
    with pytest.raises(InvalidInput, match="must be at most 200"):
        tiny_v4_model.image_sequence(Image.new("RGB", (201 * 28, 28)), task)


def test_max_pixels_changes_the_grid_and_is_bounded(tiny_v4, tiny_v4_model) -> None:
    image = photo(5, (600, 400))
    small = tiny_v4_model.image_sequence(
        image, tiny_v4_model.resolve_task("retrieval.passage"), max_pixels=28 * 28 * 4
    )
    large = tiny_v4_model.image_sequence(
        image, tiny_v4_model.resolve_task("retrieval.passage"), max_pixels=28 * 28 * 64
    )
    assert small.image.grid_thw == (1, 2, 4) and small.num_tokens < large.num_tokens
    with pytest.raises(InvalidInput, match="max_pixels"):
        tiny_v4.encode_image(image, task="retrieval", max_pixels=25_000_000)


def test_over_long_text_is_an_error_or_cut(tiny_v4) -> None:
    options = EncodeOptions(max_tokens=8)
    with pytest.raises(Exception, match="more than the limit of 8"):
        tiny_v4.plan([TextItem("many words " * 10)], "retrieval.query", options)
    cut = tiny_v4.plan(
        [TextItem("many words " * 10)],
        "retrieval.query",
        EncodeOptions(max_tokens=8, truncate=True),
    )
    assert cut.rows[0].num_tokens == 8


def test_key_mapping_on_strings() -> None:
    assert (
        backbone_key("model.layers.35.self_attn.o_proj.weight")
        == "language_model.layers.35.self_attn.o_proj.weight"
    )
    assert backbone_key("model.embed_tokens.weight") == "language_model.embed_tokens.weight"
    assert backbone_key("visual.blocks.0.attn.qkv.bias") == "visual.blocks.0.attn.qkv.bias"
    assert backbone_key("multi_vector_projector.weight") is None
    assert (
        adapter_module("model.language_model.layers.0.mlp.gate_proj")
        == "backbone.language_model.layers.0.mlp.gate_proj"
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "config.json").unlink(), "config.json"),
        (lambda p: (p / "config.json").write_text("{not json"), "malformed JSON in .*config.json"),
        (
            lambda p: (p / "model-00002-of-00002.safetensors").unlink(),
            "model-00002-of-00002.safetensors",
        ),
        (
            lambda p: (p / "adapters" / "adapter_model.safetensors").unlink(),
            "adapter_model.safetensors",
        ),
        (lambda p: (p / "tokenizer.json").unlink(), "tokenizer.json"),
        (lambda p: (p / "preprocessor_config.json").unlink(), "preprocessor_config.json"),
    ],
)
def test_broken_snapshots_name_the_file(
    tiny_v4_path: Path, tmp_path: Path, damage, message: str
) -> None:
    import shutil

    import uniembed

    copy = tmp_path / "snapshot"
    shutil.copytree(tiny_v4_path, copy)
    damage(copy)
    with pytest.raises(CheckpointError, match=message):
        uniembed.load(copy, device="cpu")


def test_hub_id_without_network_says_how_to_use_a_local_snapshot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uniembed

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="local"):
        uniembed.load("jinaai/jina-embeddings-v4", device="cpu")
