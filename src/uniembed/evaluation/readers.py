"""Read retrieval datasets in the formats people already have.

* **BEIR** — a folder with ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
  (``_id``, ``text``) and ``qrels/{split}.tsv`` (header ``query-id corpus-id score``);
* **ViDoRe / MTEB** — the ``corpus`` (``corpus-id``, ``image`` or ``text``), ``queries``
  (``query-id``, ``query``) and ``qrels`` (``query-id``, ``corpus-id``, ``score``) configs, saved
  with ``datasets``' ``save_to_disk`` or as Parquet files (``corpus/*.parquet`` or
  ``corpus.parquet``), or a hub id (``owner/name``) where the hub is reachable;
* **JSONL** — a folder with ``corpus.jsonl`` (``id`` and one of ``text``, ``image`` (a path) or
  ``pdf`` (a path; page N becomes item ``<id>#p<N>``)) and ``queries.jsonl`` (``id``, ``text``
  or ``image``, and ``relevant``: a list of corpus ids or ``{id: grade}``).

:func:`load_dataset` tells them apart. A document's BEIR text is ``title + " " + text`` as BEIR and
MTEB encode it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from uniembed._optional import require
from uniembed.core import beir as beir_layout
from uniembed.core.beir import (
    QrelsBuilder,
    as_id,
    document_text,
    judged_queries,
    text_field,
    unique_ids,
)
from uniembed.core.files import read_jsonl
from uniembed.errors import InvalidInput
from uniembed.evaluation.data import EvalItem, PdfPage, RetrievalDataset

HF_CONFIGS = ("corpus", "queries", "qrels")
CORPUS_ID_COLUMNS = ("corpus-id", "_id", "id", "docid")
QUERY_ID_COLUMNS = ("query-id", "_id", "id", "qid")
QUERY_TEXT_COLUMNS = ("query", "text")


def load_dataset(source: str | os.PathLike[str], split: str = "test") -> RetrievalDataset:
    """A local folder in any of the three formats, or a hub dataset id (ViDoRe/MTEB configs)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(path, split)
    if path.exists():
        raise InvalidInput(f"{path}: expected a dataset folder, got a file")
    text = str(source)
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise InvalidInput(f"dataset {text!r}: no such folder, and not a hub id (owner/name)")
    return read_hub(text, split)


def _read_folder(path: Path, split: str) -> RetrievalDataset:
    if (path / "qrels").is_dir() and (path / "corpus.jsonl").is_file():
        return _beir_dataset(path, split)
    if (path / "corpus.jsonl").is_file():
        return read_jsonl_dataset(path)
    if all(_config_source(path, name) is not None for name in HF_CONFIGS):
        return read_hf_folder(path, split)
    raise InvalidInput(
        f"{path}: not a dataset folder; expected BEIR (corpus.jsonl, queries.jsonl, "
        f"qrels/{split}.tsv), "
        "JSONL (corpus.jsonl, queries.jsonl with 'relevant') or ViDoRe/MTEB configs "
        "(corpus, queries, qrels saved with save_to_disk or as Parquet)"
    )


# --------------------------------------------------------------------- BEIR
def _beir_dataset(path: Path, split: str = "test") -> RetrievalDataset:
    """A BEIR folder (:func:`uniembed.core.beir.read_beir`) as a dataset."""
    beir = beir_layout.read_beir(path, split)
    return RetrievalDataset(
        path.name,
        beir.query_ids,
        beir.queries,
        beir.corpus_ids,
        beir.corpus,
        beir.qrels,
        beir.skipped_queries,
        {"format": "beir", "split": split},
    )


# --------------------------------------------------------------------- JSONL (texts, images, PDFs)
def read_jsonl_dataset(path: Path) -> RetrievalDataset:
    """The plain JSONL form; relative image and PDF paths are relative to ``path``."""
    corpus_ids: list[tuple[str, str]] = []
    corpus: list[EvalItem] = []
    for where, record in read_jsonl(path / "corpus.jsonl"):
        item_id = as_id(record.get("id"), where, "id")
        for page_id, item in _corpus_items(item_id, record, path, where):
            corpus_ids.append((page_id, where))
            corpus.append(item)
    ids = unique_ids(corpus_ids, f"corpus ({path / 'corpus.jsonl'})")
    query_rows = [
        (as_id(record.get("id"), where, "id"), record, where)
        for where, record in read_jsonl(path / "queries.jsonl")
    ]
    query_ids = unique_ids(
        ((i, w) for i, _, w in query_rows), f"query set ({path / 'queries.jsonl'})"
    )
    builder = QrelsBuilder(query_ids, ids, str(path / "queries.jsonl"))
    queries = []
    for query_id, record, where in query_rows:
        queries.append(_query_item(record, path, where))
        for doc_id, grade in _relevant(record, where).items():
            builder.add(query_id, doc_id, grade, where)
    qrels = builder.build()
    kept_ids, kept, skipped = judged_queries(query_ids, queries, qrels)
    return RetrievalDataset(
        path.name, kept_ids, kept, ids, corpus, qrels, skipped, {"format": "jsonl"}
    )


