"""Reports of an evaluation: a table per setting, ``report.json`` with every number, and a chart of
quality against bytes per corpus item with the Pareto front (``quality_vs_bytes.png``)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uniembed._optional import require
from uniembed.core.files import atomic_path, write_text
from uniembed.core.ranking import write_trec_run
from uniembed.evaluation.sweep import EvalReport

REPORT_JSON = "report.json"
CHART_PNG = "quality_vs_bytes.png"
FAMILY_COLORS = {"dense": "tab:blue", "late": "tab:orange"}


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Names of the ``(name, bytes, quality)`` points that no other point beats: none has at most as
    many bytes and at least as much quality (one of them strictly). Cheapest first.

    >>> pareto_front([("a", 100, 0.5), ("b", 200, 0.6), ("c", 300, 0.55), ("d", 100, 0.4)])
    ['a', 'b']
    """
    front, best = [], float("-inf")
    for name, _, quality in sorted(points, key=lambda p: (p[1], -p[2])):
        if quality > best:
            front.append(name)
            best = quality
    return front


def report_dict(report: EvalReport) -> dict[str, Any]:
    """The JSON report: every number measured, plus the Pareto front of the primary metric."""
    data = report.to_dict()
    data["pareto_front"] = pareto_front(_points(report))
    return data


def _points(report: EvalReport) -> list[tuple[str, float, float]]:
    primary = report.config.primary_metric
    return [(r.name, r.stored_bytes, r.metrics[primary]) for r in report.results]


def write_report(report: EvalReport, folder: Path, *, runs: bool = False) -> list[Path]:
    """Write ``report.json``, the chart and (with ``runs``) one TREC run file per setting into
    ``folder``; every file is written atomically. Returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / REPORT_JSON, folder / CHART_PNG]
    write_text(written[0], json.dumps(report_dict(report), indent=2) + "\n")
    draw_chart(report, written[1])
    if runs:
        for result in report.results:
            path = folder / "runs" / f"{safe_name(result.name)}.trec"
            write_trec_run(result.run, path, safe_name(result.name))
            written.append(path)
    return written


def safe_name(name: str) -> str:
    """A setting name usable as a file name and a TREC run tag.

    >>> safe_name("two-stage:128:100")
    'two-stage_128_100'
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def draw_chart(report: EvalReport, path: Path) -> None:
    """Write :func:`chart_figure` to ``path`` as a PNG (atomically)."""
    figure = chart_figure(report)
    with atomic_path(path) as tmp, tmp.open("wb") as file:
        figure.savefig(file, format="png")


