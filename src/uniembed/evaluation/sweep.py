"""One encoding, many settings: encode queries and corpus once (cached), score every setting.

>>> from uniembed.testing.fake import FakeModel
>>> from uniembed.embedder import Embedder
>>> from uniembed.evaluation.data import RetrievalDataset
>>> data = RetrievalDataset("toy", ["q1"], ["solar panels"], ["d1", "d2"],
...                         ["solar panels", "wind farms"], {"q1": {"d1": 1}})
>>> config = EvalConfig(settings=["dense"], k_values=[1], query_task="text-matching",
...                     corpus_task="text-matching")
>>> report = evaluate_retrieval(Embedder(FakeModel()), data, config)
>>> report.results[0].name, report.results[0].metrics["ndcg@1"]
('dense:32', 1.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniembed.core.checks import is_int_at_least
from uniembed.core.ranking import DEFAULT_K, METRICS, Run, compute_metrics
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.evaluation.cache import EncodingCache
from uniembed.evaluation.data import RetrievalDataset
from uniembed.evaluation.encode import EncodeSettings, EncodingStats, encode_items
from uniembed.evaluation.encoded import Encodings
from uniembed.evaluation.searched import IndexModel
from uniembed.evaluation.settings import QueryVectors, Setting, SettingIndex
from uniembed.evaluation.specs import parse_settings

ProgressFactory = Callable[[str, int], Callable[[int], None]]  # (label, total) -> advance(n)


@dataclass(frozen=True)
class EvalConfig:
    """What to measure: settings (specs, see :mod:`uniembed.evaluation.specs`), cut-offs, the
    metric the chart and Pareto front use, tasks, and encode options."""

    settings: Sequence[str] = ("all",)
    k_values: Sequence[int] = DEFAULT_K
    primary: str | None = None  # None: ndcg@10, or nDCG at the largest cut-off without 10
    query_task: str = "retrieval.query"
    corpus_task: str = "retrieval.passage"
    encode: EncodeSettings = field(default_factory=EncodeSettings)

    def metric_names(self) -> list[str]:
        return [f"{metric}@{k}" for metric in METRICS for k in self.k_values]

    @property
    def primary_metric(self) -> str:
        if self.primary is not None:
            return self.primary
        return "ndcg@10" if 10 in self.k_values else f"ndcg@{max(self.k_values)}"

    def check(self) -> None:
        if not self.k_values or any(not is_int_at_least(k) for k in self.k_values):
            raise InvalidInput(f"cut-offs must be positive integers, got {list(self.k_values)}")
        if self.primary_metric not in self.metric_names():
            raise InvalidInput(
                f"primary metric {self.primary_metric!r} is not computed; "
                f"choose one of {', '.join(self.metric_names())}"
            )


@dataclass
class SettingResult:
    """One setting's metrics, size and speed; ``run`` holds its ranked items per query."""

    name: str
    family: str
    metrics: dict[str, float]
    stored_bytes: float  # per corpus item, all this setting keeps
    scanned_bytes: float  # per corpus item, what one query's first stage reads
    build_seconds: float  # to build the index from the cached vectors
    latency_ms: dict[str, float]  # per query scoring time: mean, p50, p95
    run: Run = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "metrics": self.metrics,
            "stored_bytes_per_item": self.stored_bytes,
            "scanned_bytes_per_item": self.scanned_bytes,
            "build_seconds": self.build_seconds,
            "query_latency_ms": self.latency_ms,
        }


@dataclass
class EvalReport:
    """Everything one evaluation measured (``to_dict`` is the JSON report)."""

    dataset: dict[str, Any]
    model: dict[str, Any]
    config: EvalConfig
    encoding: dict[str, EncodingStats]
    results: list[SettingResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "tasks": {"queries": self.config.query_task, "corpus": self.config.corpus_task},
            "k_values": list(self.config.k_values),
            "primary_metric": self.config.primary_metric,
            "encoding": {side: _stats_dict(stats) for side, stats in self.encoding.items()},
            "settings": [result.to_dict() for result in self.results],
        }


