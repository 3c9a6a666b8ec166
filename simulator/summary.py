"""The console summary of a report: one table per grouping, lateness and rejections."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from core.status import OUTCOMES, Status


def print_summary(report: dict[str, Any], console: Console) -> None:
    """Print the summary of `report` (as `build_report` makes it) to `console`."""
    terminal = report["terminal"]
    ended = ", ".join(f"{status.label} {terminal[status.value]}" for status in OUTCOMES)
    state = " (interrupted)" if report["interrupted"] else ""
    console.print(
        f"[bold]{report['dataset']}[/] at speed {report['speed']:g}{state}: "
        f"sent {report['sent']} of {report['planned']}, accepted {report['accepted']}, "
        f"rejected {report['rejected']['count']}, unanswered {report['unanswered']}; "
        f"{ended}, not finished {report['not_finished']} "
        f"(followed via {report['follow']}, {report['duration_seconds']:.1f}s)",
        highlight=False,
    )
    lateness = report["send_lateness_ms"]
    console.print(
        f"send lateness ms: p50 {_ms(lateness['p50'])}  p90 {_ms(lateness['p90'])}  "
        f"p99 {_ms(lateness['p99'])}  max {_ms(lateness['max'])}",
        highlight=False,
    )
    for line in lifecycle_lines(report):
        console.print(line, highlight=False)
    sections = [(title, report[f"by_{title}"]) for title in ("priority", "team", "routine")]
    console.print(_counts(sections))
    console.print(_latencies(sections))
    for what, reasons in (
        ("rejected", report["rejected"]["reasons"]),
        ("cancel rejected", report["cancels"]["rejected"]["reasons"]),
    ):
        for reason in reasons:
            console.print(
                f"[yellow]{what}[/] {reason['count']} x {reason['status_code']} "
                f"{reason['code']}: {reason['example']}",
                highlight=False,
            )
    anomalies = {name: n for name, n in report["anomalies"].items() if n}
    if anomalies:
        console.print(f"[yellow]anomalies:[/] {anomalies}", highlight=False)


def lifecycle_lines(report: dict[str, Any]) -> list[str]:
    """A line each for scheduled tasks, expiries and cancels, when the run had any."""
    lines = []
    scheduled = report["scheduled"]
    if scheduled["count"]:
        lateness = scheduled["start_lateness_ms"]
        lines.append(
            f"scheduled {scheduled['count']}: started {scheduled['started']}, start lateness "
            f"ms p50 {_ms(lateness['p50'])}  p99 {_ms(lateness['p99'])}  "
            f"max {_ms(lateness['max'])}"
        )
    expiry = report["expiry"]
    if expiry["count"] or expiry["expired"]:
        lines.append(f"expiry: {expiry['count']} given one, {expiry['expired']} expired")
    cancels = report["cancels"]
    if cancels["planned"]:
        ended = ", ".join(
            f"{_label(name)} {n}" for name, n in cancels["too_late_by_status"].items()
        )
        lines.append(
            f"cancels: planned {cancels['planned']}, sent {cancels['sent']}, "
            f"cancelled {cancels['accepted']}, too late {cancels['too_late']}"
            + (f" ({ended})" if ended else "")
            + f", rejected {cancels['rejected']['count']}, unanswered {cancels['unanswered']}"
        )
    return lines


Sections = list[tuple[str, dict[str, Any]]]


def _counts(sections: Sections) -> Table:
    table = _table("tasks")
    # One column per way a task ends, by the first word of its name ("dead" for dead-lettered).
    ends = tuple(status.label.split("-")[0] for status in OUTCOMES)
    for column in ("sent", "accepted", "rejected", *ends, "open"):
        table.add_column(column, justify="right", no_wrap=True)
    for title, groups in sections:
        table.add_row(f"[bold]by {title}[/]")
        for name, group in groups.items():
            terminal = group["terminal"]
            counts = (
                group["sent"],
                group["accepted"],
                group["rejected"],
                *(terminal[status.value] for status in OUTCOMES),
                group["not_finished"],
            )
            table.add_row(f"  {name}", *(str(n) for n in counts))
    return table


def _latencies(sections: Sections) -> Table:
    table = _table("milliseconds, p50 / p99")
    for column in ("accept", "wait", "run", "end-to-end", "max e2e"):
        table.add_column(column, justify="right", no_wrap=True)
    for title, groups in sections:
        table.add_row(f"[bold]by {title}[/]")
        for name, group in groups.items():
            table.add_row(
                f"  {name}",
                _pair(group["accept_latency_ms"]),
                _pair(group["wait_ms"]),
                _pair(group["run_ms"]),
                _pair(group["end_to_end_ms"]),
                _ms(group["end_to_end_ms"]["max"]),
            )
    return table


def _label(name: str) -> str:
    """How people read a status name ("succeeded"); an unknown name as it is."""
    try:
        return Status(name).label
    except ValueError:
        return name


def _table(title: str) -> Table:
    table = Table(
        title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1)
    )
    table.add_column("", no_wrap=True)
    return table


def _pair(stats: dict[str, Any]) -> str:
    return f"{_ms(stats['p50'])} / {_ms(stats['p99'])}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"
