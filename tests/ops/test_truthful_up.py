"""`up` says "ready." only if what it started is still alive a moment later, and `status`
tells a component that died, or keeps restarting, from one that was stopped."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import ops.__main__ as ops_main
from core.settings import Settings
from ops.stack import SETTLE_SECONDS, Stack
from ops.supervisor import RESTARTS_KEPT, ProcessSpec, StartError, Supervisor
from tests.helpers import wait_for
from tests.isolated import isolated_run_dir

pytestmark = [
    pytest.mark.own_stack,
    pytest.mark.stack,
]

# Touches its ready file, says something, then exits 3 a second later: a component that
# passes its ready probe and dies right after (as a consumer does on a poison message).
DIES_AFTER_READY = (
    "import os, pathlib, sys, time\n"
    "pathlib.Path(os.environ['READY_FILE']).touch()\n"
    "print('subscribed; reading the first message', flush=True)\n"
    "time.sleep(1)\n"
    "print('poison: cannot go on', flush=True)\n"
    "sys.exit(3)\n"
)
STAYS_UP = (
    "import os, pathlib, time\npathlib.Path(os.environ['READY_FILE']).touch()\ntime.sleep(120)\n"
)


@pytest.fixture()
def run_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    path = isolated_run_dir(request.node.name)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def fake_stack(run_dir: Path) -> Iterator[Callable[[dict[str, str]], FakeStack]]:
    """Makes FakeStacks in the test's run folder, and stops all they started at the end."""
    made: list[FakeStack] = []

    def make(scripts: dict[str, str]) -> FakeStack:
        made.append(FakeStack(run_dir, scripts))
        return made[-1]

    yield make
    for stack in made:
        stack.down(echo=False)


class FakeStack(Stack):
    """The real Stack (up, settle, stop, status) over test processes of our own."""

    def __init__(self, run_dir: Path, scripts: dict[str, str]) -> None:
        super().__init__(Settings(_env_file=None, run_dir=run_dir))  # type: ignore[call-arg]
        self.scripts = scripts

    def specs(self) -> list[ProcessSpec]:
        return [_spec(self.supervisor, name, script) for name, script in self.scripts.items()]

    def migrate(self) -> None:  # no Kafka or Postgres behind these processes
        pass


def _spec(supervisor: Supervisor, name: str, script: str) -> ProcessSpec:
    ready_file = supervisor.ready_file(name)
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-c", script],
        ready=ready_file.exists,
        env={"READY_FILE": str(ready_file)},
        stop_timeout=5,
    )


def test_a_component_that_dies_after_ready_fails_up_with_its_log(
    fake_stack: Callable[[dict[str, str]], FakeStack],
) -> None:
    stack = fake_stack({"steady": STAYS_UP, "flaky": DIES_AFTER_READY})
    with pytest.raises(StartError) as failure:
        stack.up(echo=False)
    message = str(failure.value)
    assert failure.value.name == "flaky"
    assert "flaky failed to start: died right after it was ready" in message
    assert "poison: cannot go on" in message  # the last lines of its log
    assert "steady" not in message
    assert stack.supervisor.tracked("steady") is not None
    assert [s.state for s in stack.status() if s.name == "flaky"] == ["died"]


def test_the_command_exits_1_naming_the_component(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = FakeStack(run_dir, {"flaky": DIES_AFTER_READY})
    monkeypatch.setattr(ops_main, "Stack", lambda settings: stack)
    try:
        assert ops_main.main(["up", "flaky"]) == 1
    finally:
        stack.down(echo=False)
    out, err = capsys.readouterr()
    assert "ready." not in out
    assert "error: flaky failed to start: died right after it was ready" in err
    assert "--- last lines of its log ---" in err
    assert "poison: cannot go on" in err


def test_up_waits_once_after_starting_and_not_at_all_when_nothing_started(
    fake_stack: Callable[[dict[str, str]], FakeStack],
) -> None:
    stack = fake_stack({"one": STAYS_UP, "two": STAYS_UP, "three": STAYS_UP})
    t0 = time.monotonic()
    assert stack.up(echo=False) == ["one", "two", "three"]
    first = time.monotonic() - t0
    assert SETTLE_SECONDS <= first < 2 * SETTLE_SECONDS + 5  # one shared wait, not three

    t0 = time.monotonic()
    assert stack.up(echo=False) == []
    assert time.monotonic() - t0 < 1.0


def test_status_says_restarting_for_a_crash_loop_not_for_restarts_on_purpose(
    fake_stack: Callable[[dict[str, str]], FakeStack],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = fake_stack({"sleeper": STAYS_UP})
    for _ in range(3):
        stack.supervisor.start(stack.specs()[0])
        stack.stop(["sleeper"])
    stack.supervisor.start(stack.specs()[0])
    assert [s.state for s in stack.status()] == ["running"]  # stopped on purpose

    for _ in range(3):
        (item,) = stack.status()
        os.killpg(item.pid, signal.SIGKILL)
        wait_for(lambda: stack.supervisor.tracked("sleeper") is None, what="sleeper gone")
        stack.supervisor.start(stack.specs()[0])
    (item,) = stack.status()
    assert item.state == "restarting"
    assert item.recent_restarts == 3
    assert item.note == "3 restarts after dying in 10 min"

    monkeypatch.setattr(ops_main, "Stack", lambda settings: stack)
    capsys.readouterr()
    assert ops_main.main(["status"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["component", "state", "pid", "port"]
    assert lines[1].split()[:4] == ["sleeper", "restarting", str(item.pid), "-"]
    assert lines[1].endswith("3 restarts after dying in 10 min")


def test_old_starts_do_not_count_and_the_record_stays_small(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    now = time.time()
    for _ in range(3):
        supervisor.record_restart("bridge", at=now - 700)
    assert supervisor.restarts_within("bridge", 600, now=now) == 0
    for _ in range(RESTARTS_KEPT * 3):
        supervisor.record_restart("bridge", at=now)
    assert len(supervisor.restarts_file("bridge").read_text().splitlines()) == RESTARTS_KEPT
    assert supervisor.restarts_within("bridge", 600, now=now) == RESTARTS_KEPT


def test_status_says_died_after_kill_9_and_stopped_after_stop(
    fake_stack: Callable[[dict[str, str]], FakeStack],
) -> None:
    stack = fake_stack({"sleeper": STAYS_UP})
    pid, _ = stack.supervisor.start(stack.specs()[0])
    assert [s.state for s in stack.status()] == ["running"]

    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: stack.supervisor.tracked("sleeper") is None, what="sleeper to be gone")
    assert not stack.supervisor.pid_file("sleeper").exists()  # still removed, as before
    (item,) = stack.status()
    assert (item.state, item.pid) == ("died", None)
    assert [s.state for s in stack.status()] == ["died"]  # not forgotten on the next look

    stack.supervisor.start(stack.specs()[0])  # a new start clears it
    assert [s.state for s in stack.status()] == ["running"]
    stack.stop(["sleeper"])
    assert [s.state for s in stack.status()] == ["stopped"]
