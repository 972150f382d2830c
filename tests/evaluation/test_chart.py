"""The quality-vs-bytes chart: every point labelled, no two labels (nor a label and the legend)
overlapping, even where settings crowd together."""

from __future__ import annotations

import itertools
from pathlib import Path

from uniembed.evaluation.report import chart_figure, draw_chart
from uniembed.evaluation.sweep import EvalConfig, EvalReport, SettingResult


def crowded_report() -> EvalReport:
    points = [  # neighbours a few bytes and a few thousandths of nDCG apart, as real sweeps give
        ("dense:128", "dense", 512, 0.700),
        ("dense:96", "dense", 384, 0.699),
        ("dense-int8:128", "dense", 130, 0.698),
        ("dense-int8:96", "dense", 128, 0.697),
        ("dense-binary:128", "dense", 16, 0.650),
        ("dense-binary:96", "dense", 16, 0.648),
        ("maxsim", "late", 20_000, 0.760),
        ("maxsim-fp16", "late", 10_000, 0.760),
        ("maxsim-pool:2", "late", 10_000, 0.758),
        ("two-stage:128:100", "late", 10_512, 0.759),
    ]
    results = [
        SettingResult(name, family, {"ndcg@10": quality}, size, size, 0.0, {"mean": 1.0})
        for name, family, size, quality in points
    ]
    return EvalReport({"name": "crowded"}, {"name": "tiny"}, EvalConfig(), {}, results)


def test_labels_of_neighbouring_points_do_not_overlap(tmp_path: Path) -> None:
    report = crowded_report()
    figure = chart_figure(report)
    renderer = figure.canvas.get_renderer()
    texts = figure.axes[0].texts
    assert sorted(t.get_text() for t in texts) == sorted(r.name for r in report.results)
    boxes = [t.get_window_extent(renderer) for t in texts]
    legend = figure.axes[0].get_legend().get_window_extent(renderer)
    for (a, first), (b, second) in itertools.combinations(zip(texts, boxes), 2):
        assert not first.overlaps(second), (a.get_text(), b.get_text())
    assert not any(box.overlaps(legend) for box in boxes)
    draw_chart(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
