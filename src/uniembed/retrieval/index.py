"""An index of texts, images and PDF pages, searched by text or image (see docs/search.md).

>>> from uniembed.embedder import Embedder
>>> from uniembed.testing.fake import FakeModel
>>> import tempfile
>>> index = Index.create(tempfile.mkdtemp() + "/idx", Embedder(FakeModel()))
>>> index.add(["solar panels turn light into power", "a recipe for bread"], ids=["solar", "bread"])
['solar', 'bread']
>>> [hit.id for hit in index.search("solar panels", k=1, mode="multivector")]
['solar']
>>> index.close()

Every entry is encoded with ONE forward pass (``Embedder.encode(..., output="both")``): its single
vector (cut to the Matryoshka size chosen at creation) and its multi-vector (float16, token-pooled
when asked, always under the store's row cap) are written together, with the document id, page
number and metadata, in one store operation per batch of whole documents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from uniembed.core.checks import check_int
from uniembed.core.iteration import read_ahead
from uniembed.core.token_pooling import pool_by_labels, pool_to_fit
from uniembed.core.vectors import finalize_vectors, to_float16
from uniembed.errors import InvalidInput
from uniembed.inputs.items import ImageItem, Item, TextItem
from uniembed.inputs.limits import InputLimits
from uniembed.plans import check_dimensions
from uniembed.retrieval.documents import (
    Document,
    check_text,
    documents_from_inputs,
    documents_from_path,
    thumbnail,
)
from uniembed.retrieval.filters import Condition, Match, parse_filter
from uniembed.retrieval.retriever import MODES, Retriever
from uniembed.retrieval.similarity import SimilarityMap, patch_scores
from uniembed.retrieval.store import (
    Found,
    Layout,
    Point,
    Store,
    float16_lists,
    max_rows_for,
    point_id,
)
from uniembed.retrieval.stored import (
    StoredEntry,
    document_batches,
    embeddings_manifest,
    read_embeddings,
    stored_entries,
)
from uniembed.retrieval.stores import create_store, open_store, store_exists
from uniembed.retrieval.token_files import check_codecs

if TYPE_CHECKING:
    from typing import Self

    from uniembed.embedder import Embedder
    from uniembed.models.base import ModelInfo, PatchGrid

FORMAT = 2  # of the manifest and the payload layout (2: token vectors in the index's own files)
DEFAULT_MODE = "two-stage"  # as good as exact MaxSim (recall@10) and much faster: BENCHMARKS.md
# First-stage candidates of two-stage (dense), muvera and binary (Hamming), reranked by MaxSim:
# 500 keep 0.996 of exact's top 10 on realistic vectors and halve 1,000's rerank (BENCHMARKS.md)
DEFAULT_CANDIDATES = 500
DEFAULT_BATCH_ITEMS = 16  # items (pages) encoded and written together
DEFAULT_CODECS = ("float16", "binary")  # exact MaxSim, and the sign bits of mode binary
MUVERA_SHAPE = (4, 16, 10)  # simhash bits, projection size, repetitions: 2,560 values
ENTRY_FIELDS = ("id", "kind", "page", "metadata", "text", "source", "grid")  # returned with hits


@dataclass(frozen=True)
class IndexSettings:
    """What an index was built with (its manifest): the model and how entries are stored."""

    model: str  # the model's name (ModelInfo.name); reopening checks it
    family: str
    model_source: str | None  # what to load the model from when none is given (path or hub id)
    dimensions: int  # single vectors are cut to this Matryoshka size
    multivector_dim: int | None
    pool_factor: int = 1
    protected_tokens: int = 1  # kept out of token pooling, as sentence-transformers does
    max_rows: int | None = None  # most stored rows per entry (None: no multi-vectors)
    document_task: str = "retrieval.passage"
    query_task: str = "retrieval.query"
    thumbnails: bool = True
    metadata_fields: dict[str, str] = field(default_factory=dict)
    codecs: tuple[str, ...] = DEFAULT_CODECS  # of the token vectors (embedded store); first scanned
    muvera: bool = False  # keep MUVERA encodings: the first stage of mode muvera
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IndexSettings:
        if data.get("format") != FORMAT:
            raise InvalidInput(
                f"index format {data.get('format')!r} is not {FORMAT}; rebuild the index"
            )
        names = set(cls.__dataclass_fields__)
        known = {k: v for k, v in data.items() if k in names}
        return cls(**{**known, "codecs": tuple(known.get("codecs", DEFAULT_CODECS))})

    def layout(self) -> Layout:
        muvera = MUVERA_SHAPE if self.muvera and self.multivector_dim is not None else None
        return Layout.build(
            self.dimensions, self.multivector_dim, self.metadata_fields, muvera, self.codecs
        )

    def check_model(self, info: ModelInfo) -> None:
        """Refuse a model other than the one the index was built with."""
        found = (info.name, info.family, info.multivector_dim)
        expected = (self.model, self.family, self.multivector_dim)
        if found != expected or info.dim < self.dimensions:
            raise InvalidInput(
                f"this index was built with {self.model} ({self.family}); the model given is "
                f"{info.name} ({info.family}): open it with the same model"
            )


@dataclass(frozen=True)
class _StoreWrite:
    """One store write of stored embeddings: whole documents, their points and stored rows."""

    doc_ids: list[str]
    points: list[Point]
    multivectors: list[torch.Tensor]


@dataclass(frozen=True)
class Hit:
    """One search result: the entry (a text, an image or a page of a PDF) and its score — cosine for
    ``dense``, the MaxSim sum for the late-interaction modes."""

    id: str
    score: float
    kind: str
    page: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    source: str | None = None
    thumbnail: str | None = None  # a JPEG data URI (``thumbnails=True``)
    similarity: SimilarityMap | None = None  # image and page hits (``maps=True``)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "similarity"}
        data["similarity"] = self.similarity.to_json() if self.similarity is not None else None
        return data


class Index:
    """Texts, images and PDF pages with ids and metadata, in a Qdrant store (see module docstring).

    Open or create one with :meth:`open` / :meth:`create` (or
    :func:`uniembed.retrieval.open_index`). Methods may be called from several threads: writes are
    serialised, searches run alongside them and see each document whole or not at all.
    """

    def __init__(self, store: Store, model: Embedder, settings: IndexSettings) -> None:
        settings.check_model(model.info)
        self.store = store
        self.model = model
        self.settings = settings
        self.retriever = Retriever.open(store)

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(
        cls,
        location: str | Path,
        model: Embedder | str | Path,
        *,
        dimensions: int | None = None,
        pool_factor: int = 1,
        metadata_fields: Mapping[str, str] | None = None,
        document_task: str = "retrieval.passage",
        query_task: str = "retrieval.query",
        thumbnails: bool = True,
        max_rows: int | None = None,
        codecs: Sequence[str] = DEFAULT_CODECS,
        muvera: bool = False,
        client: Any = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> Index:
        """A new, empty index at ``location``: a directory (embedded Qdrant) or a Qdrant URL
        ``http(s)://host:port/collection`` — or a collection name on ``client`` (a QdrantClient).

        ``dimensions``: Matryoshka size of the stored single vectors (default: the model's full
        size). ``pool_factor``: store about 1/factor of each multi-vector's rows (2 or 3 keep most
        of the quality: see docs/search.md). ``metadata_fields``: metadata fields to index for fast
        filters (name → keyword | integer | float | bool). ``max_rows``: cap on stored rows per
        entry (default and maximum: Qdrant's 8,191 for 128-d); bigger pages are pooled to fit.
        ``codecs``: how an embedded index keeps token vectors on disk (see docs/search.md; the
        first is what mode ``multivector`` scans, float16 reranks when kept, ``binary`` serves
        mode ``binary``). ``muvera``: keep MUVERA encodings of the multi-vectors (mode
        ``muvera``, 2,560 float16 values per entry). ``device`` and ``dtype`` load a ``model``
        given by name (as :func:`uniembed.load`).
        """
        embedder, source = _embedder(model, device, dtype)
        settings = _new_settings(
            embedder.info,
            source,
            dimensions,
            pool_factor,
            metadata_fields,
            document_task,
            query_task,
            thumbnails,
            max_rows,
            codecs=codecs,
            muvera=muvera,
        )
        embedder.resolve_tasks(document_task, 1)
        embedder.resolve_tasks(query_task, 1)
        layout, manifest = settings.layout(), {"uniembed_index": settings.to_json()}
        store = create_store(location, layout, manifest, client)
        return cls(store, embedder, settings)

    @classmethod
    def open(
        cls,
        location: str | Path,
        model: Embedder | str | Path | None = None,
        *,
        client: Any = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> Index:
        """The index at ``location`` (see :meth:`create`). Without ``model``, the model it was built
        with is loaded from the source recorded at creation."""
        store = open_store(location, client)
        try:
            settings = _settings(store, location)
            if model is None and settings.model_source is None:
                raise InvalidInput(_no_source(location, settings))
            source = model if model is not None else settings.model_source
            embedder, _ = _embedder(source, device, dtype)
            return cls(store, embedder, settings)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.retriever.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- writes
    def add(
        self,
        inputs: Sequence[Any],
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        batch_items: int = DEFAULT_BATCH_ITEMS,
        limits: InputLimits | None = None,
        on_written: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Add texts (strings), images (PIL, ``{"image": path | URL | bytes | base64}``) and PDFs
        (``{"pdf": …}``, one entry per page) with ``ids`` (default: random) and JSON ``metadata``.
        An id that is already indexed is replaced (delete + add). Returns the ids."""
        if isinstance(inputs, (str, bytes, Mapping, Image.Image)):
            raise InvalidInput("add takes a list of inputs; wrap one input in a list")
        return self.add_documents(
            documents_from_inputs(list(inputs), ids, metadata, limits),
            batch_items=batch_items,
            on_written=on_written,
        )

    def add_path(
        self,
        path: str | Path,
        *,
        batch_items: int = DEFAULT_BATCH_ITEMS,
        limits: InputLimits | None = None,
        on_written: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Add a file, or every text (.txt, .md), image and PDF under a folder; a folder's files are
        named by their path inside it."""
        return self.add_documents(
            documents_from_path(path, limits), batch_items=batch_items, on_written=on_written
        )

    def add_documents(
        self,
        documents: Iterable[Document],
        *,
        batch_items: int = DEFAULT_BATCH_ITEMS,
        on_written: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Encode and write documents, a batch of whole documents at a time (one store operation
        per batch: a crash leaves each document fully there or absent)."""
        written: list[str] = []
        seen: set[str] = set()
        for batch in _batches(documents, batch_items):
            for document in batch:
                if document.id in seen:
                    raise InvalidInput(f"document id {document.id!r} appears twice in one add")
                seen.add(document.id)
            self._write(batch)
            written.extend(d.id for d in batch)
            if on_written is not None:
                on_written(len(batch))
        return written

    def add_vectors(
        self,
        ids: Sequence[str],
        embeddings: Any,
        multivectors: Sequence[Any] | None = None,
        *,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        pages: Sequence[int | None] | None = None,
        patch_grids: Sequence[Any] | None = None,
        texts: Sequence[str | None] | None = None,
        kinds: Sequence[str | None] | None = None,
        thumbnails: Sequence[str | None] | None = None,
        batch_items: int | None = None,
        on_written: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Add entries from stored embeddings (e.g. ``uniembed embed --vectors both``): no model
        runs. Entry ``n`` belongs to document ``ids[n]``; a document's entries are consecutive
        (one per page). Stored exactly as :meth:`add` stores the same items, so both give the same
        search results. Returns the document ids.

        ``embeddings``: single vectors (entries, d ≥ the index's ``dimensions``; wider ones are cut
        and re-normalised). ``multivectors``: one (tokens, multivector_dim) array per entry
        (indexes of models with multi-vectors). Optional, one per entry: ``metadata`` (JSON
        objects), ``pages`` (PDF page numbers from 1, else ``None``), ``patch_grids`` (``(start,
        height, width)`` of an image's patch rows, for similarity maps), ``texts`` (shown with
        hits), ``kinds`` (``text | image | page``; default: ``page`` with a page number, ``image``
        with a patch grid, else ``text``), ``thumbnails`` (JPEG data URIs,
        :func:`~uniembed.retrieval.documents.thumbnail`; kept when the index keeps thumbnails).
        Every argument is checked before anything is written; an id already indexed is replaced.
        Written a batch of whole documents at a time, each of at most ``batch_items`` entries
        (default: up to 131,072 token vectors, ``stored.WRITE_TOKENS``, or 4,096 entries).
        """
        entries = stored_entries(
            ids,
            embeddings,
            multivectors,
            dimensions=self.settings.dimensions,
            multivector_dim=self.settings.multivector_dim,
            metadata=metadata,
            pages=pages,
            patch_grids=patch_grids,
            texts=texts,
            kinds=kinds,
            thumbnails=thumbnails if self.settings.thumbnails else None,
        )
        return self._write_stored(self._store_writes(entries, batch_items), on_written)

    def _store_writes(
        self, entries: list[StoredEntry], batch_items: int | None
    ) -> Iterator[_StoreWrite]:
        """Checked entries as store writes of whole documents (see :meth:`add_vectors`)."""
        items = None if batch_items is None else check_int("batch_items", batch_items)
        for batch in document_batches(entries, items):
            built = [self._entry_point(entry) for entry in batch]
            yield _StoreWrite(
                list(dict.fromkeys(entry.doc_id for entry in batch)),
                [point for point, _ in built],
                [rows for _, rows in built if rows is not None],
            )

    def _write_stored(
        self, batches: Iterable[_StoreWrite], on_written: Callable[[int], None] | None
    ) -> list[str]:
        """Write each batch (one store write each; the next one prepared on a thread while the
        last one is written, its codes sent to disk during the last one's store write); the
        document ids written."""
        retriever = self.retriever
        prepared = read_ahead(
            retriever.prepare(b.doc_ids, b.points, b.multivectors) for b in batches
        )
        written: list[str] = []
        try:
            batch = next(prepared, None)
            while batch is not None:
                error = None
                try:
                    following = next(prepared, None)  # its codes go to disk beside batch's write
                except Exception as failed:  # noqa: BLE001 (raised once batch is written)
                    following, error = None, failed  # a bad batch further on
                retriever.write_prepared(batch, then=following)
                written.extend(batch.doc_ids)
                if on_written is not None:
                    on_written(len(batch.doc_ids))
                if error is not None:
                    raise error
                batch = following
        finally:
            prepared.close()
        return written

    def update(self, doc_id: str, value: Any, metadata: Mapping[str, Any] | None = None) -> None:
        """Replace document ``doc_id`` (delete + add; an interrupted update leaves it absent)."""
        self.add([value], [doc_id], [metadata])

    def delete(self, ids: Sequence[str]) -> None:
        """Remove documents (every page) by id; unknown ids are ignored."""
        self.retriever.delete(_lookup_ids([ids] if isinstance(ids, str) else list(ids)))

    def add_embeddings_file(
        self,
        path: Path,
        *,
        batch_items: int | None = None,
        on_written: Callable[[int], None] | None = None,
    ) -> int:
        """Add every entry of a Parquet file of ``uniembed embed --vectors both``, a store operation
        per batch of whole documents (see :meth:`add_vectors`); returns the
        documents added. A file that records its model and task (``uniembed embed`` does) must
        match the index's model and document task. The next batch is read, checked and built on a
        thread while the last one is written."""
        self._check_embeddings_manifest(path, embeddings_manifest(path))
        try:
            writes = read_ahead(self._file_writes(path, batch_items))  # read on a thread
            return len(self._write_stored(writes, on_written))
        except InvalidInput as error:  # name the file; the entry is counted within its batch
            raise type(error)(f"{path}: {error.message}") from None

    def _file_writes(self, path: Path, batch_items: int | None) -> Iterator[_StoreWrite]:
        """The store writes of a Parquet file of stored embeddings, read and checked batch by
        batch (see :meth:`add_embeddings_file`)."""
        dim = self.settings.multivector_dim
        for batch in read_embeddings(path, with_multivectors=dim is not None,
                                     multivector_dim=dim):  # fmt: skip
            entries = stored_entries(
                batch.ids,
                batch.embeddings,
                batch.multivectors,
                dimensions=self.settings.dimensions,
                multivector_dim=dim,
                multivectors_finite=True,  # read_embeddings checked every value
                **batch.options(),
            )
            yield from self._store_writes(entries, batch_items)

    def _check_embeddings_manifest(self, path: Path, manifest: Mapping[str, Any]) -> None:
        """Refuse embeddings made with another model or another task than the index's documents."""
        settings = self.settings
        model = manifest.get("model")
        if model is not None and model != settings.model:
            raise InvalidInput(
                f"{path} holds embeddings of {model}; this index uses {settings.model}"
            )
        if "task" in manifest:
            made = self.model.resolve_tasks(manifest["task"], 1)[0]
            wanted = self.model.resolve_tasks(settings.document_task, 1)[0]
            if made != wanted:
                raise InvalidInput(
                    f"{path} was embedded with task {made.name}; this index embeds documents with "
                    f"{wanted.name} (embed with --task {settings.document_task})"
                )

    def optimize(self, compact: bool | None = None) -> int:
        """Build the store's vector indexes (HNSW) for what was added (searches work without it)
        and, for an embedded index, reclaim the bytes of replaced and deleted entries'
        multi-vectors when ``compact`` (``None``: once they are a fifth of the entries). Returns
        the bytes freed."""
        return self.retriever.optimize(compact)

    # ----------------------------------------------------------------- reads
    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Entries (texts, images, pages) matching ``filter`` (see :meth:`search`)."""
        return self.store.count(self._filter(filter))

    def get(self, doc_id: str) -> list[Hit]:
        """The entries of document ``doc_id`` (its pages in order); empty if there is none."""
        (doc_id,) = _lookup_ids([doc_id])
        entries = [
            _hit(found)
            for found in self.store.scroll((Match("id", doc_id),), payload=list(ENTRY_FIELDS))
        ]
        return sorted(entries, key=lambda hit: hit.page or 0)

    def search(
        self,
        query: Any,
        *,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        mode: str | None = None,
        candidates: int | None = None,
        maps: bool = False,
        thumbnails: bool = False,
    ) -> list[Hit]:
        """The ``k`` best entries for a text (string) or image (PIL, ``{"image": …}``) query.

        ``mode``: ``dense`` (cosine of single vectors, HNSW), ``multivector`` (exact MaxSim over
        every entry), ``two-stage`` (the ``candidates`` best by dense, reranked by MaxSim; the
        default) or ``binary`` (Hamming MaxSim over sign bits picks ``candidates``, float MaxSim
        reranks). ``filter``: all of ``{"id" | "kind" | "page" | "metadata.<field>": value | [any
        of] | {"gte"|"gt"|"lte"|"lt": number}}``. ``maps``: similarity maps for image and page hits.
        """
        mode, candidates = self._search_options(mode, k, candidates)
        item = _query_item(query)
        dense, multi = self._encode_query(item)
        found = self.retriever.search(
            dense,
            multi,
            k,
            mode=mode,
            candidates=candidates,
            conditions=self._filter(filter),
            payload=self._fields(thumbnails, maps),
            with_multivector=maps,
        )
        labels = self._token_labels(item, multi) if maps else []
        return [_hit(f, multi if maps else None, labels) for f in found]

    def search_vectors(
        self,
        dense: torch.Tensor,
        multi: torch.Tensor | None = None,
        *,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        mode: str | None = None,
        candidates: int | None = None,
    ) -> list[Hit]:
        """:meth:`search` for a query embedded already (with the index's query task): ``dense``
        its single vector (at least ``dimensions`` wide: cut and re-normalised as the index stores
        them), ``multi`` its (tokens, multivector_dim) multi-vector (modes other than dense)."""
        mode, candidates = self._search_options(mode, k, candidates)
        if mode != "dense" and multi is None:
            raise InvalidInput(f"mode {mode!r} needs the query's multi-vector")
        found = self.retriever.search(
            finalize_vectors(dense.float(), self.settings.dimensions),
            None if multi is None else multi.float(),
            k,
            mode=mode,
            candidates=candidates,
            conditions=self._filter(filter),
            payload=list(ENTRY_FIELDS),
        )
        return [_hit(f) for f in found]

    def info(self) -> dict[str, Any]:
        """The manifest settings and the number of entries."""
        return {"entries": self.count(), "settings": self.settings.to_json()}

    # ----------------------------------------------------------------- internals
    def _search_options(self, mode: str | None, k: int, candidates: int | None) -> tuple[str, int]:
        """A search's mode (the default filled in) and candidate count, checked with ``k``."""
        mode = self._check_mode(mode)
        check_int("k", k)
        return mode, check_int(
            "candidates", DEFAULT_CANDIDATES if candidates is None else candidates
        )

    def _check_mode(self, mode: str | None) -> str:
        if self.settings.multivector_dim is None:
            if mode not in (None, "dense"):
                raise InvalidInput(
                    f"this index has single vectors only ({self.settings.model}); use mode 'dense'"
                )
            return "dense"
        mode = mode or DEFAULT_MODE
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        return mode

    def _filter(self, spec: Mapping[str, Any] | None) -> tuple[Condition, ...]:
        """``spec`` as conditions, its values checked against the types of the indexed fields."""
        return parse_filter(spec, dict(self.store.layout.fields))

    def _fields(self, thumbnails: bool, maps: bool) -> list[str]:
        return [
            *ENTRY_FIELDS,
            *(["thumbnail"] if thumbnails else []),
            *(["patch_rows"] if maps else []),
        ]

    def _encode_query(self, item: Item) -> tuple[torch.Tensor, torch.Tensor]:
        """Single vector and multi-vector of the query from one forward pass."""
        both = self.settings.multivector_dim is not None
        result = self.model.encode(
            [item],
            task=self.settings.query_task,
            output="both" if both else "single",
            dimensions=self.settings.dimensions,
        )
        multi = result.multivectors[0] if both and result.multivectors else torch.empty(0)
        return result.embeddings[0], multi

    def _write(self, batch: list[Document]) -> None:
        points, stored = self._encode_documents(batch)
        self.retriever.write([d.id for d in batch], points, stored)

    def _encode_documents(self, batch: list[Document]) -> tuple[list[Point], list[torch.Tensor]]:
        entries = [
            (doc, page, item) for doc in batch for page, item in enumerate(doc.items, start=1)
        ]
        both = self.settings.multivector_dim is not None
        result = self.model.encode(
            [item for _, _, item in entries],
            task=self.settings.document_task,
            output="both" if both else "single",
            dimensions=self.settings.dimensions,
        )
        points, stored = [], []
        for position, (doc, page, item) in enumerate(entries):
            multi = result.multivectors[position] if both and result.multivectors else None
            grid = result.patch_grids[position] if result.patch_grids else None
            point, rows = self._point(doc, page, item, result.embeddings[position], multi, grid)
            points.append(point)
            if rows is not None:
                stored.append(rows)
        return points, stored

    def _point(
        self,
        doc: Document,
        page: int,
        item: Item,
        dense: torch.Tensor,
        multi: torch.Tensor | None,
        grid: PatchGrid | None,
    ) -> tuple[Point, torch.Tensor | None]:
        is_text = isinstance(item, TextItem)
        keep_thumbnail = not is_text and self.settings.thumbnails
        entry = StoredEntry(
            doc_id=doc.id,
            kind=doc.entry_kind,
            page=page if doc.kind == "pdf" else None,
            dense=dense,
            multi=multi,
            grid=grid,
            metadata=doc.metadata,
            text=item.text if isinstance(item, TextItem) else None,
            thumbnail=thumbnail(item.image) if keep_thumbnail else None,
        )
        return self._entry_point(entry, doc.source)

    def _entry_point(
        self, entry: StoredEntry, source: str | None = None
    ) -> tuple[Point, torch.Tensor | None]:
        """The store point of an entry, and its stored multi-vector rows (float16, pooled as the
        index was created to pool)."""
        payload: dict[str, Any] = {
            "id": entry.doc_id,
            "kind": entry.kind,
            "metadata": entry.metadata,
        }
        if entry.page is not None:
            payload["page"] = entry.page
        if source is not None:
            payload["source"] = source
        if entry.text is not None:
            payload["text"] = entry.text
        if entry.thumbnail is not None:
            payload["thumbnail"] = entry.thumbnail
        rows = None
        if entry.multi is not None:
            rows, labels = self._stored_rows(entry.multi)
            if entry.grid is not None:
                grid = entry.grid
                payload["grid"] = [grid.start, grid.height, grid.width]
                if labels is not None:
                    payload["patch_rows"] = labels[grid.start : grid.stop].tolist()
        point = Point(
            point_id(entry.doc_id, entry.page),
            entry.dense.tolist(),
            float16_lists(rows) if rows is not None and self.retriever.tokens is None else None,
            payload,
        )
        return point, rows

    def _stored_rows(self, multi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The float16 rows stored for a (tokens, d) multi-vector, pooled as the index pools
        (float16 given and not pooled: as it is), and the stored row of each token (``None``:
        the rows are the tokens)."""
        settings = self.settings
        assert settings.max_rows is not None
        if settings.pool_factor == 1 and multi.shape[0] <= settings.max_rows:
            return to_float16(multi), None
        wide = multi.float()
        labels = pool_to_fit(
            wide, settings.pool_factor, settings.max_rows, protected=settings.protected_tokens
        )
        return to_float16(pool_by_labels(wide, labels)), labels

    def _token_labels(self, item: Item, multi: torch.Tensor) -> list[str]:
        labels = []
        if isinstance(item, TextItem):
            labels = self.model.token_strings(item.text, self.settings.query_task)
        if len(labels) != multi.shape[0]:
            labels = [f"token {i}" for i in range(multi.shape[0])]
        return labels


def open_index(
    location: str | Path, model: Embedder | str | Path | None = None, **create: Any
) -> Index:
    """Open the index at ``location``, or create it (with ``model`` and the :meth:`Index.create`
    options) when there is none."""
    if store_exists(location):
        return Index.open(location, model, device=create.get("device"))
    if model is None:
        raise InvalidInput(f"no index at {location}; give a model to create one")
    return Index.create(location, model, **create)


def read_settings(location: str | Path) -> IndexSettings:
    """The settings recorded in the index at ``location`` (it is opened and closed again)."""
    store = open_store(location)
    try:
        return _settings(store, location)
    finally:
        store.close()


def _settings(store: Store, location: str | Path) -> IndexSettings:
    """The settings in the manifest of ``store``; a clear error when they cannot be read."""
    try:
        return IndexSettings.from_json(store.manifest()["uniembed_index"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidInput(
            f"the manifest of the index at {location} holds no readable index settings "
            f"({type(error).__name__}: {error}); restore it from a backup or rebuild the index"
        ) from error


def recorded_model(location: str | Path) -> str:
    """What to load the model of the index at ``location`` from (the source recorded at
    creation)."""
    settings = read_settings(location)
    if settings.model_source is None:
        raise InvalidInput(_no_source(location, settings))
    return settings.model_source


def _no_source(location: str | Path, settings: IndexSettings) -> str:
    return (
        f"the index at {location} records no model source (it was created from a model built by "
        f"hand or loaded with adapters); give the model it was built with, {settings.model}: "
        "--model on the command line, model= in Python"
    )


def open_served_index(location: str | Path, embedders: Mapping[str, Embedder]) -> Index:
    """Open the index at ``location`` with the one of the served ``embedders`` it was built with."""
    settings = read_settings(location)
    for embedder in embedders.values():
        if embedder.info.name == settings.model:
            return Index.open(location, embedder)
    raise InvalidInput(
        f"the index at {location} was built with {settings.model}, which is not served "
        f"(serving {', '.join(e.info.name for e in embedders.values())})"
    )


# ----------------------------------------------------------------- helpers
def _embedder(
    model: Embedder | str | Path, device: str | None, dtype: str | None = None
) -> tuple[Embedder, str | None]:
    """An embedder and the source to record (a path or hub id; ``None`` when it is not known: a
    model built by hand, or loaded with adapters or another name)."""
    if isinstance(model, (str, Path)):
        from uniembed.loader import load

        model = load(model, device=device, dtype=dtype)
    return model, model.source


def _new_settings(
    info: ModelInfo,
    source: str | None,
    dimensions: int | None,
    pool_factor: int,
    metadata_fields: Mapping[str, str] | None,
    document_task: str,
    query_task: str,
    thumbnails: bool,
    max_rows: int | None,
    *,
    codecs: Sequence[str],
    muvera: bool,
) -> IndexSettings:
    dimensions = info.dim if dimensions is None else dimensions
    check_dimensions(dimensions, info)  # the rule every encode call follows
    check_int("pool_factor", pool_factor)
    cap = None
    if info.multivector_dim is not None:
        limit = max_rows_for(info.multivector_dim)
        cap = limit if max_rows is None else max_rows
        if not 2 <= cap <= limit:
            raise InvalidInput(f"max_rows must be between 2 and {limit}, got {max_rows!r}")
    return IndexSettings(
        model=info.name,
        family=info.family,
        model_source=source,
        dimensions=dimensions,
        multivector_dim=info.multivector_dim,
        pool_factor=pool_factor,
        max_rows=cap,
        document_task=document_task,
        query_task=query_task,
        thumbnails=thumbnails,
        metadata_fields=dict(metadata_fields or {}),
        codecs=check_codecs(codecs),
        muvera=bool(muvera),
    )


def _lookup_ids(ids: list[Any]) -> list[str]:
    """``ids`` to look up, refused when no document could have them (not strings, not Unicode)."""
    for doc_id in ids:
        if not isinstance(doc_id, str):
            raise InvalidInput(f"document ids are strings, got {type(doc_id).__name__}")
        check_text(doc_id, f"document id {doc_id!r:.80}")
    return ids


def _query_item(query: Any) -> Item:
    """One text or image item from a query (a string, PIL image, ``{"text"|"image": …}`` or
    item)."""
    if isinstance(query, (TextItem, ImageItem)):
        return query
    from uniembed.inputs.parse import coerce_items_with_origin

    if isinstance(query, Mapping) and "pdf" in query:
        raise InvalidInput("a query is a text or an image, not a PDF")
    items, _ = coerce_items_with_origin([query])
    return items[0]


def _hit(found: Found, query: torch.Tensor | None = None, labels: Sequence[str] = ()) -> Hit:
    payload = found.payload
    similarity = None
    grid = payload.get("grid")
    if query is not None and grid is not None and found.multivector is not None:
        scores = patch_scores(query, found.multivector, tuple(grid), payload.get("patch_rows"))
        similarity = SimilarityMap(list(labels), scores)
    return Hit(
        id=payload["id"],
        score=found.score,
        kind=payload.get("kind", "text"),
        page=payload.get("page"),
        metadata=payload.get("metadata") or {},
        text=payload.get("text"),
        source=payload.get("source"),
        thumbnail=payload.get("thumbnail"),
        similarity=similarity,
    )


def _batches(documents: Iterable[Document], items: int) -> Iterator[list[Document]]:
    """Whole documents, about ``items`` entries a batch (a long PDF makes a batch of its own)."""
    batch: list[Document] = []
    size = 0
    for document in documents:
        batch.append(document)
        size += len(document.items)
        if size >= items:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
