"""The report, computed from synthetic samples: no stack, exact numbers."""

from __future__ import annotations

import json

from core.status import Status
from simulator.report import build_report, percentiles, timeline
from simulator.samples import RunRecord, SendSample, TaskSample

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
    assert report["terminal"] == {"SUCCEEDED": 1, "FAILED": 1, "DEAD_LETTERED": 0}
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
