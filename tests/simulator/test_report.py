"""The report, computed from synthetic samples: no stack, exact numbers."""

from __future__ import annotations

import json

from core.status import OUTCOMES, Status
from simulator.report import build_report, percentiles, timeline
from simulator.samples import CancelSample, RunRecord, SendSample, TaskSample

T0 = 1_700_000_000.0


def test_percentiles_are_nearest_rank_in_ms() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(values) == {
        "count": 100,
        "p50": 50.0,
        "p90": 90.0,
        "p99": 99.0,
        "max": 100.0,
    }
    assert percentiles([0.002]) == {"count": 1, "p50": 2.0, "p90": 2.0, "p99": 2.0, "max": 2.0}
    assert percentiles([]) == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}


def outcomes(**counts: int) -> dict[str, int]:
    """A `terminal` count: every outcome of core.status, zero unless given."""
    return {status.value: counts.get(status.value, 0) for status in OUTCOMES}


def send(
    seq: int,
    priority: str,
    *,
    task: str | None,
    status: int = 202,
    team: str = "alpha",
    routine: str = "noop",
    late: float = 0.001,
    latency: float = 0.010,
    code: str = "validation_error",
) -> SendSample:
    sample = SendSample(
        seq=seq,
        team=team,
        routine=routine,
        priority=priority,
        scheduled=seq * 0.5,
        sent=seq * 0.5 + late,
        latency=latency,
        status_code=status,
        task_id=task,
    )
    if task is None:
        sample.error_code = code
        sample.error_message = "no"
    return sample


def run_record() -> RunRecord:
    run = RunRecord("synthetic", "d", 2.0, "kafka", started_at=T0, planned=6, finished_at=T0 + 5)
    run.sends = [
        send(0, "high", task="a", latency=0.010),
        send(1, "high", task="b", latency=0.030, late=0.004),
        send(2, "low", task="c", routine="cpu", team="bravo"),
        send(3, "low", task=None, status=422),
        send(4, "medium", task=None, status=0, code="transport_error", latency=0.5),
    ]
    run.tasks = {
        # accepted at 1 s, started at 1.1 s, done at 1.3 s
        "a": TaskSample(
            "a", "alpha", "noop", "high", T0 + 1, Status.SUCCEEDED, T0 + 1.1, T0 + 1.1, T0 + 1.3, 1
        ),
        # retried: first start 2.2, last start 3.0, failed 3.5
        "b": TaskSample(
            "b", "alpha", "noop", "high", T0 + 2, Status.FAILED, T0 + 2.2, T0 + 3.0, T0 + 3.5, 4
        ),
        # still queued when the run ended
        "c": TaskSample("c", "bravo", "cpu", "low", T0 + 2.5, Status.QUEUED),
    }
    return run


def test_counts_and_reasons() -> None:
    report = build_report(run_record())
    assert (report["planned"], report["sent"], report["accepted"]) == (6, 5, 3)
    assert report["not_sent"] == 1 and report["unanswered"] == 0
    assert report["rejected"] == {
        "count": 2,
        "reasons": [
            {"status_code": 0, "code": "transport_error", "count": 1, "example": "no"},
            {"status_code": 422, "code": "validation_error", "count": 1, "example": "no"},
        ],
    }
    assert report["terminal"] == outcomes(SUCCEEDED=1, FAILED=1)
    assert report["not_finished"] == 1
    assert report["not_finished_by_status"] == {"QUEUED": 1}
    assert report["duration_seconds"] == 5.0
    json.dumps(report)  # JSON-ready as it is


