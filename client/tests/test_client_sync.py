"""`Client` and `Task` against the running platform: each method and each typed error."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from taskplatform_client import (
    BATCH_LIMIT,
    NO_RETRY,
    BatchRejected,
    Client,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Status,
    Task,
    TaskFailed,
    TaskSpec,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)

from core.settings import Settings

pytestmark = pytest.mark.stack


def test_submit_then_result(client: Client) -> None:
    task = client.submit("alpha", "echo", {"hello": "world"}, priority="high")
    assert isinstance(task, Task)
    assert task.accepted is not None and task.accepted.status == Status.ACCEPTED
    assert task.accepted.priority == "high"
    assert task.idempotency_key  # made by the client when the caller gave none
    assert task.result(timeout=30) == {"hello": "world"}
    info = task.get()
    assert info.status == Status.SUCCEEDED and info.terminal and info.succeeded
    assert info.payload == {"hello": "world"}
    assert info.timeline[0].status == Status.ACCEPTED
    assert info.timeline[-1].status == Status.SUCCEEDED


def test_the_same_idempotency_key_names_the_same_task(client: Client) -> None:
    key = f"client-test-{uuid.uuid4()}"
    first = client.submit("bravo", "noop", idempotency_key=key)
    again = client.submit("bravo", "noop", idempotency_key=key)
    assert again == first
    assert again.accepted is not None and again.accepted.idempotent_replay
    assert first.accepted is not None and not first.accepted.idempotent_replay


def test_a_failed_task_raises_task_failed_with_its_error(client: Client) -> None:
    task = client.submit("alpha", "fail", {"times": 99})
    with pytest.raises(TaskFailed) as failed:
        task.result(timeout=60)
    assert failed.value.status == Status.FAILED
    assert failed.value.error is not None and "failing on purpose" in failed.value.error
    assert failed.value.task.attempts > 1


def test_wait_times_out_with_the_task_as_it_is(client: Client) -> None:
    task = client.submit("alpha", "sleep", {"ms": 4000})
    with pytest.raises(WaitTimeout) as late:
        task.wait(timeout=0.5)
    assert not late.value.task.terminal
    assert isinstance(late.value, TimeoutError)
    cancelled = task.cancel(terminate=True)
    assert cancelled.status == Status.CANCELLED and cancelled.terminate
    assert task.wait(timeout=30).status == Status.CANCELLED


def test_cancel_a_scheduled_task_and_conflict_after_the_end(client: Client) -> None:
    task = client.submit("charlie", "noop", run_at=timedelta(minutes=10))
    answer = client.cancel(task.id)
    assert (answer.status, answer.terminate) == (Status.CANCELLED, False)
    with pytest.raises(TaskFailed) as ended:
        task.result(timeout=30)
    assert ended.value.status == Status.CANCELLED
    done = client.submit("charlie", "noop")
    done.wait(timeout=30)
    with pytest.raises(Conflict) as conflict:
        done.cancel()
    assert conflict.value.status == 409 and conflict.value.ended_with == Status.SUCCEEDED


def test_run_at_a_time_and_expires(client: Client) -> None:
    at = datetime.now(UTC) + timedelta(minutes=5)
    later = client.submit("alpha", "noop", run_at=at)
    assert later.accepted is not None and later.accepted.run_at is not None
    assert abs((later.accepted.run_at - at).total_seconds()) < 0.001
    later.cancel()
    expired = client.submit("alpha", "noop", expires=datetime.now(UTC) - timedelta(seconds=1))
    assert expired.wait(timeout=30).status == Status.EXPIRED
    with pytest.raises(ValueError, match="timezone-aware"):
        client.submit("alpha", "noop", run_at=datetime.now())


def test_events_follow_a_task_to_its_end(client: Client) -> None:
    task = client.submit("bravo", "sleep", {"ms": 300})
    statuses = [event.status for event in task.events()]
    assert statuses[0] == Status.ACCEPTED
    assert statuses[-1] == Status.SUCCEEDED
    assert Status.STARTED in statuses
    assert len(statuses) == len(set(statuses))  # each once


def test_submit_many_splits_at_the_batch_size(client: Client) -> None:
    specs = [TaskSpec("charlie", "echo", {"n": n}) for n in range(4)]
    as_dict = {"team": "charlie", "routine": "echo", "payload": {"n": 4}}
    tasks = client.submit_many([*specs, as_dict], batch_size=2)
    assert len(set(tasks)) == 5
    assert [task.result(timeout=30) for task in tasks] == [{"n": n} for n in range(5)]


def test_the_default_batch_size_is_the_apis_limit(client: Client, settings: Settings) -> None:
    assert client.batch_limit == BATCH_LIMIT == settings.api_batch_max


def test_submit_many_reports_each_refused_item(client: Client) -> None:
    items = [{"team": "alpha", "routine": "noop"}, {"team": "alpha", "routine": "no-such"}]
    with pytest.raises(BatchRejected) as refused:
        client.submit_many(items)
    assert list(refused.value.errors) == [1]
    error = refused.value.errors[1]
    assert isinstance(error, Invalid) and "routine" in error.fields
    accepted = refused.value.results[0]
    assert isinstance(accepted, Task) and accepted.wait(timeout=30).succeeded


def test_list_pages_through_with_filters(client: Client) -> None:
    item = {"team": "bravo", "routine": "cpu", "priority": "low", "payload": {"iterations": 1}}
    mine = {task.id for task in client.submit_many([item] * 5)}
    for task_id in mine:
        client.wait(task_id, timeout=30)
    found = list(
        client.list(
            team="bravo", routine="cpu", status="SUCCEEDED", priority="low", limit=5, page_size=2
        )
    )
    assert {info.task_id for info in found} == mine  # the newest five: these
    assert all(info.priority == "low" and info.status == Status.SUCCEEDED for info in found)
    created = [info.created_at for info in found]
    assert created == sorted(created, reverse=True)
    page = client.page(team="bravo", limit=1)
    assert len(page.tasks) == 1 and page.next_cursor is not None


def test_typed_errors(
    client: Client, team_client: Client, api_url: str, team_key: Callable[[str], str]
) -> None:
    with pytest.raises(NotFound):
        client.get(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        client.get("not-a-task-id")
    with pytest.raises(Invalid) as invalid:
        client.submit("alpha", "no-such-routine")
    assert invalid.value.status == 422 and list(invalid.value.fields) == ["routine"]
    with pytest.raises(Invalid) as invalid:
        client.submit("alpha", "noop", priority="urgent")
    assert "priority" in invalid.value.fields
    with pytest.raises(Forbidden) as forbidden:
        team_client.submit("bravo", "noop")
    assert forbidden.value.status == 403
    # Another team's task is not there, as far as this key can tell.
    theirs = client.submit("bravo", "noop")
    with pytest.raises(NotFound):
        team_client.get(theirs.id)
    stranger = Client(api_url, "tpk_nobody_0000", retry=NO_RETRY)
    with stranger, pytest.raises(Unauthorized) as unknown:
        stranger.get(theirs.id)
    assert isinstance(unknown.value, Forbidden) and unknown.value.status == 401
    nowhere = Client("http://127.0.0.1:9", "key", retry=NO_RETRY)
    with nowhere, pytest.raises(Unreachable):
        nowhere.get(theirs.id)
