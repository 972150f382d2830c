"""Measure retrieval quality on your own data: datasets in BEIR, ViDoRe/MTEB or JSONL form, metrics
from pytrec_eval (:mod:`uniembed.core.ranking`), one cached encoding scored under many settings
(Matryoshka sizes, int8/binary, MaxSim, pooled and binarised multi-vectors, two-stage, and the
search index's own modes), reports with bytes and latency, and cross-modal alignment. See
docs/evaluation.md.

The names below load their module on first use, so ``uniembed eval --help`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "alignment": ("AlignmentResult", "alignment_scores", "evaluate_alignment", "read_pairs"),
    "cache": ("EncodingCache",),
    "data": ("PdfPage", "RetrievalDataset"),
    "encode": ("EncodeSettings", "encode_items"),
    "readers": ("load_dataset",),
    "report": ("pareto_front", "render_table", "write_report"),
    "specs": ("parse_settings",),
    "sweep": ("EvalConfig", "EvalReport", "SettingResult", "evaluate_retrieval"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'uniembed.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"uniembed.evaluation.{_MODULE_OF[name]}"), name)


__all__ = list(_MODULE_OF)
