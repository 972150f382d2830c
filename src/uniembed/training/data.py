"""Training and evaluation data, read and checked in full before any training step.

Sources: a JSONL file, a Parquet file, or a folder written by ``datasets``' ``save_to_disk``. Each
record is one of two forms (all records of a source the same):

* **pairs** — ``query``, ``positive`` and optional ``negatives`` (a list; hard negatives);
* **graded pairs** — ``sentence1``, ``sentence2`` and a numeric ``score``.

An item is a text (a string, or ``{"text": ...}``) or an image ``{"image": path}`` (relative paths
are relative to the data file; a ``datasets`` Image column gives PIL images). Every problem raises
:class:`~uniembed.errors.InvalidInput` naming the file and the line (JSONL) or row.

Evaluation data is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) or a
source in one of the forms above: pairs become queries, a corpus of every positive and negative and
their judgements; graded pairs are scored by Spearman correlation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from uniembed._optional import require
from uniembed.core import beir as beir_layout
from uniembed.core.files import read_jsonl
from uniembed.errors import InvalidInput

ExampleItem = Any  # str (text) | {"image": absolute path} | PIL image
Kind = Literal["pairs", "graded"]
PAIR_FIELDS = ("query", "positive", "negatives")
GRADED_FIELDS = ("sentence1", "sentence2", "score")
DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class PairExample:
    query: ExampleItem
    positive: ExampleItem
    negatives: tuple[ExampleItem, ...]
    where: str  # "file:line" or "file row N", for errors


@dataclass(frozen=True)
class GradedExample:
    first: ExampleItem
    second: ExampleItem
    score: float
    where: str


Example = PairExample | GradedExample


@dataclass
class TrainingData:
    """The examples of one source, all of one kind."""

    kind: Kind
    examples: list[Example]
    source: Path

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    @property
    def has_images(self) -> bool:
        return any(_is_image(item) for example in self.examples for item in items_of(example))

    def first_image(self) -> str | None:
        """Where the first image item is (for errors on text-only models)."""
        return next(
            (e.where for e in self.examples if any(_is_image(i) for i in items_of(e))), None
        )


def items_of(example: Example) -> tuple[ExampleItem, ...]:
    if isinstance(example, PairExample):
        return (example.query, example.positive, *example.negatives)
    return (example.first, example.second)


def _is_image(item: ExampleItem) -> bool:
    return isinstance(item, (dict, Image.Image))


# --------------------------------------------------------------------------- reading records
def read_records(path: Path, split: str = "train") -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for every record of a JSONL file, a Parquet file or a ``datasets``
    folder."""
    if not path.exists():
        raise InvalidInput(f"no such data file or folder: {path}")
    if path.is_dir():
        if not any((path / marker).is_file() for marker in DATASETS_MARKERS):
            raise InvalidInput(f"{path} is a folder but not one written by datasets' save_to_disk")
        yield from _dataset_records(path, split)
    elif path.suffix == ".parquet":
        yield from _parquet_records(path)
    else:
        yield from read_jsonl(path, objects=False)  # checked below, as for Parquet and datasets


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    parquet = require("pyarrow.parquet", "train", "reading Parquet training data")
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises its own error types
        raise InvalidInput(f"{path}: unreadable Parquet file ({error})") from error
    for index, record in enumerate(table.to_pylist(), start=1):
        yield f"{path} row {index}", record


def _dataset_records(path: Path, split: str) -> Iterator[tuple[str, Any]]:
    datasets = require("datasets", "train", "reading a datasets folder")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InvalidInput(f"{path} has no split {split!r}; it has {', '.join(loaded)}")
        loaded, path_name = loaded[split], f"{path} [{split}]"
    else:
        path_name = str(path)
    for index, record in enumerate(loaded, start=1):
        yield f"{path_name} row {index}", record


# --------------------------------------------------------------------------- examples
def read_training_data(
    path: str | Path, *, split: str = "train", negatives: int | None = None
) -> TrainingData:
    """Read and check every record of ``path``. ``negatives``: use the first N hard negatives of
    each pair (each must have N); by default every pair must have the same number."""
    data = read_examples(Path(path), split)
    if data.kind == "pairs":
        data.examples = _same_negatives(data.examples, negatives)  # type: ignore[arg-type]
    return data


def read_examples(path: Path, split: str = "train") -> TrainingData:
    """Every record of ``path`` checked and parsed (any number of negatives per pair)."""
    root = path if path.is_dir() else path.parent
    kind: Kind | None = None
    examples: list[Example] = []
    for where, record in read_records(path, split):
        example = parse_record(record, where, root)
        this_kind: Kind = "pairs" if isinstance(example, PairExample) else "graded"
        if kind is not None and this_kind != kind:
            raise InvalidInput(
                f"{where}: a {this_kind} record in a file of {kind} (all records must be one form)"
            )
        kind = this_kind
        examples.append(example)
    if kind is None:
        raise InvalidInput(f"{path}: no examples (the file is empty)")
    return TrainingData(kind, examples, path)


