"""Committable offsets when messages finish out of order."""

from __future__ import annotations

from bridge.offsets import OffsetTracker

TP = ("tasks.alpha", 0)


def test_commit_moves_only_past_a_contiguous_done_prefix() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 15):
        tracker.seen(TP, offset)
    assert tracker.committable() == {TP: 10}
    tracker.done(TP, 12)
    tracker.done(TP, 11)
    assert tracker.committable() == {TP: 10}
    tracker.done(TP, 10)
    assert tracker.committable() == {TP: 13}
    tracker.done(TP, 14)
    tracker.done(TP, 13)
    assert tracker.committable() == {TP: 15}
    assert tracker.in_flight() == 0


def test_forget_drops_a_partition() -> None:
    tracker = OffsetTracker()
    tracker.seen(TP, 1)
    tracker.forget([TP])
    assert tracker.committable() == {}
