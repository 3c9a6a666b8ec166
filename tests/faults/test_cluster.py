"""The cluster shape loses any one process and no task.

An isolated stack with three Kafka nodes (replication 3, min.insync.replicas 2), two
bridges, two recorders and two workers takes a steady load of batches (at least 3,000
tasks). Meanwhile: kill -9 the broker that leads the most partitions, later the active
controller (the KRaft quorum's leader), then one recorder, one API process (a gunicorn
worker) and one bridge; `python -m ops up` brings each back.

Asserted: every accepted task reaches exactly one terminal status, SUCCEEDED (none lost,
none twice) and started as often as its routine says; every submit is answered 202, or
503 within the produce timeout and only while a broker is down; no other answer, no
hang, and no dropped connection except while the API process dies; every partition has
its three in-sync replicas again at the end. A task left unfinished fails it, naming the
task ids.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka.admin import ClusterMetadata
from sqlalchemy import Engine, create_engine, text

from app.auth import create_key
from core.kafka import make_admin
from ops import kafka_node
from ops.supervisor import Supervisor
from tests.faults.harness import Exchange, IsolatedStack, Load, isolated_stack, outcome, timelines
from tests.helpers import wait_for

pytestmark = [pytest.mark.own_stack, pytest.mark.stack, pytest.mark.slow]

TIMEOUT = 900  # the whole test: starting the cluster, the faults, the drain, `ops down`
TEARDOWN_RESERVE = 120  # kept for `ops down` of 12 processes
MINIMUM = 3000
# The load: a rate nearer what this 2-core cluster ends while loaded and faulted (at 150/s
# it accepted ~95/s and ended ~50/s: ~5,500 tasks were still queued when the load stopped
# and the drain took 36 s; at 60/s, ~1,600 and 15 s), and the accepted tasks to wait for
# between two steps (was 200-300). Each fault still meets tasks in flight: submits go
# on, unpaced by the steps, through every fault, and GAP more accepted tasks (~2 s at
# RATE) show the platform taking work after each step before the next one.
RATE = 60.0
GAP = 100
BROKERS, BRIDGES, RECORDERS, WORKERS = 3, 2, 2, 2
PRODUCE_TIMEOUT = 3.0  # KAFKA_PRODUCE_TIMEOUT_SECONDS (the default)
# The API answers a 503 once the produce timeout has passed; the rest of a batch's
# request (validation, idempotency lookups, the accepted cache) on a loaded 2-core box.
ANSWER_SLACK = 3.0
# Every kind of component but Flower: a kind names all of it (`bridge`: bridge-1, bridge-2).
COMPONENTS = ("kafka", "postgres", "redis", "api", "recorder", "bridge", "worker")
TERMINAL = ("SUCCEEDED", "FAILED", "DEAD_LETTERED", "CANCELLED", "EXPIRED")


def _free_block(count: int) -> int:
    """A first port such that it and the next count-1 ports are free on loopback."""
    for base in range(21000, 60000, 37):
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


class Cluster(IsolatedStack):
    def metadata(self) -> ClusterMetadata:
        # A new client each time: one whose only connection was to the broker just killed
        # timed out asking for metadata (librdkafka connects to other brokers sparingly).
        admin = make_admin(self.settings)
        return admin.list_topics(timeout=10)

    def partitions(self) -> list[tuple[str, int, int, int]]:
        """(topic, partition, leader, in-sync replicas) of every partition."""
        metadata = self.metadata()
        return [
            (name, p.id, p.leader, len(p.isrs))
            for name, topic in metadata.topics.items()
            for p in topic.partitions.values()
        ]

    def brokers(self) -> set[int]:
        return set(self.metadata().brokers)

    def under_replicated(self) -> list[tuple[str, int, int, int]]:
        return [p for p in self.partitions() if p[3] < BROKERS]

    def group_members(self, group: str) -> int:
        admin = make_admin(self.settings)
        future = admin.describe_consumer_groups([group])[group]
        return len(future.result(timeout=10).members)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = _free_block(2 * BROKERS)  # node n: broker base+2(n-1), controller base+2(n-1)+1
    with isolated_stack(
        Cluster,
        "cluster",
        COMPONENTS,
        timeout=TIMEOUT,
        teardown_reserve=TEARDOWN_RESERVE,
        keep_logs=True,  # in .run/isolated/cluster-logs
        KAFKA_BROKERS=str(BROKERS),
        KAFKA_PORT=str(base),
        KAFKA_CONTROLLER_PORT=str(base + 1),
        BRIDGES=str(BRIDGES),
        RECORDERS=str(RECORDERS),
        WORKERS=str(WORKERS),
        WORKER_CONCURRENCY="2",
        KAFKA_PRODUCE_TIMEOUT_SECONDS=str(PRODUCE_TIMEOUT),
    ) as cluster:
        yield cluster


@dataclass
class BrokerOutage:
    component: str
    why: str
    led: int  # partitions it led when killed
    killed: float
    fenced: float = 0.0
    restarting: float = 0.0  # `ops up` began
    restarted: float = 0.0  # `ops up` returned
    full_isr: float = 0.0

    def unavailable(self, load: Load) -> tuple[int, int]:
        """503 items, and exchanges holding them, among submits begun while it was down."""
        window = load.between(self.killed, self.full_isr)
        return sum(e.unavailable for e in window), sum(1 for e in window if e.unavailable)


@pytest.mark.timeout(TIMEOUT)
def test_the_cluster_loses_a_broker_the_controller_a_recorder_an_api_process_and_a_bridge(
    cluster: Cluster,
) -> None:
    engine = create_engine(cluster.settings.database_url, pool_pre_ping=True)
    try:
        _run(cluster, engine)
    finally:
        engine.dispose()


def _terminal_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM tasks WHERE status = ANY(:terminal)"),
                {"terminal": list(TERMINAL)},
            ).scalar_one()
        )


def _lose_broker(cluster: Cluster, load: Load, component: str, why: str) -> BrokerOutage:
    node = int(component.rsplit("-", 1)[1])
    led = sum(1 for p in cluster.partitions() if p[2] == node)
    outage = BrokerOutage(component, why, led, cluster.kill9(component).at)
    # Its partitions move once the controller fences it (broker.session.timeout.ms)...
    wait_for(
        lambda: node not in cluster.brokers(),
        timeout=cluster.budget.left(60),
        interval=0.2,
        what=f"{component} to be fenced",
    )
    outage.fenced = time.monotonic()
    # ...and the platform goes on with two copies of everything.
    load.wait_for_more(GAP, timeout=cluster.budget.left(90))
    outage.restarting = time.monotonic()
    cluster.up()
    outage.restarted = time.monotonic()
    wait_for(
        lambda: not cluster.under_replicated(),
        timeout=cluster.budget.left(120),
        interval=0.2,
        what=f"every partition in sync on {BROKERS} brokers after {component} came back",
    )
    outage.full_isr = time.monotonic()
    return outage


def _run(cluster: Cluster, engine: Engine) -> None:
    settings = cluster.settings
    for group in ("bridge", "recorder"):
        members = cluster.group_members(f"{settings.consumer_group_prefix}-{group}")
        assert members == (BRIDGES if group == "bridge" else RECORDERS), group
    for n in range(1, WORKERS + 1):  # distinct Celery host names
        assert f"worker{n}@" in (cluster.run_dir / "logs" / f"worker-{n}.log").read_text()

    key = create_key(engine, team=None, admin=True)[1]
    load = Load(f"http://127.0.0.1:{settings.api_port}", key, threads=2, rate=RATE)
    in_flight: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(1.0):
            try:
                in_flight.append(len(load.accepted) - _terminal_count(engine))
            except Exception:  # a sample missed is no failure
                continue

    sampler = threading.Thread(target=sample, daemon=True)
    load.start()
    sampler.start()
    outages: list[BrokerOutage] = []
    kills: dict[str, float] = {}
    try:
        load.wait_for_more(GAP, timeout=cluster.budget.left(90))
        leaders = Counter(p[2] for p in cluster.partitions())
        busiest = leaders.most_common(1)[0][0]
        outages.append(_lose_broker(cluster, load, f"kafka-{busiest}", "led the most partitions"))

        load.wait_for_more(GAP, timeout=cluster.budget.left(90))
        controller = kafka_node.active_controller(settings, timeout=cluster.budget.left(60))
        outages.append(_lose_broker(cluster, load, f"kafka-{controller}", "active controller"))

        load.wait_for_more(GAP, timeout=cluster.budget.left(90))
        kills["recorder-1"] = cluster.kill9("recorder-1").at
        load.wait_for_more(GAP, timeout=cluster.budget.left(90))
        cluster.up()

        load.wait_for_more(GAP, timeout=cluster.budget.left(90))
        master = cluster.pid("api")
        worker = next(p for p in Supervisor.group_members(master) if p != master)
        os.kill(worker, signal.SIGKILL)
        kills["api worker process"] = time.monotonic()
        load.wait_for_more(GAP, timeout=cluster.budget.left(90))
        cluster.up()

        load.wait_for_more(GAP, timeout=cluster.budget.left(90))
        kills["bridge-1"] = cluster.kill9("bridge-1").at
        load.wait_for_more(GAP, timeout=cluster.budget.left(90))
        cluster.up()

        short = MINIMUM - len(load.accepted)
        if short > 0:
            load.wait_for_more(short, timeout=cluster.budget.left(120))
    finally:
        load.stop()
        sampling.set()
    unfinished_at_stop = len(load.accepted) - _terminal_count(engine)

    ids = list(load.accepted)
    assert len(ids) >= MINIMUM
    drain_started = time.monotonic()

    def unfinished() -> list[str]:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT task_id::text FROM unnest(CAST(:ids AS uuid[])) AS a(task_id) "
                        "WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = a.task_id "
                        "AND t.status = ANY(:terminal))"
                    ),
                    {"ids": ids, "terminal": list(TERMINAL)},
                ).scalars()
            )

    deadline = time.monotonic() + cluster.budget.left(300)
    while (unfinished_ids := unfinished()) and time.monotonic() < deadline:
        time.sleep(1)
    with engine.connect() as conn:
        stuck = timelines(conn, unfinished_ids)
    drain = time.monotonic() - drain_started
    with engine.connect() as conn:
        statuses, terminal_events, starts = outcome(conn, ids, TERMINAL)
    isr_deadline = time.monotonic() + cluster.budget.left(60)
    while (short_isr := cluster.under_replicated()) and time.monotonic() < isr_deadline:
        time.sleep(0.5)
    partitions = len(cluster.partitions())

    exchanges = list(load.exchanges)
    duplicates = sum(count - 1 for count in terminal_events.values() if count > 1)
    lost = len(ids) - len(terminal_events)
    wrong_starts = {
        task_id: (starts.get(task_id, 0), expected)
        for task_id, expected in load.accepted.items()
        if starts.get(task_id, 0) != expected
    }
    failures = [f for e in exchanges for f in e.failures()]
    dropped = [e for e in exchanges if e.status is None]
    api_killed = kills["api worker process"]

    def while_a_broker_was_down(e: Exchange) -> bool:
        # A submit begun up to a produce timeout before the kill may wait on the dead broker.
        return any(
            o.killed - PRODUCE_TIMEOUT - ANSWER_SLACK <= e.started <= o.full_isr for o in outages
        )

    unavailable = [e for e in exchanges if e.unavailable]
    slowest = max(e.took for e in exchanges)
    slowest_503 = max((e.took for e in unavailable), default=0.0)

    lines = [
        "",
        f"cluster: {BROKERS} Kafka nodes (replication 3, min.insync.replicas 2), "
        f"{BRIDGES} bridges, {RECORDERS} recorders, {WORKERS} workers x 2 slots",
        f"tasks accepted: {len(ids)}; terminal: {len(terminal_events)}; "
        f"duplicates: {duplicates}; lost: {lost}; statuses: {statuses}",
        f"most in flight (accepted, not ended): {max(in_flight, default=0)}; "
        f"unfinished when the load stopped: {unfinished_at_stop}; "
        + (
            f"drained in {drain:.0f}s"
            if not unfinished_ids
            else f"{len(unfinished_ids)} not ended after {drain:.0f}s"
        ),
    ]
    for o in outages:
        items, batches = o.unavailable(load)
        lines.append(
            f"{o.component} ({o.why}, led {o.led} partitions): kill -9, fenced after "
            f"{o.fenced - o.killed:.1f}s, `ops up` {o.restarting - o.killed:.1f}s after the "
            f"kill took {o.restarted - o.restarting:.1f}s; 503s while down: {items} items in "
            f"{batches} batches; full ISR {o.full_isr - o.restarting:.1f}s after `ops up` "
            f"began ({o.full_isr - o.killed:.1f}s after the kill)"
        )
    lines += [
        f"also killed -9 and brought back: {', '.join(kills)}",
        f"answers: {load.summary()}; slowest answer {slowest:.2f}s, slowest 503 "
        f"{slowest_503:.2f}s; dropped connections: "
        f"{[(round(e.started - api_killed, 2), e.error) for e in dropped]}",
        f"partitions at the end: {partitions}, with fewer than {BROKERS} in-sync replicas: "
        f"{short_isr}",
    ]
    print("\n".join(lines))

    # No task is let through unfinished: a retry delivered while its first run still held
    # the running lease was once skipped as a duplicate (fixed in abb0e9f: a retry hands
    # the lease on before it produces the retry request).
    assert not unfinished_ids, (
        f"{len(unfinished_ids)} accepted tasks did not end in time: {unfinished_ids}\n"
        + "\n".join(stuck)
    )
    assert short_isr == []
    assert lost == 0
    assert duplicates == 0
    assert statuses == {"SUCCEEDED": len(ids)}
    assert wrong_starts == {}
    assert failures == []
    assert all(while_a_broker_was_down(e) for e in unavailable), [
        round(e.started, 1) for e in unavailable if not while_a_broker_was_down(e)
    ]
    assert slowest_503 <= PRODUCE_TIMEOUT + ANSWER_SLACK
    assert slowest <= PRODUCE_TIMEOUT + ANSWER_SLACK  # never a hang
    # Only a request in flight on the killed API process loses its connection.
    assert len(dropped) <= load.threads
    assert all(api_killed - load.timeout <= e.started <= api_killed + 1 for e in dropped)
    assert outages[0].unavailable(load)[0] > 0 or outages[0].led == 0
