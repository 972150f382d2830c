"""read_ahead: order kept, errors raised where they happen, the producer stopped on close; and the
compiled finiteness check of every edge (core.checks.all_finite)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from uniembed.core.checks import all_finite
from uniembed.core.iteration import read_ahead


def test_read_ahead_keeps_the_order_and_runs_on_another_thread() -> None:
    threads: set[str] = set()

    def produce():
        for n in range(50):
            threads.add(threading.current_thread().name)
            yield n

    assert list(read_ahead(produce(), depth=3)) == list(range(50))
    assert threads == {"uniembed-read-ahead"}


def test_read_ahead_raises_the_producers_error_after_the_items_before_it() -> None:
    def produce():
        yield 1
        yield 2
        raise ValueError("row 3 is bad")

    ahead = read_ahead(produce())
    assert [next(ahead), next(ahead)] == [1, 2]
    with pytest.raises(ValueError, match="row 3 is bad"):
        next(ahead)


def test_closing_read_ahead_stops_the_producer() -> None:
    made = []

    def produce():
        for n in range(1000):
            made.append(n)
            yield n

    ahead = read_ahead(produce(), depth=2)
    assert next(ahead) == 0
    ahead.close()  # joins the producer
    count = len(made)
    time.sleep(0.1)
    assert len(made) == count <= 4  # the one taken, two queued, one being offered


def test_closing_a_read_ahead_of_a_read_ahead_stops_both_producers() -> None:
    """A pipeline of two stages (the index's reading and encoding threads) leaves no producer
    running once its consumer stops early."""
    made = []

    def produce():
        for n in range(1000):
            made.append(n)
            yield n

    def producers() -> int:
        return sum(t.name == "uniembed-read-ahead" for t in threading.enumerate())

    before = producers()
    ahead = read_ahead(n * 2 for n in read_ahead(produce()))
    assert next(ahead) == 0
    ahead.close()
    assert producers() == before  # the outer producer closed the inner stage, which joined its own
    count = len(made)
    time.sleep(0.1)
    assert len(made) == count


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("size", [7, 1 << 20])  # below and above the size that releases the GIL
def test_all_finite_finds_every_nan_and_infinity(dtype, size) -> None:
    values = np.random.default_rng(0).standard_normal(size).astype(dtype)
    assert all_finite(values)
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, size // 2, size - 1):
            broken = values.copy()
            broken[where] = bad
            assert not all_finite(broken)
            assert not all_finite(broken.reshape(-1, 1)[::1])
    largest = np.array([np.finfo(dtype).max, np.finfo(dtype).tiny / 4, -0.0], dtype)
    assert all_finite(largest)  # the largest value, a subnormal, negative zero
    strided = np.stack([values, values], axis=1)
    strided[size // 2, 1] = np.nan
    assert all_finite(strided[:, 0]) and not all_finite(strided[:, 1])  # not contiguous
