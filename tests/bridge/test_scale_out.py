"""Two bridges in one consumer group share the request partitions; when one is killed
the other takes its partitions over, and no task is lost or run twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from core.kafka import make_admin
from core.settings import Settings
from tests.helpers import wait_for
from tests.instance import Instance, submit
from tests.isolated import REPO
from tests.tasks_db import wait_terminal

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture()
def instance(stack: Settings) -> Iterator[Instance]:
    with Instance(stack, "scale", TOPIC_PARTITIONS="4", WORKER_CONCURRENCY="2").running(
        ["api", "recorder", "bridge", "worker-1"]
    ) as instance:
        yield instance


def _members(instance: Instance) -> dict[str, int]:
    """Consumer id -> number of partitions, for the bridges' group."""
    assert instance.settings is not None
    admin = make_admin(instance.settings)
    group = f"{instance.settings.consumer_group_prefix}-bridge"
    description = admin.describe_consumer_groups([group])[group].result(10)
    return {
        member.member_id: len(member.assignment.topic_partitions) for member in description.members
    }


def test_two_bridges_share_partitions_and_survive_one_being_killed(instance: Instance) -> None:
    log = (instance.run_dir / "logs" / "bridge-2.log").open("ab")
    second = subprocess.Popen(
        [sys.executable, "-m", "bridge"],
        cwd=REPO, env=instance.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        total = 3 * 4  # teams x partitions
        wait_for(
            lambda: (
                (m := _members(instance))
                and len(m) == 2
                and sum(m.values()) == total
                and all(m.values())
            ),
            timeout=60,
            what="both bridges to hold partitions",
        )
        items = [
            {"team": ("alpha", "bravo", "charlie")[i % 3], "routine": "sleep",
             "payload": {"ms": 2}, "priority": ("high", "medium", "low")[i % 3]}
            for i in range(1500)
        ]  # fmt: skip
        with instance.client() as client:
            ids = submit(client, items[:750])
            os.killpg(second.pid, signal.SIGKILL)  # mid-flight, with work in its hands
            second.wait(10)
            ids += submit(client, items[750:])
        wait_for(
            lambda: (m := _members(instance)) and len(m) == 1 and sum(m.values()) == total,
            timeout=60,
            what="the surviving bridge to take every partition",
        )
        assert set(wait_terminal(instance.engine, ids, timeout=240).values()) == {"SUCCEEDED"}
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
        log.close()
    with instance.engine.connect() as conn:
        counts = Counter(
            dict(
                conn.execute(
                    text(
                        "SELECT status, count(*) FROM task_events "
                        "WHERE task_id = ANY(CAST(:ids AS uuid[])) GROUP BY status"
                    ),
                    {"ids": ids},
                ).all()
            )
        )
    assert counts["SUCCEEDED"] == len(ids)  # one outcome each
    assert counts["STARTED"] == len(ids)  # and one run each: nothing dispatched twice
