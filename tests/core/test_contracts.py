"""Statuses and priorities are declared once, in core/status.py and core/priority.py.

Two checks keep that true:
- no other source file lists them by hand (two or more names as literals is a list that a
  new status or priority would miss);
- in a copy of the tree, a new terminal status and a fourth priority are added to core
  alone, and every part that derives them shows them: SQL, the stats snapshot and its API
  view, the dashboard's page, routing and settings, the simulator and the bench.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from core.priority import Priority
from core.status import Status

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "bench", "bridge", "core", "ops", "recorder", "simulator", "tasks", "testing")
SUFFIXES = (".py", ".js", ".html")

# Files owned elsewhere that still list statuses or priorities by hand: path -> why.
# Remove an entry once its file derives from core (an entry no longer needed is allowed, so
# that work on those files in progress elsewhere does not fail this test).
KNOWN_STATUS_LISTS: dict[str, str] = {}
KNOWN_PRIORITY_LISTS: dict[str, str] = {}


def _named(path: Path, names: list[str]) -> set[str]:
    """The names that `path` writes as string literals (or, in JavaScript, as properties)."""
    text = path.read_text()
    alternatives = "|".join(map(re.escape, names))
    found = {m.group(2) for m in re.finditer(rf"""(["'])({alternatives})\1""", text)}
    if path.suffix == ".js":
        found |= set(re.findall(rf"\.({alternatives})\b", text))
    return found


