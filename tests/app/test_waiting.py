"""The waiting front (app/waiting.py) with fakes: a small Flask app stands in for the
API, and the test wakes waiters itself where the recorder's announcement would.
Requests go through the ASGI interface in-process (httpx's ASGI transport, or by hand
where the test plays the client)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, Response, jsonify, request

from app.errors import BadRequest
from app.waiting import WAIT_MAX_SECONDS, Front, _UntilGone, parse_wait, split_wait
from core.status import TERMINAL, Status, names
from core.task_done import Waiters

PENDING = Status.STARTED.value
ENDED = Status.SUCCEEDED.value


class Tasks:
    """What the fake API knows: task id -> status, and a hook run after each read."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.reads: list[str] = []
        self.after_read: Callable[[str], None] = lambda task_id: None
        self.stream_closed = threading.Event()
        self.inputs: list[str] = []  # how each /echo request's body reached the app

    def new(self, status: str = PENDING) -> str:
        task_id = str(uuid.uuid4())
        self.status[task_id] = status
        return task_id


BODY_LIMIT = 4096


def fake_api(tasks: Tasks) -> Flask:
    app = Flask("fake_api")
    app.config["MAX_CONTENT_LENGTH"] = BODY_LIMIT

    @app.get("/api/v1/tasks/<task_id>")
    def read(task_id: str) -> Any:
        if request.args:  # as the real route: no query parameter is known
            return jsonify(
                error={"message": f"unknown query parameter {next(iter(request.args))!r}"}
            ), 400
        if request.headers.get("Authorization") != "Bearer good":
            return jsonify(error={"message": "unauthorized"}), 401
        if task_id not in tasks.status:
            return jsonify(error={"message": f"no task {task_id}"}), 404
        tasks.reads.append(task_id)
        body = {"task_id": task_id, "status": tasks.status[task_id]}
        tasks.after_read(task_id)
        return jsonify(body)

    @app.post("/api/v1/tasks")
    def submit() -> Any:
        body = request.get_json()
        if body.get("routine") != "noop":
            return jsonify(error={"message": "routine: unknown"}), 422
        task_id = tasks.new(body.get("status", PENDING))
        link = f"/api/v1/tasks/{task_id}"
        return (
            jsonify(task_id=task_id, status="ACCEPTED", links={"self": link}),
            202,
            {"Location": link},
        )

    @app.post("/api/v1/tasks/batch")
    def batch() -> Any:
        return jsonify(accepted=0), 202

    @app.post("/echo")
    def echo() -> Any:
        tasks.inputs.append(type(request.environ["wsgi.input"]).__name__)
        return request.get_data(), 200, {"Content-Type": "application/octet-stream"}

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            while True:
                yield b": keep-alive\n\n"
                time.sleep(0.01)

        response = Response(chunks(), mimetype="text/event-stream")
        response.call_on_close(tasks.stream_closed.set)
        return response

    return app


@pytest.fixture()
def tasks() -> Tasks:
    return Tasks()


@pytest.fixture()
def front(tasks: Tasks) -> Iterator[Front]:
    front = Front(fake_api(tasks), threads=4, waiters=Waiters())
    yield front
    front.wsgi.executor.shutdown(wait=True, cancel_futures=True)


def run(front: Front, scenario: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=front)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers={"Authorization": "Bearer good"}
        ) as client:
            await scenario(client)

    asyncio.run(main())


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def test_the_wait_parameter_is_split_off_and_checked() -> None:
    assert split_wait(b"wait=5") == (["5"], b"")
    assert split_wait(b"a=1&wait=2.5&b=%20x") == (["2.5"], b"a=1&b=%20x")
    assert split_wait(b"w%61it=1&wait=2") == (["1", "2"], b"")
    assert parse_wait(["0.5"]) == 0.5
    assert parse_wait([str(WAIT_MAX_SECONDS)]) == WAIT_MAX_SECONDS
    for bad in (["0"], ["-1"], ["60.01"], ["abc"], [""], ["nan"], ["inf"], ["1", "2"]):
        with pytest.raises(BadRequest) as refused:
            parse_wait(bad)
        assert refused.value.message.startswith("wait: ")
        assert refused.value.details[0]["field"] == "wait"


def test_the_terminal_set_is_the_declared_one() -> None:
    from app import waiting

    assert frozenset(names(TERMINAL)) == waiting.ENDED


def test_without_wait_a_request_passes_through(front: Front, tasks: Tasks) -> None:
    task_id = tasks.new()

    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.get(f"/api/v1/tasks/{task_id}")
        assert (answer.status_code, answer.json()["status"]) == (200, PENDING)
        assert (await client.get(f"/api/v1/tasks/{task_id}?x=1")).status_code == 400

    run(front, scenario)


