"""Generating datasets from load profiles, deterministically from a seed.

- `steady`: the same rate all day;
- `morning-rush`: a quiet start, a rush peaking about a third into the day, a small
  afternoon bump;
- `bursts`: a steady base with one short burst (about eight seconds' worth of requests
  within one second) per minute; the bursts carry about 30% of the requests.

Requests are drawn from a mix of teams, routines (with weights) and priorities (by the
routine's nature: interactive echo/noop mostly high, sleep mostly medium, cpu mostly low)
and grouped per window of a few seconds into entries spread evenly with `count`/`every`.
A `Lifecycle` gives a share of them a `delay`, an `expires` or a `cancel_after` (each
drawn independently, from a few fixed values). The same arguments always give the same
dataset.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.priority import Priority
from simulator.dataset import MAX_OFFSET, format_clock

PROFILES = ("steady", "morning-rush", "bursts")
WINDOW = 5  # seconds per group of entries
BURST_SHARE = 0.3
DEFAULT_TEAMS: dict[str, float] = {"alpha": 1.0, "bravo": 1.0, "charlie": 1.0}
DEFAULT_ROUTINES: dict[str, float] = {"echo": 4, "noop": 3, "sleep": 3, "cpu": 2, "fail": 0.3}
PriorityMix = Mapping[Priority, float]
# How often each routine asks for each priority; other routines get DEFAULT_PRIORITIES. A
# priority (core.priority) missing from a mix is never asked for by that routine.
ROUTINE_PRIORITIES: dict[str, PriorityMix] = {
    "noop": {Priority.HIGH: 6, Priority.MEDIUM: 3, Priority.LOW: 1},
    "echo": {Priority.HIGH: 6, Priority.MEDIUM: 3, Priority.LOW: 1},
    "sleep": {Priority.HIGH: 1, Priority.MEDIUM: 6, Priority.LOW: 3},
    "cpu": {Priority.HIGH: 0.5, Priority.MEDIUM: 2, Priority.LOW: 6},
    "fail": {Priority.HIGH: 2, Priority.MEDIUM: 4, Priority.LOW: 2},
}
DEFAULT_PRIORITIES: PriorityMix = {Priority.HIGH: 2.0, Priority.MEDIUM: 5.0, Priority.LOW: 3.0}

Payload = Callable[[random.Random], dict[str, Any]]
PAYLOADS: dict[str, Payload] = {
    "noop": lambda rng: {},
    "echo": lambda rng: {"order": rng.randrange(1, 100_000), "note": "generated"},
    "sleep": lambda rng: {"ms": rng.choice((10, 20, 30, 50, 80))},
    "cpu": lambda rng: {"iterations": rng.choice((5_000, 10_000, 20_000))},
    "fail": lambda rng: {"times": rng.choice((1, 1, 2))},
}


# The values a generated `delay`, `expires` or `cancel_after` is drawn from (seconds).
DELAYS = (5.0, 15.0, 30.0)
EXPIRIES = (1.0, 5.0, 30.0)
CANCEL_AFTERS = (0.5, 2.0, 10.0)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The share (0 to 1) of requests given a delay, an expiry and a cancel, each drawn
    independently: a request may have several."""

    delayed: float = 0.0
    expiring: float = 0.0
    cancelled: float = 0.0

    def __post_init__(self) -> None:
        for name in ("delayed", "expiring", "cancelled"):
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be a share from 0 to 1, not {share:g}")

    @property
    def any(self) -> bool:
        return bool(self.delayed or self.expiring or self.cancelled)

    def draw(self, rng: random.Random) -> tuple[float | None, float | None, float | None]:
        """(delay, expires, cancel_after) for one request, each None when not drawn."""
        return (
            rng.choice(DELAYS) if rng.random() < self.delayed else None,
            rng.choice(EXPIRIES) if rng.random() < self.expiring else None,
            rng.choice(CANCEL_AFTERS) if rng.random() < self.cancelled else None,
        )

    def describe(self) -> str:
        if not self.any:
            return ""
        return (
            f" Lifecycle: {self.delayed:.0%} delayed, {self.expiring:.0%} expiring, "
            f"{self.cancelled:.0%} cancelled."
        )


NO_LIFECYCLE = Lifecycle()


