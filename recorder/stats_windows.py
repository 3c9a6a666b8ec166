"""Sliding-window arithmetic for stream statistics: latency histograms, additive tallies
of one second, and windows that add each closed second and subtract it when it ages out.

Everything here is pure and clock-free: callers pass time in. Memory does not grow with
the number of events: a tally holds one counter per (group, status) and one histogram bin
per (group, metric, bucket), and a window keeps at most one tally per second it spans.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

# A statistics group: (scope, dimension, value), e.g. ("*", "overall", "") for everything,
# ("alpha", "priority", "high") for team alpha's high-priority tasks.
Group = tuple[str, str, str]
HistKey = tuple[Group, str]  # (group, metric)
K = TypeVar("K", bound=Hashable)
N = TypeVar("N", bound=Hashable)

# Percentiles are exact to within this relative error (log-spaced buckets, as DDSketch).
RELATIVE_ACCURACY = 0.02
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
# Latencies below a microsecond (or negative, from clock skew between processes) count as 0.
_SMALLEST_MS = 0.001
ZERO_BUCKET = -(1 << 30)


def bucket_of(ms: float) -> int:
    """The histogram bucket of a latency in milliseconds."""
    if ms < _SMALLEST_MS:
        return ZERO_BUCKET
    return math.ceil(math.log(ms) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    """The value that stands for a bucket: within RELATIVE_ACCURACY of all it holds."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return 2 * _GAMMA**bucket / (_GAMMA + 1)


def quantiles(buckets: Mapping[int, int], qs: Sequence[float]) -> list[float] | None:
    """The nearest-rank q-quantiles (0 < q <= 1, ascending) of a histogram, each within
    RELATIVE_ACCURACY of the exact one; None if the histogram is empty."""
    total = sum(buckets.values())
    if total == 0:
        return None
    ranks = [max(1, math.ceil(q * total)) for q in qs]
    found: list[float] = []
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        while len(found) < len(ranks) and seen >= ranks[len(found)]:
            found.append(bucket_value(bucket))
        if len(found) == len(ranks):
            break
    return found


def percentile(buckets: Mapping[int, int], q: float) -> float | None:
    """The nearest-rank q-quantile of a histogram, or None if it is empty."""
    found = quantiles(buckets, [q])
    return found[0] if found else None


class Tally:
    """Additive statistics by group: counters (e.g. "t:STARTED") and latency histograms
    with their exact maxima."""

    __slots__ = ("bins", "counts", "maxes")

    def __init__(self) -> None:
        self.counts: defaultdict[Group, Counter[str]] = defaultdict(Counter)
        self.bins: defaultdict[HistKey, Counter[int]] = defaultdict(Counter)
        self.maxes: dict[HistKey, float] = {}

    def __bool__(self) -> bool:
        return bool(self.counts or self.bins)

    def count(self, group: Group, name: str) -> None:
        self.counts[group][name] += 1

    def sample(self, group: Group, metric: str, ms: float) -> None:
        key = (group, metric)
        self.bins[key][bucket_of(ms)] += 1
        if ms > self.maxes.get(key, -1.0):
            self.maxes[key] = max(ms, 0.0)

    def expand(self, groups_of: Callable[[Group], Iterable[Group]]) -> Tally:
        """A tally in which each of this one's entries counts for every group that
        `groups_of` maps its key to (fine labels -> the groups they are reported in)."""
        wide = Tally()
        for key, counter in self.counts.items():
            for group in groups_of(key):
                wide.counts[group].update(counter)
        for (key, metric), bins in self.bins.items():
            highest = self.maxes[(key, metric)]
            for group in groups_of(key):
                wide.bins[(group, metric)].update(bins)
                if highest > wide.maxes.get((group, metric), -1.0):
                    wide.maxes[(group, metric)] = highest
        return wide

    def add(self, other: Tally, *, counts_only: bool = False) -> None:
        for group, counter in other.counts.items():
            self.counts[group].update(counter)
        if counts_only:
            return
        for key, bins in other.bins.items():
            self.bins[key].update(bins)
            if other.maxes[key] > self.maxes.get(key, -1.0):
                self.maxes[key] = other.maxes[key]

    def subtract(self, other: Tally) -> set[HistKey]:
        """Take `other` (added earlier) out again; returns the histograms whose maximum
        may have been `other`'s and must be recomputed. Empty entries are dropped."""
        for group, counter in other.counts.items():
            _take(self.counts, group, counter)
        stale: set[HistKey] = set()
        for key, bins in other.bins.items():
            _take(self.bins, key, bins)
            if other.maxes[key] >= self.maxes.get(key, -1.0):
                stale.add(key)
        return stale


