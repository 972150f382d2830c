"""``uniembed embed --ray``: the bulk job with its chunks embedded by a pool of actors on Ray.

Reading, resume, writing and the errors file stay with :func:`uniembed.bulk.embed_files` on the
driver; :class:`RayEncoder` only replaces how chunks are encoded. The driver streams: it reads
records (ids, texts and file paths: no pixels) chunk by chunk, skips ids already written, sends each
chunk to the least busy of its actors and keeps at most ``ActorPool.window`` chunks in flight; it
waits (blocked, not polling) for the oldest one and writes results in the chunks' order before it
reads further. Its memory is the window's, not the corpus's (plus the ids seen, to find repeats).

Each actor loads the model once (CPU or ``num_gpus`` per actor; actors are spread over the nodes)
and decodes, plans, runs and assembles its chunks exactly as the local job does, so the output
files, the resume state and the vectors are the local job's, byte for byte in float32.

An actor that dies (its node lost, its process killed) is restarted by Ray wherever the cluster has
room, and the chunks it held are run again (:data:`RESTARTS` times per actor); results are taken in
order, so nothing is written twice or skipped. Past that, the job stops with
:class:`~uniembed.errors.BatchFailed` and everything before the lost chunk is written: rerun with
``--resume``.

Files named by records (images, PDFs) are read by the actors: on a multi-node cluster they must be
at the same path on every node (a shared file system).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uniembed.bulk import (
    BulkOptions,
    ChunkResult,
    Screened,
    check_embed_options,
    process_chunk,
    screen,
)
from uniembed.distributed.cluster import LOCAL, connect
from uniembed.errors import BatchFailed, InvalidInput, UniembedError

if TYPE_CHECKING:
    from uniembed.bulk import Record
    from uniembed.embedder import Embedder

RESTARTS = 3  # times Ray restarts a lost actor and retries its chunks before the job stops


@dataclass(frozen=True)
class ModelSpec:
    """How each actor loads its model (the driver loads none): :func:`uniembed.load`'s arguments."""

    source: str
    device: str | None = None
    dtype: str | None = None
    adapters: tuple[tuple[str, str], ...] = ()

    def load(self) -> Embedder:
        from uniembed.loader import load

        return load(self.source, device=self.device, dtype=self.dtype, adapters=dict(self.adapters))


