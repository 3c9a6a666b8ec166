"""Replaying a schedule against the API: each request leaves at its offset divided by the
speed, on one pooled client, and every accepted task is followed to its terminal status.

Lateness is measured, never hidden: a request's `sent` time is taken when its coroutine
starts, just before it asks the pool for a connection, so a busy event loop shows up as
lateness and a full pool as accept latency.

Every duration of the dataset is divided by the speed: the offsets, and a request's
`delay` (sent as delay_seconds), `expires` (sent as max_wait_seconds) and `cancel_after`
(a timer started when the 202 arrives; its cancel is sent like a request).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from core.status import Status
from simulator.client import cancel, check_platform, make_session, submit
from simulator.errors import FollowUnavailable
from simulator.follow import ApiFollower, Follower, KafkaFollower
from simulator.samples import UNSET_PRIORITY, CancelSample, RunRecord, SendSample
from simulator.schedule import Firing
from simulator.tracker import Tracker

log = logging.getLogger(__name__)

FollowMode = Literal["auto", "kafka", "api", "none"]
MAX_SLEEP = 0.1  # the send loop wakes at least this often to notice Ctrl-C
GC_EVERY = 10.0  # seconds between the replay's own young-generation collections


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay: where, how fast, how to follow tasks and how long to wait for them."""

    api_url: str
    api_key: str
    speed: float = 1.0
    follow: FollowMode = "auto"
    kafka_bootstrap: str = "127.0.0.1:9092"
    # How the follower proves who it is to Kafka (core.kafka.security_config's settings).
    kafka_security: dict[str, Any] = field(default_factory=dict)
    status_topic: str = "tasks.status"
    kafka_timeout: float = 5.0  # to reach Kafka before falling back (or giving up)
    drain_timeout: float = 120.0  # after the last send, the longest wait for terminal statuses
    interrupt_grace: float = 5.0  # after Ctrl-C, the longest wait for in-flight tasks
    connections: int = 100
    request_timeout: float | None = 10.0  # None: no per-request timeout
    poll_interval: float = 1.0  # for follow="api"
    pause_gc: bool = True  # see `paused_gc`


class Display(Protocol):
    """Shows the run's progress; `refresh` is called a few times a second."""

    def start(self, tracker: Tracker) -> None: ...

    def refresh(self, phase: str) -> None: ...

    def stop(self) -> None: ...

    def warn(self, message: str) -> None: ...