def _take(table: dict[K, Counter[N]], key: K, amounts: Mapping[N, int]) -> None:
    current = table[key]
    for name, amount in amounts.items():
        left = current[name] - amount
        if left > 0:
            current[name] = left
        else:
            del current[name]
    if not current:
        del table[key]


class SlidingWindow:
    """The sum of the closed one-second tallies of the last `seconds` seconds.

    Seconds are kept in buckets of `resolution` seconds (about 60 buckets a window), so a
    15-minute window holds 60 tallies, not 900; a bucket leaves once all of it is older
    than the window, so the window spans `seconds` to `seconds + resolution - 1` seconds
    (`span` says exactly).
    """

    def __init__(self, seconds: int, resolution: int | None = None) -> None:
        self.seconds = seconds
        self.resolution = resolution or max(1, seconds // 60)
        self.tally = Tally()
        self._buckets: deque[tuple[int, Tally]] = deque()
        self._stale: set[HistKey] = set()

    def push(self, second: int, slot: Tally) -> None:
        """Add a closed second (each second at most once, in increasing order)."""
        self.tally.add(slot)
        bucket = second // self.resolution
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1][1].add(slot)
        elif self.resolution == 1:
            self._buckets.append((bucket, slot))  # shared, and never added to
        else:
            own = Tally()
            own.add(slot)
            self._buckets.append((bucket, own))

    def expire(self, now_second: int) -> None:
        """Drop buckets wholly before `now_second - seconds`."""
        first = now_second - self.seconds
        while self._buckets and (self._buckets[0][0] + 1) * self.resolution <= first:
            _, bucket = self._buckets.popleft()
            self._stale |= self.tally.subtract(bucket)

    def span(self, now_second: int) -> int:
        """How many seconds before `now_second` the window's figures cover."""
        first = now_second - self.seconds
        return now_second - (first // self.resolution) * self.resolution

    def settle(self) -> None:
        """Recompute the maxima that left with an expired bucket."""
        for key in self._stale:
            best = max((b.maxes[key] for _, b in self._buckets if key in b.maxes), default=None)
            if best is None or key not in self.tally.bins:
                self.tally.maxes.pop(key, None)
            else:
                self.tally.maxes[key] = best
        self._stale.clear()


class Timeline:
    """An open tally for the current second, the sliding windows it is closed into, and
    running totals (counts only) since the start.

    The open tally is keyed by whatever the caller likes (fine labels: one update per
    event); when its second closes it is expanded with `groups_of` into the groups the
    windows report, once for all its events.
    """

    def __init__(
        self,
        windows: Mapping[str, int],
        start: float,
        groups_of: Callable[[Group], Iterable[Group]],
    ) -> None:
        self.windows = {name: SlidingWindow(seconds) for name, seconds in windows.items()}
        self.totals = Tally()
        self.start_second = int(start)
        self._groups_of = groups_of
        self._second = int(start)
        self._open = Tally()

    def current(self, now: float) -> Tally:
        """The tally that events arriving at `now` go into."""
        self.advance(now)
        return self._open

    def advance(self, now: float) -> None:
        """Close the open second if `now` is past it, and age the windows. A clock that
        goes back keeps the current second (windows never move backwards)."""
        second = int(now)
        if second <= self._second:
            return
        if self._open:
            closed = self._open.expand(self._groups_of)
            for window in self.windows.values():
                window.push(self._second, closed)
            self.totals.add(closed, counts_only=True)
            self._open = Tally()
        self._second = second
        for window in self.windows.values():
            window.expire(second)

    @property
    def second(self) -> int:
        """The open (current) second; windows hold the closed seconds before it."""
        return self._second

    def covered(self, window: str) -> int:
        """How many closed seconds of the window lie after the start (the rate divisor)."""
        return min(self.windows[window].span(self._second), self._second - self.start_second)
