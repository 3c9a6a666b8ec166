"""Statuses: the order in which a task may move, and the terminal set declared once in
core/status.py and derived by every SQL text, the stats shape, the dashboard and the
simulator's report (tests/core/test_contracts.py checks no other file lists statuses)."""

from __future__ import annotations

from pathlib import Path

from app.dashboard import page_contract
from core import schema
from core.schema import TERMINAL_SQL, TERMINAL_VALUES
from core.stats_shape import empty_counts, empty_summary
from core.status import OUTCOMES, SUCCESS, TERMINAL, Status, progress
from recorder import writer
from simulator.report import build_report
from simulator.samples import RunRecord

REPO = Path(__file__).resolve().parents[2]


def test_progress_orders_a_task_with_retries() -> None:
    path = [
        (Status.ACCEPTED, 0),
        (Status.QUEUED, 1),
        (Status.STARTED, 1),
        (Status.RETRYING, 1),
        (Status.QUEUED, 2),
        (Status.STARTED, 2),
        (Status.SUCCEEDED, 2),
    ]
    steps = [progress(status, attempt) for status, attempt in path]
    assert steps == sorted(steps)
    assert len(set(steps)) == len(steps)


def test_every_terminal_status_is_beyond_any_attempt() -> None:
    for status in TERMINAL:
        assert progress(status, 1) > progress(Status.RETRYING, 10_000)
        assert status.terminal
    assert not Status.RETRYING.terminal


def test_the_terminal_set_is_in_declaration_order_and_reads_as_words() -> None:
    assert tuple(s for s in Status if s in TERMINAL) == OUTCOMES
    assert set(OUTCOMES) == TERMINAL
    assert SUCCESS in TERMINAL
    assert Status.DEAD_LETTERED.label == "dead-lettered"


def test_every_sql_text_derives_the_terminal_set_from_core() -> None:
    listed = ", ".join(f"'{s.value}'" for s in OUTCOMES)
    assert listed == TERMINAL_VALUES
    assert f"status IN ({listed})" == TERMINAL_SQL
    assert f"WHERE t.status NOT IN ({listed})" in writer._UPSERT
    where = {
        index.name: str(index.dialect_options["postgresql"]["where"])
        for table in schema.metadata.tables.values()
        for index in table.indexes
        if index.dialect_options["postgresql"]["where"] is not None
    }
    assert where == {
        "tasks_unfinished": f"NOT ({TERMINAL_SQL})",
        "task_events_one_terminal": TERMINAL_SQL,
        "tasks_parked": schema.PARKED_SQL,
    }
    assert f"'{Status.SCHEDULED.value}'" in schema.PARKED_SQL


def test_the_migrated_partial_indexes_hold_the_same_terminal_set() -> None:
    """Migrations are history, so 0001 keeps its literal; a change to the terminal set
    needs a new migration that rebuilds both partial indexes with the new text."""
    versions = sorted((REPO / "alembic" / "versions").glob("*.py"))
    latest = [path for path in versions if "task_events_one_terminal" in path.read_text()][-1]
    assert f'"{TERMINAL_SQL}"' in latest.read_text(), (
        f"{latest.name} built the partial indexes tasks_unfinished and "
        f"task_events_one_terminal for another terminal set than core.status's "
        f"({TERMINAL_SQL}): add a migration that rebuilds them"
    )


def test_derived_status_lists_match_core() -> None:
    everything, outcomes = [s.value for s in Status], [s.value for s in OUTCOMES]
    counts = empty_counts()
    assert list(counts["transitions"]) == everything
    assert list(counts["outcomes"]) == outcomes
    assert list(empty_summary()["outcomes"]) == outcomes
    contract = page_contract()
    assert contract["statuses"] == everything
    assert contract["outcomes"] == outcomes
    assert contract["success"] == SUCCESS.value
    run = RunRecord("d", "", 1.0, "kafka", started_at=0.0, planned=0, finished_at=1.0)
    report = build_report(run)
    assert list(report["terminal"]) == outcomes
    assert list(report["overall"]["terminal"]) == outcomes