@dataclass(frozen=True)
class ActorPool:
    """The embedders of a job: how many, the CPUs and GPUs each one reserves, and how many chunks
    each may hold at once (``chunks_per_actor``: one running, the next already sent)."""

    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    chunks_per_actor: int = 2

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise InvalidInput(f"a Ray job needs at least 1 actor, got {self.actors}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise InvalidInput("CPUs per actor must be > 0 and GPUs per actor >= 0")
        if self.chunks_per_actor < 1:
            raise InvalidInput(f"chunks per actor must be at least 1, got {self.chunks_per_actor}")

    @property
    def window(self) -> int:
        """Chunks in flight at most: what bounds the driver's memory."""
        return self.actors * self.chunks_per_actor


@dataclass
class _Chunk:
    """A chunk in flight: what the driver screened, and where its encoding runs."""

    screened: Screened  # its records kept until the result arrives: sent again if the actor is lost
    result: Any = None  # the actor's ObjectRef once sent
    actor: int = -1


@dataclass
class _Pool:
    """The actors of one job and the chunks each one holds."""

    actors: list[Any]
    busy: list[int] = field(default_factory=list)

    def least_busy(self) -> int:
        return min(range(len(self.actors)), key=self.busy.__getitem__)


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
        from uniembed.models.registry import model_name_of

        return model_name_of(self.spec.source)

    def check(self, options: BulkOptions) -> None:
        """Nothing to check on the driver: each actor loads the model and checks the options
        first, and the job stops with that error on the first chunk (no model is loaded here)."""

    def encode(
        self, chunks: Iterator[list[Record]], options: BulkOptions, done: set[str]
    ) -> Iterator[ChunkResult]:
        screened = _screen(chunks, done)
        first = next(screened, None)
        if first is None:
            return
        ray = connect(self.address)
        pool = self._start(ray, options, done)
        in_flight: deque[_Chunk] = deque()
        try:
            for chunk in _chain(first, screened):
                _send(pool, chunk)
                in_flight.append(chunk)
                if len(in_flight) >= self.pool.window:
                    yield _receive(ray, pool, in_flight.popleft())
            while in_flight:
                yield _receive(ray, pool, in_flight.popleft())
        finally:
            for actor in pool.actors:
                ray.kill(actor)

    def _start(self, ray: Any, options: BulkOptions, done: set[str]) -> _Pool:
        """The job's actors, spread over the nodes; each loads the model as it starts."""
        _check_room(ray.cluster_resources(), self.pool)
        # a PDF's finished pages are known only once it is read, so the actors get those ids
        page_ids = {i for i in done if "#page=" in i}
        actor_class = ray.remote(_ChunkEmbedder).options(
            num_cpus=self.pool.cpus_per_actor,
            num_gpus=self.pool.gpus_per_actor,
            scheduling_strategy="SPREAD",
            max_restarts=RESTARTS,
            max_task_retries=RESTARTS,
        )
        actors = [actor_class.remote(self.spec, options, page_ids) for _ in range(self.pool.actors)]
        return _Pool(actors, [0] * len(actors))


def _check_room(cluster: dict[str, float], pool: ActorPool) -> None:
    """Refuse a pool the cluster cannot hold: its actors would wait for nodes that never come.

    >>> _check_room({"CPU": 8.0, "GPU": 2.0}, ActorPool(actors=4, gpus_per_actor=1))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    uniembed.errors.InvalidInput: 4 actors with 1 GPU each need 4 GPUs; the cluster has 2 (...)
    """
    for resource, each in (("CPU", pool.cpus_per_actor), ("GPU", pool.gpus_per_actor)):
        have = cluster.get(resource, 0.0)
        if pool.actors * each > have:
            raise InvalidInput(
                f"{pool.actors} actors with {each:g} {resource} each need "
                f"{pool.actors * each:g} {resource}s; the cluster has {have:g} (start its nodes "
                f"before the job, or lower --ray-actors or --ray-{resource.lower()}s-per-actor)"
            )


def _chain(first: _Chunk, rest: Iterator[_Chunk]) -> Iterator[_Chunk]:
    yield first
    yield from rest


def _send(pool: _Pool, chunk: _Chunk) -> None:
    """Hand a chunk with work in it to the actor holding the fewest chunks."""
    if not chunk.screened.to_encode:
        return
    chunk.actor = pool.least_busy()
    pool.busy[chunk.actor] += 1
    chunk.result = pool.actors[chunk.actor].embed.remote(chunk.screened.to_encode)


def _receive(ray: Any, pool: _Pool, chunk: _Chunk) -> ChunkResult:
    """Wait (blocked) for a chunk's result and merge it with what the driver screened."""
    if chunk.result is None:
        return chunk.screened.merged(ChunkResult(0, [], [], 0))
    outcome = _result(ray, pool, chunk)
    pool.busy[chunk.actor] -= 1
    if isinstance(outcome, UniembedError):
        raise outcome
    result = chunk.screened.merged(outcome)
    chunk.screened.to_encode = []
    return result


def _result(ray: Any, pool: _Pool, chunk: _Chunk) -> Any:
    """The actor's answer for ``chunk``. An actor that Ray reports unavailable (restarting after
    its node was lost, say) may or may not have run the chunk: embedding is idempotent, so the chunk
    is sent again, to the least busy actor, up to ``RESTARTS`` times."""
    for attempt in range(RESTARTS + 1):
        try:
            return ray.get(chunk.result)
        except ray.exceptions.ActorUnavailableError as exc:
            if attempt == RESTARTS:
                raise _lost(exc) from exc
            pool.busy[chunk.actor] -= 1
            _send(pool, chunk)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            raise _lost(exc) from exc
        except ray.exceptions.RayTaskError as exc:  # the model failed, or uniembed differs
            raise BatchFailed(
                f"a chunk failed on its Ray actor ({type(exc.cause).__name__}: {exc.cause}); the "
                "chunks before it are written: fix the cause (the same uniembed on every node?) "
                "and rerun the command with --resume"
            ) from exc
    raise AssertionError("unreachable")  # the loop returns or raises


def _lost(exc: Exception) -> BatchFailed:
    return BatchFailed(
        f"a Ray actor or its result was lost past {RESTARTS} restarts ({type(exc).__name__}); "
        "the chunks before this one are written: rerun the command with --resume"
    )


def _screen(chunks: Iterator[list[Record]], done: set[str]) -> Iterator[_Chunk]:
    """Each chunk screened on the driver as the local job screens it (:func:`uniembed.bulk.screen`);
    only what is left goes to an actor."""
    seen: set[str] = set()
    for chunk in chunks:
        yield _Chunk(screen(chunk, done, seen))


class _ChunkEmbedder:
    """A Ray actor: one model, loaded once; each call embeds one chunk like the local job."""

    def __init__(self, spec: ModelSpec, options: BulkOptions, done_pages: set[str]) -> None:
        _one_torch_thread_per_cpu()
        self.options = options
        self.done = done_pages
        self.error: UniembedError | None = None
        try:
            self.embedder = spec.load()
            check_embed_options(self.embedder, options)
        except UniembedError as exc:  # a model it cannot load, options it refuses
            self.error = exc

    def embed(self, records: list[Record]) -> ChunkResult | UniembedError:
        """The chunk's result, or why this actor cannot embed anything."""
        if self.error is not None:
            return self.error
        return process_chunk(self.embedder, records, self.options, self.done, set())


def _one_torch_thread_per_cpu() -> None:
    """Ray sets ``OMP_NUM_THREADS`` to the actor's CPUs; torch follows it only when told."""
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
