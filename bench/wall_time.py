"""Where a single submit's wall time goes: py-spy (`--idle`) on one API process of a bench
instance while `wrk` sends single submits, each sample put to what its thread was doing and
spread over the requests answered.

    python -m bench.wall_time            # the stack must be up (make up)

Prints ms per request for each phase (docs/performance.md has the figures before and
after issue 18). The figures are thread time: 16 request threads wait in parallel, so
their sum is more than a request's latency.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import http_bench
from bench.__main__ import bench_env
from core.settings import load_settings
from testing.instance import Instance

RATE = 250  # samples per second and thread
SECONDS = 8

# (phase, words that mark it in a request thread's stack), first match wins.
REQUEST_PHASES = [
    ("waiting for Kafka's ack and the cache write", ("KafkaSubmitter.send", "Event.wait")),
    ("produce", ("KafkaSubmitter.send",)),
    ("authentication", ("authenticate",)),
    ("rate limit", ("RateLimiter",)),
    ("validation", ("parse_submission",)),
    ("metrics", ("app/metrics.py",)),
]  # fmt: skip
HANDOFF = ("WSGIResponder.send", "WSGIResponder.sender", "Future.result")


def phase(stack: str) -> str | None:
    """What a thread was doing in one sample (py-spy's raw format: frames, root first)."""
    frames = stack.split(";")
    if "_worker (concurrent/futures/thread.py" in stack:
        if "_WorkItem.run" not in stack:
            return "request thread idle"
        for name, marks in REQUEST_PHASES:
            if all(mark in stack for mark in marks):
                return name
        if "a2wsgi" in stack and any(mark in ";".join(frames[-4:]) for mark in HANDOFF):
            return "waiting for the event loop in a2wsgi's hand-offs"
        return "Flask and the rest"
    if "KafkaSubmitter._serve" in stack:
        return "delivery thread: cache write" if "AcceptedCache.record" in stack else None
    if "Runner.run" in stack and "select" not in frames[-1]:
        return "event loop busy"
    return None


def spread(raw: str, requests: float, threads: int) -> dict[str, float]:
    """ms per request for each phase. Request threads' samples are scaled to their
    threads x seconds (py-spy misses some samples under load); the others as sampled."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        found = phase(stack)
        if found is not None:
            counts[found] += int(count)
    other = {"delivery thread: cache write", "event loop busy"}
    in_threads = sum(n for name, n in counts.items() if name not in other)
    result = {}
    for name, n in counts.items():
        seconds = n / RATE if name in other else threads * SECONDS * n / max(in_threads, 1)
        result[name] = round(1000 * seconds / requests, 3)
    return result


def measure() -> dict[str, object]:
    settings = load_settings()
    env = {**bench_env(settings), "API_WORKERS": "1"}
    instance = Instance(settings, "walltime", **env)
    with instance.running(["api"]), tempfile.TemporaryDirectory() as folder:
        group = instance.pid("api")
        children = subprocess.run(
            ["pgrep", "-g", str(group)], capture_output=True, text=True, check=True
        ).stdout.split()
        worker = next(pid for pid in children if pid != str(group))
        url = f"{instance.api_url}/api/v1/tasks"
        http_bench.wrk(url, http_bench.SUBMIT_BODY, instance.admin_key, seconds=3)  # warm up
        raw = Path(folder) / "samples.txt"
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", worker,
             "--duration", str(SECONDS), "--rate", str(RATE), "--idle", "--nonblocking",
             "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)  # py-spy attached
        load = http_bench.wrk(url, http_bench.SUBMIT_BODY, instance.admin_key, seconds=SECONDS)
        spy.wait(60)
        requests = load["requests_per_s"] * SECONDS
        threads = settings.api_threads
        return {
            "requests_per_s": load["requests_per_s"],
            "latency_ms": load["latency_ms"],
            "ms_per_request": spread(raw.read_text(), requests, threads),
        }


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench.wall_time", description=__doc__).parse_args(argv)
    result = measure()
    print(f"{result['requests_per_s']:.0f} req/s, latency ms {result['latency_ms']}")
    phases = result["ms_per_request"]
    assert isinstance(phases, dict)
    for name, ms in sorted(phases.items(), key=lambda item: -item[1]):
        print(f"  {ms:8.3f} ms  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
