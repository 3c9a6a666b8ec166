"""API keys for the operator's own use (the demo, test and bench instances), issued by the
API's own command (`flask --app app keys create`): ops/ starts processes and needs no part
of app/."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from ops.services import REPO_ROOT


def issue_key(env: Mapping[str, str] | None = None, *, team: str | None = None) -> str:
    """A new key for `team`, or an admin key, on the platform `env` describes (this
    process's environment by default). Raises RuntimeError with the command's words if it
    refuses (an unknown team, the database away)."""
    who = [team] if team else ["--admin"]
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "keys", "create", *who],
        cwd=REPO_ROOT,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    key = result.stdout.strip()
    if result.returncode != 0 or not key.startswith("tpk_"):
        raise RuntimeError(f"`flask keys create` failed: {result.stderr.strip() or key}")
    return key
