"""A tiny random jina-embeddings-v3 snapshot in the exact official (remote-code) layout.

Used by tests and benchmarks only. The files mirror ``jinaai/jina-embeddings-v3``: config.json with
the official keys, ``model.safetensors`` with ``roberta.*`` keys, a fused ``Wqkv``, and the task
LoRA stored as torch parametrizations (``….parametrizations.weight.original`` plus
``….parametrizations.weight.0.lora_A`` / ``lora_B`` with a leading task dimension) on every Linear
and Embedding, and an XLM-R style SentencePiece (Unigram) tokenizer with the official special ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from uniembed.models.jina_v3.layout import lora_key

TASKS = ("retrieval.query", "retrieval.passage", "separation", "classification", "text-matching")
INSTRUCTIONS = {
    "retrieval.query": "Represent the query for retrieving evidence documents: ",
    "retrieval.passage": "Represent the document for retrieval: ",
    "separation": "",
    "classification": "",
    "text-matching": "",
}
# XLM-R special tokens at their official ids; "<mask>" is the last id of the vocabulary.
BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
MASK = "<mask>"
WORDS = (
    "the",
    "a",
    "of",
    "and",
    "to",
    "is",
    "for",
    "query",
    "document",
    "documents",
    "retrieval",
    "retrieving",
    "evidence",
    "represent",
    "Represent",
    "how",
    "do",
    "solar",
    "panel",
    "panels",
    "work",
    "sun",
    "light",
    "cells",
    "turn",
    "into",
    "electricity",
    "hello",
    "world",
    "die",
    "Sonne",
    "scheint",
)
SUFFIXES = ("s", "ing", "ed", "er", "al", "tion", "ly")
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()/"


def write_tiny_jina_v3(
    path: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    lora_rank: int = 4,
    lora_alpha: float = 3.0,
    with_pooler: bool = True,
) -> Path:
    """Write the snapshot into ``path`` (created) and return it; the same ``seed`` gives the same
    files.

    ``lora_alpha != lora_rank`` on purpose, so tests notice a wrong LoRA scaling.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_xlmr_tokenizer()
    vocab_size = tokenizer.get_vocab_size()
    config = tiny_config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
    )
    generator = torch.Generator().manual_seed(seed)
    tensors = official_tensors(config, generator, with_pooler=with_pooler)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(_tokenizer_config(vocab_size), indent=2), encoding="utf-8"
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps(_special_tokens_map(), indent=2), encoding="utf-8"
    )
    return path


def tiny_config(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    lora_rank: int,
    lora_alpha: float,
) -> dict[str, Any]:
    """config.json as the official repo has it, with the sizes made tiny.

    Keys and values up to ``rotary_emb_base`` follow a published copy of the official config; the
    ones marked UNCONFIRMED below are best knowledge (they do not change the computation).
    """
    remote = "jinaai/xlm-roberta-flash-implementation--"
    return {
        "_name_or_path": "jinaai/jina-embeddings-v3",
        "architectures": ["XLMRobertaLoRA"],
        "attention_probs_dropout_prob": 0.1,
        "auto_map": {
            "AutoConfig": f"{remote}configuration_xlm_roberta.XLMRobertaFlashConfig",
            "AutoModel": f"{remote}modeling_lora.XLMRobertaLoRA",
            "AutoModelForMaskedLM": f"{remote}modeling_xlm_roberta.XLMRobertaForMaskedLM",
            "AutoModelForPreTraining": f"{remote}modeling_xlm_roberta.XLMRobertaForPreTraining",
        },
        "bos_token_id": 0,
        "classifier_dropout": None,
        "emb_pooler": None,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "layer_norm_eps": 1e-05,
        "load_trained_adapters": True,
        "lora_adaptations": list(TASKS),
        "lora_alpha": lora_alpha,
        "lora_dropout_p": 0.0,
        "lora_main_params_trainable": False,
        "lora_rank": lora_rank,
        "matryoshka_dimensions": sorted({d for d in (4, 8, 16, hidden_size) if d <= hidden_size}),
        "max_position_embeddings": 8194,
        "model_type": "xlm-roberta",
        "num_attention_heads": num_heads,
        "num_hidden_layers": num_layers,
        "output_past": True,
        "pad_token_id": 1,
        "position_embedding_type": "rotary",
        "rotary_emb_base": 20000.0,
        "task_instructions": dict(INSTRUCTIONS),  # UNCONFIRMED: key order in the official file
        "torch_dtype": "bfloat16",  # UNCONFIRMED (the official weights are published in bf16)
        "transformers_version": "4.41.0",  # UNCONFIRMED
        "type_vocab_size": 1,
        "use_cache": True,
        "use_flash_attn": True,  # UNCONFIRMED
        "vocab_size": vocab_size,
    }


