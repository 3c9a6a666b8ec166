"""The Celery worker app: one Celery task per routine (`routine.<name>`), each a thin
wrapper around `tasks.execution.Run`.

Built by `build_worker_app(settings)`; `python -m tasks` is the entry point. Each worker
process gets its own Kafka producer and Redis client after the fork. The main process
announces the worker's slots in Redis (the bridge's measure of room), touches the ready
file, and reports tasks killed by the hard time limit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from celery import Celery, Task, signals
from celery.exceptions import TimeLimitExceeded
from prometheus_client import multiprocess

from core import redis_keys
from core.celery_app import make_celery, task_name
from core.logs import configure_logging
from core.messages import CeleryEnvelope, MalformedMessage
from core.settings import Settings
from core.status import Status
from tasks.execution import Resources, Routine, Run, interrupt_running_task, load_routine

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0


class WorkerState:
    """This process's resources, rebuilt in each forked child."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._resources: Resources | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # A parent's clients, inherited through fork. Never used and never destroyed here:
        # destroying a librdkafka handle whose threads did not survive the fork hangs.
        self._inherited: list[Resources] = []

    def resources(self) -> Resources:
        with self._lock:
            if self._resources is None or self._pid != os.getpid():
                if self._resources is not None:
                    self._inherited.append(self._resources)
                self._resources = Resources.build(self.settings)
                self._pid = os.getpid()
            return self._resources

    def close(self) -> None:
        with self._lock:
            if self._resources is not None and self._pid == os.getpid():
                self._resources.close()
                self._resources = None


def readable(resources: Resources, envelopes: Iterable[Any]) -> Iterator[CeleryEnvelope]:
    """The envelopes of a Celery message; one that cannot be read goes to the dead-letter
    topic with the reason, and the others still run."""
    for body in envelopes:
        try:
            yield CeleryEnvelope.from_json(body)
        except MalformedMessage as exc:
            resources.dead_letters.send(
                orjson.dumps(body, default=repr),
                reason=f"unreadable task envelope: {exc.reason}",
                task_id=exc.task_id,
            )


def build_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings, "tasks")
    state = WorkerState(settings)
    app.conf.taskplatform_state = state
    for name, spec in settings.routine_table.items():
        _register(app, state, name, spec, load_routine(name, spec))
    _connect_signals(app, state)
    return app


def _register(app: Celery, state: WorkerState, name: str, spec: Any, function: Routine) -> None:
    def run(self: Task, *envelopes: dict[str, Any]) -> None:
        # Usually one task; tiny routines may carry several, run one after the other.
        resources = state.resources()
        # When the pool kills this process (the hard time limit of the whole message).
        killed_at = time.monotonic() + spec.hard_timeout * spec.batch
        for envelope in readable(resources, envelopes):
            Run(
                resources, spec, function, envelope,
                worker=self.request.hostname, killed_at=killed_at,
            ).execute()  # fmt: skip

    run.__name__ = f"routine_{name}"
    run.__doc__ = function.__doc__
    app.task(
        name=task_name(name),
        bind=True,
        # A message may carry `batch` tasks of the routine: its limits cover them all.
        soft_time_limit=spec.timeout * spec.batch,
        time_limit=spec.hard_timeout * spec.batch,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )(run)


def _connect_signals(app: Celery, state: WorkerState) -> None:
    settings = state.settings
    heartbeat_stop = threading.Event()

    @signals.setup_logging.connect(weak=False)
    def _logging(**_: Any) -> None:
        configure_logging(settings, stage="worker")
        if settings.log_level != "DEBUG":
            # Celery's per-task INFO lines cost ~10% of throughput; statuses say it all.
            logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
            logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)

    @signals.worker_process_init.connect(weak=False)
    def _child_start(**_: Any) -> None:
        configure_logging(settings, stage="worker")
        # A cancel with terminate interrupts the routine through this signal.
        signal.signal(signal.SIGUSR2, interrupt_running_task)
        state.resources()

    @signals.worker_process_shutdown.connect(weak=False)
    def _child_stop(**_: Any) -> None:
        state.close()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(os.getpid())

    @signals.worker_ready.connect(weak=False)
    def _ready(sender: Any, **_: Any) -> None:
        hostname = sender.hostname
        slots = int(sender.controller.concurrency)
        client = state.resources().redis

        def beat() -> None:
            while not heartbeat_stop.is_set():
                try:
                    client.hset(
                        redis_keys.WORKERS,
                        hostname,
                        orjson.dumps({"slots": slots, "at": time.time(), "pid": os.getpid()}),
                    )
                except Exception as exc:
                    log.warning("worker heartbeat failed: %s", exc)
                heartbeat_stop.wait(HEARTBEAT_SECONDS)
            try:
                client.hdel(redis_keys.WORKERS, hostname)
            except Exception as exc:
                log.warning("could not withdraw worker %s: %s", hostname, exc)

        threading.Thread(target=beat, name="worker-heartbeat", daemon=True).start()
        ready = os.environ.get("READY_FILE")
        if ready:
            Path(ready).touch()
        log.info("worker %s ready with %d slots", hostname, slots)

    @signals.worker_shutting_down.connect(weak=False)
    def _shutting_down(**_: Any) -> None:
        # Withdraw the slots first so the bridge stops sending work here.
        heartbeat_stop.set()

    @signals.worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        state.close()

    @signals.task_failure.connect(weak=False)
    def _hard_timeout(
        sender: Any, task_id: str, exception: BaseException, args: Any = (), **_: Any
    ) -> None:
        # Runs in the main process when the pool killed a child past its hard time limit.
        if not isinstance(exception, TimeLimitExceeded) or not args:
            return
        resources = state.resources()
        for envelope in readable(resources, args):
            task_id = envelope.request.task_id
            spec = settings.routine_table.get(envelope.request.routine)
            if spec is None or resources.redis.exists(redis_keys.outcome(task_id)):
                continue  # ended before the limit struck (an earlier task of the message)
            run = Run(resources, spec, lambda payload: None, envelope)
            run.attempt = int(resources.redis.get(redis_keys.attempts(task_id)) or 0)
            run.finish(
                Status.FAILED,
                error=f"timed out: killed at its hard time limit of {spec.hard_timeout:g}s",
            )
        resources.events.flush(10)
