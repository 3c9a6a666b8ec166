"""The local stack's generated secrets: one file each in `<RUN_DIR>/secrets/` (the folder
mode 0700, each file 0600), made by `python -m ops up` before it first starts the service
that checks them (ops/credentials.py).

The settings read them for their defaults (DATABASE_URL, REDIS_URL, the Kafka
credentials), so every process on the machine that uses the run folder finds them, and a
value given in the environment always wins. A file that does not exist means the service
runs without authentication (a stack started before it was turned on).
"""

from __future__ import annotations

from pathlib import Path

POSTGRES_SUPERUSER = "postgres_superuser_password"  # role `postgres`: ops only
POSTGRES = "postgres_password"  # role `taskplatform`: the platform
REDIS = "redis_password"
FLOWER = "flower_basic_auth"

# Kafka principals of the local stack: `admin` is the brokers' own (a super user, known to
# them from their configuration); each platform component has its own, with ACLs.
KAFKA_ADMIN = "admin"
KAFKA_COMPONENTS = ("api", "bridge", "worker", "recorder")
KAFKA_PRINCIPALS = (KAFKA_ADMIN, *KAFKA_COMPONENTS)


def kafka(principal: str) -> str:
    """The file name of a Kafka principal's password."""
    return f"kafka_{principal}_password"


def folder(run_dir: Path) -> Path:
    return run_dir / "secrets"


def read(run_dir: Path, name: str) -> str | None:
    """The secret `name` of this run folder, or None if it was never made.

    Raises PermissionError (naming the file) if it exists but this user cannot read it.
    """
    path = folder(run_dir) / name
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except PermissionError:
        raise PermissionError(f"cannot read {path}: permission denied") from None
