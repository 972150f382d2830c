"""Dynamic batching: one bounded queue and one worker thread per model, shared by all requests.

A request's rows (already validated and prepared by :meth:`Embedder.plan`) join the model's queue as
one :class:`Job`. The worker takes every queued row — any mix of requests, tasks and modalities —
groups them with :func:`uniembed.engine.plan_batches` under the token budget, runs ``forward`` on
each batch and hands every output back to the job it belongs to. A round (all rows queued when the
worker wakes) finishes before the next starts, so long rows cannot starve short ones.

* A job whose client left is cancelled: its queued rows are removed at once, and rows already taken
  into the current round are skipped before their batch runs.
* A full queue refuses new jobs (:class:`~uniembed.errors.Overloaded`, HTTP 429).
* When ``forward`` raises, every job with a row in that batch fails with
  :class:`~uniembed.server.errors.BatchFailed`; the worker keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError

import torch

from uniembed.engine import BatchPolicy, plan_batches
from uniembed.errors import NotReady, Overloaded, UniembedError
from uniembed.models.base import Row, RowOutput
from uniembed.server.errors import BatchFailed
from uniembed.server.metrics import Metrics

logger = logging.getLogger("uniembed.server")

Forward = Callable[[Sequence[Row]], list[RowOutput]]
BATCH_FAILED_MESSAGE = "the model failed while embedding a batch holding this request's inputs; see the server log"


class Job:
    """The rows of one request and the future that receives their outputs, in row order."""

    def __init__(self, sequences: Sequence[Row]) -> None:
        self.sequences = list(sequences)
        self.future: Future[list[RowOutput]] = Future()
        self._outputs: list[RowOutput | None] = [None] * len(self.sequences)
        self._remaining = len(self.sequences)

    @property
    def finished(self) -> bool:
        """Done, failed or cancelled: its remaining rows need not run."""
        return self.future.done()

    def deliver(self, index: int, output: RowOutput) -> None:
        """Store one row's output; the last one resolves the future (worker thread only)."""
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


Row = tuple[Job, int]


class Batcher:
    """The queue and worker thread of one model."""

    def __init__(
        self,
        name: str,
        forward: Forward,
        policy: BatchPolicy,
        max_queue_rows: int,
        metrics: Metrics,
        torch_threads: int | None = None,
    ) -> None:
        """``torch_threads``: CPU threads of the worker's torch ops (None: torch's default at creation);
        see :mod:`uniembed.server.threads`."""
        self.name = name
        self.torch_threads = torch_threads or torch.get_num_threads()
        self.forward = forward
        self.policy = policy
        self.max_queue_rows = max_queue_rows
        self.metrics = metrics.for_model(name)
        self._pending: deque[Row] = deque()
        self._condition = threading.Condition()
        self._accepting = False
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._condition:
            if self.is_running:
                return
            self._accepting = True
            self._thread = threading.Thread(target=self._work, name=f"uniembed-batcher-{self.name}", daemon=True)
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

    # ----------------------------------------------------------------- requests (event loop side)
    def submit(self, sequences: Sequence[Row]) -> Job:
        """Queue a job's rows, or refuse with Overloaded (queue full) / NotReady (not running).

        A job larger than the whole queue is still accepted when the queue is empty, so that no valid
        request is refused forever.
        """
        job = Job(sequences)
        with self._condition:
            if not self.is_running:
                raise NotReady(f"model {self.name!r} is not ready; retry shortly")
            queued = len(self._pending)
            if queued and queued + len(job.sequences) > self.max_queue_rows:
                self.metrics.rejected.inc()
                raise Overloaded(
                    f"model {self.name!r} has {queued} inputs queued (limit {self.max_queue_rows}); retry shortly"
                )
            self._pending.extend((job, i) for i in range(len(job.sequences)))
            self._update_depth()
            self._condition.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop a job whose client left: its queued rows never run."""
        job.future.cancel()
        with self._condition:
            kept = deque(row for row in self._pending if row[0] is not job)
            dropped = len(self._pending) - len(kept)
            self._pending = kept
            self._update_depth()
        if dropped:
            self.metrics.rows_dropped.inc(dropped)

    async def run(self, sequences: Sequence[Row]) -> list[RowOutput]:
        """Submit and await the outputs; cancelling the awaiting task cancels the job."""
        job = self.submit(sequences)
        try:
            return await asyncio.wrap_future(job.future)
        finally:
            if not job.finished:
                self.cancel(job)

    # ----------------------------------------------------------------- worker thread
    def _work(self) -> None:
        torch.set_num_threads(self.torch_threads)
        try:
            while True:
                rows = self._next_round()
                if rows is None:
                    return
                self._run_round(rows)
        finally:
            with self._condition:
                self._accepting = False
                self._fail_pending(NotReady(f"the worker of model {self.name!r} stopped"))

    def _next_round(self) -> list[Row] | None:
        with self._condition:
            while self._accepting and not self._pending:
                self._condition.wait()
            if not self._accepting:
                return None
            rows = list(self._pending)
            self._pending.clear()
            self._update_depth()
            return rows

    def _run_round(self, rows: list[Row]) -> None:
        lengths = [job.sequences[index].num_tokens for job, index in rows]
        for batch in plan_batches(lengths, self.policy):
            live = [rows[k] for k in batch if not rows[k][0].finished]
            skipped = sum(1 for k in batch if rows[k][0].future.cancelled())
            if skipped:
                self.metrics.rows_dropped.inc(skipped)
            if live:
                self._run_batch(live)

    def _run_batch(self, rows: list[Row]) -> None:
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                outputs = self.forward([job.sequences[index] for job, index in rows])
            if len(outputs) != len(rows):
                raise RuntimeError(f"forward returned {len(outputs)} outputs for {len(rows)} rows")
        except Exception:  # any model failure: log it, fail this batch's requests, keep the worker alive
            logger.exception("model %r failed on a batch of %d rows", self.name, len(rows))
            self.metrics.batch_failures.inc()
            for job in {id(job): job for job, _ in rows}.values():
                job.fail(BatchFailed(BATCH_FAILED_MESSAGE))
            return
        self.metrics.forward_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(rows))
        self.metrics.rows.inc(len(rows))
        for (job, index), output in zip(rows, outputs):
            job.deliver(index, output)

    # ----------------------------------------------------------------- helpers (lock held)
    def _fail_pending(self, error: UniembedError) -> None:
        for job in {id(job): job for job, _ in self._pending}.values():
            job.fail(error)
        self._pending.clear()
        self._update_depth()

    def _update_depth(self) -> None:
        self.metrics.queue_depth.set(len(self._pending))
