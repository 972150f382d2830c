"""The one batching loop: rows of any caller in, outputs out, in token-budgeted batches.

Every caller goes through an :class:`Engine` (one per loaded model, owned by its
:class:`~uniembed.embedder.Embedder`):

* :meth:`Engine.run` — synchronous. While the worker thread runs (a server), the rows join its
  queue and share batches with everyone else's; otherwise they run on the calling thread.
* :meth:`Engine.submit` — asynchronous: the rows join the queue as one :class:`Job` whose
  ``future`` receives their outputs in row order (:meth:`Engine.arun` awaits it).

The worker takes every queued row — any mix of jobs, tasks and modalities — groups them with
:func:`~uniembed.engine.planning.plan_batches` under the token budget and runs each batch: packed
(the model's ``forward_packed``, padding-free) when the policy says ``packed`` and the model can,
else padded (``forward``). A round (all rows queued when the worker wakes) finishes before the next
starts, so long rows cannot starve short ones.

* A cancelled job (its client left) has its queued rows removed at once; rows already taken into
  the current round are skipped before their batch runs.
* A full queue refuses new jobs (:class:`~uniembed.errors.Overloaded`).
* When ``forward`` raises, every job with a row in that batch fails with
  :class:`~uniembed.errors.BatchFailed` (the cause chained, and logged by the worker); the worker
  keeps serving. A synchronous :meth:`Engine.run` on the calling thread raises the model's own
  exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import torch

from uniembed.engine.planning import (
    DEFAULT_MAX_GATHER_SECONDS,
    DEFAULT_MAX_QUEUE_ROWS,
    BatchPolicy,
    batch_tokens,
    plan_batches,
)
from uniembed.engine.stats import BatchStats, EngineObserver, EngineTotals
from uniembed.errors import BatchFailed, NotReady, Overloaded, UniembedError
from uniembed.models.base import Row, RowOutput

logger = logging.getLogger("uniembed.engine")

Forward = Callable[[Sequence[Row]], list[RowOutput]]
ProgressCallback = Callable[[int], None]  # rows finished by the last batch
BATCH_FAILED_MESSAGE = "the model failed on a batch holding these inputs; the cause is logged"

GATHER_SHARE = 0.2  # a gathering wait is at most this share of the last round's duration
GATHER_SHARE_ROWS = 0.25  # only rounds of at most this share of max_batch_size rows gather


class Job:
    """The rows of one call and the future that receives their outputs, in row order."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = list(rows)
        self.future: Future[list[RowOutput]] = Future()
        self._outputs: list[RowOutput | None] = [None] * len(self.rows)
        self._remaining = len(self.rows)

    @property
    def finished(self) -> bool:
        """Done, failed or cancelled: its remaining rows need not run."""
        return self.future.done()

    def deliver(self, index: int, output: RowOutput) -> None:
        """Store one row's output; the last one resolves the future."""
        self._outputs[index] = output
        self._remaining -= 1
        if self._remaining == 0:
            self._settle(lambda: self.future.set_result(self._outputs))  # type: ignore[arg-type]

    def fail(self, error: BaseException) -> None:
        self._settle(lambda: self.future.set_exception(error))

    def _settle(self, action: Callable[[], None]) -> None:
        try:
            action()
        except InvalidStateError:  # cancelled (client left) or already failed: nobody is waiting
            pass


QueuedRow = tuple[Job, int]  # a job and the index of one of its rows


@dataclass
class _LastRound:
    """What the worker remembers of its last round, to decide how long to gather the next one."""

    ended: float = 0.0  # time.monotonic() at its end
    seconds: float = 0.0  # how long it ran
    rows: int = 0  # rows it delivered
    arrivals_at_end: int = 0  # rows submitted since the engine started, counted at its end