def _one_kind(record: dict[str, Any], kinds: Sequence[str], where: str) -> str:
    present = [kind for kind in kinds if kind in record]
    if len(present) != 1:
        raise InvalidInput(
            f"{where}: give exactly one of {', '.join(map(repr, kinds))} "
            f"(found: {', '.join(present) or 'none'})"
        )
    return present[0]


def _corpus_items(
    item_id: str, record: dict[str, Any], root: Path, where: str
) -> list[tuple[str, EvalItem]]:
    kind = _one_kind(record, ("text", "image", "pdf"), where)
    if kind == "text":
        return [(item_id, document_text(record.get("title"), text_field(record, "text", where)))]
    file = _local_file(record, kind, root, where)
    if kind == "image":
        return [(item_id, {"image": str(file)})]
    from uniembed.inputs.pdf import pdf_page_count

    pages = pdf_page_count(file.read_bytes(), source=where)
    return [(f"{item_id}#p{number}", PdfPage(file, number)) for number in range(1, pages + 1)]


def _query_item(record: dict[str, Any], root: Path, where: str) -> EvalItem:
    kind = _one_kind(record, ("text", "image"), where)
    if kind == "text":
        return text_field(record, "text", where)
    return {"image": str(_local_file(record, "image", root, where))}


def _local_file(record: dict[str, Any], key: str, root: Path, where: str) -> Path:
    file = root / text_field(record, key, where)
    if not file.is_file():
        raise InvalidInput(f"{where}: {key} file {file} does not exist")
    return file


def _relevant(record: dict[str, Any], where: str) -> dict[str, Any]:
    """``relevant``: a list of corpus ids (grade 1) or ``{id: grade}``; absent: no judgements."""
    value = record.get("relevant", [])
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return {str(doc_id): 1 for doc_id in value}
    if isinstance(value, dict):
        return {str(doc_id): grade for doc_id, grade in value.items()}
    raise InvalidInput(
        f"{where}: 'relevant' must be a list of corpus ids or an object {{id: grade}}"
    )


# --------------------------------------------------------------------- ViDoRe / MTEB configs
def read_hf_folder(path: Path, split: str = "test") -> RetrievalDataset:
    """``corpus`` / ``queries`` / ``qrels`` saved with ``save_to_disk`` or as Parquet files."""
    tables = {name: _load_config(path, name, split) for name in HF_CONFIGS}
    return _from_tables(path.name, tables, {"format": "hf-folder", "split": split})


def read_hub(name: str, split: str = "test") -> RetrievalDataset:
    """A hub dataset with ViDoRe/MTEB configs; offline it fails at once, saying what to do."""
    datasets = require("datasets", "eval", "reading hub datasets")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ) not in ("0", "", "false")
    if offline:
        raise InvalidInput(_hub_unreachable(name, "HF_HUB_OFFLINE is set"))
    tables = {}
    for config in HF_CONFIGS:
        try:
            tables[config] = datasets.load_dataset(name, config, split=split)
        except (ConnectionError, OSError) as error:
            raise InvalidInput(
                _hub_unreachable(name, f"{type(error).__name__}: {error}")
            ) from error
        except ValueError as error:  # unknown config or split
            raise InvalidInput(f"hub dataset {name!r}, config {config!r}: {error}") from error
    return _from_tables(name, tables, {"format": "hub", "split": split})


def _hub_unreachable(name: str, why: str) -> str:
    return (
        f"dataset {name!r} is not a local folder and the Hugging Face hub cannot be reached "
        f"({why}). "
        "Where the hub is reachable, save its corpus, queries and qrels configs with "
        "`datasets.load_dataset(name, config, split=...).save_to_disk(DIR/config)` (or download "
        "its Parquet files), copy DIR here and pass the folder instead of the hub id."
    )


