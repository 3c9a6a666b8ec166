"""Which Kafka offsets are safe to commit when messages finish out of order.

The bridge holds messages until workers have room, and a high-priority message read
after a low one may be dispatched first. A partition's committed offset may only move
past a message once it and every message before it are done.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass
class _Partition:
    pending: list[int] = field(default_factory=list)  # min-heap of offsets not yet done
    done: set[int] = field(default_factory=set)
    next_offset: int = -1  # one past the highest offset seen


class OffsetTracker:
    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, _Partition] = {}

    def seen(self, tp: TopicPartition, offset: int) -> None:
        part = self.partitions.setdefault(tp, _Partition())
        heapq.heappush(part.pending, offset)
        part.next_offset = max(part.next_offset, offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        part = self.partitions.get(tp)
        if part is not None:
            part.done.add(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """For each partition, the offset to commit (the next one to read on restart)."""
        result: dict[TopicPartition, int] = {}
        for tp, part in self.partitions.items():
            while part.pending and part.pending[0] in part.done:
                part.done.discard(heapq.heappop(part.pending))
            if part.next_offset >= 0:
                result[tp] = part.pending[0] if part.pending else part.next_offset
        return result

    def in_flight(self) -> int:
        return sum(len(p.pending) - len(p.done) for p in self.partitions.values())

    def forget(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.partitions.pop(tp, None)
