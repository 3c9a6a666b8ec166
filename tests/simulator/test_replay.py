"""Replays against a stub API, and one real replay of smoke.json against the stack."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings
from simulator.dataset import load_dataset, parse_dataset
from simulator.output import write_results
from simulator.replay import Replay, ReplayOptions
from simulator.schedule import expand
from tests.simulator.conftest import DATASETS, StubApi

REPO = Path(__file__).resolve().parents[2]


def replay(stub: StubApi, requests: list[dict[str, object]], **options: object) -> Replay:
    base = {"team": "alpha", "routine": "noop", "priority": "high", "payload": {}}
    dataset = parse_dataset(
        json.dumps({"name": "r", "requests": [{**base, **r} for r in requests]})
    )
    return Replay(
        name=dataset.name,
        description="",
        firings=expand(dataset),
        options=ReplayOptions(api_url=stub.url, api_key="k", **options),  # type: ignore[arg-type]
        handle_signals=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_rejections_are_reported_with_their_reason(stub_api: StubApi) -> None:
    stub_api.reject_teams.add("bravo")
    run = asyncio.run(
        replay(
            stub_api,
            [{"at": "00:00", "count": 3, "every": 0}, {"at": "00:00", "team": "bravo"}],
            speed=100,
            follow="none",
        ).run()
    )
    assert stub_api.posts == 4
    assert sorted(s.status_code for s in run.sends) == [202, 202, 202, 422]
    rejected = next(s for s in run.sends if s.status_code == 422)
    assert (rejected.error_code, rejected.task_id) == ("validation_error", None)
    assert all(s.latency is not None and s.lateness >= 0 for s in run.sends)


def test_ctrl_c_stops_sending_and_still_reports(stub_api: StubApi, tmp_path: Path) -> None:
    # 100 requests over 10 s of dataset time; interrupted after about a second.
    subject = replay(stub_api, [{"at": "00:00", "count": 100, "every": 0.1}], follow="none")

    async def interrupted() -> None:
        asyncio.get_running_loop().call_later(1.0, subject.interrupt)
        await subject.run()

    asyncio.run(interrupted())
    run = subject.run_record
    assert run.interrupted
    assert 0 < len(run.sends) < 100
    report, paths = write_results(run, tmp_path)
    assert report["interrupted"] and report["not_sent"] == 100 - len(run.sends)
    assert all(path.exists() for path in paths)


def test_without_kafka_tasks_are_followed_through_the_api(stub_api: StubApi) -> None:
    subject = replay(
        stub_api,
        [{"at": "00:00", "count": 5, "every": 0.1}],
        speed=10,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_timeout=1.0,
        poll_interval=0.2,
    )
    run = asyncio.run(subject.run())
    assert run.follow == "api"
    assert [task.status.value for task in run.tasks.values()] == ["SUCCEEDED"] * 5
    assert any(method == "GET" and "/api/v1/tasks/" in path for method, path in stub_api.requests)


def expected_outcomes(settings: Settings) -> tuple[int, int]:
    """(succeeded, failed) that smoke.json implies: `fail` with more `times` than the
    routine's retries fails every attempt; everything else succeeds."""
    retries = settings.routine_table["fail"].retries
    failed = sum(
        request.count
        for request in load_dataset(DATASETS / "smoke.json").requests
        if request.routine == "fail" and request.payload.get("times", 1) > retries
    )
    return load_dataset(DATASETS / "smoke.json").size - failed, failed


@pytest.mark.stack
def test_a_real_replay_of_smoke_matches_the_dataset(
    stack: Settings, api_url: str, admin_key: str, tmp_path: Path
) -> None:
    size = load_dataset(DATASETS / "smoke.json").size
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "run",
            str(DATASETS / "smoke.json"),
            "--speed",
            "8",
            "--api-url",
            api_url,
            "--kafka",
            stack.kafka_bootstrap,
            "--report-dir",
            str(tmp_path),
            "--drain-timeout",
            "90",
            "--no-progress",
        ],
        cwd=REPO,
        env={**os.environ, "TASKPLATFORM_API_KEY": admin_key},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    succeeded, failed = expected_outcomes(stack)
    assert report["follow"] == "kafka"
    assert (report["planned"], report["sent"], report["accepted"]) == (size, size, size)
    assert report["rejected"]["count"] == 0 and report["unanswered"] == 0
    assert report["not_finished"] == 0, report["not_finished_by_status"]
    assert report["terminal"] == {"SUCCEEDED": succeeded, "FAILED": failed, "DEAD_LETTERED": 0}
    assert report["by_routine"]["fail"]["terminal"]["FAILED"] == failed
    assert sum(group["sent"] for group in report["by_priority"].values()) == size
    assert report["anomalies"]["conflicting_terminal"] == 0
    for name in ("latency.png", "throughput.png", "inflight.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