def _config_source(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.parquet"):
        if candidate.exists():
            return candidate
    return None


def _load_config(root: Path, name: str, split: str) -> Any:
    source = _config_source(root, name)
    if source is None:
        raise InvalidInput(f"{root}: missing the {name!r} config ({name}/ or {name}.parquet)")
    return load_table(source, split)


def load_table(source: Path, split: str = "test") -> Any:
    """A ``datasets.Dataset`` from a ``save_to_disk`` folder (a Dataset, or a DatasetDict: ``split``
    or its only split), a folder of Parquet files (the hub layout ``{split}-*.parquet`` picks the
    split) or one Parquet file."""
    datasets = require("datasets", "eval", "reading datasets folders")
    if source.is_file():
        return _read_parquet([source])
    if (source / "dataset_dict.json").is_file() or (source / "state.json").is_file():
        return _pick_split(datasets.load_from_disk(str(source)), split, source)
    files = sorted(source.glob(f"{split}-*.parquet")) or sorted(source.glob("**/*.parquet"))
    if not files:
        raise InvalidInput(f"{source}: neither a save_to_disk folder nor a folder of Parquet files")
    return _read_parquet(files)


def _pick_split(loaded: Any, split: str, source: Path) -> Any:
    if not hasattr(loaded, "keys"):  # a Dataset, saved without splits
        return loaded
    if split in loaded:
        return loaded[split]
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    raise InvalidInput(f"{source}: no split {split!r} (found: {', '.join(loaded)})")


def _read_parquet(files: list[Path]) -> Any:
    """Parquet files as one in-memory ``datasets.Dataset`` (features from the files' metadata;
    nothing is written to the datasets cache)."""
    datasets = require("datasets", "eval", "reading Parquet datasets")
    pq = require("pyarrow.parquet", "eval", "reading Parquet datasets")
    pa = require("pyarrow", "eval", "reading Parquet datasets")
    try:
        tables = [pq.read_table(file) for file in files]
    except (OSError, pa.ArrowInvalid) as error:
        raise InvalidInput(f"{files[0].parent}: cannot read Parquet ({error})") from error
    return datasets.Dataset(pa.concat_tables(tables) if len(tables) > 1 else tables[0])


def _column(table: Any, candidates: Sequence[str], config: str) -> str:
    for name in candidates:
        if name in table.column_names:
            return name
    raise InvalidInput(
        f"the {config!r} config has no column {' or '.join(map(repr, candidates))} "
        f"(columns: {', '.join(table.column_names)})"
    )


def _from_tables(name: str, tables: dict[str, Any], details: dict[str, Any]) -> RetrievalDataset:
    corpus_table, query_table, qrels_table = tables["corpus"], tables["queries"], tables["qrels"]
    corpus_ids = unique_ids(_id_rows(corpus_table, CORPUS_ID_COLUMNS, "corpus"), "corpus")
    query_ids = unique_ids(_id_rows(query_table, QUERY_ID_COLUMNS, "queries"), "query set")
    corpus = _content(corpus_table, "corpus", ("text",))
    queries = _content(query_table, "queries", QUERY_TEXT_COLUMNS)
    builder = QrelsBuilder(query_ids, corpus_ids, "the 'qrels' config")
    query_column = _column(qrels_table, ("query-id", "query_id", "qid"), "qrels")
    doc_column = _column(qrels_table, ("corpus-id", "corpus_id", "docid"), "qrels")
    scores = qrels_table["score"] if "score" in qrels_table.column_names else [1] * len(qrels_table)
    for row, (query_id, doc_id, score) in enumerate(
        zip(qrels_table[query_column], qrels_table[doc_column], scores, strict=True)
    ):
        where = f"qrels row {row}"
        builder.add(
            as_id(query_id, where, query_column), as_id(doc_id, where, doc_column), score, where
        )
    qrels = builder.build()
    ids, kept, skipped = judged_queries(query_ids, queries, qrels)
    return RetrievalDataset(
        name.rstrip("/").split("/")[-1], ids, kept, corpus_ids, corpus, qrels, skipped, details
    )


def _id_rows(table: Any, candidates: Sequence[str], config: str) -> Iterator[tuple[str, str]]:
    column = _column(table, candidates, config)
    for row, value in enumerate(table[column]):
        where = f"{config} row {row}"
        yield as_id(value, where, column), where


def _content(table: Any, config: str, text_columns: Sequence[str]) -> Sequence[EvalItem]:
    """Images stay in the (memory-mapped) table until encoded; texts become strings
    (with the title in front, as MTEB does, when the config has one)."""
    if "image" in table.column_names:
        return ImageColumn(table, "image")
    text_column = _column(table, text_columns, config)
    titles = table["title"] if "title" in table.column_names else None
    texts = table[text_column]
    if titles is None:
        return [str(text) for text in texts]
    return [document_text(title, str(text)) for title, text in zip(titles, texts, strict=True)]


class ImageColumn(Sequence[EvalItem]):
    """The images of a ``datasets.Dataset`` column as ``{"image": bytes}`` items, read on access."""

    def __init__(self, table: Any, column: str) -> None:
        datasets = require("datasets", "eval", "reading image datasets")
        self._table = table.cast_column(column, datasets.Image(decode=False))
        self._column = column

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._item(value) for value in self._table[index][self._column]]
        return self._item(self._table[int(index)][self._column])

    def __iter__(self) -> Iterator[EvalItem]:
        for batch in self._table.iter(batch_size=64):
            yield from (self._item(value) for value in batch[self._column])

    @staticmethod
    def _item(value: dict[str, Any]) -> dict[str, Any]:
        data = value.get("bytes")
        return {"image": data if data is not None else value["path"]}
