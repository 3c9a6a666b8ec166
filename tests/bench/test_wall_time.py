"""bench.wall_time's sorting of py-spy samples (pure logic, on made-up stacks)."""

from __future__ import annotations

from bench.wall_time import SECONDS, phase, spread

ROOT = "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:83)"
RUN = f"{ROOT};_WorkItem.run (concurrent/futures/thread.py:58);Flask.wsgi_app (flask/app.py:1)"
WAITING = f"{RUN};KafkaSubmitter.send (app/kafka_submitter.py:174);Event.wait (threading.py:629)"
IDLE = f"{ROOT};SimpleQueue.get (queue.py:1)"
HANDOFF = f"{RUN};WSGIResponder.__call__ (a2wsgi/wsgi.py:1);WSGIResponder.send (a2wsgi/wsgi.py:2)"
LOOP_IDLE = "<module> (gunicorn:8);Runner.run (asyncio/runners.py:1);EpollSelector.select (x:1)"
LOOP_BUSY = "<module> (gunicorn:8);Runner.run (asyncio/runners.py:1);Front.__call__ (app/x.py:1)"


def test_each_kind_of_sample_goes_to_its_phase() -> None:
    assert phase(WAITING) == "waiting for Kafka's ack and the cache write"
    assert phase(f"{RUN};authenticate (app/auth.py:1)") == "authentication"
    assert phase(IDLE) == "request thread idle"
    assert phase(HANDOFF) == "waiting for the event loop in a2wsgi's hand-offs"
    assert phase(RUN) == "Flask and the rest"
    assert phase(LOOP_BUSY) == "event loop busy"
    assert phase(LOOP_IDLE) is None


def test_request_threads_are_spread_over_their_threads_times_seconds() -> None:
    # 3 waiting samples to 1 idle over 2 threads: 3/4 of 2 x SECONDS thread-seconds wait.
    raw = f"{WAITING} 30\n{IDLE} 10\n{LOOP_IDLE} 99\n"
    result = spread(raw, requests=1000, threads=2)
    assert result["waiting for Kafka's ack and the cache write"] == 1000 * 2 * SECONDS * 0.75 / 1000
    assert result["request thread idle"] == 1000 * 2 * SECONDS * 0.25 / 1000
    assert set(result) == {"waiting for Kafka's ack and the cache write", "request thread idle"}
