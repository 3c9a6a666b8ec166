"""Small measuring helpers: percentiles, CPU time and peak memory of the stack's processes."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from core.percentiles import summary
from ops.supervisor import Supervisor


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of `values` (nearest rank, core.percentiles), rounded to 0.01;
    empty gives zeros."""
    return {name: round(v or 0.0, 2) for name, v in summary(values).items()}


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time these processes (all their threads) have used so far."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class GroupCpu:
    """CPU seconds a process group (a server and its workers) uses inside the block."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.seconds = 0.0
        self._members: list[int] = []
        self._start = 0.0

    def __enter__(self) -> GroupCpu:
        self._members = Supervisor.group_members(self.group)
        self._start = cpu_seconds(self._members)
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = cpu_seconds(self._members) - self._start


class PeakMemory:
    """Samples the resident memory of each component (its whole process group) while
    running, and keeps the peak per component in MiB."""

    def __init__(self, run_dirs: Iterable[Path], interval: float = 0.5) -> None:
        self.supervisors = [Supervisor(d) for d in run_dirs]
        self.interval = interval
        self.peak_mib: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            for supervisor in self.supervisors:
                for pid_file in supervisor.pid_dir.glob("*.pid"):
                    tracked = supervisor.tracked(pid_file.stem)
                    if tracked is None:
                        continue
                    total = sum(_rss_kib(p) for p in supervisor.group_members(tracked.pid))
                    mib = round(total / 1024, 1)
                    name = pid_file.stem
                    self.peak_mib[name] = max(self.peak_mib.get(name, 0.0), mib)
            if self._stop.wait(self.interval):
                return