def _stats_dict(stats: EncodingStats) -> dict[str, Any]:
    return {
        "items": stats.items,
        "tokens": stats.tokens,
        "seconds": stats.seconds,
        "items_per_second": stats.items_per_second,
        "tokens_per_second": stats.tokens_per_second,
        "chunks": stats.chunks,
        "chunks_from_cache": stats.cached_chunks,
        "items_from_cache": stats.cached_items,
    }


def evaluate_retrieval(
    embedder: Embedder,
    dataset: RetrievalDataset,
    config: EvalConfig = EvalConfig(),
    *,
    cache: EncodingCache | None = None,
    progress: ProgressFactory | None = None,
) -> EvalReport:
    """Encode ``dataset`` once (through ``cache`` when given); score every setting of ``config``."""
    config.check()
    index_model = IndexModel(embedder, config.query_task, config.corpus_task)
    settings = parse_settings(config.settings, embedder.info, index_model)
    progress = progress or _no_progress
    queries, query_stats = encode_items(
        embedder,
        dataset.query_ids,
        dataset.queries,
        config.query_task,
        settings=config.encode,
        cache=cache,
        on_progress=progress("encoding queries", len(dataset.queries)),
    )
    corpus, corpus_stats = encode_items(
        embedder,
        dataset.corpus_ids,
        dataset.corpus,
        config.corpus_task,
        settings=config.encode,
        cache=cache,
        on_progress=progress("encoding corpus", len(dataset.corpus)),
    )
    depth = max(config.k_values)
    results = [
        score_setting(setting, queries, corpus, dataset, config, depth, progress)
        for setting in settings
    ]
    info = embedder.info
    model = {
        "name": info.name,
        "family": info.family,
        "dim": info.dim,
        "multivector_dim": info.multivector_dim,
        "weights_digest": embedder.weights_digest(),
    }
    return EvalReport(
        dataset.summary(), model, config, {"queries": query_stats, "corpus": corpus_stats}, results
    )


def score_setting(
    setting: Setting,
    queries: Encodings,
    corpus: Encodings,
    dataset: RetrievalDataset,
    config: EvalConfig,
    depth: int,
    progress: ProgressFactory = lambda label, total: _ignore,
) -> SettingResult:
    """Build ``setting``'s index from the cached corpus vectors, then rank the corpus for each query
    one at a time (each query timed alone), and compute the metrics of the run."""
    started = time.perf_counter()
    index = setting.build(corpus)
    build_seconds = time.perf_counter() - started
    try:
        return _score(setting, index, build_seconds, queries, dataset, config, depth, progress)
    finally:
        index.close()


def _score(
    setting: Setting,
    index: SettingIndex,
    build_seconds: float,
    queries: Encodings,
    dataset: RetrievalDataset,
    config: EvalConfig,
    depth: int,
    progress: ProgressFactory,
) -> SettingResult:
    advance = progress(f"scoring {setting.name}", len(queries))
    multivectors = queries.multivectors()
    vectors = [QueryVectors(queries.single[i], multivectors[i]) for i in range(len(queries))]
    index.search(vectors[0], depth)  # warm-up, not timed
    run: Run = {}
    seconds = []
    for query_id, query in zip(dataset.query_ids, vectors, strict=True):
        began = time.perf_counter()
        scores, positions = index.search(query, depth)
        seconds.append(time.perf_counter() - began)
        run[query_id] = {
            dataset.corpus_ids[p]: s
            for p, s in zip(positions.tolist(), scores.tolist(), strict=True)
        }
        advance(1)
    return SettingResult(
        setting.name,
        setting.family,
        compute_metrics(dataset.qrels, run, config.k_values),
        index.stored_bytes,
        index.scanned_bytes,
        build_seconds,
        _latency(seconds),
        run,
    )


def _latency(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1000
    return {
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
    }


def _ignore(count: int) -> None:
    """No progress display."""


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return _ignore


__all__ = [
    "EvalConfig",
    "EvalReport",
    "SettingIndex",
    "SettingResult",
    "evaluate_retrieval",
    "score_setting",
]