def parse_weights(text: str) -> dict[str, float]:
    """`alpha:2,bravo,charlie` as {"alpha": 2.0, "bravo": 1.0, "charlie": 1.0}; raises
    ValueError naming the bad part."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"{part!r}: the weight is not a number") from None
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{part!r}: the weight must be zero or more")
        weights[name.strip()] = value
    if not weights or not any(weights.values()):
        raise ValueError(f"{text!r} names nothing with a positive weight")
    return weights


def shape(profile: str, fraction: float) -> float:
    """The relative request rate `fraction` of the way through the day."""
    if profile == "morning-rush":
        rush = 2.5 * math.exp(-(((fraction - 0.3) / 0.1) ** 2))
        bump = 0.6 * math.exp(-(((fraction - 0.7) / 0.08) ** 2))
        return 0.35 + rush + bump
    if profile in ("steady", "bursts"):
        return 1.0
    raise ValueError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")


def generate(
    profile: str,
    *,
    seed: int,
    rate: float = 10.0,
    duration: int = MAX_OFFSET,
    teams: Mapping[str, float] = DEFAULT_TEAMS,
    routines: Mapping[str, float] = DEFAULT_ROUTINES,
    name: str | None = None,
    lifecycle: Lifecycle = NO_LIFECYCLE,
) -> dict[str, Any]:
    """A dataset (as JSON-ready data) of about `rate` requests per second over `duration`
    seconds (at most 06:00) following `profile`, with `lifecycle`'s share of delayed,
    expiring and cancelled requests; raises ValueError for bad arguments."""
    if not 1 <= duration <= MAX_OFFSET:
        raise ValueError(f"duration must be from 00:01 to 06:00, not {format_clock(duration)}")
    if rate <= 0:
        raise ValueError("rate must be positive")
    shape(profile, 0.0)  # fails early for an unknown profile
    rng = random.Random(seed)
    mix = _mix(teams, routines)
    total = round(rate * duration)
    bursts = _burst_starts(rng, duration) if profile == "bursts" else []
    burst_total = round(total * BURST_SHARE) if bursts else 0
    starts = list(range(0, duration, WINDOW))
    lengths = [min(WINDOW, duration - start) for start in starts]
    weights = [
        shape(profile, (start + length / 2) / duration) * length
        for start, length in zip(starts, lengths, strict=True)
    ]
    requests: list[dict[str, Any]] = []
    for start, length, count in zip(
        starts, lengths, _apportion(total - burst_total, weights), strict=True
    ):
        requests += _entries(rng, mix, start, length, count, lifecycle)
    for start, count in zip(bursts, _apportion(burst_total, [1.0] * len(bursts)), strict=True):
        requests += _entries(rng, mix, start, 1, count, lifecycle)
    requests.sort(key=_entry_order)
    return {
        "name": name or f"{profile}-{seed}",
        "description": (
            f"Generated: profile {profile}, seed {seed}, about {rate:g} requests/s for "
            f"{format_clock(duration)}; teams {_listed(teams)}; routines {_listed(routines)}."
            f"{lifecycle.describe()}"
        ),
        "requests": requests,
    }


Combo = tuple[str, str, str]


def _mix(teams: Mapping[str, float], routines: Mapping[str, float]) -> dict[Combo, float]:
    mix: dict[Combo, float] = {}
    for team, team_weight in teams.items():
        for routine, routine_weight in routines.items():
            levels = ROUTINE_PRIORITIES.get(routine, DEFAULT_PRIORITIES)
            for priority in Priority.ordered():
                weight = team_weight * routine_weight * levels.get(priority, 0.0)
                if weight > 0:
                    mix[(team, routine, priority.value)] = weight
    if not mix:
        raise ValueError("the team and routine weights leave nothing to send")
    return mix


def _burst_starts(rng: random.Random, duration: int) -> list[int]:
    """One burst second per whole minute of the day, somewhere in its middle."""
    minutes = max(1, duration // 60)
    span = duration / minutes
    return [int(i * span + rng.uniform(0.25, 0.75) * span) for i in range(minutes)]


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """`total` split in proportion to `weights`, by largest remainder: sums to `total`."""
    if total <= 0 or not weights:
        return [0] * len(weights)
    scale = total / sum(weights)
    shares = [w * scale for w in weights]
    counts = [math.floor(share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


Variant = tuple[str, str, str, float | None, float | None, float | None]
LIFECYCLE_FIELDS = ("delay", "expires", "cancel_after")


def _entries(
    rng: random.Random,
    mix: dict[Combo, float],
    start: int,
    length: int,
    count: int,
    lifecycle: Lifecycle = NO_LIFECYCLE,
) -> list[dict[str, Any]]:
    """`count` requests drawn from `mix`, one entry per combination (and lifecycle
    variant), spread over `length` seconds from `start`."""
    if count <= 0:
        return []
    combos = rng.choices(list(mix), weights=list(mix.values()), k=count)
    # Drawn only when asked for, so a dataset without a lifecycle stays as it was.
    variants = [lifecycle.draw(rng) if lifecycle.any else (None, None, None) for _ in combos]
    drawn: Counter[Variant] = Counter(
        (*combo, *variant) for combo, variant in zip(combos, variants, strict=True)
    )
    entries = []
    for (team, routine, priority, *timing), repeats in sorted(drawn.items(), key=_variant_order):
        payload = PAYLOADS.get(routine, lambda _rng: {})(rng)
        entry: dict[str, Any] = {
            "at": format_clock(start),
            "team": team,
            "routine": routine,
            "priority": priority,
            "payload": payload,
        }
        for field, value in zip(LIFECYCLE_FIELDS, timing, strict=True):
            if value is not None:
                entry[field] = value
        if repeats > 1:
            entry["count"] = repeats
            entry["every"] = math.floor(length * 1000 / repeats) / 1000
        entries.append(entry)
    return entries


def _variant_order(item: tuple[Variant, int]) -> tuple[Any, ...]:
    (team, routine, priority, *timing), _ = item
    return (team, routine, priority, *((-1.0 if v is None else v) for v in timing))


def _entry_order(entry: dict[str, Any]) -> tuple[Any, ...]:
    timing = (entry.get(field, -1.0) for field in LIFECYCLE_FIELDS)
    return (entry["at"], entry["team"], entry["routine"], entry["priority"], *timing)


def _listed(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{name}:{weight:g}" for name, weight in weights.items())
