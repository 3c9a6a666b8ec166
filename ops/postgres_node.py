"""A PostgreSQL cluster of the project's own, on loopback, in the run folder.

Every connection gives a password (SCRAM-SHA-256): the superuser `postgres`'s is for ops
alone, the platform's role `taskplatform` owns its database and is no superuser. Both
passwords are in the run folder (core/credentials.py). They are set, and pg_hba.conf
written, before the server starts, in single-user mode: a cluster never listens without
asking for them, and one created by an earlier version with `trust` is migrated so.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core import credentials
from core.settings import Settings
from ops.credentials import private_file

SERVICE_USER = "postgres"  # Postgres refuses to run as root
ROLE = "taskplatform"
HBA = """\
# Written by `make up` (ops/postgres_node.py); edits are overwritten. Every connection
# gives a password (SCRAM); TCP on loopback only (the server makes no Unix socket).
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""
# In the data folder: a digest of the passwords last set there (set again when it differs).
MARKER = "taskplatform-passwords.sha256"


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
            # Nobody may connect until secure_offline() has set the passwords.
            str(bin_dir() / "initdb"), "-D", str(data), "--auth=reject",
            "--username=postgres", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
        ],
        check=True,
        capture_output=True,
        user=user,
    )  # fmt: skip
    return data


def _own(path: Path) -> None:
    """Give a file we wrote in the data folder to the service user."""
    user = run_as()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _passwords(run_dir: Path) -> tuple[str, str]:
    superuser = credentials.read(run_dir, credentials.POSTGRES_SUPERUSER)
    platform = credentials.read(run_dir, credentials.POSTGRES)
    if superuser is None or platform is None:
        raise RuntimeError(f"the Postgres passwords are missing from {credentials.folder(run_dir)}")
    return superuser, platform


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def secure_offline(run_dir: Path, data: Path) -> bool:
    """Before the server starts: the roles `postgres` and `taskplatform` get the run
    folder's passwords, and pg_hba.conf asks every connection for one, unless both are so
    already. Returns whether it changed anything. Raises RuntimeError if single-user mode
    fails (the passwords are never shown)."""
    superuser, platform = _passwords(run_dir)
    digest = hashlib.sha256(f"{superuser}\n{platform}".encode()).hexdigest()
    hba, marker = data / "pg_hba.conf", data / MARKER
    try:
        if hba.read_text() == HBA and marker.read_text().strip() == digest:
            return False
    except FileNotFoundError:
        pass
    role = _literal(platform)
    statements = [
        f"ALTER ROLE postgres PASSWORD {_literal(superuser)}",
        # One line: single-user mode ends a statement at a newline.
        f"DO $tp$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
        f"ALTER ROLE {ROLE} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION "
        f"NOBYPASSRLS PASSWORD {role}; ELSE CREATE ROLE {ROLE} LOGIN PASSWORD {role}; "
        "END IF; END $tp$",
    ]
    if any("$tp$" in password for password in (superuser, platform)):
        raise RuntimeError("a Postgres password in the run folder holds '$tp$'")
    result = subprocess.run(
        [
            str(bin_dir() / "postgres"), "--single", "-D", str(data),
            "-c", "password_encryption=scram-sha-256",
            "-c", "log_min_error_statement=panic",  # the statements hold the passwords
            "-c", "unix_socket_directories=",
            "postgres",
        ],
        input="\n".join(statements) + "\n",
        capture_output=True,
        text=True,
        cwd=data,
        user=run_as(),
        timeout=120,
    )  # fmt: skip
    output = (result.stdout + result.stderr).replace(superuser, "***").replace(platform, "***")
    problems = [line for line in output.splitlines() if "ERROR" in line or "FATAL" in line]
    if result.returncode != 0 or problems:
        shown = "\n".join(problems or output.splitlines()[-5:])
        raise RuntimeError(f"setting the Postgres passwords failed (single-user mode): {shown}")
    private_file(hba, HBA)
    _own(hba)
    private_file(marker, digest + "\n")
    _own(marker)
    return True


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
        "-c", "password_encryption=scram-sha-256",
        "-c", "max_connections=300",
        "-c", "shared_buffers=256MB",
        "-c", "log_min_messages=warning",
        "-c", "log_min_error_statement=panic",
    ]  # fmt: skip


def admin_dsn(settings: Settings, dbname: str = "postgres") -> str:
    """libpq's connection string for the superuser (ops and tests only), with its password
    from the run folder (none for a cluster started before passwords were turned on)."""
    password = credentials.read(settings.run_dir, credentials.POSTGRES_SUPERUSER)
    extra = {"password": password} if password else {}
    return make_conninfo(
        host="127.0.0.1", port=settings.postgres_port, user="postgres", dbname=dbname, **extra
    )


def is_ready(settings: Settings) -> bool:
    with psycopg.connect(admin_dsn(settings), connect_timeout=1):
        return True


def ensure_database(settings: Settings) -> None:
    """The platform's role, no superuser nor able to make roles or databases, and its
    database, owned by it (idempotent: changes only what differs)."""
    password = credentials.read(settings.run_dir, credentials.POSTGRES)
    with psycopg.connect(admin_dsn(settings), autocommit=True) as conn:
        powers = conn.execute(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls"
            " FROM pg_roles WHERE rolname = %s",
            [ROLE],
        ).fetchone()
        if powers is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(password)
                )
            )
        elif powers[0]:
            conn.execute(
                sql.SQL(
                    "ALTER ROLE {} NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS"
                ).format(sql.Identifier(ROLE))
            )
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [ROLE])
        if exists.fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(ROLE), sql.Identifier(ROLE)
                )
            )
