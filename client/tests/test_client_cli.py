"""The `taskplatform` command line against the running platform: exit codes and --json."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from taskplatform_client.cli import main

pytestmark = pytest.mark.stack

BIN = Path(sys.executable).parent


class Run:
    """`taskplatform ARGS` in this process: (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> tuple[int, Any]:
        code, out, _ = self("--json", *args)
        return code, json.loads(out)


@pytest.fixture()
def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    api_url: str,
    admin_key: str,
) -> Run:
    monkeypatch.setenv("TASKPLATFORM_URL", api_url)
    monkeypatch.setenv("TASKPLATFORM_API_KEY", admin_key)
    return Run(capsys)


def test_submit_and_wait_exit_0_with_the_task_as_json(run: Run) -> None:
    code, task = run.json(
        "submit",
        "--team",
        "alpha",
        "--routine",
        "echo",
        "--payload",
        '{"a": 1}',
        "--priority",
        "high",
        "--wait",
        "30",
    )
    assert code == 0
    assert task["status"] == "SUCCEEDED" and task["result"] == {"a": 1}
    assert task["priority"] == "high"
    assert [event["status"] for event in task["timeline"]][-1] == "SUCCEEDED"


def test_submit_get_wait_and_the_readable_layout(run: Run, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "a file"}')
    code, accepted = run.json(
        "submit", "--team", "bravo", "--routine", "echo", "--payload", f"@{payload}"
    )
    assert code == 0 and accepted["status"] == "ACCEPTED"
    assert accepted["idempotency_key"]
    code, out, _ = run("wait", accepted["task_id"], "--timeout", "30")
    assert code == 0
    assert "SUCCEEDED" in out and '{"from": "a file"}' in out
    assert "AT" in out and "STATUS" in out and "ACCEPTED" in out  # the timeline table
    code, task = run.json("get", accepted["task_id"])
    assert code == 0 and task["result"] == {"from": "a file"}


def test_payload_from_standard_input(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"piped": true}'))
    code, task = run.json(
        "submit", "--team", "alpha", "--routine", "echo", "--payload", "-", "--wait"
    )
    assert code == 0 and task["result"] == {"piped": True}


def test_a_failed_task_exits_1(run: Run) -> None:
    code, task = run.json(
        "submit",
        "--team",
        "alpha",
        "--routine",
        "fail",
        "--payload",
        '{"times": 99}',
        "--wait",
        "60",
    )
    assert code == 1 and task["status"] == "FAILED" and "failing on purpose" in task["error"]


def test_timeout_exits_4_then_cancel_and_wait_exits_1(run: Run) -> None:
    code, task = run.json(
        "submit",
        "--team",
        "charlie",
        "--routine",
        "sleep",
        "--payload",
        '{"ms": 5000}',
        "--wait",
        "0.5",
    )
    assert code == 4 and task["status"] not in ("SUCCEEDED", "FAILED")  # the task as it was
    code, cancelled = run.json("cancel", task["task_id"], "--terminate")
    assert code == 0 and cancelled["status"] == "CANCELLED" and cancelled["terminate"]
    code, out, _ = run("wait", task["task_id"], "--timeout", "30")
    assert code == 1 and "CANCELLED" in out


def test_refusals_exit_3_with_the_error(run: Run, api_url: str) -> None:
    code, out, err = run("--json", "submit", "--team", "alpha", "--routine", "no-such")
    assert code == 3 and out == ""
    error = json.loads(err)
    assert error["status"] == 422 and error["error"]["details"][0]["field"] == "routine"
    code, _, err = run("get", "01a22f90-0000-7000-8000-000000000000")
    assert code == 3 and "404" in err
    code, done = run.json("submit", "--team", "alpha", "--routine", "noop", "--wait", "30")
    code, _, err = run("--json", "cancel", done["task_id"])
    assert code == 3 and json.loads(err)["error"]["details"] == {"status": "SUCCEEDED"}
    code, _, err = run("--key", "tpk_nobody_0000", "list")
    assert code == 3 and "401" in err
    code, _, err = run("--url", "http://127.0.0.1:9", "--retries", "0", "list")
    assert code == 3 and "cannot reach" in err


def test_bad_usage_exits_2(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("submit", "--team", "alpha")[0] == 2  # no --routine
    assert run("frobnicate")[0] == 2
    assert run("list", "--status", "NOPE")[0] == 2
    code, _, err = run("submit", "--team", "alpha", "--routine", "echo", "--payload", "{nope")
    assert code == 2 and "not JSON" in err
    code, _, err = run("submit", "--team", "alpha", "--routine", "noop", "--run-at", "soon")
    assert code == 2 and "--run-at" in err
    monkeypatch.delenv("TASKPLATFORM_API_KEY")
    code, _, err = run("list")
    assert code == 2 and "TASKPLATFORM_API_KEY" in err


def test_list_with_filters(run: Run) -> None:
    for _ in range(3):
        assert (
            run(
                "submit",
                "--team",
                "charlie",
                "--routine",
                "cpu",
                "--priority",
                "low",
                "--payload",
                '{"iterations": 1}',
                "--wait",
                "30",
            )[0]
            == 0
        )
    code, tasks = run.json(
        "list",
        "--team",
        "charlie",
        "--routine",
        "cpu",
        "--status",
        "succeeded",
        "--priority",
        "low",
        "--limit",
        "3",
    )
    assert code == 0 and len(tasks) == 3
    assert {(t["team"], t["routine"], t["status"], t["priority"]) for t in tasks} == {
        ("charlie", "cpu", "SUCCEEDED", "low")
    }
    code, out, _ = run("list", "--team", "charlie", "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["TASK", "STATUS", "TEAM"] and len(lines) == 3


def test_watch_prints_the_timeline_live(run: Run) -> None:
    code, accepted = run.json(
        "submit", "--team", "bravo", "--routine", "sleep", "--payload", '{"ms": 300}'
    )
    code, out, _ = run("--json", "watch", accepted["task_id"])
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert events[0]["status"] == "ACCEPTED" and events[-1]["status"] == "SUCCEEDED"
    code, out, _ = run("watch", accepted["task_id"])  # ended: the whole timeline, then 0
    assert code == 0 and "SUCCEEDED" in out.splitlines()[-1] and "+" in out
    code, accepted = run.json(
        "submit", "--team", "bravo", "--routine", "fail", "--payload", '{"times": 99}'
    )
    assert run("watch", accepted["task_id"])[0] == 1
    code, accepted = run.json(
        "submit", "--team", "bravo", "--routine", "sleep", "--payload", '{"ms": 5000}'
    )
    assert run("watch", accepted["task_id"], "--timeout", "0.5")[0] == 4
    assert run("cancel", accepted["task_id"], "--terminate")[0] == 0


@pytest.mark.parametrize(
    "command", [[str(BIN / "taskplatform")], [sys.executable, "-m", "taskplatform_client"]]
)
def test_the_installed_command_and_python_m(
    command: list[str], api_url: str, team_key: Callable[[str], str]
) -> None:
    env = {
        "TASKPLATFORM_URL": api_url,
        "TASKPLATFORM_API_KEY": team_key("charlie"),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [
            *command,
            "submit",
            "--team",
            "charlie",
            "--routine",
            "echo",
            "--payload",
            '{"x": 2}',
            "--wait",
            "30",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"x": 2}
    refused = subprocess.run(
        [*command, "submit", "--team", "alpha", "--routine", "noop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 3 and "403" in refused.stderr
    usage = subprocess.run([*command], env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