class Replay:
    """One replay of `firings`; `run()` may be awaited once."""

    def __init__(
        self,
        *,
        name: str,
        description: str,
        firings: Sequence[Firing],
        options: ReplayOptions,
        display: Display | None = None,
        handle_signals: bool = True,
    ):
        if options.speed <= 0:
            raise ValueError("speed must be positive")
        self.firings = firings
        self.options = options
        self.display = display
        self.handle_signals = handle_signals
        self.run_record = RunRecord(
            dataset=name,
            description=description,
            speed=options.speed,
            follow=options.follow,
            started_at=time.time(),
            planned=len(firings),
        )
        self.tracker = Tracker(self.run_record)
        self._stop_sending = asyncio.Event()
        self._stop_draining = asyncio.Event()
        self._deadline = float("inf")
        self._phase = "starting"
        self._follower: Follower | None = None
        self._start = 0.0  # monotonic time of the first send
        self._in_flight: set[asyncio.Task[None]] = set()  # submits and cancels
        self._cancel_timers: set[asyncio.TimerHandle] = set()

    def interrupt(self) -> None:
        """First call: stop sending and wait only briefly. Second call: stop waiting."""
        if self._stop_sending.is_set() and self.run_record.interrupted:
            self._stop_draining.set()
            return
        self.run_record.interrupted = True
        self._stop_sending.set()
        self._drop_cancel_timers()  # planned cancels are sends too: stop them
        self._deadline = min(self._deadline, time.monotonic() + self.options.interrupt_grace)

    async def run(self) -> RunRecord:
        """Check the platform, replay, follow, and return what was measured (also when
        interrupted). Raises PlatformUnreachable before sending anything if the API does not
        answer, and FollowUnavailable if follow="kafka" and Kafka cannot be read."""
        opts = self.options
        session = make_session(
            opts.api_key, connections=opts.connections, request_timeout=opts.request_timeout
        )
        ticker: asyncio.Task[None] | None = None
        gc_pause = paused_gc() if opts.pause_gc else contextlib.nullcontext()
        try:
            await check_platform(session, opts.api_url)
            self._follower = await self._start_follower(session)
            self.run_record.follow = self._follower.name if self._follower else "none"
            self._install_signals()
            if self.display:
                self.display.start(self.tracker)
            ticker = asyncio.get_running_loop().create_task(self._tick())
            with gc_pause:
                await self._send_all(session)
                await self._drain(following=self._follower is not None)
        finally:
            self.run_record.finished_at = time.time()
            self._remove_signals()
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            if self._follower is not None:
                await self._follower.stop()
            if self.display:
                self.display.refresh("done")
                self.display.stop()
            await session.close()
        return self.run_record

    async def _start_follower(self, session: aiohttp.ClientSession) -> Follower | None:
        opts = self.options
        if opts.follow == "none":
            return None
        follower: Follower
        if opts.follow in ("auto", "kafka"):
            follower = KafkaFollower(
                opts.kafka_bootstrap,
                opts.status_topic,
                connect_timeout=opts.kafka_timeout,
                security=opts.kafka_security,
            )
            try:
                await follower.start(self.tracker.apply)
                return follower
            except FollowUnavailable as exc:
                if opts.follow == "kafka":
                    raise
                message = f"{exc}; following tasks by polling the API instead"
                if self.display:
                    self.display.warn(message)
                log.warning("%s", message)
        follower = ApiFollower(session, opts.api_url, self.tracker, interval=opts.poll_interval)
        await follower.start(self.tracker.apply)
        return follower

    async def _send_all(self, session: aiohttp.ClientSession) -> None:
        """Fire every request on time (or stop at Ctrl-C), leaving the answers in flight."""
        loop = asyncio.get_running_loop()
        url = f"{self.options.api_url.rstrip('/')}/api/v1/tasks"
        bodies: dict[int, bytes] = {}
        in_flight = self._in_flight
        speed = self.options.speed
        due = [firing.offset / speed for firing in self.firings]
        count = len(due)
        self._phase = "sending"
        start = self._start = time.monotonic()
        self.run_record.started_at = time.time()
        seq = 0
        while seq < count and not self._stop_sending.is_set():
            now = time.monotonic() - start
            while seq < count and due[seq] <= now:
                firing = self.firings[seq]
                body = bodies.get(firing.entry)
                if body is None:
                    body = bodies[firing.entry] = _encode(firing, speed)
                task = loop.create_task(self._send(session, url, seq, body, start, due[seq]))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                seq += 1
            if seq < count:
                await asyncio.sleep(min(due[seq] - (time.monotonic() - start), MAX_SLEEP))

    async def _send(
        self,
        session: aiohttp.ClientSession,
        url: str,
        seq: int,
        body: bytes,
        start: float,
        scheduled: float,
    ) -> None:
        request = self.firings[seq].request
        sent = time.monotonic() - start
        speed = self.options.speed
        sample = SendSample(
            seq=seq,
            team=request.team,
            routine=request.routine,
            priority=UNSET_PRIORITY if request.priority is None else request.priority.value,
            scheduled=scheduled,
            sent=sent,
            delay=None if request.delay is None else request.delay / speed,
            max_wait=None if request.expires is None else request.expires / speed,
            cancel_after=None if request.cancel_after is None else request.cancel_after / speed,
        )
        self.tracker.sent(sample)
        answer = await submit(session, url, body)
        sample.latency = time.monotonic() - start - sent
        sample.status_code = answer.status_code
        sample.task_id = answer.task_id
        sample.error_code = answer.error_code
        sample.error_message = answer.error_message
        self.tracker.answered(sample, answer.accepted_at)
        if answer.task_id is None:
            return
        if self._follower is not None:
            self.tracker.apply(self._follower.watch(answer.task_id))
        if sample.cancel_after is not None:
            self._plan_cancel(session, answer.task_id, sample.priority, sample.cancel_after)

    def _plan_cancel(
        self, session: aiohttp.ClientSession, task_id: str, priority: str, wait: float
    ) -> None:
        """Send a cancel of `task_id` `wait` seconds from now (never, if the run stops
        sending first: it stays planned, not sent)."""
        sample = CancelSample(
            task_id=task_id,
            priority=priority,
            scheduled=time.monotonic() - self._start + wait,
        )
        self.tracker.cancel_planned(sample)
        if self._stop_sending.is_set():
            return
        loop = asyncio.get_running_loop()
        url = f"{self.options.api_url.rstrip('/')}/api/v1/tasks/{task_id}/cancel"

        def fire() -> None:
            self._cancel_timers.discard(handle)
            task = loop.create_task(self._send_cancel(session, url, sample))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

        handle = loop.call_later(wait, fire)
        self._cancel_timers.add(handle)

    async def _send_cancel(
        self, session: aiohttp.ClientSession, url: str, sample: CancelSample
    ) -> None:
        sent = time.monotonic() - self._start
        sample.sent = sent
        self.tracker.cancel_sent(sample)
        answer = await cancel(session, url)
        sample.latency = time.monotonic() - self._start - sent
        sample.status_code = answer.status_code
        sample.stage = answer.stage
        sample.error_code = answer.error_code
        sample.error_message = answer.error_message
        sample.ended = _status_or_none(answer.ended)
        self.tracker.cancel_answered(sample)

    def _drop_cancel_timers(self) -> None:
        for handle in self._cancel_timers:
            handle.cancel()
        self._cancel_timers.clear()

    async def _drain(self, *, following: bool) -> None:
        """Wait for the answers in flight and the planned cancels, then (if following) for
        every accepted task to finish, until the deadline or a second Ctrl-C; unanswered
        requests are cancelled, and cancels not yet sent stay unsent."""
        self._phase = "draining"
        in_flight = self._in_flight
        grace = self.options.interrupt_grace if self.run_record.interrupted else None
        limit = grace if grace is not None else self.options.drain_timeout
        self._deadline = min(self._deadline, time.monotonic() + limit)

        def waiting() -> bool:
            if self._stop_draining.is_set() or time.monotonic() >= self._deadline:
                return False
            if in_flight or self._cancel_timers:
                return True
            return following and self.tracker.unfinished > 0

        while waiting():
            await asyncio.sleep(0.05)
        self._drop_cancel_timers()
        for task in list(in_flight):
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _tick(self) -> None:
        last_gc = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            if self.display:
                self.display.refresh(self._phase)
            if not gc.isenabled() and time.monotonic() - last_gc >= GC_EVERY:
                gc.collect(0)  # only what is new since the last freeze: a few ms
                gc.freeze()
                last_gc = time.monotonic()

    def _install_signals(self) -> None:
        if not self.handle_signals:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.interrupt)

    def _remove_signals(self) -> None:
        if not self.handle_signals:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Turn the automatic garbage collector off for the replay, and back on after.

    Measured at 2,000 requests/s, automatic collections cost the send loop pauses of tens
    to hundreds of milliseconds (full collections re-scan every recorded sample), while the
    replay makes almost no cyclic garbage (about 700 objects for 10,000 requests). So
    everything alive is frozen out of the collector's sight, and the ticker collects the
    young generation itself every GC_EVERY seconds, freezing the survivors again."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def _encode(firing: Firing, speed: float) -> bytes:
    """The submit body of a firing; fields the request leaves out are left out."""
    request = firing.request
    body: dict[str, object] = {"team": request.team, "routine": request.routine}
    if request.priority is not None:
        body["priority"] = request.priority.value
    if request.payload is not None:
        body["payload"] = request.payload
    if request.delay is not None:
        body["delay_seconds"] = request.delay / speed
    if request.expires is not None:
        body["max_wait_seconds"] = request.expires / speed
    return orjson.dumps(body)


def _status_or_none(name: str | None) -> Status | None:
    try:
        return None if name is None else Status(name)
    except ValueError:
        return None