def test_an_ended_task_is_answered_at_once_as_without_wait(front: Front, tasks: Tasks) -> None:
    task_id = tasks.new(ENDED)

    async def scenario(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        waited = await client.get(f"/api/v1/tasks/{task_id}?wait=30")
        assert time.monotonic() - started < 5
        plain = await client.get(f"/api/v1/tasks/{task_id}")
        assert (waited.status_code, waited.content) == (plain.status_code, plain.content)
        assert waited.headers["content-type"] == plain.headers["content-type"]

    run(front, scenario)


def test_a_waiter_answers_as_soon_as_its_task_is_announced(front: Front, tasks: Tasks) -> None:
    task_id, other = tasks.new(), tasks.new()

    async def scenario(client: httpx.AsyncClient) -> None:
        waiting = asyncio.ensure_future(client.get(f"/api/v1/tasks/{task_id}?wait=30"))
        await until(lambda: len(front.waiters) == 1, "the request to wait")
        front.waiters.ended([other])  # another task's announcement: nothing happens
        await asyncio.sleep(0.05)
        assert not waiting.done()
        tasks.status[task_id] = ENDED
        started = time.monotonic()
        front.waiters.ended([task_id])
        answer = await waiting
        assert time.monotonic() - started < 5
        assert (answer.status_code, answer.json()["status"]) == (200, ENDED)
        assert len(front.waiters) == 0

    run(front, scenario)


def test_a_task_that_ends_between_the_first_read_and_the_wait_is_not_missed(
    front: Front, tasks: Tasks
) -> None:
    """The waiter registers before its first read: an announcement made right after that
    read (before the request starts waiting) still wakes it."""
    task_id = tasks.new()

    async def scenario(client: httpx.AsyncClient) -> None:
        loop = asyncio.get_running_loop()

        def end_now(read: str) -> None:
            tasks.after_read = lambda _: None
            tasks.status[read] = ENDED
            loop.call_soon_threadsafe(front.waiters.ended, [read])

        tasks.after_read = end_now
        started = time.monotonic()
        answer = await client.get(f"/api/v1/tasks/{task_id}?wait=30")
        assert time.monotonic() - started < 5
        assert answer.json()["status"] == ENDED

    run(front, scenario)


def test_at_the_deadline_the_current_state_is_the_answer(front: Front, tasks: Tasks) -> None:
    task_id = tasks.new()

    async def scenario(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        answer = await client.get(f"/api/v1/tasks/{task_id}?wait=0.3")
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 3
        assert (answer.status_code, answer.json()["status"]) == (200, PENDING)
        assert tasks.reads == [task_id, task_id]  # the first read, and one at the deadline

    run(front, scenario)


def test_a_spurious_wake_reads_again_and_goes_on_waiting(front: Front, tasks: Tasks) -> None:
    task_id = tasks.new()

    async def scenario(client: httpx.AsyncClient) -> None:
        waiting = asyncio.ensure_future(client.get(f"/api/v1/tasks/{task_id}?wait=30"))
        await until(lambda: len(front.waiters) == 1, "the request to wait")
        front.waiters.wake_all()  # as after the subscription came back: read again
        await until(lambda: len(tasks.reads) == 2 and len(front.waiters) == 1, "a second read")
        assert not waiting.done()
        tasks.status[task_id] = Status.FAILED.value
        front.waiters.ended([task_id])
        assert (await waiting).json()["status"] == Status.FAILED.value

    run(front, scenario)


def test_stopping_answers_every_waiter_now(front: Front, tasks: Tasks) -> None:
    ids = [tasks.new() for _ in range(5)]

    async def scenario(client: httpx.AsyncClient) -> None:
        waiting = [asyncio.ensure_future(client.get(f"/api/v1/tasks/{i}?wait=60")) for i in ids]
        await until(lambda: len(front.waiters) == 5, "5 requests to wait")
        started = time.monotonic()
        front.answer_all_now()
        answers = await asyncio.gather(*waiting)
        assert time.monotonic() - started < 5
        assert [a.json()["status"] for a in answers] == [PENDING] * 5

    run(front, scenario)


def test_errors_of_the_read_are_the_apps_own(front: Front, tasks: Tasks) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        missing = await client.get(f"/api/v1/tasks/{uuid.uuid4()}?wait=30")
        assert missing.status_code == 404
        not_an_id = await client.get("/api/v1/tasks/nope?wait=30")
        assert not_an_id.status_code == 404
        task_id = tasks.new()
        anonymous = await client.get(
            f"/api/v1/tasks/{task_id}?wait=30", headers={"Authorization": "Bearer bad"}
        )
        assert anonymous.status_code == 401

    run(front, scenario)


def test_a_bad_wait_is_a_400_naming_it_and_a_batch_refuses_it(front: Front, tasks: Tasks) -> None:
    task_id = tasks.new()

    async def scenario(client: httpx.AsyncClient) -> None:
        for query in ("wait=0", "wait=61", "wait=soon", "wait=1&wait=2", "wait="):
            answer = await client.get(f"/api/v1/tasks/{task_id}?{query}")
            assert answer.status_code == 400, query
            assert answer.json()["error"]["message"].startswith("wait: "), query
            submit = await client.post(f"/api/v1/tasks?{query}", json={"routine": "noop"})
            assert submit.status_code == 400, query
        batch = await client.post("/api/v1/tasks/batch?wait=5", json={"tasks": []})
        assert batch.status_code == 400
        assert batch.json()["error"]["details"][0]["field"] == "wait"
        assert len(tasks.status) == 1  # nothing was submitted

    run(front, scenario)


def test_submit_and_wait_answers_200_with_the_ended_task(front: Front, tasks: Tasks) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.post(
            "/api/v1/tasks?wait=30", json={"routine": "noop", "status": ENDED}
        )
        assert answer.status_code == 200
        assert answer.json()["status"] == ENDED
        assert set(answer.json()) == {"task_id", "status"}  # the GET's body

    run(front, scenario)


def test_submit_and_wait_answers_202_with_the_current_state_at_the_deadline(
    front: Front, tasks: Tasks
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.post("/api/v1/tasks?wait=0.2", json={"routine": "noop"})
        assert answer.status_code == 202
        task_id = answer.json()["task_id"]
        assert answer.json()["status"] == PENDING  # the task as GET shows it
        assert answer.headers["location"] == f"/api/v1/tasks/{task_id}"

    run(front, scenario)


def test_submit_and_wait_is_woken_by_the_announcement(front: Front, tasks: Tasks) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        waiting = asyncio.ensure_future(
            client.post("/api/v1/tasks?wait=30", json={"routine": "noop"})
        )
        await until(lambda: len(front.waiters) == 1, "the submit to wait")
        (task_id,) = tasks.status
        tasks.status[task_id] = ENDED
        front.waiters.ended([task_id])
        answer = await waiting
        assert (answer.status_code, answer.json()["status"]) == (200, ENDED)

    run(front, scenario)


def test_a_refused_submit_is_answered_unchanged_without_waiting(front: Front, tasks: Tasks) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        refused = await client.post("/api/v1/tasks?wait=30", json={"routine": "teleport"})
        assert time.monotonic() - started < 5
        assert refused.status_code == 422
        assert refused.json() == {"error": {"message": "routine: unknown"}}

    run(front, scenario)


def test_a_stream_stops_once_its_client_has_gone(front: Front, tasks: Tasks) -> None:
    """A server-sent events stream is produced in a pool thread; when the client leaves,
    the stream is closed (its slot given back) instead of running for its whole life."""

    async def scenario() -> None:
        left = asyncio.Event()
        chunks: list[bytes] = []
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if len(chunks) == 3:
                    left.set()  # the client goes away after three chunks

        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "path": "/stream",
            "raw_path": b"/stream",
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [],
            "server": ("api", 80),
            "client": ("127.0.0.1", 5000),
        }
        await asyncio.wait_for(front(scope, receive, send), 10)  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert tasks.stream_closed.wait(5)


def test_until_gone_closes_what_it_wraps() -> None:
    closed = []

    class Chunks:
        def __iter__(self) -> Iterator[bytes]:
            yield from (b"a", b"b", b"c")

        def close(self) -> None:
            closed.append(True)

    gone = threading.Event()
    wrapped = _UntilGone(Chunks(), gone)
    seen = []
    for chunk in wrapped:
        seen.append(chunk)
        gone.set()
    wrapped.close()
    assert seen == [b"a"] and closed == [True]


def test_a_sized_body_within_the_limit_is_read_first_and_answered_whole(
    front: Front, tasks: Tasks
) -> None:
    body = bytes(range(256)) * 8  # 2 KiB, binary

    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.post("/echo", content=body)
        assert (answer.status_code, answer.content) == (200, body)

    run(front, scenario)
    assert tasks.inputs == ["BytesIO"]  # read by the front, not through a2wsgi's Body


def test_a_body_over_the_limit_or_without_a_size_goes_through_a2wsgi_as_the_app_reads_it(
    front: Front, tasks: Tasks
) -> None:
    async def chunked() -> Any:
        yield b"small, "
        yield b"but unsized"

    async def scenario(client: httpx.AsyncClient) -> None:
        too_large = await client.post("/echo", content=b"x" * (BODY_LIMIT + 1))
        assert too_large.status_code == 413
        unsized = await client.post("/echo", content=chunked())
        assert (unsized.status_code, unsized.content) == (200, b"small, but unsized")

    run(front, scenario)
    # Both through a2wsgi's Body: the app refused the large one as it read it (413).
    assert tasks.inputs == ["Body", "Body"]


def test_a_client_gone_before_its_body_ended_runs_nothing(front: Front, tasks: Tasks) -> None:
    sent: list[Any] = []
    messages = [
        {"type": "http.request", "body": b'{"routine": ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/api/v1/tasks", "query_string": b"",
        "headers": [(b"content-length", b"100"), (b"content-type", b"application/json")],
        "http_version": "1.1", "scheme": "http", "root_path": "",
        "server": ("api", 80), "client": ("127.0.0.1", 1),
    }  # fmt: skip
    asyncio.run(front(scope, receive, send))
    assert tasks.status == {}  # no task was made: the app never ran
