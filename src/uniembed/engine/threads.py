"""Which threads of the service run PyTorch multi-threaded: only the models' batch workers.

PyTorch's CPU build parallelises ops with OpenMP (libgomp). Every thread that runs a parallel op
gets its own team of OpenMP threads, which lives as long as that thread. Once libgomp manages more
threads than there are CPUs it stops spinning between parallel regions and parks its threads on
futexes instead, which made every forward pass ~12% slower on the 2-core build machine (the same
forward: 21.5 ms on a thread that owns the only team, 24.6 ms once the loading thread and the helper
threads owned teams too). So, in the server:

* models are loaded on a temporary thread, whose team goes away when it ends
  (:func:`call_on_temporary_thread`);
* helper threads (tokenising, decoding, large responses) run torch single-threaded
  (:func:`single_threaded_torch`, an executor initializer), so they never start a team;
* each batch worker sets its own thread count when it starts (``Engine.start(torch_threads=…)``).

``torch.set_num_threads`` sets the calling thread's OpenMP thread count and the default of threads
that have not run torch yet; a thread that already ran torch keeps its own count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def call_on_temporary_thread(
    function: Callable[..., T], *args: object, name: str = "uniembed-loader"
) -> T:
    """``function(*args)`` on a new thread that ends when it returns; its result or exception
    here."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(function(*args))
        except BaseException as error:  # noqa: BLE001 (re-raised on the calling thread below)
            failure.append(error)

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def single_threaded_torch() -> None:
    """Thread initializer for helper threads: torch ops on this thread use one CPU thread."""
    torch.set_num_threads(1)
