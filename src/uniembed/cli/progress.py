"""What the progress bars of ``embed``, ``index`` and ``eval`` share."""

from __future__ import annotations

from typing import Any

from rich.progress import ProgressColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    """``123.4 items/s`` (completed per second, in any unit but tokens) or ``5.6k tokens/s`` (the
    task's ``tokens`` field)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        amount = task.fields.get("tokens", 0) if self.unit == "tokens" else task.completed
        elapsed = task.elapsed or 0.0
        rate = amount / elapsed if elapsed > 0 else 0.0
        return Text(f"{_human(rate)} {self.unit}/s", style="progress.data.speed")


def _human(value: float) -> str:
    """A rate with a k/M suffix.

    >>> _human(12345.0)
    '12.3k'
    """
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.1f}"
