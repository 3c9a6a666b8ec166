"""Finds keys and passwords in a run folder's logs.

Used by the secrets test on the default stack, and on every isolated instance and stack
just before its run folder is deleted: the fault tests kill and restart components and
their logs hold what the default stack's never see (reconnections with credentials,
failed starts), and after the deletion nothing could show a leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from core import credentials

KEY = re.compile(r"tpk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")
BEARER = re.compile(r"(?i)bearer\s+(?!\*\*\*)[A-Za-z0-9_-]{12,}")
# Shorter values are not secrets the stack makes, and would match ordinary words.
SHORTEST_SECRET = 12


def kept_passwords(run_dir: Path) -> dict[str, str]:
    """Every password of a run folder's secrets/, by file name (none on a stack without
    authentication). The Flower file holds `user:password`; only the password is secret."""
    folder = credentials.folder(run_dir)
    found = {}
    for path in sorted(folder.iterdir()) if folder.exists() else []:
        value = credentials.read(run_dir, path.name)
        if value and not path.name.endswith(".json"):
            found[path.name] = value.split(":", 1)[-1] if path.name == credentials.FLOWER else value
    return found


def log_files(run_dir: Path) -> list[Path]:
    """Each component's log and each store's own (Kafka's server.log, Postgres', Redis')."""
    return sorted(path for path in run_dir.rglob("*.log") if path.is_file())


def leaks(logs: Iterable[Path], secrets: Mapping[str, str]) -> list[str]:
    """'<log>: <what>' for each secret (value -> what it is) and each key- or bearer-shaped
    string found in the logs; never the secret itself."""
    found: list[str] = []
    for path in logs:
        text = path.read_text(errors="replace")
        for pattern in (KEY, BEARER):
            found.extend(f"{path}: {m.group(0)[:12]}…" for m in pattern.finditer(text))
        found.extend(
            f"{path}: {what}"
            for secret, what in secrets.items()
            if len(secret) >= SHORTEST_SECRET and secret in text
        )
    return found


def secrets_in_logs(run_dir: Path, *, also: Mapping[str, str] | None = None) -> list[str]:
    """What leaked into the run folder's logs, as `leaks` says it: the folder's own
    passwords, and `also` (secret -> what it is: the main stack's passwords an instance
    used, its keys). Read before the folder is deleted; asserted after the clean-up."""
    secrets = {
        value: f"the password in secrets/{name}" for name, value in kept_passwords(run_dir).items()
    }
    secrets.update(also or {})
    return leaks(log_files(run_dir), secrets)


def main_stack_secrets(main_run_dir: Path) -> dict[str, str]:
    """The main stack's passwords, for an instance that uses its stores: secret -> what."""
    return {
        value: f"the main stack's secrets/{name}"
        for name, value in kept_passwords(main_run_dir).items()
    }