def _lists(names: list[str], declared_in: str) -> dict[str, set[str]]:
    """Source files (other than the declaring one) that name two or more of `names`."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*")):
            relative = path.relative_to(REPO).as_posix()
            if path.suffix not in SUFFIXES or relative == declared_in:
                continue
            named = _named(path, names)
            if len(named) >= 2:
                found[relative] = named
    return found


def _check(found: dict[str, set[str]], known: dict[str, str], what: str) -> None:
    new = {path: sorted(names) for path, names in found.items() if path not in known}
    assert not new, f"these files list {what} by hand instead of deriving them from core: {new}"


def test_no_file_but_core_status_lists_statuses() -> None:
    found = _lists([s.value for s in Status], "core/status.py")
    _check(found, KNOWN_STATUS_LISTS, "statuses")


def test_no_file_but_core_priority_lists_priorities() -> None:
    found = _lists([p.value for p in Priority], "core/priority.py")
    _check(found, KNOWN_PRIORITY_LISTS, "priorities")


def _patch(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} changed: update this test's patch ({old!r})"
    path.write_text(text.replace(old, new, 1))


# Run inside the patched copy: every derived place shows CANCELLED and `urgent`.
CHECKS = textwrap.dedent(
    """
    import io, uuid
    from datetime import UTC, datetime, timedelta

    from rich.console import Console

    from app.dashboard import page_contract
    from app.stats_view import stats_view
    from bench import pipeline
    from core.messages import StatusEvent
    from core.priority import Priority, names, parse_priority_map
    from core.routing import RoutingPolicy
    from core.schema import TERMINAL_SQL
    from core.settings import Settings
    from core.status import OUTCOMES, Status
    from recorder import writer
    from recorder.stats_aggregate import StreamAggregator
    from simulator import plots
    from simulator.report import build_report
    from simulator.samples import RunRecord, SendSample, TaskSample
    from simulator.summary import print_summary

    abandoned, urgent = Status("ABANDONED"), Priority("urgent")
    assert abandoned.terminal and abandoned in OUTCOMES
    assert "'ABANDONED'" in TERMINAL_SQL and "'ABANDONED'" in writer._UPSERT
    assert names()[0] == "urgent" and Priority.highest() is urgent
    assert Priority.HIGH.demoted() is Priority.MEDIUM and Priority.HIGH.rank == 1
    assert Settings(_env_file=None).priority_weights[urgent] == 12
    try:
        parse_priority_map("x:1", what="weight")
    except ValueError as exc:
        assert "urgent, high, medium, low" in str(exc), exc

    policy = RoutingPolicy(Settings(_env_file=None))
    assert policy.check("echo", None) is Priority.MEDIUM
    assert policy.check("echo", urgent) is urgent  # interactive: up to the highest

    start, t0 = 1_800_000_000.0, datetime(2026, 1, 1, tzinfo=UTC)
    aggregator = StreamAggregator(teams=["alpha"], start=start)
    common = dict(task_id=str(uuid.uuid4()), team="alpha", routine="echo", priority="urgent",
                  accepted_at=t0)
    aggregator.observe([
        StatusEvent(status=Status.ACCEPTED, at=t0, **common),
        StatusEvent(status=Status.STARTED, at=t0 + timedelta(seconds=1), attempt=1, **common),
        StatusEvent(status=abandoned, at=t0 + timedelta(seconds=2), attempt=1, **common),
    ], start)
    snapshot = aggregator.snapshot(start + 5)
    scope = snapshot["windows"]["1m"]["scopes"]["*"]
    assert list(scope["by_priority"]) == ["urgent", "high", "medium", "low"], scope
    assert scope["overall"]["outcomes"]["ABANDONED"] == 1
    assert scope["overall"]["transitions"]["ABANDONED"] == 1
    assert scope["overall"]["success_rate"] == 0.0
    point = aggregator.chart_points(start + 5)["*"]
    assert list(point["wait_p50"]) == names() and "urgent" in point["in_flight"]
    view = stats_view(snapshot, "1m", "bravo", start + 6)  # no figures: all zeros
    assert view["overall"]["outcomes"]["ABANDONED"] == 0
    assert view["totals"]["overall"]["outcomes"]["ABANDONED"] == 0

    contract = page_contract()
    assert "ABANDONED" in contract["outcomes"] and contract["labels"]["ABANDONED"] == "abandoned"
    assert contract["priorities"][0] == "urgent" and contract["colors"]["urgent"]
    assert plots._color("urgent") == contract["colors"]["urgent"]
    assert pipeline.PRIORITIES[0] == "urgent"

    run = RunRecord("d", "", 1.0, "kafka", started_at=0.0, planned=2, finished_at=2.0)
    for seq, priority in enumerate(["low", "urgent"]):
        run.sends.append(SendSample(seq=seq, team="alpha", routine="noop", priority=priority,
                                    scheduled=0, sent=0, latency=0.01, status_code=202,
                                    task_id=str(seq)))
        run.tasks[str(seq)] = TaskSample(task_id=str(seq), team="alpha", routine="noop",
                                         priority=priority, accepted_at=0.0, status=abandoned,
                                         finished_at=1.0)
    report = build_report(run)
    assert report["terminal"]["ABANDONED"] == 2 and report["not_finished"] == 0
    assert list(report["by_priority"]) == ["urgent", "low"]
    assert list(report["timeline"]["sent"]) == ["urgent", "low"]
    out = io.StringIO()
    print_summary(report, Console(file=out, width=200))
    assert "abandoned 2" in out.getvalue() and "abandoned" in out.getvalue().split("tasks")[1]
    print("ok")
    """
)


def test_a_status_and_a_priority_added_in_core_alone_reach_every_derived_part(
    tmp_path: Path,
) -> None:
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    _patch(
        tmp_path / "core" / "status.py",
        '    EXPIRED = "EXPIRED"',
        '    ABANDONED = "ABANDONED"\n    EXPIRED = "EXPIRED"',
    )
    _patch(
        tmp_path / "core" / "status.py",
        "Status.EXPIRED}",
        "Status.EXPIRED, Status.ABANDONED}",
    )
    priority = tmp_path / "core" / "priority.py"
    _patch(priority, '    HIGH = "high"\n', '    URGENT = "urgent"\n    HIGH = "high"\n')
    _patch(priority, "{Priority.HIGH: 6,", "{Priority.URGENT: 12, Priority.HIGH: 6,")
    _patch(
        priority,
        '{Priority.HIGH: "#d62728",',
        '{Priority.URGENT: "#000", Priority.HIGH: "#d62728",',
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PRIORITY_WEIGHTS", "FLOOD_QUOTA")}
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", CHECKS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
