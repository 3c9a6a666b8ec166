"""The API's ASGI front: the Flask app as it is (run in a thread pool through a2wsgi),
plus `?wait=N` on `GET /api/v1/tasks/<id>` and `POST /api/v1/tasks`, where a waiting
request holds no thread.

A request with `?wait=` runs once through the Flask app without the parameter (so auth,
team scoping, errors and bodies stay the app's). If the answer is a task that has not
ended, the request awaits a notification for that task (core.task_done: the recorder
announces the tasks that ended in each batch it commits) or its deadline, then reads
the task once more through the app and answers that. While it waits it is a future in
this process's registry and an open connection, nothing else.

A plain `GET /api/v1/tasks/<id>` (and each read of a waiting one) is first offered to
app.direct_read, which answers the common case on this loop without the app.

gunicorn serves `app.waiting:create_asgi()` with uvicorn's worker (app/gunicorn_conf.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import io
import logging
import math
import re
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import quote, unquote_plus

import orjson
from a2wsgi import WSGIMiddleware
from a2wsgi.wsgi import build_environ
from flask import Flask
from prometheus_client import Counter, Gauge

from app import direct_read
from app.errors import ApiError, BadRequest
from app.metrics import REQUESTS
from core.settings import Settings, load_settings
from core.status import TERMINAL, names
from core.task_done import Subscription, Waiters, canonical

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WAIT_MAX_SECONDS = 60.0
SUBMIT = "/api/v1/tasks"
BATCH = "/api/v1/tasks/batch"
ONE_TASK = re.compile(r"/api/v1/tasks/([^/]+)")
# How Flask names these routes in the request metrics.
ROUTES = {"get": direct_read.ROUTE, "submit": SUBMIT, "batch": BATCH}
ENDED = frozenset(names(TERMINAL))
GONE = "taskplatform.client_gone"  # scope key: set once the client of a stream went away

WAITING = Gauge(
    "api_waiting_requests",
    "Requests holding ?wait= open, waiting for their task to end",
    multiprocess_mode="livesum",
)
WAITS = Counter(
    "api_waits_total",
    "?wait= requests answered, by why: ended, deadline, stopping (the process is stopping), "
    "gone (the client left)",
    ["route", "outcome"],
)


@dataclass
class Answer:
    """A response of the Flask app, held whole (task bodies are small)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    _task: Any = field(default=None, repr=False)

    def task(self) -> dict[str, Any] | None:
        """The JSON object of a 2xx answer, or None."""
        if self._task is None and 200 <= self.status < 300:
            try:
                self._task = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                self._task = False
        return self._task if isinstance(self._task, dict) else None

    def pending(self) -> bool:
        """A task that has not ended (a 200 whose status is not terminal)."""
        task = self.task() if self.status == 200 else None
        return task is not None and task.get("status") not in ENDED

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    async def send(
        self, send: Send, *, status: int | None = None, extra: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        headers = [*self.headers, *extra]
        await send(
            {"type": "http.response.start", "status": status or self.status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": self.body})


def json_answer(status: int, body: bytes) -> Answer:
    """A JSON answer with the headers the Flask app gives one (app.http.json_response)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return Answer(status, headers, body)


def error_answer(error: ApiError) -> Answer:
    return json_answer(error.status, orjson.dumps(error.body()))


def split_wait(query: bytes) -> tuple[list[str], bytes]:
    """The values of `wait` in a raw query string, and the query string without it (the
    other parameters byte for byte)."""
    values: list[str] = []
    kept: list[bytes] = []
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if unquote_plus(name.decode("latin-1")) == "wait":
            values.append(unquote_plus(value.decode("latin-1")))
        elif part:
            kept.append(part)
    return values, b"&".join(kept)


def parse_wait(values: list[str]) -> float:
    """Seconds to wait: one number, more than 0 and at most 60; else a 400 naming wait."""
    if len(values) > 1:
        raise BadRequest.about("wait", "is given more than once")
    text = values[0]
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= WAIT_MAX_SECONDS:  # also refuses nan and inf
        raise BadRequest.about(
            "wait",
            f"must be a number of seconds, more than 0 and at most {WAIT_MAX_SECONDS:g}; got",
            value=text,
        )
    return seconds


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _until_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (what is left of the request body is skipped)."""
    with contextlib.suppress(Exception):  # a broken channel counts as gone
        while (await receive())["type"] != "http.disconnect":
            pass


class _Wsgi:
    """The Flask app as a2wsgi calls it, with what gunicorn gave it and a2wsgi does not."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # The input ends where the body ends, also for a chunked body (no Content-Length);
        # werkzeug reads such a body only when the server says so (gunicorn does).
        environ["wsgi.input_terminated"] = True
        chunks = self.app(environ, start_response)
        gone = environ["asgi.scope"].get(GONE)
        return chunks if gone is None else _UntilGone(chunks, gone)


class _UntilGone:
    """A streamed response that stops once its client has gone: a2wsgi would go on
    producing it into the void (uvicorn drops writes to a closed connection), holding a
    thread and a stream slot for the stream's whole life. Closing it gives both back."""

    def __init__(self, chunks: Iterable[bytes], gone: threading.Event) -> None:
        self.chunks = chunks
        self.gone = gone

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.gone.is_set():
                return
            yield chunk

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


def _whole_answer(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Answer:
    """Runs the WSGI app on this (pool) thread and holds its answer whole."""
    started: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started["status"] = int(status.split(" ", 1)[0])
        started["headers"] = [
            (name.strip().encode("latin1").lower(), value.strip().encode("latin1"))
            for name, value in headers
        ]
        return chunks.append

    iterable = app(environ, start_response)
    try:
        chunks.extend(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    return Answer(started.get("status", 500), started.get("headers", []), b"".join(chunks))


def _is_stream_request(scope: Scope) -> bool:
    """A GET the app may answer with server-sent events: the stats stream, and a task's
    events with ?follow=. Those go through a2wsgi, which sends each event as it comes."""
    return scope["method"] == "GET" and (
        scope["path"].endswith("/stream") or b"follow" in scope["query_string"]
    )


class Front:
    """The ASGI application gunicorn's uvicorn workers serve."""

    def __init__(
        self,
        flask_app: Flask,
        *,
        threads: int,
        waiters: Waiters | None = None,
        subscription: Subscription | None = None,
        direct: direct_read.DirectRead | None = None,
    ) -> None:
        self.flask = flask_app  # gunicorn_conf's hooks find the platform's services here
        self.direct = direct  # reads of one task, answered without the app when it can
        self.wsgi = WSGIMiddleware(_Wsgi(flask_app), workers=threads)  # type: ignore[arg-type]
        # The largest body read here before the app sees it; a larger or unsized one goes
        # through a2wsgi, whose app refuses it as it reads (413).
        self.max_body = int(flask_app.config.get("MAX_CONTENT_LENGTH") or 0)
        self.waiters = waiters if waiters is not None else Waiters()
        self.subscription = subscription
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self.wsgi(scope, receive, send)  # type: ignore[arg-type]  # refuses it
            return
        query = scope["query_string"]
        if not query.isascii():  # a2wsgi decodes it as ASCII; werkzeug reads it as bytes
            query = quote(query, safe=bytes(range(32, 127))).encode()
            scope = {**scope, "query_string": query}
        if b"wait" in query or b"%" in query:
            await self._maybe_waiting(scope, receive, send)
        else:
            await self._pass(scope, receive, send)

    # -- requests ------------------------------------------------------------------

    async def _pass(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Through the Flask app as it is. A GET may answer with a stream (server-sent
        events): then watch for its client leaving, to stop producing it."""
        if not _is_stream_request(scope):
            answer = await self._whole(scope, receive)
            if answer is not None:
                await answer.send(send)
                return
        if scope["method"] != "GET":
            await self.wsgi(scope, receive, send)  # type: ignore[arg-type]
            return
        gone = threading.Event()
        watch: asyncio.Task[None] | None = None

        async def watching(message: Message) -> None:
            nonlocal watch
            if message["type"] == "http.response.start" and _is_stream(message["headers"]):
                watch = asyncio.ensure_future(_until_disconnect(receive))
                watch.add_done_callback(lambda _: gone.set())
            await send(message)

        try:
            await self.wsgi({**scope, GONE: gone}, receive, watching)  # type: ignore[arg-type]
        finally:
            if watch is not None:
                watch.cancel()  # sets `gone` too, harmlessly: the response is over

    async def _maybe_waiting(self, scope: Scope, receive: Receive, send: Send) -> None:
        values, rest = split_wait(scope["query_string"])
        path, method = scope["path"], scope["method"]
        match = ONE_TASK.fullmatch(path) if method == "GET" else None
        route = "get" if match else "submit" if (method, path) == ("POST", SUBMIT) else None
        if not values or (route is None and (method, path) != ("POST", BATCH)):
            await self._pass(scope, receive, send)  # the app refuses or ignores the parameter
            return
        try:
            if route is None:
                raise BadRequest.about(
                    "wait",
                    "is not supported on a batch; submit, then GET /api/v1/tasks/<task_id>"
                    "?wait=N for each task",
                )
            seconds = parse_wait(values)
        except ApiError as exc:
            REQUESTS.labels(ROUTES[route or "batch"], method, str(exc.status)).inc()
            await error_answer(exc).send(send)
            return
        inner = {**scope, "query_string": rest}
        deadline = asyncio.get_running_loop().time() + seconds
        if match is not None:
            task_id = canonical(match.group(1))
            if task_id is None:  # not a task id: the app's 404
                await self._pass(inner, receive, send)
                return
            answer, outcome = await self._wait(task_id, inner, receive, receive, deadline)
            WAITS.labels(ROUTES["get"], outcome).inc()
            if outcome != "gone":
                await answer.send(send)
            return
        submitted = await self._call(inner, receive)
        task = submitted.task()
        if submitted.status != 202 or task is None or canonical(task.get("task_id", "")) is None:
            await submitted.send(send)  # the submit's error, unchanged, without waiting
            return
        task_id = str(canonical(task["task_id"]))
        read = _get_scope(scope, task_id)
        answer, outcome = await self._wait(task_id, read, _no_body, receive, deadline)
        WAITS.labels(ROUTES["submit"], outcome).inc()
        if outcome == "gone":
            return
        if answer.status != 200:  # the task cannot be read back: the submit's own answer
            await submitted.send(send)
        elif answer.pending():
            location = submitted.header(b"location")
            await answer.send(send, status=202, extra=[(b"location", location or b"")])
        else:
            await answer.send(send)

    async def _wait(
        self, task_id: str, scope: Scope, first: Receive, receive: Receive, deadline: float
    ) -> tuple[Answer, str]:
        """Read the task until it has ended, the deadline has passed or the process is
        stopping; returns the last answer and why it is the answer."""
        loop = asyncio.get_running_loop()
        woken = self.waiters.add(task_id)  # before the first read: nothing ends unseen
        gone: asyncio.Task[None] | None = None
        WAITING.inc()
        try:
            answer = await self._call(scope, first)
            while answer.pending():
                if self.stopping:
                    return answer, "stopping"
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return answer, "deadline"
                if gone is None:
                    gone = asyncio.ensure_future(_until_disconnect(receive))
                await asyncio.wait({woken, gone}, timeout=remaining, return_when="FIRST_COMPLETED")
                if gone.done():
                    return answer, "gone"
                if woken.done():  # wait again on a new future, registered before the read
                    woken = self.waiters.add(task_id)
                answer = await self._call(scope, _no_body)
            return answer, "ended"
        finally:
            WAITING.dec()
            self.waiters.discard(task_id, woken)
            if gone is not None:
                gone.cancel()

    async def _whole(self, scope: Scope, receive: Receive) -> Answer | None:
        """The request through the Flask app in one hop to a pool thread and back: its body
        read here first, its answer held whole. a2wsgi instead hands the body, the start of
        the answer and each chunk across threads one at a time, each hop a wake-up of the
        loop and of the thread (about 5 per request). None, having read nothing, for a body
        without a size or larger than the app takes: a2wsgi's path refuses it as it reads."""
        if self.direct is not None:
            read = await self.direct.answer(scope)
            if read is not None:
                return json_answer(200, read)
        headers = dict(scope["headers"])
        size = headers.get(b"content-length")
        if size is None:
            if b"transfer-encoding" in headers:  # chunked: a body of no known size
                return None
        elif not size.isdigit() or int(size) > self.max_body:
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Answer(499, [], b"")  # nobody to answer; nothing was run
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        environ: dict[str, Any] = dict(build_environ(scope, io.BytesIO(bytes(body))))  # type: ignore[arg-type]
        environ["wsgi.input_terminated"] = True  # as _Wsgi says
        run = functools.partial(
            contextvars.copy_context().run, _whole_answer, self.flask.wsgi_app, environ
        )
        return await asyncio.get_running_loop().run_in_executor(self.wsgi.executor, run)

    async def _call(self, scope: Scope, receive: Receive) -> Answer:
        """One request through the Flask app, its answer held whole."""
        whole = await self._whole(scope, receive)
        if whole is not None:
            return whole
        start: Message = {}
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.wsgi(scope, receive, keep)  # type: ignore[arg-type]
        return Answer(
            int(start.get("status", 500)), list(start.get("headers", [])), b"".join(chunks)
        )

    # -- life ----------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                if self.direct is not None:
                    await self.direct.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> None:
        """Subscribe to the announcements, and answer every waiter as soon as the server
        is told to stop: a wait may be longer than gunicorn's graceful timeout."""
        self._loop = asyncio.get_running_loop()
        if self.subscription is not None:
            self.subscription.start()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._chain_signal(signum)

    def _chain_signal(self, signum: int) -> None:
        previous = signal.getsignal(signum)
        if not callable(previous):
            return  # the server did not take this signal: leave it alone

        def handler(number: int, frame: FrameType | None) -> None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.answer_all_now)
            previous(number, frame)

        signal.signal(signum, handler)

    def answer_all_now(self) -> None:
        """Every waiter reads its task once more and answers."""
        self.stopping = True
        woken = self.waiters.wake_all()
        if woken:
            log.info("stopping: answering %d waiting requests now", woken)

    async def stop(self) -> None:
        self.answer_all_now()
        if self.subscription is not None:
            await self.subscription.stop()
        if self.direct is not None:
            with contextlib.suppress(Exception):
                await self.direct.close()
        with contextlib.suppress(Exception):
            services = self.flask.extensions.get("taskplatform")
            if services is not None:
                # gunicorn's worker_exit hook does not run under uvicorn's worker (it ends
                # by the signal it caught): close the clients here.
                services.close()
        self.wsgi.executor.shutdown(wait=False)


def _is_stream(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(
        k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
    )


def _get_scope(scope: Scope, task_id: str) -> Scope:
    """GET /api/v1/tasks/<task_id>, as the caller (same headers, no body)."""
    path = f"{SUBMIT}/{task_id}"
    body_headers = {b"content-length", b"content-type", b"transfer-encoding", b"expect"}
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in body_headers]
    return {
        **scope,
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
    }


def create_asgi(settings: Settings | None = None) -> Front:
    """What gunicorn serves: the Flask app (app.create_app) behind the waiting front."""
    from app import create_app

    settings = settings or load_settings()
    waiters = Waiters()
    flask_app = create_app(settings)
    return Front(
        flask_app,
        threads=settings.api_threads,
        waiters=waiters,
        subscription=Subscription.from_settings(settings, waiters),
        direct=direct_read.DirectRead(flask_app.extensions["taskplatform"]),
    )
