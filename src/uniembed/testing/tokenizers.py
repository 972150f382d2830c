"""Tiny tokenizers carrying the official special tokens at the official ids."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# Qwen2.5-VL's added tokens, in id order from 151643 (its tokenizer_config.json
# added_tokens_decoder).
QWEN2_VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN2_VL_FIRST_SPECIAL_ID = 151643
# Qwen's pre-tokenizer split pattern (tokenizer.json of Qwen2.5-VL).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
TRAINING_TEXT = (
    "Query: Passage: how do solar panels work? Photovoltaic cells turn sunlight into electricity. "
    "Describe the image. user\n def encode(texts): return model(texts) Die Sonne scheint. "
    "太陽光パネルは電気を作ります。 Les panneaux solaires produisent de l'énergie. "
)


def write_qwen2_vl_tokenizer(directory: Path, vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE tokenizer shaped like Qwen2.5-VL's, special tokens at ids 151643…151664.

    Ordinary tokens fill ids 0…vocab_size-1; placeholder tokens fill the gap up to the first special
    id so that the special ids match config.json exactly.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern=_regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([TRAINING_TEXT] * 4, trainer)
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    for filler in range(len(vocab), QWEN2_VL_FIRST_SPECIAL_ID):
        vocab[f"<|placeholder_{filler}|>"] = filler
    data["added_tokens"] = [
        {
            "id": QWEN2_VL_FIRST_SPECIAL_ID + i,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, token in enumerate(QWEN2_VL_SPECIAL_TOKENS)
    ]
    result = Tokenizer.from_str(json.dumps(data))
    directory.mkdir(parents=True, exist_ok=True)
    result.save(str(directory / "tokenizer.json"))
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = data["model"]["merges"]
    lines = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps(_qwen_tokenizer_config(), indent=2), encoding="utf-8"
    )
    special_map = {
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": list(QWEN2_VL_SPECIAL_TOKENS[1:14]),
    }
    (directory / "special_tokens_map.json").write_text(
        json.dumps(special_map, indent=2), encoding="utf-8"
    )
    return result


def _regex(pattern: str):  # tokenizers.Regex, imported here to keep the module import light
    from tokenizers import Regex

    return Regex(pattern)


def _qwen_tokenizer_config() -> dict:
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(QWEN2_VL_FIRST_SPECIAL_ID + i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, t in enumerate(QWEN2_VL_SPECIAL_TOKENS)
        },
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
