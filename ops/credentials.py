"""Making the local stack's secrets (core/credentials.py names them): each generated once,
before the service that checks it first starts with it, into a file of mode 0600 in a
folder of mode 0700."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from core import credentials

# What each service of the local stack checks. A name here is a kind of component
# (`kafka` names every node of a cluster).
SERVICE_SECRETS: dict[str, tuple[str, ...]] = {
    "postgres": (credentials.POSTGRES_SUPERUSER, credentials.POSTGRES),
    "redis": (credentials.REDIS,),
    "kafka": tuple(credentials.kafka(p) for p in credentials.KAFKA_PRINCIPALS),
}


def new_password() -> str:
    """32 characters of [A-Za-z0-9_-]: nothing to quote in a URL, a JAAS line or SQL."""
    return secrets.token_urlsafe(24)


def secure(run_dir: Path) -> None:
    """The secrets folder 0700 and every file in it 0600, whatever made them (files of an
    earlier version may be more open)."""
    folder = credentials.folder(run_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for path in folder.iterdir():
        if path.is_file() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


def ensure(run_dir: Path, name: str, make: str | None = None) -> bool:
    """Write the secret `name` (`make`, or a new password) unless it exists; True if it
    was written. Created with mode 0600 from the start, never readable by others."""
    secure(run_dir)
    path = credentials.folder(run_dir) / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write((make if make is not None else new_password()) + "\n")
    return True


def missing(run_dir: Path, kind: str) -> list[str]:
    """The secrets of service `kind` not made yet."""
    folder = credentials.folder(run_dir)
    return [name for name in SERVICE_SECRETS.get(kind, ()) if not (folder / name).exists()]


def provision(run_dir: Path, kind: str) -> list[str]:
    """Make every missing secret of service `kind`; returns the names made."""
    return [name for name in SERVICE_SECRETS.get(kind, ()) if ensure(run_dir, name)]


def provision_all(run_dir: Path) -> None:
    """Every secret of the local stack, for a run folder about to be used for the first
    time (test stacks make them before they compute their settings)."""
    for kind in SERVICE_SECRETS:
        provision(run_dir, kind)


def private_file(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (a file holding a password)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
