"""A PostgreSQL cluster of the project's own, on loopback, in the run folder."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg

from core.settings import Settings

SERVICE_USER = "postgres"  # Postgres refuses to run as root


def bin_dir() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("postgres")
    if found is None:
        raise RuntimeError("PostgreSQL is not installed; run `make setup`")
    return Path(found).parent


def run_as() -> str | None:
    """The user the server runs as: `postgres` when we are root, else ourselves."""
    return SERVICE_USER if os.geteuid() == 0 else None


def _reachable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents] if p.exists())


def data_dir(run_dir: Path) -> Path:
    """The cluster's folder: in the run folder when the service user can reach it,
    otherwise (a checkout under /root, say) in a folder of its own under /var/lib."""
    own = run_dir.resolve() / "postgres"
    if run_as() is None or _reachable_by_others(run_dir.resolve()):
        return own
    digest = hashlib.sha256(str(own).encode()).hexdigest()[:12]
    return Path("/var/lib/postgresql/taskplatform") / digest


def init_once(run_dir: Path) -> Path:
    data = data_dir(run_dir)
    if (data / "PG_VERSION").exists():
        return data
    data.mkdir(parents=True, exist_ok=True)
    user = run_as()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in [data, *data.parents]:
            if path == Path("/var/lib/postgresql") or path == run_dir.resolve():
                break
            os.chown(path, entry.pw_uid, entry.pw_gid)
    data.chmod(0o700)
    subprocess.run(
        [
            str(bin_dir() / "initdb"), "-D", str(data), "--auth=trust",
            "--username=postgres", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
        ],
        check=True,
        capture_output=True,
        user=user,
    )  # fmt: skip
    return data


def server_argv(settings: Settings, data: Path) -> list[str]:
    """The server listens on TCP only. A Unix socket would live under the run folder, and its
    path may not exceed 107 bytes (a checkout deeper than ~80 characters could not start);
    every client of ours (psycopg, Alembic, the platform) connects to 127.0.0.1 anyway."""
    return [
        str(bin_dir() / "postgres"),
        "-D", str(data),
        "-p", str(settings.postgres_port),
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",
        "-c", "max_connections=300",
        "-c", "shared_buffers=256MB",
        "-c", "log_min_messages=warning",
        "-c", "log_min_error_statement=panic",
    ]  # fmt: skip


def admin_dsn(settings: Settings, dbname: str = "postgres") -> str:
    return f"host=127.0.0.1 port={settings.postgres_port} user=postgres dbname={dbname}"


def is_ready(settings: Settings) -> bool:
    with psycopg.connect(admin_dsn(settings), connect_timeout=1):
        return True


def ensure_database(settings: Settings) -> None:
    """Create the platform's role and database if they are missing (idempotent)."""
    with psycopg.connect(admin_dsn(settings), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'taskplatform'").fetchone() is None:
            conn.execute("CREATE ROLE taskplatform LOGIN")
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'taskplatform'")
        if exists.fetchone() is None:
            conn.execute("CREATE DATABASE taskplatform OWNER taskplatform")
