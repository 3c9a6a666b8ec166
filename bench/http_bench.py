"""HTTP submit throughput with wrk: single durable submits against a bare Flask endpoint
served with the same gunicorn settings, and batch submits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.measure import GroupCpu
from testing.instance import REPO, free_port

DURATION_SECONDS = 5
WARM_UP_SECONDS = 2
# What a single submit sends (and the bare endpoint gets the same).
SUBMIT_BODY = orjson.dumps({"team": "alpha", "routine": "noop"})
CONNECTIONS = 32
BATCH_CONNECTIONS = 8
# Ours and a peer measured one after the other this many times: one 5 s run of either
# varies by a third between runs minutes apart on two shared cores (docs/performance.md).
PEER_ROUNDS = 3
PEERS = "bench.peers:create_app()"


def wrk(
    url: str,
    body: bytes | None,
    key: str | None,
    *,
    seconds: int = DURATION_SECONDS,
    connections: int = CONNECTIONS,
) -> dict[str, Any]:
    """POST `body` (GET without one) to `url` for `seconds` over `connections`
    connections; parse wrk's output."""
    lines = []
    if body is not None:
        lines = [
            'wrk.method = "POST"',
            f"wrk.body = [==[{body.decode()}]==]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
             "--timeout", "20s", "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    latency = {
        q: _ms(m.group(1))
        for q in ("50", "90", "99")
        if (m := re.search(rf"\s{q}%\s+([\d.]+\w+)", out))
    }
    return {
        "requests_per_s": rate,
        "non_2xx": int(failed.group(1)) if failed else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
        "latency_ms": latency,
    }


def _ms(text: str) -> float:
    number = float(re.match(r"[\d.]+", text).group(0))  # type: ignore[union-attr]
    unit = text[len(re.match(r"[\d.]+", text).group(0)) :]  # type: ignore[union-attr]
    return round(number * {"us": 0.001, "ms": 1.0, "s": 1000.0}.get(unit, 1.0), 3)


@contextmanager
def _served(app: str, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """gunicorn with the API's settings on its plain threaded worker, serving `app`;
    yields its URL and process group."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--config", "python:app.gunicorn_conf",
         "--worker-class", "gthread", app],
        cwd=REPO, env={**env, "API_PORT": str(port)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{app} did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)


def bare_flask(env: dict[str, str]) -> dict[str, Any]:
    """The same gunicorn settings, serving bench.bare_app; measured like the API. It
    runs on gunicorn's plain threaded worker (the API runs on uvicorn's, behind its
    waiting front), so the ratio shows what the front costs too."""
    return _served_measured("bench.bare_app:create_app()", env, "/api/v1/tasks", SUBMIT_BODY)


def submit_against_peer(
    api_url: str, key: str, server_group: int, env: dict[str, str], broker_url: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Durable single submits and the peer's (Flask + Celery `send_task` onto Redis,
    bench.peers), measured in turn (`alternate`)."""
    peer_env = {**env, **_peer_env(broker_url, "")}
    return alternate(
        lambda: single_submit(api_url, key, server_group),
        lambda: _served_measured(PEERS, peer_env, "/api/v1/tasks", SUBMIT_BODY),
    )


def read_against_peer(
    api_url: str,
    key: str,
    server_group: int,
    env: dict[str, str],
    database_url: str,
    task_id: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`GET /api/v1/tasks/<id>` of one recorded task and the peer's (one task and its
    events in one psycopg query, bench.peers), measured in turn (`alternate`)."""
    path, peer_env = f"/api/v1/tasks/{task_id}", {**env, **_peer_env("", database_url)}
    return alternate(
        lambda: _measured(server_group, f"{api_url}{path}", key, body=None),
        lambda: _served_measured(PEERS, peer_env, path, None),
    )


def _served_measured(
    app: str, env: dict[str, str], path: str, body: bytes | None
) -> dict[str, Any]:
    """`app` on a server started for this measurement alone. For the peers, a fresh one
    each round: kept up across rounds, they slowed down round after round (the bare read
    2,731 -> 1,957 req/s and 0.53 -> 0.67 ms of CPU a request over five), while the API,
    up all along, sped up as it warmed; a fresh peer does not flatter the platform."""
    with _served(app, env) as (url, group):
        return _measured(group, f"{url}{path}", None, body=body)


def alternate(
    ours: Callable[[], dict[str, Any]],
    peer: Callable[[], dict[str, Any]],
    rounds: int = PEER_ROUNDS,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ours, then the peer, `rounds` times. Each side's figure is its round of median
    req/s (with that round's CPU and latency), and `rounds_requests_per_s` all of them."""
    runs: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for _ in range(rounds):
        runs[0].append(ours())
        runs[1].append(peer())
    return _median_round(runs[0]), _median_round(runs[1])


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda run: run["requests_per_s"])
    return {
        **ordered[(len(ordered) - 1) // 2],
        "rounds_requests_per_s": [run["requests_per_s"] for run in runs],
    }


def _peer_env(broker_url: str, database_url: str) -> dict[str, str]:
    return {
        "PEER_BROKER_URL": broker_url or "memory://",
        "PEER_DATABASE_URL": database_url,
    }


def single_submit(api_url: str, key: str, server_group: int) -> dict[str, Any]:
    """Durable single submits; `server_group` is the API's process group (gunicorn)."""
    return _measured(server_group, f"{api_url}/api/v1/tasks", key)


def _measured(
    server_group: int, url: str, key: str | None, body: bytes | None = SUBMIT_BODY
) -> dict[str, Any]:
    """wrk's figures plus the server's CPU time per request: steadier than requests/s on
    a machine the load generator and Kafka share. A short unmeasured run first warms the
    server up (and a Kafka broker just started, whose JIT has not compiled its hot path)."""
    wrk(url, body, key, seconds=WARM_UP_SECONDS)
    with GroupCpu(server_group) as cpu:
        result = wrk(url, body, key)
    requests = result["requests_per_s"] * DURATION_SECONDS
    result["server_cpu_ms_per_request"] = round(1000 * cpu.seconds / requests, 3) if requests else 0
    return result


def batch_submit(api_url: str, key: str, size: int = 1000) -> dict[str, Any]:
    body = orjson.dumps(
        {"tasks": [{"team": ("alpha", "bravo", "charlie")[i % 3], "routine": "noop"}
                   for i in range(size)]}
    )  # fmt: skip
    # Eight clients with big batches: enough that both gunicorn workers get some (with
    # two, the kernel handed both to one worker in about half the runs, halving the
    # figure); 32 would only queue up behind each other.
    result = wrk(f"{api_url}/api/v1/tasks/batch", body, key, connections=BATCH_CONNECTIONS)
    result["connections"] = BATCH_CONNECTIONS
    result["tasks_per_s"] = round(result["requests_per_s"] * size, 1)
    return result
