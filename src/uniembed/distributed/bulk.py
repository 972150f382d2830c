"""``uniembed embed --ray``: the bulk job with its chunks embedded by an actor pool on Ray.

Reading, resume, writing and the errors file stay with :func:`uniembed.bulk.embed_files` on the
driver; :class:`RayEncoder` only replaces how chunks are encoded. The driver reads records (ids,
texts and file paths: no pixels), skips ids already written, groups them into the local job's chunks
and hands them to a Ray Data pipeline: ``map_batches`` with one chunk per call on a pool of actors,
each of which loads the model once (CPU or ``num_gpus`` per actor) and decodes, plans, runs and
assembles its chunks exactly as the local job does. Results come back in the chunks' order, so the
output files, the resume state and the vectors are the local job's, byte for byte in float32.

Files named by records (images, PDFs) are read by the actors: on a multi-node cluster they must be
at the same path on every node (a shared file system).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from uniembed.bulk.job import (
    DUPLICATE_ID,
    BulkOptions,
    ChunkResult,
    check_embed_options,
    process_chunk,
)
from uniembed.distributed.cluster import LOCAL, connect
from uniembed.errors import InvalidInput, UniembedError

if TYPE_CHECKING:
    from uniembed.bulk.records import Record
    from uniembed.embedder import Embedder


@dataclass(frozen=True)
class ModelSpec:
    """How each actor loads its model (the driver loads none): :func:`uniembed.load`'s arguments."""

    source: str
    device: str | None = None
    dtype: str | None = None
    adapters: tuple[tuple[str, str], ...] = ()

    def load(self) -> Embedder:
        import uniembed

        return uniembed.load(
            self.source, device=self.device, dtype=self.dtype, adapters=dict(self.adapters)
        )


@dataclass(frozen=True)
class ActorPool:
    """The embedders of a job: how many, and the CPUs and GPUs each one reserves."""

    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise InvalidInput(f"a Ray job needs at least 1 actor, got {self.actors}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise InvalidInput("CPUs per actor must be > 0 and GPUs per actor >= 0")


@dataclass
class _Chunk:
    """A chunk as the driver screened it: what goes to an actor, what the driver already knows."""

    records: int
    to_encode: list[Record]
    failures: list[tuple[str, str]]
    skipped: int


class RayEncoder:
    """A :class:`uniembed.bulk.job.ChunkEncoder` whose chunks run on a Ray cluster.

    ``address``: ``"local"`` starts a cluster in this process, ``"auto"`` joins this node's, or a
    ``HOST:PORT`` / ``ray://`` address (see :func:`uniembed.distributed.connect`).
    """

    def __init__(
        self, spec: ModelSpec, pool: ActorPool = ActorPool(), address: str | None = LOCAL
    ) -> None:
        self.spec = spec
        self.pool = pool
        self.address = address

    @property
    def model_name(self) -> str:
        from uniembed.models.registry import served_model_name

        return served_model_name(self.spec.source)

    def check(self, options: BulkOptions) -> None:
        """Nothing to check on the driver: each actor checks the options against its model first,
        and the job stops with that error on the first chunk (no model is loaded here)."""

    def encode(
        self, chunks: Iterator[list[Record]], options: BulkOptions, done: set[str]
    ) -> Iterator[ChunkResult]:
        screened = list(_screen(chunks, done))
        if not screened:
            return
        ray = connect(self.address)
        _ordered_quietly(ray)  # before the dataset is made: it keeps the context it was made in
        dataset = ray.data.from_items(
            [{"records": pickle.dumps(chunk.to_encode)} for chunk in screened],
            override_num_blocks=len(screened),
        )
        # a PDF's finished pages are known only once it is read, so the actors get those ids
        page_ids = {i for i in done if "#page=" in i}
        embedded = dataset.map_batches(
            _ChunkEmbedder,
            fn_constructor_kwargs={"spec": self.spec, "options": options, "done_pages": page_ids},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.pool.actors),
            num_cpus=self.pool.cpus_per_actor,
            num_gpus=self.pool.gpus_per_actor,
        )
        results = embedded.iter_rows()
        for chunk, row in zip(screened, results):
            outcome = pickle.loads(row["result"])
            if isinstance(outcome, str):
                raise InvalidInput(outcome)
            yield ChunkResult(
                chunk.records,
                outcome.rows,
                chunk.failures + outcome.failures,
                chunk.skipped + outcome.skipped,
            )


def _screen(chunks: Iterator[list[Record]], done: set[str]) -> Iterator[_Chunk]:
    """Take out what needs no model: texts and images already written (counted as skipped) and
    repeated record ids (failures, as in the local job; repeated PDF page ids are found by the
    actor, which reads the PDF)."""
    seen: set[str] = set()
    for chunk in chunks:
        screened = _Chunk(len(chunk), [], [], 0)
        for record in chunk:
            if record.id in seen:
                screened.failures.append((record.id, DUPLICATE_ID))
            elif record.id in done and record.error is None and not record.is_pdf:
                screened.skipped += 1
            else:
                screened.to_encode.append(record)
            seen.add(record.id)
        yield screened


def _ordered_quietly(ray: Any) -> None:
    """Results in input order (so resume sees whole chunks written in order); Ray Data's progress
    reports off (the command shows its own bar)."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


class _ChunkEmbedder:
    """A Ray Data actor: one model, loaded once; each call embeds one chunk like the local job."""

    def __init__(self, spec: ModelSpec, options: BulkOptions, done_pages: set[str]) -> None:
        _one_torch_thread_per_cpu()
        self.embedder = spec.load()
        self.options = options
        self.done = done_pages
        try:
            check_embed_options(self.embedder, options)
            self.error: str | None = None
        except UniembedError as exc:
            self.error = exc.message

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [self._embed(pickle.loads(blob)) for blob in batch["records"]]
        return {"result": np.array([pickle.dumps(r) for r in results], dtype=object)}

    def _embed(self, records: list[Record]) -> ChunkResult | str:
        if self.error is not None:
            return self.error
        return process_chunk(self.embedder, records, self.options, self.done, set())


def _one_torch_thread_per_cpu() -> None:
    """Ray sets ``OMP_NUM_THREADS`` to the actor's CPUs; torch follows it only when told."""
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
