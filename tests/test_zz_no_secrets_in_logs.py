"""Runs last: after everything else has run, no key or password is in any log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import Settings
from ops.services import flower_credentials

pytestmark = pytest.mark.stack

KEY = re.compile(r"tpk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")
BEARER = re.compile(r"(?i)bearer\s+(?!\*\*\*)[A-Za-z0-9_-]{12,}")


def test_no_key_or_password_appears_in_any_log(stack: Settings) -> None:
    password = flower_credentials(stack, stack.run_dir).split(":", 1)[1]
    leaks = []
    logs = sorted(Path(stack.run_dir).rglob("*.log"))
    assert logs, "no log files found"
    for path in logs:
        text = path.read_text(errors="replace")
        for pattern in (KEY, BEARER):
            leaks.extend(f"{path}: {m.group(0)[:12]}…" for m in pattern.finditer(text))
        if password in text:
            leaks.append(f"{path}: the Flower password")
    assert leaks == []
