"""The log scan that runs before every isolated run folder is deleted finds what it must:
key-shaped strings, bearer tokens, the folder's own passwords and those it is given."""

from __future__ import annotations

from pathlib import Path

from core import credentials
from testing.secret_scan import secrets_in_logs

KEY = "tpk_0123abcd_" + "k" * 24


def _run_dir(tmp_path: Path, log: str) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / credentials.REDIS).write_text("redis-password-0123456789\n")
    (tmp_path / "secrets" / credentials.FLOWER).write_text("admin:flower-password-0123\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "api.log").write_text(log)
    (tmp_path / "kafka-1").mkdir()
    (tmp_path / "kafka-1" / "server.log").write_text("started\n")
    return tmp_path


def test_a_clean_log_has_no_leak(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, "GET /api/v1/tasks 200 Authorization: Bearer ***\n")
    assert secrets_in_logs(run_dir, also={"main-stack-password-01": "main"}) == []


def test_each_kind_of_secret_is_found_and_named_not_shown(tmp_path: Path) -> None:
    run_dir = _run_dir(
        tmp_path,
        f"key {KEY}\nredis://:redis-password-0123456789@127.0.0.1\n"
        "flower admin:flower-password-0123\nmain-stack-password-01\n",
    )
    (run_dir / "kafka-1" / "server.log").write_text("Authorization: bearer abcdefghijklmnop\n")
    found = secrets_in_logs(run_dir, also={"main-stack-password-01": "the main password"})
    api, kafka = str(run_dir / "logs" / "api.log"), str(run_dir / "kafka-1" / "server.log")
    assert sorted(found) == sorted(
        [
            f"{api}: {KEY[:12]}…",
            f"{api}: the password in secrets/{credentials.REDIS}",
            f"{api}: the password in secrets/{credentials.FLOWER}",
            f"{api}: the main password",
            f"{kafka}: bearer abcde…",
        ]
    )
    assert not any("redis-password-0123456789" in line for line in found)
