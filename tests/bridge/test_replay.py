"""Dead letters go to the dead-letter topic; `python -m bridge replay` brings them back."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import orjson
import pytest

from core.kafka import make_producer
from core.settings import Settings
from tests.instance import Instance
from tests.isolated import REPO
from tests.tasks_db import events, wait_terminal

pytestmark = pytest.mark.stack

REPORT = {"report": {"function": "tasks.routines:echo", "type": "batch", "priority": "low"}}


@pytest.fixture()
def instance(stack: Settings) -> Iterator[Instance]:
    with Instance(stack, "replay").running(["api", "recorder", "bridge", "worker-1"]) as instance:
        yield instance


def _replay(instance: Instance, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "replay", *args],
        cwd=REPO,
        env=instance.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dead_letters_are_replayed_as_new_tasks_after_the_fix(instance: Instance) -> None:
    assert instance.settings is not None
    old_id = str(uuid.uuid4())
    request = {
        "task_id": old_id,
        "team": "alpha",
        "routine": "report",
        "priority": "low",
        "accepted_at": "2026-11-27T10:00:00+00:00",
        "payload": {"n": 1},
    }
    producer = make_producer(instance.settings)
    topic = instance.settings.request_topic("alpha")
    producer.produce(topic, key=old_id.encode(), value=orjson.dumps(request))
    producer.produce(topic, value=b"garbage")
    assert producer.flush(30) == 0
    assert wait_terminal(instance.engine, [old_id]) == {old_id: "DEAD_LETTERED"}

    dry = _replay(instance, "--dry-run")
    assert "would replay 1 dead letters" in dry
    assert "not replayable (1): not JSON" in dry

    # The fix: the routine now exists. Restart what reads ROUTINES.
    instance.env["ROUTINES"] = orjson.dumps(REPORT).decode()
    instance.restart(["api", "bridge", "worker-1"])
    assert "left alone by the filters: 2" in _replay(instance, "--team", "bravo")
    out = _replay(instance, "--team", "alpha", "--reason", "unknown routine")
    assert "replayed 1 dead letters" in out
    new_id = out.split(f"{old_id} -> ")[1].split()[0]
    assert wait_terminal(instance.engine, [new_id]) == {new_id: "SUCCEEDED"}
    with instance.client() as client:
        new = client.get(f"/api/v1/tasks/{new_id}").json()
        assert new["result"] == {"n": 1}
        queued = next(e for e in new["timeline"] if e["status"] == "QUEUED")
        assert queued["detail"]["note"].startswith(f"replay of dead-lettered task {old_id}")
        # The old task stays dead-lettered: a task never leaves a terminal status.
        assert client.get(f"/api/v1/tasks/{old_id}").json()["status"] == "DEAD_LETTERED"

    # Replaying again names the same new task, which does not run twice.
    again = _replay(instance, "--team", "alpha")
    assert f"{old_id} -> {new_id}" in again
    instance.wait_bridge_caught_up()
    statuses = [e.status for e in events(instance.engine, [new_id])[new_id]]
    assert statuses.count("STARTED") == 1
