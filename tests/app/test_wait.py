"""`?wait=N` on the real stack: `GET /api/v1/tasks/<id>?wait=N` answers as soon as the
task ends (woken by the recorder's announcement), or at N seconds with its current state;
`POST /api/v1/tasks?wait=N` submits and waits; a bad wait is a 400 naming it; and 2,000
requests waiting on one API process do not hold up submits.

An isolated instance has one API process and one worker slot. A task that must not end
yet is a gate task holding the slot until the test releases it; the 2,000 waiters wait
on tasks that the stopped bridge has not taken in yet. Waits on conditions, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench.http_bench import wrk
from core.percentiles import summary
from core.settings import Settings
from core.status import TERMINAL, Status
from ops.supervisor import Supervisor
from tests.helpers import wait_for
from tests.instance import Instance, submit
from tests.pipeline_instance import one_slot_instance
from tests.tasks_db import statuses

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ENDED = {status.value for status in TERMINAL}
ROUTINES = {"gate": {"function": "tests.routines_for_tests:gate", "timeout": 300}}
WAITERS = 2_000


def percentiles(values: list[float]) -> dict[str, float]:
    return {name: round(value or 0.0, 2) for name, value in summary(values).items()}


@pytest.fixture(scope="module")
def one_slot(stack: Settings) -> Iterator[Instance]:
    with one_slot_instance(
        stack, "wait", ROUTINES, API_WORKERS="1", RATE_LIMIT="100000", RATE_BURST="100000"
    ) as instance:
        yield instance


class Gate:
    """A gate task holding the only worker slot until `open()`."""

    def __init__(self, instance: Instance, folder: Path) -> None:
        self.instance = instance
        self.release = folder / f"release-{uuid.uuid4().hex}"
        payload = {"release": str(self.release), "seconds": 280}
        with instance.client() as client:
            (self.task_id,) = submit(
                client,
                [{"team": "alpha", "routine": "gate", "priority": "high", "payload": payload}],
            )
        wait_for(
            lambda: statuses(instance.engine, [self.task_id]).get(self.task_id) == "STARTED",
            timeout=60,
            what=f"the gate task {self.task_id} to start",
        )

    def open(self) -> float:
        self.release.touch()
        return time.monotonic()


@pytest.fixture()
def gate(one_slot: Instance, tmp_path: Path) -> Iterator[Gate]:
    held = Gate(one_slot, tmp_path)
    try:
        yield held
    finally:
        held.release.touch()


def waiting_requests(client: httpx.Client) -> float:
    """The API's gauge of requests held open by ?wait= (all its processes)."""
    text = client.get("/metrics").text
    found = re.search(r"^api_waiting_requests (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_outcomes(client: httpx.Client) -> dict[str, float]:
    """How the API's waits ended so far (api_waits_total by outcome)."""
    text = client.get("/metrics").text
    found: dict[str, float] = {}
    pattern = r'^api_waits_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$'
    for outcome, value in re.findall(pattern, text, re.MULTILINE):
        found[outcome] = found.get(outcome, 0.0) + float(value)
    return found


async def until(condition: Callable[[], Any], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def async_client(instance: Instance, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=instance.api_url,
        headers={"Authorization": f"Bearer {instance.admin_key}"},
        **options,
    )


def test_a_waiter_answers_as_soon_as_its_task_ends(one_slot: Instance, gate: Gate) -> None:
    async def scenario() -> tuple[httpx.Response, float]:
        async with async_client(one_slot, timeout=90) as client:
            waiting = asyncio.ensure_future(client.get(f"/api/v1/tasks/{gate.task_id}?wait=60"))
            with one_slot.client() as sync:
                await until(lambda: waiting_requests(sync) >= 1, "the request to wait", 30)
            assert not waiting.done()
            opened = gate.open()
            answer = await waiting
            return answer, time.monotonic() - opened

    answer, after_release = asyncio.run(scenario())
    assert answer.status_code == 200
    assert answer.json()["status"] == Status.SUCCEEDED.value
    print(f"\nanswered {after_release * 1000:.0f} ms after the gate was released (wait=60)")
    assert after_release < 60  # woken by the announcement, before its deadline (wait=60)
    with one_slot.client() as client:
        plain = client.get(f"/api/v1/tasks/{gate.task_id}")
    assert plain.json() == answer.json()  # the same body as without wait


def test_at_the_deadline_the_answer_is_the_current_state(one_slot: Instance, gate: Gate) -> None:
    with one_slot.client() as client:
        started = time.monotonic()
        answer = client.get(f"/api/v1/tasks/{gate.task_id}?wait=1.5")
        elapsed = time.monotonic() - started
        assert answer.status_code == 200
        assert answer.json()["status"] == Status.STARTED.value
        assert elapsed >= 1.5  # held until its deadline: the task had not ended
        # Submit and wait: the task waits behind the gate, so the answer is a 202 with
        # the task as it is now, and where to find it.
        submitted = client.post("/api/v1/tasks?wait=1", json={"team": "alpha", "routine": "noop"})
        assert submitted.status_code == 202
        body = submitted.json()
        assert body["status"] not in ENDED
        assert "timeline" in body  # the GET's body
        assert submitted.headers["Location"] == f"/api/v1/tasks/{body['task_id']}"


def test_submit_and_wait_answers_200_with_the_ended_task(one_slot: Instance) -> None:
    with one_slot.client() as client:
        started = time.monotonic()
        answer = client.post(
            "/api/v1/tasks?wait=30",
            json={"team": "alpha", "routine": "echo", "payload": {"hello": 1}},
        )
        elapsed = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == Status.SUCCEEDED.value
        assert body["result"] == {"hello": 1}
        assert [event["status"] for event in body["timeline"]][-1] == Status.SUCCEEDED.value
        assert elapsed < 15  # woken, not at the deadline
        assert client.get(f"/api/v1/tasks/{body['task_id']}").json() == body


def test_a_bad_wait_is_a_400_naming_it(api_url: str, team_key: Callable[[str], str]) -> None:
    headers = {"Authorization": f"Bearer {team_key('alpha')}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        task_id = client.post("/api/v1/tasks", json={"team": "alpha", "routine": "noop"}).json()[
            "task_id"
        ]
        for wait in ("0", "-1", "61", "60.5", "soon", "", "nan", "inf"):
            for answer in (
                client.get(f"/api/v1/tasks/{task_id}", params={"wait": wait}),
                client.post(
                    "/api/v1/tasks",
                    params={"wait": wait},
                    json={"team": "alpha", "routine": "noop"},
                ),
            ):
                assert answer.status_code == 400, (wait, answer.text)
                error = answer.json()["error"]
                assert error["message"].startswith("wait: "), error
                assert error["details"][0]["field"] == "wait"
        twice = client.get(f"/api/v1/tasks/{task_id}?wait=1&wait=2")
        assert twice.status_code == 400 and "wait" in twice.json()["error"]["message"]
        batch = client.post(
            "/api/v1/tasks/batch?wait=5", json={"tasks": [{"team": "alpha", "routine": "noop"}]}
        )
        assert batch.status_code == 400
        assert batch.json()["error"]["message"].startswith("wait: ")
        # The list and the events refuse it as any unknown parameter.
        assert client.get("/api/v1/tasks?wait=5").status_code == 400


def test_another_teams_task_is_missing_at_once(
    api_url: str, team_key: Callable[[str], str]
) -> None:
    bravo = {"Authorization": f"Bearer {team_key('bravo')}"}
    alpha = {"Authorization": f"Bearer {team_key('alpha')}"}
    with httpx.Client(base_url=api_url, timeout=30) as client:
        submitted = client.post(
            "/api/v1/tasks",
            headers=bravo,
            json={"team": "bravo", "routine": "sleep", "payload": {"ms": 3000}},
        )
        task_id = submitted.json()["task_id"]
        started = time.monotonic()
        answer = client.get(f"/api/v1/tasks/{task_id}?wait=20", headers=alpha)
        assert answer.status_code == 404
        assert time.monotonic() - started < 5  # refused on the first read, not waited
        assert answer.json()["error"]["code"] == "not_found"
        assert client.get(f"/api/v1/tasks/{uuid.uuid4()}?wait=5", headers=alpha).status_code == 404
        # Submitting for another team is refused as without wait, and nothing waits.
        refused = client.post(
            "/api/v1/tasks?wait=20", headers=alpha, json={"team": "bravo", "routine": "noop"}
        )
        assert refused.status_code == 403, refused.text


def _submits_for(instance: Instance, seconds: int) -> dict[str, Any]:
    """Single submits with wrk for `seconds` (as `make bench` measures them, 32
    connections): requests per second, latency, and any answer that was not a 2xx."""
    body = orjson.dumps({"team": "alpha", "routine": "noop", "priority": "low"})
    return wrk(f"{instance.api_url}/api/v1/tasks", body, instance.admin_key, seconds=seconds)


def test_two_thousand_waiters_on_one_process_do_not_hold_up_submits(one_slot: Instance) -> None:
    """While 2,000 requests wait, the bridge is stopped (their tasks stay ACCEPTED, and
    no bridge or worker work differs between the measurements with and without them);
    started again, it lets them all end."""
    assert one_slot.env["API_WORKERS"] == "1"  # every waiter on the same API process
    one_slot.stop_components(["bridge"])
    try:
        items = [{"team": "alpha", "routine": "noop", "priority": "high"}] * 1000
        with one_slot.client() as client:
            ids = [task_id for _ in range(WAITERS // 1000) for task_id in submit(client, items)]
        figures = asyncio.run(_hold_waiters(one_slot, ids))
    finally:
        # _hold_waiters starts it again itself (an `ops up` of a running bridge still takes
        # seconds: it checks the topics, ACLs and schema); this is for a failure before that.
        if Supervisor(one_slot.run_dir).tracked("bridge") is None:
            one_slot.up(["bridge"])
    without, held = figures["without"], figures["with"]
    print(
        f"\n{figures['held']:.0f} concurrent waiters held on one API process; single submits "
        f"(wrk, 32 connections) {without['requests_per_s']:.0f}/s without them (p99 "
        f"{without['latency_ms'].get('99')} ms), {held['requests_per_s']:.0f}/s with them (p99 "
        f"{held['latency_ms'].get('99')} ms); every waiter answered "
        f"{figures['all_answered_s']:.1f} s after the bridge was started again (seconds after "
        f"it: {figures['answered_s']}; why: {figures['outcomes']}; the tasks ended over "
        f"{figures['drain_s']:.1f} s)"
    )
    assert figures["held"] >= WAITERS
    for phase in (without, held):  # every submit answered 202, none refused or timed out
        assert phase["requests_per_s"] > 0 and phase["non_2xx"] == 0, phase
        assert phase["socket_errors"] == "", phase
    assert figures["answers"] == Counter({(200, Status.SUCCEEDED.value): WAITERS})


async def _hold_waiters(instance: Instance, ids: list[str]) -> dict[str, Any]:
    """Submit throughput without waiters, then with a waiter on each of `ids`; then start
    the bridge and gather every answer."""
    figures: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as clients:
        # Waiters spread over clients of 50 connections each: one client's pool of 2,000
        # connections spends seconds of the test's CPU on its own bookkeeping.
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        pools = [
            await clients.enter_async_context(async_client(instance, timeout=120, limits=limits))
            for _ in range(WAITERS // 50)
        ]
        figures["without"] = await asyncio.to_thread(_submits_for, instance, 3)
        answered_at: list[float] = []

        async def wait_on(index: int, task_id: str) -> httpx.Response:
            answer = await pools[index % len(pools)].get(f"/api/v1/tasks/{task_id}?wait=60")
            answered_at.append(time.monotonic())
            return answer

        waiting = [asyncio.ensure_future(wait_on(i, task_id)) for i, task_id in enumerate(ids)]
        with instance.client() as sync:
            await until(lambda: waiting_requests(sync) >= WAITERS, f"{WAITERS} waiters", 90)
            figures["held"] = waiting_requests(sync)
        figures["with"] = await asyncio.to_thread(_submits_for, instance, 3)
        assert not any(w.done() for w in waiting)  # all still held (no task has ended)
        started = time.monotonic()
        await asyncio.to_thread(instance.up, ["bridge"])
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 90)
        figures["all_answered_s"] = time.monotonic() - started
        figures["answered_s"] = percentiles([at - started for at in answered_at])
        with instance.client() as sync:
            figures["outcomes"] = wait_outcomes(sync)
    figures["answers"] = Counter((a.status_code, a.json()["status"]) for a in answers)
    finished = [datetime.fromisoformat(a.json()["finished_at"]) for a in answers]
    figures["drain_s"] = (max(finished) - min(finished)).total_seconds()
    return figures
