"""Replaying a schedule against the API: each request leaves at its offset divided by the
speed, on one pooled client, and every accepted task is followed to its terminal status.

Lateness is measured, never hidden: a request's `sent` time is taken when its coroutine
starts, just before it asks the pool for a connection, so a busy event loop shows up as
lateness and a full pool as accept latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
import orjson

from simulator.client import check_platform, make_session, submit
from simulator.errors import FollowUnavailable
from simulator.follow import ApiFollower, Follower, KafkaFollower
from simulator.samples import RunRecord, SendSample
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

    def interrupt(self) -> None:
        """First call: stop sending and wait only briefly. Second call: stop waiting."""
        if self._stop_sending.is_set() and self.run_record.interrupted:
            self._stop_draining.set()
            return
        self.run_record.interrupted = True
        self._stop_sending.set()
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
                in_flight = await self._send_all(session)
                await self._drain(in_flight, following=self._follower is not None)
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
                opts.kafka_bootstrap, opts.status_topic, connect_timeout=opts.kafka_timeout
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

    async def _send_all(self, session: aiohttp.ClientSession) -> set[asyncio.Task[None]]:
        """Fire every request on time (or stop at Ctrl-C); returns the requests in flight."""
        loop = asyncio.get_running_loop()
        url = f"{self.options.api_url.rstrip('/')}/api/v1/tasks"
        bodies: dict[int, bytes] = {}
        in_flight: set[asyncio.Task[None]] = set()
        due = [firing.offset / self.options.speed for firing in self.firings]
        count = len(due)
        self._phase = "sending"
        start = time.monotonic()
        self.run_record.started_at = time.time()
        seq = 0
        while seq < count and not self._stop_sending.is_set():
            now = time.monotonic() - start
            while seq < count and due[seq] <= now:
                firing = self.firings[seq]
                body = bodies.get(firing.entry)
                if body is None:
                    body = bodies[firing.entry] = _encode(firing)
                task = loop.create_task(self._send(session, url, seq, body, start, due[seq]))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                seq += 1
            if seq < count:
                await asyncio.sleep(min(due[seq] - (time.monotonic() - start), MAX_SLEEP))
        return in_flight

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
        sample = SendSample(
            seq=seq,
            team=request.team,
            routine=request.routine,
            priority=request.priority.value,
            scheduled=scheduled,
            sent=sent,
        )
        self.tracker.sent(sample)
        answer = await submit(session, url, body)
        sample.latency = time.monotonic() - start - sent
        sample.status_code = answer.status_code
        sample.task_id = answer.task_id
        sample.error_code = answer.error_code
        sample.error_message = answer.error_message
        self.tracker.answered(sample, answer.accepted_at)
        if self._follower is not None and answer.task_id is not None:
            self.tracker.apply(self._follower.watch(answer.task_id))

    async def _drain(self, in_flight: set[asyncio.Task[None]], *, following: bool) -> None:
        """Wait for the answers in flight, then (if following) for every accepted task to
        finish, until the deadline or a second Ctrl-C; unanswered requests are cancelled."""
        self._phase = "draining"
        grace = self.options.interrupt_grace if self.run_record.interrupted else None
        limit = grace if grace is not None else self.options.drain_timeout
        self._deadline = min(self._deadline, time.monotonic() + limit)

        def waiting() -> bool:
            if self._stop_draining.is_set() or time.monotonic() >= self._deadline:
                return False
            return bool(in_flight) or (following and self.tracker.unfinished > 0)

        while waiting():
            await asyncio.sleep(0.05)
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


def _encode(firing: Firing) -> bytes:
    request = firing.request
    return orjson.dumps(
        {
            "team": request.team,
            "routine": request.routine,
            "priority": request.priority.value,
            "payload": request.payload,
        }
    )
