"""jina-embeddings-v3's processor: task resolution (adapter and instruction) and tokenisation, the
CPU side of the model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from tokenizers import Tokenizer

from uniembed.core.vectors import Span
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.base import Row, TaskSpec, TokenizedText, default_spans
from uniembed.models.jina_v3.config import JinaV3Config
from uniembed.models.lora import NO_ADAPTER

NO_TASK = "none"  # TaskSpec.name of a row run without a task (base weights, no instruction)
TOKENIZER_FILE = "tokenizer.json"
# MTEB task types and prompt keys → API tasks, as MTEB's own jina-embeddings-v3 entry routes them.
TASK_TYPES = {
    "Retrieval-query": "retrieval.query",
    "Retrieval-document": "retrieval.passage",
    "Clustering": "separation",
    "Classification": "classification",
    "STS": "text-matching",
    "PairClassification": "classification",
    "BitextMining": "text-matching",
    "MultilabelClassification": "classification",
    "Reranking": "separation",
    "Summarization": "text-matching",
    "query": "retrieval.query",
    "document": "retrieval.passage",
}


class JinaV3Processor:
    """Texts → :class:`~uniembed.models.base.Row` objects: the tasks' adapters and instructions
    (added tasks included) and the XLM-R tokenizer."""

    def __init__(self, tokenizer: Tokenizer, config: JinaV3Config, *, name: str) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.adapters = {
            task: index for index, task in enumerate(config.tasks)
        }  # API name → adapter
        self.instructions = dict(config.instructions)  # API name → instruction

    def resolve_task(self, task: str | None, prompt_name: str | None = None) -> TaskSpec:
        """An API task → its adapter and instruction; ``None`` (or its resolved name ``"none"``, so
        that a :class:`TaskSpec` name resolves back to itself) → base weights, no instruction."""
        if prompt_name is not None:
            raise InvalidInput(
                f"{self.name} takes no prompt_name (got {prompt_name!r}); choose the task "
                f"alone, one of: {', '.join(self.adapters)}"
            )
        if task is None or task == NO_TASK:
            return TaskSpec(name=NO_TASK, adapter=NO_ADAPTER, prefix="")
        if task not in self.adapters:
            raise InvalidInput(
                f"unknown task {task!r} for {self.name}; valid tasks: "
                f"{', '.join(self.adapters)} (or no task, {NO_TASK!r}, for the base weights)"
            )
        return TaskSpec(name=task, adapter=self.adapters[task], prefix=self.instructions[task])

    def tokenize(self, text: str) -> TokenizedText:
        """``<s> … </s>`` around the text's tokens; offsets are character offsets into ``text``."""
        encoding = self.tokenizer.encode(text)
        return TokenizedText(
            ids=list(encoding.ids),
            offsets=[tuple(o) for o in encoding.offsets],
            special=[bool(s) for s in encoding.special_tokens_mask],
        )

    def text_sequence(
        self, ids: list[int], task: TaskSpec, spans: Sequence[Span] | None = None
    ) -> Row:
        return Row(
            torch.tensor(ids, dtype=torch.long), task.adapter, default_spans(len(ids), spans)
        )

    def image_sequence(
        self, image: Image.Image, task: TaskSpec, max_pixels: int | None = None
    ) -> Row:
        raise InvalidInput(f"{self.name} embeds text only; images need jina-embeddings-v4")


def load_tokenizer(snapshot: Path, config: JinaV3Config) -> Tokenizer:
    """The snapshot's tokenizer.json (XLM-R SentencePiece), without truncation or padding."""
    path = snapshot / TOKENIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for malformed files
        raise CheckpointError(f"malformed tokenizer file {path}: {error}") from error
    tokenizer.no_truncation()
    tokenizer.no_padding()
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise CheckpointError(
            f"{path} has {tokenizer.get_vocab_size()} tokens, more than vocab_size "
            f"{config.vocab_size} of config.json"
        )
    return tokenizer