def official_tensors(
    config: dict[str, Any], generator: torch.Generator, *, with_pooler: bool = True
) -> dict[str, torch.Tensor]:
    """Random float32 weights under the official key names (``roberta.`` prefix, parametrized
    LoRA)."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    tasks, rank = len(config["lora_adaptations"]), config["lora_rank"]

    def normal(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    tensors: dict[str, torch.Tensor] = {}

    def embedding(name: str, rows: int) -> None:
        tensors[f"roberta.{name}.parametrizations.weight.original"] = normal(rows, hidden, std=1.0)
        tensors[lora_key(name, "A")] = normal(tasks, rows, rank, std=0.5)  # (tasks, rows, r)
        tensors[lora_key(name, "B")] = normal(tasks, rank, hidden, std=0.5)  # (tasks, r, hidden)

    def linear(name: str, fan_in: int, fan_out: int) -> None:
        tensors[f"roberta.{name}.parametrizations.weight.original"] = normal(
            fan_out, fan_in, std=fan_in**-0.5
        )
        tensors[f"roberta.{name}.bias"] = normal(fan_out, std=0.1)
        tensors[lora_key(name, "A")] = normal(
            tasks, rank, fan_in, std=fan_in**-0.5
        )  # (tasks, r, in)
        tensors[lora_key(name, "B")] = normal(tasks, fan_out, rank, std=0.5)  # (tasks, out, r)

    def norm(name: str) -> None:
        tensors[f"roberta.{name}.weight"] = 1.0 + normal(hidden, std=0.1)
        tensors[f"roberta.{name}.bias"] = normal(hidden, std=0.1)

    embedding("embeddings.word_embeddings", config["vocab_size"])
    embedding("embeddings.token_type_embeddings", config["type_vocab_size"])
    norm("emb_ln")
    for i in range(config["num_hidden_layers"]):
        layer = f"encoder.layers.{i}"
        linear(f"{layer}.mixer.Wqkv", hidden, 3 * hidden)
        linear(f"{layer}.mixer.out_proj", hidden, hidden)
        norm(f"{layer}.norm1")
        linear(f"{layer}.mlp.fc1", hidden, inner)
        linear(f"{layer}.mlp.fc2", inner, hidden)
        norm(f"{layer}.norm2")
    if with_pooler:  # present in the official file, unused for embeddings
        linear("pooler.dense", hidden, hidden)
    return tensors


def tiny_xlmr_tokenizer() -> Tokenizer:
    """A small SentencePiece-Unigram tokenizer shaped like XLM-R's: ``<s>``=0, ``<pad>``=1,
    ``</s>``=2, ``<unk>``=3, ``<mask>`` last; Metaspace pre-tokenisation; ``<s> … </s>`` added
    around each text."""
    pieces: list[tuple[str, float]] = [(BOS, 0.0), (PAD, 0.0), (EOS, 0.0), (UNK, 0.0), ("▁", -3.0)]
    pieces += [(c, -6.0) for c in CHARACTERS]
    pieces += [(f"▁{c}", -5.0) for c in CHARACTERS]
    pieces += [(s, -3.0) for s in SUFFIXES]
    pieces += [(f"▁{w}", -2.0) for w in WORDS]
    pieces.append((MASK, 0.0))
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (BOS, PAD, EOS, UNK)]
        + [AddedToken(MASK, special=True, normalized=False, lstrip=True)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, 0), (EOS, 2)],
    )
    return tokenizer


def _special_tokens_map() -> dict[str, Any]:
    return {
        "bos_token": BOS,
        "cls_token": BOS,
        "eos_token": EOS,
        "mask_token": MASK,
        "pad_token": PAD,
        "sep_token": EOS,
        "unk_token": UNK,
    }


def _tokenizer_config(vocab_size: int) -> dict[str, Any]:
    special = {BOS: 0, PAD: 1, EOS: 2, UNK: 3, MASK: vocab_size - 1}
    return {
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": t == MASK,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t, i in special.items()
        },
        "clean_up_tokenization_spaces": True,
        "model_max_length": 8194,
        "tokenizer_class": "XLMRobertaTokenizer",
        **_special_tokens_map(),
    }
