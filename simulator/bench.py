"""The simulator's efficiency benchmark: can it keep a 2,000 requests/s schedule on time
(p99 send lateness <= 10 ms) within one core?

`measure_lateness` replays a synthetic schedule with the real replay code against a
trivial HTTP server on 127.0.0.1 in a child process (so the server neither shares the
simulator's event loop nor counts in its CPU time; a plain subprocess, not multiprocessing,
so the caller's main module is never re-imported), and reports the send lateness and the
simulator process's CPU seconds per wall-clock second. `python -m simulator.bench` prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.priority import Priority
from simulator.dataset import Request
from simulator.replay import Replay, ReplayOptions
from simulator.report import percentiles
from simulator.schedule import Firing

HEALTHY = b'{"status":"ok"}'


def measure_lateness(
    rate: int = 2000, seconds: float = 5.0, *, connections: int = 100
) -> dict[str, Any]:
    """Replay `rate` requests/s for `seconds` against a local stub API; returns
    {"rate", "seconds", "sent", "answered", "lateness_ms": {count, p50, p90, p99, max},
    "cpu_seconds_per_second", "load_average"} (the machine's 1-minute load before the run:
    on a 2-core machine above ~1, other processes compete with the simulator for CPU and
    the lateness says more about them). Raises RuntimeError if the stub does not start."""
    load_average = round(os.getloadavg()[0], 2)
    server = subprocess.Popen(
        [sys.executable, "-m", "simulator.bench", "--serve"],
        cwd=Path(__file__).resolve().parent.parent,  # wherever the caller runs from
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the child prints its port once it listens
        if not line.strip().isdigit():
            raise RuntimeError(f"the stub API did not start (it said {line!r})")
        port = int(line)
        request = Request(
            at="00:00", team="alpha", routine="noop", priority=Priority.HIGH, payload={}
        )
        count = int(rate * seconds)
        firings = [
            Firing(offset=i / rate, entry=0, repeat=i, request=request) for i in range(count)
        ]
        replay = Replay(
            name="bench",
            description=f"{rate} requests/s for {seconds:g}s",
            firings=firings,
            options=ReplayOptions(
                api_url=f"http://127.0.0.1:{port}",
                api_key="bench",
                follow="none",
                connections=connections,
                drain_timeout=30,
            ),
            handle_signals=False,
        )
        cpu_before, wall_before = time.process_time(), time.monotonic()
        run = asyncio.run(replay.run())
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - wall_before
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": len(run.sends),
        "answered": sum(1 for sample in run.sends if sample.status_code == 202),
        "lateness_ms": percentiles(sample.lateness for sample in run.sends),
        "cpu_seconds_per_second": round(cpu / wall, 3),
        "load_average": load_average,
    }


async def serve_stub() -> None:
    """The stub API (run in a child process): 200 to every GET, 202 with a new task id to
    every POST, on a free port of 127.0.0.1 that it prints on stdout; runs until killed."""
    loop = asyncio.get_running_loop()
    ids = itertools.count()
    server = await loop.create_server(lambda: _StubProtocol(ids), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


class _StubProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 keep-alive for the simulator's client."""

    def __init__(self, ids: itertools.count[int]):
        self.ids = ids
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            if head.startswith(b"post"):
                body = (
                    b'{"task_id":"00000000-0000-4000-8000-%012d","status":"ACCEPTED",'
                    b'"accepted_at":"2026-01-01T00:00:00+00:00"}' % next(self.ids)
                )
                status = b"202 Accepted"
            else:
                body, status = HEALTHY, b"200 OK"
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (status, len(body), body)
            )


def main() -> None:
    """Print `measure_lateness` as JSON."""
    parser = argparse.ArgumentParser(prog="python -m simulator.bench")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", action="store_true", help="only run the stub API")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_stub())
        return
    print(json.dumps(measure_lateness(args.rate, args.seconds), indent=2))


if __name__ == "__main__":
    main()
