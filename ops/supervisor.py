"""Start, watch and stop the processes of the stack, each recorded in a PID file.

A PID file holds the PID and the process's start time (from /proc), so a PID reused by
an unrelated process after a reboot or crash is never mistaken for ours, and never
signalled. Each process is started in a session of its own and stopped by signalling
that process group: gracefully first, forcefully after a deadline.

Beside each PID file: `<name>.died`, written when the PID file is found stale (the
process went away without `stop`) and removed by the next start or stop; and
`<name>.restarts`, the times it was started again after dying, so `status` can tell a
component that keeps crashing from one restarted on purpose.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StartError(Exception):
    """A component could not be started; the message names it and shows its log."""

    def __init__(self, name: str, reason: str, log_tail: str = "") -> None:
        self.name = name
        message = f"{name} failed to start: {reason}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)


Probe = Callable[[], bool]

RESTARTS_KEPT = 20  # restart times kept per component; enough to count them in a window


@dataclass
class ProcessSpec:
    """One long-running process of the stack."""

    name: str
    argv: Sequence[str]
    ready: Probe
    port: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None  # run as this user (Postgres refuses root)
    stop_signal: signal.Signals = signal.SIGTERM
    start_timeout: float = 30.0
    stop_timeout: float = 20.0
    before_start: Callable[[], None] | None = None


@dataclass
class Tracked:
    pid: int
    start_time: str


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is dead for our purposes
        return None
    return fields[19]


def tail(path: Path, lines: int = 25) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:])


class Supervisor:
    """Keeps PID files and logs for processes under one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.pid_dir = run_dir / "pids"
        self.log_dir = run_dir / "logs"
        self.ready_dir = run_dir / "ready"
        for directory in (self.pid_dir, self.log_dir, self.ready_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def ready_file(self, name: str) -> Path:
        return self.ready_dir / name

    def restarts_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.restarts"

    def died_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.died"

    def tracked(self, name: str) -> Tracked | None:
        """The live process recorded for `name`, or None.

        A stale PID file (its process is gone) is removed, and `<name>.died` records
        that the process died rather than was stopped.
        """
        path = self.pid_file(name)
        try:
            pid_text, start_time = path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if _proc_start_time(pid) != start_time:
            self.died_file(name).write_text(f"{pid} {time.time():.3f}\n")
            path.unlink(missing_ok=True)
            return None
        return Tracked(pid, start_time)

    def died(self, name: str) -> bool:
        """Whether the last process of `name` went away without being stopped."""
        self.tracked(name)  # notices a death not yet noticed
        return self.died_file(name).exists()

    def record_restart(self, name: str, at: float | None = None) -> None:
        """Append a restart time to `<name>.restarts`, keeping the last RESTARTS_KEPT."""
        path = self.restarts_file(name)
        kept = self.restarts(name)[-(RESTARTS_KEPT - 1) :]
        kept.append(time.time() if at is None else at)
        tmp = path.with_suffix(".restarts.tmp")
        tmp.write_text("".join(f"{t:.3f}\n" for t in kept))
        tmp.replace(path)

    def restarts(self, name: str) -> list[float]:
        """When `name` was started again after dying, oldest first."""
        try:
            lines = self.restarts_file(name).read_text().split()
        except OSError:
            return []
        times = []
        for line in lines:
            try:
                times.append(float(line))
            except ValueError:
                continue  # a torn line is not worth failing status for
        return times

    def restarts_within(self, name: str, seconds: float, now: float | None = None) -> int:
        """How many times `name` was started again after dying in the last `seconds`."""
        since = (time.time() if now is None else now) - seconds
        return sum(1 for t in self.restarts(name) if t >= since)

    def record(self, name: str, pid: int) -> None:
        start_time = _proc_start_time(pid)
        if start_time is None:
            raise StartError(name, f"process {pid} exited at once", tail(self.log_file(name)))
        tmp = self.pid_file(name).with_suffix(".tmp")
        tmp.write_text(f"{pid} {start_time}\n")
        tmp.replace(self.pid_file(name))

    def start(self, spec: ProcessSpec) -> tuple[int, bool]:
        """Start `spec` unless it already runs; wait until it is ready.

        Returns (pid, started). Raises StartError naming the component.
        """
        current = self.tracked(spec.name)
        if current is not None:
            self._wait_ready(spec, current.pid)
            return current.pid, False
        if spec.before_start is not None:
            spec.before_start()
        self.ready_file(spec.name).unlink(missing_ok=True)
        log_path = self.log_file(spec.name)
        env = {**os.environ, **spec.env}
        with log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} starting {spec.name}\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=spec.cwd,
                    user=spec.user,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StartError(spec.name, str(exc)) from None
        died = self.died_file(spec.name)
        if died.exists():  # started again after it died (tracked() above noticed)
            self.record_restart(spec.name)
            died.unlink()
        self.record(spec.name, process.pid)
        try:
            self._wait_ready(spec, process.pid, process)
        except StartError:
            # Never leave a half-started process behind.
            self.stop(spec.name, spec.stop_signal, min(spec.stop_timeout, 10))
            raise
        return process.pid, True

    def _wait_ready(
        self, spec: ProcessSpec, pid: int, process: subprocess.Popen[bytes] | None = None
    ) -> None:
        deadline = time.monotonic() + spec.start_timeout
        while True:
            if process is not None and process.poll() is not None:
                self.pid_file(spec.name).unlink(missing_ok=True)
                raise StartError(
                    spec.name,
                    f"exited with code {process.returncode}",
                    tail(self.log_file(spec.name)),
                )
            if process is None and _proc_start_time(pid) is None:
                raise StartError(spec.name, "died", tail(self.log_file(spec.name)))
            if _probe(spec.ready):
                return
            if time.monotonic() > deadline:
                raise StartError(
                    spec.name,
                    f"not ready after {spec.start_timeout:.0f}s",
                    tail(self.log_file(spec.name)),
                )
            time.sleep(0.1)

    def stop(self, spec_name: str, stop_signal: signal.Signals, timeout: float) -> int | None:
        """Stop the recorded process and its group; returns its PID or None if none ran."""
        current = self.tracked(spec_name)
        if current is None:
            self.pid_file(spec_name).unlink(missing_ok=True)
            # Stopped on purpose: a death noticed earlier is no longer news.
            self.died_file(spec_name).unlink(missing_ok=True)
            return None
        pid = current.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, stop_signal)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _proc_start_time(pid) == current.start_time:
            time.sleep(0.1)
        # Whatever is left of the group (the process, or children it orphaned) is killed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        while _proc_start_time(pid) == current.start_time:
            time.sleep(0.05)
        self.pid_file(spec_name).unlink(missing_ok=True)
        self.ready_file(spec_name).unlink(missing_ok=True)
        self.died_file(spec_name).unlink(missing_ok=True)
        return pid

    @staticmethod
    def group_members(pid: int) -> list[int]:
        """PIDs whose process group is `pid` (the component and its children)."""
        members = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pid and fields[0] != "Z":
                members.append(int(entry.name))
        return members


def _probe(check: Probe) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