def test_latencies_per_group() -> None:
    report = build_report(run_record())
    high = report["by_priority"]["high"]
    assert list(report["by_priority"]) == ["high", "medium", "low"]
    assert (high["sent"], high["accepted"], high["not_finished"]) == (2, 2, 0)
    assert high["accept_latency_ms"]["p50"] == 10.0
    assert high["accept_latency_ms"]["max"] == 30.0
    assert high["wait_ms"]["p50"] == 100.0 and high["wait_ms"]["max"] == 200.0
    assert high["run_ms"]["p50"] == 200.0 and high["run_ms"]["max"] == 500.0
    assert high["end_to_end_ms"]["p50"] == 300.0 and high["end_to_end_ms"]["max"] == 1500.0
    low = report["by_priority"]["low"]
    assert (low["sent"], low["accepted"], low["rejected"], low["not_finished"]) == (2, 1, 1, 1)
    assert low["wait_ms"]["count"] == 0 and low["end_to_end_ms"]["p99"] is None
    assert set(report["by_team"]) == {"alpha", "bravo"}
    assert report["by_routine"]["cpu"]["accepted"] == 1
    assert report["send_lateness_ms"]["max"] == 4.0


def test_timeline_counts_completions_and_in_flight() -> None:
    series = timeline(run_record(), bucket=1.0)
    assert series["t"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert series["completed"]["high"] == [0, 1.0, 0, 1.0, 0]
    assert series["in_flight"]["high"] == [1, 1, 1, 0, 0]  # a: 1.0-1.3, b: 2.0-3.5
    assert series["in_flight"]["low"] == [0, 0, 1, 1, 1]
    assert series["sent"]["high"] == [2.0, 0, 0, 0, 0]
    assert series["lateness_max_ms"] == [4.0, 1.0, 1.0, None, None]


def test_an_empty_interrupted_run_still_reports() -> None:
    run = RunRecord("empty", "", 1.0, "none", started_at=T0, planned=10, interrupted=True)
    report = build_report(run)
    assert report["interrupted"] and report["sent"] == 0 and report["not_sent"] == 10
    assert report["by_priority"] == {}
    assert report["send_lateness_ms"]["p99"] is None


def test_every_outcome_is_counted_cancelled_and_expired_included() -> None:
    report = build_report(lifecycle_run())
    assert list(report["terminal"]) == [status.value for status in OUTCOMES]
    assert report["terminal"] == outcomes(SUCCEEDED=3, CANCELLED=2, EXPIRED=1)
    assert report["by_priority"]["low"]["terminal"]["CANCELLED"] == 2
    assert report["not_finished"] == 1 and report["not_finished_by_status"] == {"SCHEDULED": 1}


def task(
    task_id: str,
    status: Status,
    *,
    started: float | None = None,
    finished: float | None = None,
    run_at: float | None = None,
    expires_at: float | None = None,
    priority: str = "low",
) -> TaskSample:
    """A task accepted at T0 + 1."""
    at = None if started is None else T0 + started
    return TaskSample(
        task_id,
        "alpha",
        "noop",
        priority,
        T0 + 1,
        status,
        first_started=at,
        last_started=at,
        finished_at=None if finished is None else T0 + finished,
        attempts=1,
        run_at=None if run_at is None else T0 + run_at,
        expires_at=None if expires_at is None else T0 + expires_at,
    )


def cancel(task_id: str, status_code: int, **fields: object) -> CancelSample:
    sample = CancelSample(task_id, "low", scheduled=2.0, sent=2.001, latency=0.004)
    sample.status_code = status_code
    for name, value in fields.items():
        setattr(sample, name, value)
    return sample


def lifecycle_run() -> RunRecord:
    run = RunRecord("life", "", 1.0, "kafka", started_at=T0, planned=7, finished_at=T0 + 9)
    run.tasks = {
        t.task_id: t
        for t in (
            # scheduled for 3 s, started 50 ms late, done 100 ms later
            task("late", Status.SUCCEEDED, run_at=3, started=3.05, finished=3.15),
            # scheduled for 3 s, started 2 ms early: a broken promise
            task("early", Status.SUCCEEDED, run_at=3, started=2.998, finished=3.1),
            # expiry at 2 s: never started, expired
            task("exp", Status.EXPIRED, expires_at=2, finished=2.0),
            # expiry at 5 s: started in time
            task("kept", Status.SUCCEEDED, expires_at=5, started=1.5, finished=1.6),
            # cancelled while scheduled (the cancel answered 202)
            task("cxl", Status.CANCELLED, run_at=8, finished=2.0),
            # cancelled while running (202), after 0.5 s of running
            task("run", Status.CANCELLED, started=1.2, finished=2.0),
            # still scheduled at the end
            task("wait", Status.SCHEDULED, run_at=20),
        )
    }
    run.cancels = [
        cancel("cxl", 202, stage="SCHEDULED"),
        cancel("run", 202, stage="STARTED"),
        cancel("kept", 409, ended=Status.SUCCEEDED, error_code="conflict"),
        cancel("late", 404, error_code="not_found", error_message="no task late"),
        CancelSample("wait", "low", scheduled=2.0, sent=2.0),  # no answer yet
        CancelSample("wait", "low", scheduled=30.0),  # never sent: the run ended first
    ]
    return run


def test_scheduled_tasks_and_their_start_lateness() -> None:
    scheduled = build_report(lifecycle_run())["scheduled"]
    assert (scheduled["count"], scheduled["started"]) == (4, 2)
    lateness = scheduled["start_lateness_ms"]
    assert (lateness["count"], lateness["p50"], lateness["max"]) == (2, -2.0, 50.0)


def test_expiries_and_cancels_are_counted() -> None:
    report = build_report(lifecycle_run())
    assert report["expiry"] == {"count": 2, "expired": 1}
    cancels = report["cancels"]
    assert (cancels["planned"], cancels["sent"], cancels["not_sent"]) == (6, 5, 1)
    assert (cancels["accepted"], cancels["too_late"], cancels["unanswered"]) == (2, 1, 1)
    assert cancels["accepted_by_stage"] == {"SCHEDULED": 1, "STARTED": 1}
    assert cancels["too_late_by_status"] == {"SUCCEEDED": 1}
    assert cancels["rejected"] == {
        "count": 1,
        "reasons": [
            {"status_code": 404, "code": "not_found", "count": 1, "example": "no task late"}
        ],
    }
    assert cancels["latency_ms"]["count"] == 4 and cancels["latency_ms"]["max"] == 4.0


def test_lifecycle_anomalies() -> None:
    run = lifecycle_run()
    anomalies = build_report(run)["anomalies"]
    assert anomalies["started_before_run_at"] == 1
    assert (anomalies["started_after_expiry"], anomalies["cancel_not_honoured"]) == (0, 0)
    run.tasks["exp"].first_started = T0 + 2.5  # started after its expiry
    run.tasks["run"].status = Status.SUCCEEDED  # succeeded after a cancel answered 202
    anomalies = build_report(run)["anomalies"]
    assert (anomalies["started_after_expiry"], anomalies["cancel_not_honoured"]) == (1, 1)


def test_durations_count_from_when_a_task_was_due_and_skip_ends_the_dataset_chose() -> None:
    low = build_report(lifecycle_run())["by_priority"]["low"]
    # wait: late 50 ms and early -2 ms from run_at; kept 0.5 s and run 0.2 s from ACCEPTED
    assert low["wait_ms"]["count"] == 4
    assert (low["wait_ms"]["p50"], low["wait_ms"]["max"]) == (50.0, 500.0)
    # run and end-to-end: the three that succeeded; the cancelled and expired are left out
    assert low["run_ms"]["count"] == 3 and low["end_to_end_ms"]["count"] == 3
    assert low["end_to_end_ms"]["max"] == 600.0  # kept: accepted at 1 s, done at 1.6 s
    assert low["end_to_end_ms"]["p50"] == 150.0  # late: due at 3 s, done at 3.15 s


def test_a_request_without_priority_is_grouped_as_default() -> None:
    run = RunRecord("d", "", 1.0, "none", started_at=T0, planned=2, finished_at=T0 + 1)
    run.sends = [send(0, "default", task="x"), send(1, "high", task="y")]
    report = build_report(run)
    assert list(report["by_priority"]) == ["high", "default"]
    assert report["by_priority"]["default"]["sent"] == 1
