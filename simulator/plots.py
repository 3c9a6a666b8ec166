"""PNG plots of a run, drawn with matplotlib's Agg backend (no display needed).

- latency.png: the distribution (share of tasks at or under a duration) of end-to-end
  time and of wait time, one line per priority;
- throughput.png: completions and sends per second over the run by priority, and the
  simulator's worst send lateness per bucket;
- inflight.png: accepted but unfinished tasks over the run by priority.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.priority import COLORS, Priority
from simulator.report import durations_by_priority
from simulator.samples import RunRecord

PLOT_FILES = ("latency.png", "throughput.png", "inflight.png")


def write_plots(run: RunRecord, report: dict[str, Any], directory: Path) -> list[Path]:
    """Draw the three plots into `directory` (which must exist); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    title = f"{report['dataset']} at speed {report['speed']:g}"
    paths = [directory / name for name in PLOT_FILES]

    durations = durations_by_priority(run)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for axis, metric, label in (
        (axes[0], "end_to_end_ms", "end-to-end (ACCEPTED → terminal)"),
        (axes[1], "wait_ms", "wait (ACCEPTED → first STARTED)"),
    ):
        for priority, metrics in durations.items():
            values = sorted(v for v in metrics[metric] if v > 0)
            if values:
                shares = [(i + 1) / len(values) for i in range(len(values))]
                axis.step(values, shares, where="post", label=priority, color=_color(priority))
        axis.set_xscale("log")
        axis.set_xlabel("milliseconds (log scale)")
        axis.set_ylabel("share of tasks at or under")
        axis.set_ylim(0, 1.02)
        axis.set_title(label)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(title="priority")
    figure.suptitle(f"Latency distribution per priority — {title}")
    figure.savefig(paths[0], dpi=100)
    plt.close(figure)

    series = report["timeline"]
    edges = [0.0, *series["t"]]
    figure, (done, sent, late) = plt.subplots(
        3, 1, figsize=(11, 8), sharex=True, constrained_layout=True, height_ratios=(3, 3, 2)
    )
    for axis, key, ylabel in ((done, "completed", "completed / s"), (sent, "sent", "sent / s")):
        for priority, values in series[key].items():
            axis.stairs(values, edges, label=priority, color=_color(priority))
        _finish(axis, ylabel, "")
    late.stairs(
        [float("nan") if v is None else v for v in series["lateness_max_ms"]],
        edges,
        color="black",
    )
    _finish(late, "worst send lateness, ms", "")
    done.set_xlabel("")
    sent.set_xlabel("")
    figure.suptitle(f"Throughput by priority (per {series['bucket_seconds']:g}s bucket) — {title}")
    figure.savefig(paths[1], dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(11, 4.2), constrained_layout=True)
    for priority, values in series["in_flight"].items():
        axis.stairs(values, edges, label=priority, color=_color(priority))
    _finish(axis, "tasks accepted, not yet terminal", f"In-flight tasks by priority — {title}")
    figure.savefig(paths[2], dpi=100)
    plt.close(figure)
    return paths


def _color(priority: str) -> str | None:
    """The priority's colour (core.priority.COLORS); None (matplotlib's cycle) for a name
    that is not a priority."""
    try:
        return COLORS[Priority(priority)]
    except ValueError:
        return None


def _finish(axis: Any, ylabel: str, title: str) -> None:
    axis.set_xlabel("seconds since the start of the run")
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend()
