"""docker-compose.yml's platform services, run natively as the image would run them: the
files the Dockerfile copies, read-only and owned by root; an unprivileged user without a
home; each service's compose environment (with the two secrets set, the password full of
URL characters) and its command; its healthcheck as the readiness test. Only where the
services are differs: loopback ports of an isolated Kafka, Postgres (asking for the
password) and Redis, and folders in place of the tmpfs mounts.

`migrate` runs first, against the empty database and Kafka, and creates topics and schema;
then a task goes through the API, bridge, worker and recorder; then each stops on SIGTERM
within its stop_grace_period."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from core import credentials
from core.kafka import make_admin
from core.settings import Settings
from ops.postgres_node import admin_dsn
from ops.supervisor import Supervisor
from tests.conftest import TEST_SESSION_VARIABLE
from tests.faults.harness import isolated_settings
from tests.helpers import wait_for
from tests.isolated import free_port, isolated_env, isolated_run_dir, ops
from tests.ops import compose

pytestmark = [
    pytest.mark.own_stack,
    pytest.mark.stack,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the services as another user"),
]

USER = "nobody"
SERVICES = ["api", "recorder", "bridge", "worker", "flower"]
PASSWORD = "p@ss:/w%rd?#&1 'x'"
HOST = {
    "POSTGRES_PASSWORD": PASSWORD,
    "FLOWER_BASIC_AUTH": "admin:flower-pw",
    # The isolated stack's own (_container_env); these only make the file interpolate.
    "POSTGRES_SUPERUSER_PASSWORD": "unused",
    "REDIS_PASSWORD": "unused",
    "KAFKA_SASL_PASSWORD": "unused",
}
CONSOLE_SCRIPTS = ["gunicorn", "flask"]  # what the commands and the README's exec call


@dataclass
class Infrastructure:
    settings: Settings


@pytest.fixture(scope="module")
def infrastructure() -> Iterator[Infrastructure]:
    """Kafka, Postgres and Redis with no topics and no schema (each started on its own:
    `ops up` of Kafka and Postgres together would migrate), the platform's role asking
    for PASSWORD over TCP."""
    run_dir = isolated_run_dir("compose-native")
    env = isolated_env(run_dir)
    settings = isolated_settings(env)
    try:
        for component in ("kafka", "postgres", "redis"):
            result = ops(env, "up", component, timeout=300)
            assert result.returncode == 0, result.stdout + result.stderr
        _the_platforms_password(settings)
        yield Infrastructure(settings)
    finally:
        ops(env, "down")
        shutil.rmtree(run_dir, ignore_errors=True)


def _the_platforms_password(settings: Settings) -> None:
    """The platform's role's password becomes PASSWORD (the stack asks for one anyway)."""
    with psycopg.connect(admin_dsn(settings), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE taskplatform PASSWORD {}").format(sql.Literal(PASSWORD)))
    dsn = f"host=127.0.0.1 port={settings.postgres_port} user=taskplatform dbname=taskplatform"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(dsn, connect_timeout=5).close()


@dataclass
class Image:
    """The image's file system as far as the services see it, under one temporary folder
    others can enter: /srv (the copy) and a PATH with python and the console scripts."""

    root: Path
    read_anything: bool  # the user keeps CAP_DAC_READ_SEARCH (see _as_the_user)
    uid: int = field(init=False)
    gid: int = field(init=False)

    def __post_init__(self) -> None:
        entry = pwd.getpwnam(USER)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    @property
    def srv(self) -> Path:
        return self.root / "srv"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def folder_for_the_user(self, *parts: str) -> Path:
        """A folder the user may write, like the tmpfs mounts (mode 1777) of the compose file."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True)
        os.chown(path, self.uid, self.gid)
        return path

    def env(self, container: dict[str, str]) -> dict[str, str]:
        return {
            **compose.dockerfile_env(),
            **container,
            "HOME": "/nonexistent",
            "PATH": f"{self.bin}:/usr/bin:/bin",
            TEST_SESSION_VARIABLE: os.environ[TEST_SESSION_VARIABLE],
        }

    def argv(self, command: list[str]) -> list[str]:
        return _as_the_user(command, read_anything=self.read_anything)

    def popen(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                self.argv(argv), cwd=self.srv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 120) -> Any:
        return subprocess.run(
            self.argv(argv), cwd=self.srv, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip


def _as_the_user(command: list[str], *, read_anything: bool) -> list[str]:
    """`command` as USER, with no supplementary groups and no capabilities, or only
    CAP_DAC_READ_SEARCH with `read_anything`: it may then read any file (this run's Python
    may live under /root, out of USER's reach) and still write none it does not own."""
    entry = pwd.getpwnam(USER)
    caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return [
        "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
        *(caps if read_anything else []), "--", *command,
    ]  # fmt: skip


def _python_runs(read_anything: bool) -> bool:
    # This very interpreter: a user who cannot reach it may be handed another Python.
    probe = (
        f"import sys; assert sys.version == {sys.version!r}, sys.version\n"
        "import confluent_kafka, psycopg, pydantic_core, celery, gunicorn, flask"
    )
    result = subprocess.run(
        _as_the_user([sys.executable, "-c", probe], read_anything=read_anything),
        cwd="/",
        capture_output=True,
    )
    return result.returncode == 0


@pytest.fixture()
def image() -> Iterator[Image]:
    if not _python_runs(read_anything=False) and not _python_runs(read_anything=True):
        pytest.skip(f"{USER} cannot run {sys.executable} with its packages")
    root = Path(tempfile.mkdtemp(prefix="taskplatform-image-", dir="/tmp"))
    root.chmod(0o755)
    try:
        made = Image(root, read_anything=not _python_runs(read_anything=False))
        made.srv.mkdir()
        for source, target in compose.dockerfile_copies():
            origin = compose.REPO / source
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(origin, made.srv / target, ignore=ignore)
            else:
                shutil.copy2(origin, made.srv / target)
        for path in [made.srv, *made.srv.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)  # read-only, even for its owner
        made.bin.mkdir()
        scripts = {"python": f'exec {sys.executable} "$@"'}
        scripts.update({name: f'exec python -m {name} "$@"' for name in CONSOLE_SCRIPTS})
        for name, line in scripts.items():
            (made.bin / name).write_text(f"#!/bin/sh\n{line}\n")
            (made.bin / name).chmod(0o755)
        yield made
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _container_env(
    image: Image, service: str, settings: Settings, ports: dict[str, int]
) -> dict[str, str]:
    """The service's compose environment, its addresses moved to this host, with the
    isolated stack's Redis password and Kafka principal (its `admin`, over PLAIN as the
    compose file's `taskplatform`)."""
    run_dir = settings.run_dir
    host = {
        **HOST,
        "REDIS_PASSWORD": credentials.read(run_dir, credentials.REDIS) or "",
        "KAFKA_SASL_PASSWORD": credentials.read(run_dir, credentials.kafka("admin")) or "",
    }
    env = compose.service_environment(compose.load(), service, host)
    env["KAFKA_SASL_USERNAME"] = "admin"
    state = {
        "/run/taskplatform": str(image.folder_for_the_user(service, "run")),
        "/run/metrics": str(image.folder_for_the_user(service, "metrics")),
        "kafka:9092": settings.kafka_bootstrap,
        "@postgres:5432/": f"@127.0.0.1:{settings.postgres_port}/",
        "redis:6379": f"127.0.0.1:{settings.redis_port}",
    }
    for old, new in state.items():
        env = {name: value.replace(old, new) for name, value in env.items()}
    env.update(API_HOST="127.0.0.1", FLOWER_ADDRESS="127.0.0.1")
    env.update(API_PORT=str(ports["api"]), FLOWER_PORT=str(ports["flower"]))
    return image.env(env)


def _healthcheck(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    return ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])