def chart_figure(report: EvalReport) -> Any:
    """Quality (the primary metric) against stored bytes per corpus item, log scale, with the
    Pareto front drawn through the settings no other setting beats, and every point labelled where
    its label overlaps no other label nor the legend. Uses the Agg canvas directly, so no global
    matplotlib backend is touched."""
    require("matplotlib", "eval", "the quality-vs-bytes chart")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    primary = report.config.primary_metric
    points = {name: (size, quality) for name, size, quality in _points(report)}
    figure = Figure(figsize=(8, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for result in report.results:
        size, quality = points[result.name]
        axes.scatter(size, quality, color=FAMILY_COLORS.get(result.family, "tab:gray"), zorder=3)
    front = [points[name] for name in pareto_front(_points(report))]
    widest = max(size for size, _ in points.values())
    steps = [*front, (widest, front[-1][1])]  # the best quality holds on to the right edge
    axes.step(
        [x for x, _ in steps],
        [y for _, y in steps],
        where="post",
        color="tab:green",
        linestyle="--",
        label="Pareto front",
        zorder=2,
    )
    axes.scatter(
        [x for x, _ in front],
        [y for _, y in front],
        s=120,
        facecolors="none",
        edgecolors="tab:green",
        zorder=4,
    )
    for family in dict.fromkeys(result.family for result in report.results):
        label = "single vector" if family == "dense" else "multi-vector"
        axes.scatter([], [], color=FAMILY_COLORS.get(family, "tab:gray"), label=label)
    axes.set_xscale("log")
    axes.set_xlabel("bytes stored per corpus item (log scale)")
    axes.set_ylabel(primary)
    axes.set_title(
        f"{report.dataset['name']} · {report.model['name']}: {primary} against storage", fontsize=9
    )
    axes.grid(True, which="both", alpha=0.3)
    legend = axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    _place_labels(figure, axes, [(r.name, *points[r.name]) for r in report.results], legend)
    return figure


def _label_offsets(rings: int = 12, step: float = 9.0) -> list[tuple[float, float]]:
    """Offsets (points) to try for a label, nearest first: above-right, below-right, above-left,
    below-left, then the same one ``step`` further out, ``rings`` times.

    >>> _label_offsets(2)
    [(4.0, 4.0), (4.0, -13.0), (-4.0, 4.0), (-4.0, -13.0), (4.0, 13.0), (4.0, -22.0), \
(-4.0, 13.0), (-4.0, -22.0)]
    """
    offsets = []
    for ring in range(rings):
        up, down = 4.0 + ring * step, -13.0 - ring * step
        offsets += [(4.0, up), (4.0, down), (-4.0, up), (-4.0, down)]
    return offsets


def _place_labels(
    figure: Any, axes: Any, points: Sequence[tuple[str, float, float]], legend: Any
) -> None:
    """Label each point at the first offset whose box overlaps no label placed before nor the
    legend and stays inside the axes (the first offset when none does)."""
    renderer = figure.canvas.get_renderer()
    taken = [legend.get_window_extent(renderer)]
    inside = axes.get_window_extent(renderer)
    for name, x, y in sorted(points, key=lambda p: (p[1], -p[2])):
        for dx, dy in _label_offsets():
            text = _label(axes, name, (x, y), (dx, dy))
            box = text.get_window_extent(renderer)
            fits = inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)
            if fits and not any(box.overlaps(other) for other in taken):
                break
            text.remove()
        else:  # nowhere free: the nearest place
            text = _label(axes, name, (x, y), _label_offsets(1)[0])
            box = text.get_window_extent(renderer)
        taken.append(box)


def _label(axes: Any, name: str, point: tuple[float, float], offset: tuple[float, float]) -> Any:
    ha = "left" if offset[0] > 0 else "right"
    return axes.annotate(name, point, textcoords="offset points", xytext=offset, ha=ha, fontsize=7)


def render_table(report: EvalReport, metrics: Sequence[str] | None = None) -> Any:
    """A rich table: one row per setting with its metrics, bytes per item and query latency."""
    from rich.table import Table

    names = list(metrics) if metrics else report.config.metric_names()
    front = set(pareto_front(_points(report)))
    table = Table(
        title=f"{report.dataset['name']} · {report.model['name']} "
        f"({report.dataset['queries']} queries, {report.dataset['corpus']} items)"
    )
    table.add_column("setting")
    for name in names:
        table.add_column(name, justify="right")
    for header in ("bytes/item", "scanned", "ms/query"):
        table.add_column(header, justify="right")
    for r in report.results:
        marker = " *" if r.name in front else ""
        table.add_row(
            r.name + marker,
            *(f"{r.metrics[n]:.4f}" for n in names),
            _bytes(r.stored_bytes),
            _bytes(r.scanned_bytes),
            f"{r.latency_ms['p50']:.2f}",
        )
    table.caption = (
        f"* on the Pareto front of {report.config.primary_metric} against bytes/item; "
        "ms/query: median scoring time of one query"
    )
    return table


def _bytes(value: float) -> str:
    """Bytes with a unit.

    >>> _bytes(512.0), _bytes(40960.0)
    ('512 B', '40.0 KiB')
    """
    return f"{value:.0f} B" if value < 1024 else f"{value / 1024:.1f} KiB"
