"""Reading docker-compose.yml and the Dockerfile as Docker would, for tests on a machine
without a Docker engine: YAML (with its merge keys), then Compose's interpolation of
`${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `${VAR:+other}`, `$VAR` and `$$`, then each
service's environment (a variable listed without a value passes through from the shell,
or is left unset)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.isolated import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

# The services built from the platform's image, each reading core.settings.Settings.
PLATFORM = ("migrate", "api", "recorder", "bridge", "worker", "flower")

_TOKEN = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


class MissingVariable(Exception):
    """`${VAR:?message}` with VAR unset: Compose refuses the file with the message."""


def load() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        assert braced is not None, f"not Compose syntax: ${{{match['braced']}}}"
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op is None:
            return value or ""
        if op.endswith("-"):
            return arg if unset else str(value)
        if op.endswith("?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return "" if unset else arg  # `+`

    return _TOKEN.sub(one, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value of the document interpolated (mapping keys are not)."""
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def defaults_in_file() -> list[tuple[str, str]]:
    """(VAR, default) of every `${VAR:-default}` in the file."""
    text = COMPOSE_FILE.read_text()
    return re.findall(r"\$\{([A-Za-z_]\w*):?-([^}]*)\}", text)


def service_environment(
    document: dict[str, Any], service: str, host: Mapping[str, str]
) -> dict[str, str]:
    """The environment Compose gives `service`'s container, the shell's being `host`."""
    raw = interpolate(document, host)["services"][service].get("environment", {})
    assert isinstance(raw, dict), f"{service}: environment as a mapping, please"
    env = {}
    for name, value in raw.items():
        if value is None:
            if name in host:
                env[name] = host[name]
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def shared_block(document: dict[str, Any]) -> dict[str, Any]:
    block = document["x-platform-env"]
    assert isinstance(block, dict)
    return block


def duration_seconds(text: str) -> float:
    """A Compose duration ("1m30s", "20s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def dockerfile_instructions() -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, arguments) of each Dockerfile line, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), shlex.split(rest)))
    return out


def dockerfile_copies() -> list[tuple[str, str]]:
    """(source in the checkout, destination under WORKDIR) of each COPY."""
    copies = []
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY":
            source, destination = args
            target = Path(source).name if destination in (".", "./") else destination
            copies.append((source, str(Path(target))))
    return copies


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            for arg in args:
                name, _, value = arg.partition("=")
                env[name] = value
    return env


def dockerignore_allowed() -> list[str]:
    """The paths `!path` lets back into the build context after `*` shut everything out."""
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore should start by shutting everything out"
    return [rule[1:] for rule in rules if rule.startswith("!")]