def _topics(settings: Settings) -> set[str]:
    admin = make_admin(settings)
    return set(admin.list_topics(timeout=10).topics)


def test_the_services_run_as_the_images_user_from_a_read_only_copy(
    infrastructure: Infrastructure, image: Image
) -> None:
    settings = infrastructure.settings
    resolved = compose.interpolate(compose.load(), HOST)["services"]
    ports = {"api": free_port(), "flower": free_port()}
    envs = {name: _container_env(image, name, settings, ports) for name in ["migrate", *SERVICES]}
    logs = image.folder_for_the_user("logs")

    assert not set(settings.request_topics) & _topics(settings)
    migrate = image.run(resolved["migrate"]["command"], envs["migrate"])
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    wanted = {*settings.request_topics, settings.status_topic, settings.dlq_topic}
    assert wanted <= _topics(settings)

    started: dict[str, subprocess.Popen[bytes]] = {}
    stopped_in: dict[str, float] = {}
    try:
        for name in SERVICES:
            started[name] = image.popen(resolved[name]["command"], envs[name], logs / f"{name}.log")
        for name in SERVICES:
            check = _healthcheck(resolved[name])
            deadline = compose.duration_seconds(resolved[name]["healthcheck"]["start_period"])

            def healthy(name: str = name, check: list[str] = check) -> bool:
                assert started[name].poll() is None, (logs / f"{name}.log").read_text()
                return bool(image.run(check, envs[name], timeout=30).returncode == 0)

            try:
                wait_for(healthy, timeout=deadline, interval=0.5, what=f"{name}'s healthcheck")
            except AssertionError as exc:
                log = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{exc}\n--- {name}'s log ---\n{log}") from None

        # The README's `docker compose exec api flask --app app keys create alpha`.
        made = image.run(["flask", "--app", "app", "keys", "create", "alpha"], envs["api"])
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{ports['api']}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as client:
            task = {"team": "alpha", "routine": "echo", "payload": {"via": "compose"}}
            accepted = client.post("/api/v1/tasks", json=task)
            assert accepted.status_code == 202, accepted.text
            task_id = accepted.json()["task_id"]

            def succeeded() -> bool:
                return bool(client.get(f"/api/v1/tasks/{task_id}").json()["status"] == "SUCCEEDED")

            wait_for(succeeded, timeout=60, interval=0.2, what=f"task {task_id} to succeed")
            assert client.get("/metrics").status_code == 200
        metrics = Path(envs["api"]["PROMETHEUS_MULTIPROC_DIR"])
        assert list(metrics.glob("*.db")), "gunicorn's workers wrote no shared metrics"
    finally:
        for name, process in started.items():
            # Docker (with init: true) signals the service's main process only.
            t0 = time.monotonic()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            grace = compose.duration_seconds(resolved[name]["stop_grace_period"])
            while Supervisor.group_members(process.pid) and time.monotonic() - t0 < grace:
                time.sleep(0.05)
            stopped_in[name] = time.monotonic() - t0
            for pid in Supervisor.group_members(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.wait(10)
    print("stopped on SIGTERM in", {name: round(t, 1) for name, t in stopped_in.items()})
    for name in SERVICES:
        grace = compose.duration_seconds(resolved[name]["stop_grace_period"])
        assert stopped_in[name] < grace, f"{name} took {stopped_in[name]:.1f}s to stop"
