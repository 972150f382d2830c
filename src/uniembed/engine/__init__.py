"""The one batching engine every caller goes through (library, server, bulk jobs, benchmarks).

* :mod:`~uniembed.engine.planning` — which rows run together (token budget, row cap) and the
  engine's default sizes (torch-free, so settings and the CLI can read them cheaply);
* :mod:`~uniembed.engine.loop` — :class:`~uniembed.engine.loop.Engine`, the loop: a queue with a
  worker thread (``submit`` → ``Future``) and a synchronous ``run``, both running the same rounds;
* :mod:`~uniembed.engine.threads` — which threads run torch multi-threaded;
* :mod:`~uniembed.engine.stats` — per-batch statistics, totals and the observer hook.
"""
