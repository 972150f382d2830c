"""Iterating in bounded pieces, and ahead of the consumer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


def chunked(values: Iterable[T], size: int) -> Iterator[list[T]]:
    """``values`` in lists of ``size`` (the last one shorter), read lazily (``itertools.batched``
    from Python 3.12, as lists).

    >>> list(chunked(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    chunk: list[T] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_ahead(values: Iterable[T], depth: int = 1) -> Iterator[T]:
    """``values`` produced on a background thread, at most ``depth`` items ahead of the consumer,
    so that a producer that releases the GIL (Parquet decoding) overlaps the consumer's work
    (writes). The producer's error is raised where its item would have come; closing the iterator
    stops the producer after the item it is making.

    >>> list(read_ahead(range(4)))
    [0, 1, 2, 3]
    """
    ahead: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def offer(item: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for value in values:
                if not offer((value, None)):
                    return
        except BaseException as error:  # noqa: BLE001 (raised in the consumer)
            offer((_END, error))
            return
        finally:  # a generator (another read_ahead: its producer) stops now, not when collected
            close = getattr(values, "close", None)
            if close is not None:
                close()
        offer((_END, None))

    producer = threading.Thread(target=produce, name="uniembed-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            value, error = ahead.get()
            if error is not None:
                raise error
            if value is _END:
                return
            yield value
    finally:
        stop.set()
        producer.join()
