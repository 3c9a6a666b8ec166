"""The command line's readable layout: a task as a block, tasks as a table, an event as a
line. Plain text (no dependency beyond the client's)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from taskplatform_client.models import Event, TaskInfo


def clock(moment: datetime | None) -> str:
    """A UTC time to the millisecond, or -."""
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def compact(value: Any, width: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def since(event: Event, previous: Event | None) -> str:
    if previous is None:
        return "-"
    return f"+{(event.at - previous.at).total_seconds():.3f}s"


def event_row(event: Event, previous: Event | None) -> list[str]:
    detail = compact(event.detail, 60) if event.detail else ""
    return [
        clock(event.at),
        event.status,
        str(event.attempt),
        event.queue or "-",
        since(event, previous),
        detail,
    ]


def event_line(event: Event, previous: Event | None) -> str:
    """One event of `watch`: time, status, attempt, queue, time since the one before."""
    at, status, attempt, queue, delta, detail = event_row(event, previous)
    return f"{at}  {status:<13}  attempt {attempt:<2}  {queue:<6}  {delta:>10}  {detail}".rstrip()


def task_block(info: TaskInfo) -> str:
    """A task with its result or error and its timeline."""
    fields = [
        ("task", info.task_id),
        ("status", info.status),
        ("team", info.team),
        ("routine", info.routine),
        ("priority", f"{info.priority} (queue {info.queue or '-'})"),
        ("attempts", str(info.attempts)),
        ("created", clock(info.created_at)),
        ("started", clock(info.started_at)),
        ("finished", clock(info.finished_at)),
    ]
    if info.run_at is not None:
        fields.append(("run at", clock(info.run_at)))
    if info.expires_at is not None:
        fields.append(("expires", clock(info.expires_at)))
    if info.payload is not None:
        fields.append(("payload", compact(info.payload)))
    if info.error is not None:
        fields.append(("error", info.error))
    elif info.terminal:
        fields.append(("result", compact(info.result)))
    lines = [f"{name:<9} {value}" for name, value in fields]
    if info.timeline:
        rows, previous = [], None
        for event in info.timeline:
            rows.append(event_row(event, previous))
            previous = event
        lines += ["", table(["AT", "STATUS", "ATTEMPT", "QUEUE", "SINCE", "DETAIL"], rows)]
    return "\n".join(lines)


def task_table(tasks: Sequence[TaskInfo]) -> str:
    """Tasks one a row; `(no tasks)` for none."""
    if not tasks:
        return "(no tasks)"
    rows = [
        [
            info.task_id,
            info.status,
            info.team,
            info.routine,
            info.priority,
            str(info.attempts),
            clock(info.created_at),
        ]
        for info in tasks
    ]
    return table(["TASK", "STATUS", "TEAM", "ROUTINE", "PRIORITY", "ATTEMPTS", "CREATED"], rows)