class Engine:
    """Batches and runs the rows of every caller of one model; see the module docstring."""

    def __init__(
        self,
        forward: Forward,
        policy: BatchPolicy | None = None,
        *,
        name: str = "model",
        forward_packed: Forward | None = None,
    ) -> None:
        """``forward`` runs a padded batch; ``forward_packed`` (if the model can pack) a packed
        one, used for policies with ``packed=True``."""
        self.name = name
        self.policy = policy or BatchPolicy()
        self.totals = EngineTotals()
        self._forward = forward
        self._forward_packed = forward_packed
        self._observer = EngineObserver()
        self._max_queue_rows = DEFAULT_MAX_QUEUE_ROWS
        self._torch_threads: int | None = None
        self._max_gather = 0.0
        self._arrivals = 0  # rows submitted so far
        self._last_round = _LastRound()
        self._pending: deque[QueuedRow] = deque()
        self._condition = threading.Condition()
        self._forward_lock = threading.Lock()  # one batch at a time, whichever thread runs it
        self._accepting = False
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(
        self,
        *,
        max_queue_rows: int = DEFAULT_MAX_QUEUE_ROWS,
        torch_threads: int | None = None,
        observer: EngineObserver | None = None,
        max_gather_seconds: float = DEFAULT_MAX_GATHER_SECONDS,
    ) -> None:
        """Start the worker thread (idempotent). ``torch_threads``: CPU threads of its torch ops
        (None: the count torch has now); see :mod:`uniembed.engine.threads`. ``max_gather_seconds``:
        how long a round may wait for the callers it just served to come back (0: never wait);
        see :meth:`_gather`."""
        with self._condition:
            if self.is_running:
                return
            self._max_gather = max_gather_seconds
            self._max_queue_rows = max_queue_rows
            self._torch_threads = torch_threads or torch.get_num_threads()
            self._observer = observer or EngineObserver()
            self._accepting = True
            self._thread = threading.Thread(
                target=self._work, name=f"uniembed-engine-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, fail the queued ones with NotReady and wait for the running batch."""
        with self._condition:
            self._accepting = False
            self._fail_pending(NotReady("the server is shutting down"))
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def is_running(self) -> bool:
        return self._accepting and self._thread is not None and self._thread.is_alive()

    @property
    def queued_rows(self) -> int:
        return len(self._pending)

    # ----------------------------------------------------------------- callers
    def run(
        self,
        rows: Sequence[Row],
        on_batch: ProgressCallback | None = None,
        policy: BatchPolicy | None = None,
    ) -> list[RowOutput]:
        """The outputs of ``rows`` in order: through the worker's queue while it runs, else here.

        ``on_batch`` is called with the rows each batch finished (on the queue: once, at the end).
        ``policy`` replaces the engine's for this call when it runs here (the official
        ``batch_size``).
        """
        if self.is_running:
            outputs = self._wait(self.submit(rows))
            if on_batch is not None:
                on_batch(len(rows))
            return outputs
        job = Job(rows)
        error = self._run_round(
            [(job, index) for index in range(len(job.rows))], policy or self.policy, on_batch
        )
        if error is not None:
            raise error  # here the caller sees the model's own exception, with its traceback
        return job.future.result()

    def submit(self, rows: Sequence[Row]) -> Job:
        """Queue a job's rows, or refuse with Overloaded (queue full) / NotReady (not running).

        A job larger than the whole queue is still accepted when the queue is empty, so that no
        valid job is refused forever.
        """
        job = Job(rows)
        with self._condition:
            if not self.is_running:
                raise NotReady(f"model {self.name!r} is not ready; retry shortly")
            queued = len(self._pending)
            if queued and queued + len(job.rows) > self._max_queue_rows:
                self.totals.rejected_jobs += 1
                self._observer.job_rejected()
                raise Overloaded(
                    f"model {self.name!r} has {queued} inputs queued (limit "
                    f"{self._max_queue_rows}); retry shortly"
                )
            self._pending.extend((job, i) for i in range(len(job.rows)))
            self._arrivals += len(job.rows)
            self._observer.queue_changed(len(self._pending))
            self._condition.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop a job whose caller left: its queued rows never run."""
        job.future.cancel()
        with self._condition:
            kept = deque(row for row in self._pending if row[0] is not job)
            dropped = len(self._pending) - len(kept)
            self._pending = kept
            self._observer.queue_changed(len(self._pending))
        self._count_dropped(dropped)

    async def arun(self, rows: Sequence[Row]) -> list[RowOutput]:
        """Submit and await the outputs; cancelling the awaiting task cancels the job."""
        job = self.submit(rows)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            self.cancel(job)  # wrap_future has cancelled job.future already; its queued rows go too
            raise

    def _wait(self, job: Job) -> list[RowOutput]:
        try:
            return job.future.result()
        finally:
            if not job.finished:  # interrupted while waiting (KeyboardInterrupt)
                self.cancel(job)

    # ----------------------------------------------------------------- the loop
    def _work(self) -> None:
        torch.set_num_threads(self._torch_threads or torch.get_num_threads())
        try:
            while (rows := self._next_round()) is not None:
                started = time.monotonic()
                error = self._run_round(rows, self.policy, None)
                if error is not None:
                    logger.error("model %r failed on a batch", self.name, exc_info=error)
                with self._condition:
                    ended = time.monotonic()
                    self._last_round = _LastRound(ended, ended - started, len(rows), self._arrivals)
        finally:
            with self._condition:
                self._accepting = False
                self._fail_pending(NotReady(f"the worker of model {self.name!r} stopped"))

    def _next_round(self) -> list[QueuedRow] | None:
        with self._condition:
            while self._accepting and not self._pending:
                self._condition.wait()
            self._gather()
            if not self._accepting:
                return None
            rows = list(self._pending)
            self._pending.clear()
            self._observer.queue_changed(0)
            return rows

    def _gather(self) -> None:
        """Wait (lock held) for the callers the last round served to send their next rows.

        Closed-loop callers (a client that sends its next request when the last one is answered)
        come back a few milliseconds after a round ends. Without waiting, two halves of them
        alternate for ever: one half's rows run while the other half's responses travel, so every
        batch is half as large as it could be. So after a small round (at most ``GATHER_SHARE_ROWS``
        of ``max_batch_size`` rows: under heavy load batches are large anyway, and an idle forward
        would cost more than it gains), the next round waits until as many rows have arrived since
        that round ended as it delivered, at most ``min(max_gather_seconds, GATHER_SHARE × its
        duration)`` after it ended, and not while a full batch is queued. One-off callers thus cost
        a round at most that much delay.
        """
        last = self._last_round
        small = 0 < last.rows <= GATHER_SHARE_ROWS * self.policy.max_batch_size
        if self._max_gather <= 0 or not small:
            return
        deadline = last.ended + min(self._max_gather, GATHER_SHARE * last.seconds)
        while (
            self._accepting
            and self._arrivals - last.arrivals_at_end < last.rows
            and len(self._pending) < self.policy.max_batch_size
            and (remaining := deadline - time.monotonic()) > 0
        ):
            self._condition.wait(remaining)

    def _run_round(
        self, rows: list[QueuedRow], policy: BatchPolicy, on_batch: ProgressCallback | None
    ) -> Exception | None:
        """Run ``rows`` in planned batches; return the last model failure (its jobs have failed)."""
        lengths = [job.rows[index].num_tokens for job, index in rows]
        if policy.packed and self._forward_packed is None:  # this model only runs padded batches
            policy = dataclasses.replace(policy, packed=False)
        error = None
        for batch in plan_batches(lengths, policy):
            live = [rows[k] for k in batch if not rows[k][0].finished]
            self._count_dropped(sum(1 for k in batch if rows[k][0].future.cancelled()))
            if live:
                error = self._run_batch(live, policy.packed) or error
            if on_batch is not None:
                on_batch(len(batch))
        return error

    def _run_batch(self, rows: list[QueuedRow], packed: bool) -> Exception | None:
        batch = [job.rows[index] for job, index in rows]
        lengths = [row.num_tokens for row in batch]
        forward = self._forward_packed if packed and self._forward_packed else self._forward
        try:
            with self._forward_lock, torch.inference_mode():
                started = time.perf_counter()
                outputs = forward(batch)
                seconds = time.perf_counter() - started
            if len(outputs) != len(rows):
                raise RuntimeError(f"forward returned {len(outputs)} outputs for {len(rows)} rows")
        except Exception as error:  # noqa: BLE001 (any model failure: fail this batch's jobs, go on)
            self.totals.failed_batches += 1
            self._observer.batch_failed(len(rows))
            for job in {id(job): job for job, _ in rows}.values():
                failure = BatchFailed(BATCH_FAILED_MESSAGE)
                failure.__cause__ = error
                job.fail(failure)
            return error
        stats = BatchStats(len(rows), sum(lengths), batch_tokens(lengths, packed), seconds)
        self.totals.add(stats)
        self._observer.batch_finished(stats)
        for (job, index), output in zip(rows, outputs):
            job.deliver(index, output)
        return None

    # ----------------------------------------------------------------- helpers
    def _count_dropped(self, count: int) -> None:
        if count:
            self.totals.dropped_rows += count
            self._observer.rows_dropped(count)

    def _fail_pending(self, error: UniembedError) -> None:
        """Fail every queued job (lock held)."""
        for job in {id(job): job for job, _ in self._pending}.values():
            job.fail(error)
        self._pending.clear()
        self._observer.queue_changed(0)
