"""`up`, `down` and `status` for the whole stack."""

from __future__ import annotations

import itertools
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config

from alembic import command
from core.kafka import check_topic_limits, ensure_topics
from core.settings import Settings
from ops import credentials, kafka_acl, postgres_node, services
from ops.supervisor import ProcessSpec, StartError, Supervisor, _probe, tail

REPO_ROOT = Path(__file__).resolve().parent.parent

# After everything `up` started is ready, how long it watches those processes before it
# says "ready." (a ready file is touched right after subscribing; a crash on the first
# message comes a moment later).
SETTLE_SECONDS = 3.0
# `status` calls a component started again after dying this many times within the window
# "restarting" (a crash loop; restarts on purpose do not count).
RESTARTS_WINDOW_SECONDS = 600.0
RESTARTS_THRESHOLD = 3


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    port: int | None
    healthy: bool
    died: bool = False  # its PID file outlived its process (not stopped by us)
    recent_restarts: int = 0  # restarts after dying within RESTARTS_WINDOW_SECONDS

    @property
    def restarting(self) -> bool:
        return self.recent_restarts >= RESTARTS_THRESHOLD and (self.pid is not None or self.died)

    @property
    def state(self) -> str:
        if self.restarting:
            return "restarting"
        if self.pid is None:
            return "died" if self.died else "stopped"
        return "running" if self.healthy else "unhealthy"

    @property
    def note(self) -> str:
        if self.restarting:
            minutes = RESTARTS_WINDOW_SECONDS / 60
            return f"{self.recent_restarts} restarts after dying in {minutes:.0f} min"
        return ""


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.supervisor = Supervisor(settings.run_dir)

    def specs(self) -> list[ProcessSpec]:
        return services.infrastructure(self.settings, self.supervisor) + services.platform(
            self.settings, self.supervisor
        )

    def _select(self, names: list[str] | None) -> list[ProcessSpec]:
        """The named components in start order; a kind (`bridge`, `kafka`, `worker`) names
        every component of it (`bridge-1`, `bridge-2`)."""
        specs = self.specs()
        if not names:
            return specs
        known = {spec.name for spec in specs}
        kinds = {services.group_of(name) for name in known}
        unknown = [name for name in names if name not in known | kinds]
        if unknown:
            raise StartError(", ".join(unknown), f"unknown component; known: {sorted(known)}")
        wanted = set(names)
        return [s for s in specs if s.name in wanted or services.group_of(s.name) in wanted]

    def up(
        self, names: list[str] | None = None, *, echo: bool = True, migrate: bool = True
    ) -> list[str]:
        """Start what is not running, in order; returns the names it started."""
        started: list[str] = []
        migrated = not migrate
        self._provision(self._select(names))
        selected = self._select(names)
        platform_names = {s.name for s in self.specs() if not services.is_infrastructure(s.name)}
        fresh_metrics = not any(self.supervisor.tracked(name) for name in platform_names)
        for spec in selected:
            if not services.is_infrastructure(spec.name) and not migrated:
                self.migrate()
                migrated = True
            if spec.name in platform_names and fresh_metrics:
                # Samples of processes from an earlier run must not be merged into this one's.
                directory = services.metrics_dir(self.supervisor.run_dir)
                shutil.rmtree(directory, ignore_errors=True)
                directory.mkdir(parents=True)
                fresh_metrics = False
            t0 = time.monotonic()
            pid, fresh = self.supervisor.start(spec)
            if spec.name == "postgres":
                postgres_node.ensure_database(self.settings)
            if fresh:
                started.append(spec.name)
            if echo:
                verb = "started" if fresh else "running"
                took = f" in {time.monotonic() - t0:.1f}s" if fresh else ""
                if not fresh and credentials.missing(
                    self.supervisor.run_dir, services.group_of(spec.name)
                ):
                    took = (
                        ", without a password: it was started before authentication was "
                        "turned on; `make down`, then `make up` turns it on"
                    )
                print(f"  {spec.name:<10} {verb} (pid {pid}){took}", flush=True)
        kinds = {services.group_of(s.name) for s in selected}
        if not migrated and {"kafka", "postgres"} <= kinds:
            self.migrate()
        if started:
            self.settle(started, echo=echo)
        return started

    def _provision(self, selected: list[ProcessSpec]) -> None:
        """Make the secrets of each service about to start that has none yet, and read the
        settings again so that ops' own clients use them. A service already running
        without them (started before authentication was turned on) is left as it is.

        Raises StartError if platform processes run: started without the new secret, they
        would be locked out.
        """
        run_dir = self.supervisor.run_dir
        credentials.secure(run_dir)
        specs = self.specs()
        kinds = {services.group_of(s.name) for s in selected if services.is_infrastructure(s.name)}
        made: list[str] = []
        for kind in sorted(kinds):
            if not credentials.missing(run_dir, kind):
                continue
            members = [s.name for s in specs if services.group_of(s.name) == kind]
            if any(self.supervisor.tracked(name) for name in members):
                continue
            running = [
                s.name
                for s in specs
                if not services.is_infrastructure(s.name) and self.supervisor.tracked(s.name)
            ]
            if running:
                raise StartError(
                    kind,
                    f"it would now ask for a password that {', '.join(running)} (started "
                    "without one) do not know: stop the stack (`make down`), then `make up`",
                )
            made += credentials.provision(run_dir, kind)
        if made:
            self.settings = reloaded(self.settings)

    def settle(
        self, names: list[str], *, seconds: float = SETTLE_SECONDS, echo: bool = True
    ) -> None:
        """Watch the named, just started components for `seconds` (one wait for all).

        Raises StartError naming every one that died meanwhile, with its log's last lines.
        """
        if echo:
            print(f"  watching what started for {seconds:.0f}s", flush=True)
        deadline = time.monotonic() + seconds
        while True:
            dead = [name for name in names if self.supervisor.tracked(name) is None]
            if dead:
                logs = "\n".join(
                    f"[{name}]\n{tail(self.supervisor.log_file(name))}" for name in dead
                )
                raise StartError(", ".join(dead), "died right after it was ready", logs)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def stop(self, names: list[str]) -> None:
        """Stop the named components, in reverse start order."""
        self._stop_in_order(list(reversed(self._select(names))), echo=True)

    def _stop_in_order(self, specs: list[ProcessSpec], *, echo: bool) -> list[str]:
        """Stop `specs` kind by kind in the order given, the members of a kind together:
        one after another, the last node of a Kafka cluster waits out its whole stop
        timeout (30 s) in a controlled shutdown that its quorum, gone with the others,
        cannot answer (5.6 s together against 31.9 s one by one, three nodes)."""
        stopped = []
        for _, members in itertools.groupby(specs, key=lambda s: services.group_of(s.name)):
            kind = list(members)
            with ThreadPoolExecutor(max_workers=len(kind)) as pool:
                pids = list(
                    pool.map(
                        lambda s: self.supervisor.stop(s.name, s.stop_signal, s.stop_timeout),
                        kind,
                    )
                )
            for spec, pid in zip(kind, pids, strict=True):
                if pid is not None:
                    stopped.append(spec.name)
                    if echo:
                        print(f"  {spec.name:<10} stopped (pid {pid})", flush=True)
        return stopped

    def restart(self, names: list[str]) -> None:
        """Stop the named components, then start them again."""
        self.stop(names)
        self.up(names, migrate=False)

    def migrate(self) -> None:
        """Topics for every configured team, and the schema at Alembic's head."""
        try:
            ensure_topics(self.settings)
            check_topic_limits(self.settings)
        except Exception as exc:
            raise StartError("kafka topics", str(exc)) from None
        try:
            kafka_acl.ensure(self.settings)
        except Exception as exc:
            raise StartError("kafka principals and ACLs", str(exc)) from None
        try:
            upgrade_schema(self.settings)
        except Exception as exc:
            raise StartError("alembic migrations", str(exc)) from None

    def down(self, *, echo: bool = True) -> list[str]:
        """Stop everything, platform first and infrastructure last."""
        return self._stop_in_order(list(reversed(self.specs())), echo=echo)

    def status(self) -> list[ComponentStatus]:
        result = []
        for spec in self.specs():
            tracked = self.supervisor.tracked(spec.name)
            healthy = tracked is not None and _probe(spec.ready)
            result.append(
                ComponentStatus(
                    spec.name,
                    tracked.pid if tracked else None,
                    spec.port,
                    healthy,
                    died=tracked is None and self.supervisor.died(spec.name),
                    recent_restarts=self.supervisor.restarts_within(
                        spec.name, RESTARTS_WINDOW_SECONDS
                    ),
                )
            )
        return result


def reloaded(settings: Settings) -> Settings:
    """The same settings read again (what was given stays; what was derived, such as the
    URLs with the run folder's passwords, is derived anew)."""
    given = {name: getattr(settings, name) for name in settings.model_fields_set}
    return type(settings)(_env_file=None, **given)  # type: ignore[call-arg]


def alembic_config(settings: Settings) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.database_url
    return config


def upgrade_schema(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade_schema(settings: Settings, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings), revision)
