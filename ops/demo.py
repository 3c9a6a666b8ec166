"""`make demo`: replay the bundled six-minute day against the running stack, at a speed
that ends in about two minutes, then say where the report, the plots and Flower are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from core.settings import Settings
from ops.keys import issue_key
from ops.services import REPO_ROOT, flower_credentials

DATASET = REPO_ROOT / "simulator" / "datasets" / "day.json"
SPEED = 3.0


def _accepted(settings: Settings, key: str) -> bool:
    """The API takes this key (it has not been revoked, and this is its database)."""
    response = httpx.get(
        f"http://127.0.0.1:{settings.api_port}/api/v1/tasks",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    return response.status_code == 200


def demo_key(settings: Settings) -> str:
    """An admin key kept in the run folder for demos (issued once, mode 0600)."""
    path = settings.run_dir / "secrets" / "demo_key"
    if path.exists():
        key = path.read_text().strip()
        if _accepted(settings, key):
            return key
    key = issue_key()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def run_demo(settings: Settings) -> int:
    report_dir = REPO_ROOT / "reports" / "demo"
    env = {**os.environ, "TASKPLATFORM_API_KEY": demo_key(settings)}
    print(f"replaying {DATASET.relative_to(REPO_ROOT)} at {SPEED:g}x (about two minutes)…\n")
    result = subprocess.run(
        [
            sys.executable, "-m", "simulator", "run", str(DATASET),
            "--speed", str(SPEED), "--report-dir", str(report_dir),
        ],
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )  # fmt: skip
    user = flower_credentials(settings, settings.run_dir).split(":", 1)[0]
    plots = sorted(p.name for p in Path(report_dir).glob("*.png"))
    print(
        f"\nreport:    {report_dir / 'report.json'}\n"
        f"plots:     {', '.join(plots) or '(none)'} in {report_dir}\n"
        f"dashboard: http://127.0.0.1:{settings.api_port}/dashboard (API key in "
        f"{settings.run_dir / 'secrets' / 'demo_key'})\n"
        f"flower:    http://127.0.0.1:{settings.flower_port} (user {user!r}, password in "
        f"{settings.run_dir / 'secrets' / 'flower_basic_auth'})\n"
        f"api docs:  http://127.0.0.1:{settings.api_port}/docs"
    )
    return result.returncode
