"""Expanding a dataset's repeats into one sorted list of firings."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.dataset import Dataset, Request


@dataclass(frozen=True, slots=True)
class Firing:
    """One request to send: `offset` seconds into the day (before any speed-up)."""

    offset: float
    entry: int  # index of the request in the dataset
    repeat: int  # 0 for the first firing of the entry
    request: Request


def expand(dataset: Dataset) -> list[Firing]:
    """Every firing of every request, sorted by offset; ties keep dataset order, then
    repeat order, so the same dataset always gives the same schedule."""
    firings = [
        Firing(offset=offset, entry=entry, repeat=repeat, request=request)
        for entry, request in enumerate(dataset.requests)
        for repeat, offset in enumerate(request.offsets())
    ]
    firings.sort(key=lambda firing: (firing.offset, firing.entry, firing.repeat))
    return firings
