"""The bridge's priority scheduler: weights, no starvation, team turns, delays."""

from __future__ import annotations

from collections import Counter

from bridge.scheduler import PriorityScheduler, Waiting
from core.priority import Priority

H, M, L = Priority.HIGH, Priority.MEDIUM, Priority.LOW
WEIGHTS = {H: 6, M: 3, L: 1}


def _fill(scheduler: PriorityScheduler[str], queue: Priority, count: int, team: str = "a") -> None:
    for i in range(count):
        scheduler.add(Waiting(item=f"{queue}-{team}-{i}", queue=queue, team=team), now=0)


def test_every_round_of_ten_follows_the_weights_while_all_wait() -> None:
    scheduler: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    for queue in (H, M, L):
        _fill(scheduler, queue, 100)
    order = [w.queue for w in scheduler.take(100)]
    for start in range(0, 100, 10):
        counts = Counter(order[start : start + 10])
        assert counts == {H: 6, M: 3, L: 1}, (start, order[start : start + 10])
    assert order[0] is H  # high leads each busy period


def test_an_empty_priority_gives_its_share_away() -> None:
    scheduler: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    _fill(scheduler, M, 30)
    _fill(scheduler, L, 30)
    counts = Counter(w.queue for w in scheduler.take(40))
    assert counts == {M: 30, L: 10}  # 3:1 while both wait, then low takes everything


def test_low_is_never_starved_by_a_high_flood() -> None:
    scheduler: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    _fill(scheduler, H, 1000)
    _fill(scheduler, L, 5)
    order = [w.queue for w in scheduler.take(35)]
    # High and low alone share 6:1, so five lows are through within five rounds of seven.
    assert order.count(L) == 5


def test_teams_take_turns_within_a_priority() -> None:
    scheduler: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    _fill(scheduler, H, 100, team="flood")
    _fill(scheduler, H, 3, team="quiet")
    first = [w.team for w in scheduler.take(6)]
    assert first == ["flood", "quiet", "flood", "quiet", "flood", "quiet"]


def test_delayed_tasks_wait_for_their_time() -> None:
    scheduler: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    scheduler.add(Waiting(item="later", queue=H, team="a", release_at=10.0), now=0)
    scheduler.add(Waiting(item="now", queue=L, team="a"), now=0)
    assert [w.item for w in scheduler.take(5)] == ["now"]
    assert scheduler.next_release() == 10.0
    scheduler.release_due(9.9)
    assert scheduler.take(5) == []
    scheduler.release_due(10.0)
    assert [w.item for w in scheduler.take(5)] == ["later"]
    assert len(scheduler) == 0


def test_drop_forgets_a_revoked_partition() -> None:
    scheduler: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    scheduler.add(Waiting(item="a", queue=H, team="t", partition_key=("x", 0)), now=0)
    scheduler.add(Waiting(item="b", queue=H, team="t", partition_key=("x", 1)), now=0)
    scheduler.add(Waiting(item="c", queue=L, team="t", release_at=5, partition_key=("x", 0)), now=0)
    dropped = scheduler.drop([("x", 0)])
    assert sorted(w.item for w in dropped) == ["a", "c"]
    assert [w.item for w in scheduler.take(5)] == ["b"]


def test_batches_of_one_routine_keep_the_shares_between_priorities() -> None:
    scheduler: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    for queue in (H, M, L):
        _fill(scheduler, queue, 600)
    taken: list[Priority] = []
    while len(taken) < 600:
        first = scheduler.peek()
        assert first is not None
        batch = scheduler.take_like(first, 8, lambda a, b: True)
        assert len({w.queue for w in batch}) == 1  # one priority per message
        taken.extend(w.queue for w in batch)
    counts = Counter(taken[:600])
    # Eight at a time, the long-run shares still follow 6:3:1 (within one batch each).
    assert abs(counts[H] - 360) <= 8 and abs(counts[M] - 180) <= 8 and abs(counts[L] - 60) <= 8


def test_taking_one_like_the_next_follows_the_same_turns_as_take() -> None:
    """Production takes with `peek` + `take_like` (tiny tasks share a message); both must
    be the one round-robin step, so the order is the same."""
    taking: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    peeking: PriorityScheduler[str] = PriorityScheduler(WEIGHTS)
    for scheduler in (taking, peeking):
        for queue, count in ((H, 70), (M, 20), (L, 40)):
            _fill(scheduler, queue, count, team="a")
            _fill(scheduler, queue, count // 2, team="b")
    expected = [w.item for w in taking.take(500)]
    got = []
    while (upcoming := peeking.peek()) is not None:
        got.extend(w.item for w in peeking.take_like(upcoming, 1, lambda a, b: True))
    assert got == expected