def parse_record(record: Any, where: str, root: Path) -> Example:
    """One record → a :class:`PairExample` or :class:`GradedExample` (relative image paths under
    ``root``)."""
    if not isinstance(record, dict):
        raise InvalidInput(
            f"{where}: expected an object with {'/'.join(PAIR_FIELDS)} or {'/'.join(GRADED_FIELDS)}"
        )
    if any(key in record for key in GRADED_FIELDS):
        first = parse_item(_required(record, "sentence1", where), where, "sentence1", root)
        second = parse_item(_required(record, "sentence2", where), where, "sentence2", root)
        return GradedExample(first, second, _score(_required(record, "score", where), where), where)
    if not any(key in record for key in PAIR_FIELDS):
        raise InvalidInput(
            f"{where}: expected the fields query, positive (and optional negatives) or sentence1, "
            f"sentence2, score; got {', '.join(map(repr, record)) or 'none'}"
        )
    query = parse_item(_required(record, "query", where), where, "query", root)
    positive = parse_item(_required(record, "positive", where), where, "positive", root)
    negatives = record.get("negatives")
    if negatives is None:
        negatives = []
    if not isinstance(negatives, (list, tuple)):
        raise InvalidInput(
            f"{where}: negatives must be a list of items, got {type(negatives).__name__}"
        )
    parsed = tuple(parse_item(n, where, f"negatives[{i}]", root) for i, n in enumerate(negatives))
    return PairExample(query, positive, parsed, where)


def _required(record: dict[str, Any], key: str, where: str) -> Any:
    if record.get(key) is None:
        raise InvalidInput(f"{where}: missing field {key!r}")
    return record[key]


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{where}: score must be a finite number, got {value!r}")
    return float(value)


def parse_item(value: Any, where: str, name: str, root: Path) -> ExampleItem:
    """A text (non-empty string or ``{"text"}``) or an image (``{"image": path}`` that exists, or a
    PIL image)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and set(value) == {"text"}:
        value = value["text"]
    if isinstance(value, str):
        if not value.strip():
            raise InvalidInput(f"{where}: {name} is an empty text")
        return value
    if isinstance(value, dict) and set(value) == {"image"}:
        image = value["image"]
        if isinstance(image, Image.Image):
            return image
        if not isinstance(image, str) or not image:
            raise InvalidInput(f"{where}: {name}: image must be a file path")
        path = Path(image).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise InvalidInput(f"{where}: {name}: image file not found: {path}")
        return {"image": str(path)}
    raise InvalidInput(
        f'{where}: {name} must be a text or {{"image": path}}, got {_describe(value)}'
    )


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)}"
    return type(value).__name__


def _same_negatives(examples: list[PairExample], count: int | None) -> list[Example]:
    """Every pair with the same number of hard negatives (they form equal groups in a batch)."""
    if count is None:
        count = len(examples[0].negatives)
        for example in examples:
            if len(example.negatives) != count:
                raise InvalidInput(
                    f"{example.where}: {len(example.negatives)} negatives, but {examples[0].where} "
                    f"has {count}; every pair needs the same number (use negatives=N / --negatives "
                    "N to take the first N)"
                )
        return list(examples)
    if count < 0:
        raise InvalidInput(f"negatives must be 0 or more, got {count}")
    short = next((e for e in examples if len(e.negatives) < count), None)
    if short is not None:
        raise InvalidInput(
            f"{short.where}: {len(short.negatives)} negatives, fewer than the {count} asked for"
        )
    return [replace(e, negatives=e.negatives[:count]) for e in examples]


# --------------------------------------------------------------------------- evaluation
@dataclass
class RetrievalEval:
    """Queries, a corpus and graded judgements (qrels), for nDCG@10."""

    queries: dict[str, ExampleItem]
    corpus: dict[str, ExampleItem]
    qrels: dict[str, dict[str, int]]
    source: Path = field(default=Path())


@dataclass
class GradedEval:
    """Graded pairs, for the Spearman correlation of cosine similarity with the gold scores."""

    firsts: list[ExampleItem]
    seconds: list[ExampleItem]
    scores: list[float]
    source: Path = field(default=Path())


EvalData = RetrievalEval | GradedEval


def read_eval_data(path: str | Path, split: str = "test") -> EvalData:
    """A BEIR folder, or pairs / graded pairs in any training form (see the module docstring)."""
    path = Path(path)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        return _beir_eval(path, split)
    data = read_examples(path, split)  # any number of negatives: they only join the corpus
    if data.kind == "graded":
        examples = [e for e in data.examples if isinstance(e, GradedExample)]
        return GradedEval(
            [e.first for e in examples],
            [e.second for e in examples],
            [e.score for e in examples],
            path,
        )
    return _pairs_as_retrieval([e for e in data.examples if isinstance(e, PairExample)], path)


def _pairs_as_retrieval(examples: Sequence[PairExample], source: Path) -> RetrievalEval:
    queries: dict[str, ExampleItem] = {}
    corpus: dict[str, ExampleItem] = {}
    ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}

    def document_id(item: ExampleItem) -> str:
        key = item if isinstance(item, str) else json.dumps(item, sort_keys=True, default=id)
        if key not in ids:
            ids[key] = f"d{len(ids)}"
            corpus[ids[key]] = item
        return ids[key]

    query_ids: dict[str, str] = {}
    for example in examples:
        key = (
            example.query
            if isinstance(example.query, str)
            else json.dumps(example.query, sort_keys=True, default=id)
        )
        query_id = query_ids.setdefault(key, f"q{len(query_ids)}")
        queries[query_id] = example.query
        qrels.setdefault(query_id, {})[document_id(example.positive)] = 1
        for negative in example.negatives:
            document_id(negative)
    return RetrievalEval(queries, corpus, qrels, source)


def _beir_eval(path: Path, split: str = "test") -> RetrievalEval:
    """A BEIR folder (:func:`uniembed.core.beir.read_beir`: checked, judged queries only)."""
    beir = beir_layout.read_beir(path, split)
    queries = dict(zip(beir.query_ids, beir.queries))
    return RetrievalEval(queries, dict(zip(beir.corpus_ids, beir.corpus)), beir.qrels, path)
