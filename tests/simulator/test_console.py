"""The live display and the console summary render what the tracker and report hold."""

from __future__ import annotations

import io

from rich.console import Console

from core.status import Status
from simulator.progress import RichProgress
from simulator.report import build_report
from simulator.samples import CancelSample, RunRecord, SendSample
from simulator.summary import print_summary
from simulator.tracker import Event, Tracker


def tracked() -> Tracker:
    tracker = Tracker(RunRecord("con", "", 2.0, "kafka", started_at=1000.0, planned=3))
    for seq, task_id in enumerate(("a", "b", None)):
        sample = SendSample(seq, "alpha", "echo", "high", scheduled=0, sent=0.001, latency=0.01)
        sample.task_id = task_id
        sample.status_code = 202 if task_id else 422
        sample.error_code = None if task_id else "validation_error"
        tracker.sent(sample)
        tracker.answered(sample, 1000.0 if task_id else None)
    tracker.apply([Event("e1", "a", Status.SUCCEEDED, 1000.5, 1)])
    tracker.run.finished_at = 1001.0
    return tracker


def text_of(console: Console) -> str:
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def test_the_progress_table_counts_per_priority_and_status() -> None:
    console = Console(file=io.StringIO(), width=120)
    display = RichProgress(console)
    display.start(tracked())
    console.print(display.render("sending"))
    out = text_of(console)
    assert "sent 3/3  accepted 2  rejected 1  finished 1  unfinished 1" in out
    header = next(line for line in out.splitlines() if line.startswith("priority"))
    statuses = (s.label.split("-")[0] for s in Status)
    assert header.split() == ["priority", "sent", "rejected", *statuses]
    high = next(line for line in out.splitlines() if line.startswith("high"))
    counts = {status: 0 for status in Status} | {Status.ACCEPTED: 1, Status.SUCCEEDED: 1}
    assert high.split() == ["high", "3", "1", *(str(counts[s]) for s in Status)]


def test_off_a_terminal_the_progress_is_plain_lines() -> None:
    console = Console(file=io.StringIO(), width=120)
    display = RichProgress(console)
    display.start(tracked())
    display.refresh("sending")
    display.refresh("done")
    display.stop()
    lines = text_of(console).splitlines()
    assert [line.split()[0] for line in lines] == ["sending", "done"]


def test_the_summary_shows_counts_latencies_and_reasons() -> None:
    console = Console(file=io.StringIO(), width=100)
    print_summary(build_report(tracked().run), console)
    out = text_of(console)
    assert "con at speed 2: sent 3 of 3, accepted 2, rejected 1" in out
    assert "rejected 1 x 422 validation_error" in out
    for heading in ("by priority", "by team", "by routine", "p50 / p99"):
        assert heading in out
    assert "scheduled" not in out and "cancels" not in out  # no lifecycle, no lines


def test_the_summary_has_a_line_each_for_schedules_expiries_and_cancels() -> None:
    run = tracked().run
    run.tasks["a"].run_at = 999.9  # started (finished) 0.6 s after its run time
    run.tasks["a"].first_started = 1000.5
    run.tasks["b"].expires_at = 1000.2
    run.cancels = [CancelSample("b", "high", scheduled=0.5, sent=0.5, latency=0.01)]
    run.cancels[0].status_code = 409
    run.cancels[0].ended = Status.SUCCEEDED
    console = Console(file=io.StringIO(), width=200)
    print_summary(build_report(run), console)
    out = text_of(console)
    assert "scheduled 1: started 1, start lateness ms p50 600  p99 600  max 600" in out
    assert "expiry: 1 given one, 0 expired" in out
    assert "cancels: planned 1, sent 1, cancelled 0, too late 1 (succeeded 1), rejected 0" in out


def test_the_progress_line_counts_cancels_when_there_are_some() -> None:
    tracker = tracked()
    tracker.cancel_planned(CancelSample("a", "high", scheduled=1.0))
    console = Console(file=io.StringIO(), width=200)
    display = RichProgress(console)
    display.start(tracker)
    assert display.plain_line("sending").endswith("cancels answered 0/1")
