"""The command line: invalid datasets and unreachable platforms stop before anything is sent."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.cli import main
from tests.helpers import wait_for
from tests.simulator.conftest import DATASETS, StubApi

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, requests: list[dict[str, object]]) -> Path:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"name": "d", "requests": requests}))
    return path


GOOD: dict[str, object] = {
    "at": "00:00",
    "team": "alpha",
    "routine": "noop",
    "priority": "high",
    "payload": {},
}


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"at": "06:01"}, 'requests[1].at: "06:01" is after 06:00'),
        ({"at": "1:30"}, 'requests[1].at: "1:30" is not MM:SS'),
        ({"team": None}, "requests[1].team: is required"),
        ({"priority": "urgent"}, 'requests[1].priority: "urgent" is not one of'),
        ({"at": "05:50", "count": 3, "every": 6}, "requests[1].count: 3 repeats every 6s"),
        ({"expires": 0}, "requests[1].expires: 0 is not more than 0"),
        ({"cancel_after": -1}, "requests[1].cancel_after: -1 is negative"),
    ],
)
def test_an_invalid_dataset_sends_nothing(
    tmp_path: Path,
    stub_api: StubApi,
    capsys: pytest.CaptureFixture[str],
    bad: dict[str, object],
    expected: str,
) -> None:
    entry = {key: value for key, value in {**GOOD, **bad}.items() if value is not None}
    path = write(tmp_path, [GOOD, entry])
    argv = ["run", str(path), "--api-url", stub_api.url, "--api-key", "k"]
    code = main([*argv, "--report-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[0] == f"simulator: invalid dataset {path} (1 problem); nothing was sent"
    assert expected in err
    assert stub_api.requests == []  # not even the health check
    assert not (tmp_path / "r").exists()


def test_the_same_valid_dataset_is_sent(tmp_path: Path, stub_api: StubApi) -> None:
    path = write(tmp_path, [GOOD, {**GOOD, "at": "00:01", "count": 2, "every": 0.1}])
    argv = ["run", str(path), "--speed", "10", "--api-url", stub_api.url, "--api-key", "k"]
    argv += ["--report-dir", str(tmp_path / "r"), "--no-progress", "--follow", "api"]
    assert main(argv) == 0
    assert stub_api.posts == 3
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert (report["sent"], report["accepted"], report["terminal"]["SUCCEEDED"]) == (3, 3, 3)


def test_an_unreachable_platform_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["run", str(DATASETS / "smoke.json"), "--api-url", f"http://127.0.0.1:{port}"]
    code = main([*argv, "--api-key", "k", "--report-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"simulator: cannot reach the platform at http://127.0.0.1:{port}")


def test_a_missing_key_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TASKPLATFORM_API_KEY", raising=False)
    assert main(["run", str(DATASETS / "smoke.json")]) == 2
    assert "TASKPLATFORM_API_KEY" in capsys.readouterr().err


def test_validate_and_schema_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["validate", *map(str, sorted(DATASETS.glob("*.json")))]) == 0
    out = capsys.readouterr().out
    assert "smoke.json: valid" in out
    assert "day.json: valid, 'day', 4106 requests (14 delayed, 9 expiring, 8 cancelled)" in out
    assert main(["validate", str(write(tmp_path, [{**GOOD, "at": "07:00"}]))]) == 2
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Simulator dataset"


def test_python_dash_m_simulator_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator", "validate", str(DATASETS / "day.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_sigint_stops_the_run_and_writes_a_partial_report(
    tmp_path: Path, stub_api: StubApi
) -> None:
    path = write(tmp_path, [{**GOOD, "count": 600, "every": 0.1}])  # a minute of requests
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "simulator", "run", str(path), "--api-url", stub_api.url),
            *("--api-key", "k", "--report-dir", str(tmp_path / "r"), "--follow", "api"),
            "--no-progress",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: stub_api.posts >= 5, timeout=60, what="the first requests")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, out + err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["interrupted"] is True
    assert 5 <= report["sent"] < 600 and report["not_sent"] == 600 - report["sent"]
    assert report["sent"] == stub_api.posts
