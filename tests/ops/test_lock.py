"""The lock files (requirements.lock, requirements-dev.lock) hold every pin of the .txt
files at the same version, each package with hashes, and nothing is installed from
anywhere else: `make setup` and the Dockerfile install them with --require-hashes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("-r "):
            pins.update(_pins(path.parent / line[3:].strip()))
        elif found := PIN.match(line):
            pins[_name(found.group(1))] = found.group(2)
    return pins


def _locked(path: Path) -> dict[str, list[str]]:
    """Each locked package's `name==version` and its hashes."""
    entries: dict[str, list[str]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if found := PIN.match(line):
            current = f"{_name(found.group(1))}=={found.group(2)}"
            entries[current] = []
        elif "--hash=sha256:" in line and current:
            entries[current].append(line.split("--hash=sha256:")[1].split()[0])
    return entries


@pytest.mark.parametrize("name", ["requirements", "requirements-dev"])
def test_every_pin_is_locked_at_its_version_with_hashes(name: str) -> None:
    pins = _pins(REPO / f"{name}.txt")
    locked = _locked(REPO / f"{name}.lock")
    missing = [f"{p}=={v}" for p, v in pins.items() if f"{p}=={v}" not in locked]
    assert missing == [], f"not in {name}.lock at the pinned version (run `make lock`): {missing}"
    assert all(len(h) == 64 for hashes in locked.values() for h in hashes)
    assert [entry for entry, hashes in locked.items() if not hashes] == []
    text = (REPO / f"{name}.lock").read_text()
    assert "--find-links" not in text and "--index-url" not in text


def test_setup_and_the_image_install_from_the_locks_requiring_hashes() -> None:
    assert "--require-hashes -r requirements-dev.lock" in (REPO / "scripts/setup.sh").read_text()
    assert "--require-hashes -r requirements.lock" in (REPO / "Dockerfile").read_text()
