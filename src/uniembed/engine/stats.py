"""What the engine counts: per-batch statistics, running totals, and a hook for exporters."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BatchStats:
    """One forward batch: its rows, real tokens, the tokens it ran on (real plus padding; equal to
    the real ones when packed) and the seconds ``forward`` took."""

    rows: int
    tokens: int
    padded_tokens: int
    seconds: float

    @property
    def padding(self) -> float:
        """Share of the padded batch that is padding (0 for equal lengths).

        >>> BatchStats(rows=2, tokens=6, padded_tokens=8, seconds=0.1).padding
        0.25
        """
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass
class EngineTotals:
    """Running totals since the engine was made (read them before and after a call to diff)."""

    batches: int = 0
    rows: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    forward_seconds: float = 0.0
    failed_batches: int = 0
    dropped_rows: int = 0
    rejected_jobs: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, batch: BatchStats) -> None:
        with self._lock:
            self.batches += 1
            self.rows += batch.rows
            self.tokens += batch.tokens
            self.padded_tokens += batch.padded_tokens
            self.forward_seconds += batch.seconds


class EngineObserver:
    """Receives the engine's events as they happen (the server's Prometheus metrics subclass it).

    Every method is called on the thread where the event happens and must be cheap; the defaults
    do nothing.
    """

    def batch_finished(self, stats: BatchStats) -> None:
        """A forward batch ran."""

    def batch_failed(self, rows: int) -> None:
        """``forward`` raised on a batch of ``rows`` rows; its jobs failed."""

    def rows_dropped(self, count: int) -> None:
        """Rows of cancelled jobs were removed before they ran."""

    def job_rejected(self) -> None:
        """A job was refused because the queue was full."""

    def queue_changed(self, rows: int) -> None:
        """The number of queued rows changed."""
