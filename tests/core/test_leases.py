"""Lease renewal on a real Redis: the keeper thread renews what its runs hold, and never
takes back a lease that was handed on (a retry's "retrying") or taken by another holder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from core import leases
from core.settings import Settings

pytestmark = pytest.mark.stack


@pytest.fixture()
def client(stack: Settings) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(stack.redis_url)
    yield made
    made.close()


def test_a_renewal_keeps_its_own_lease_makes_a_lost_one_again_and_leaves_others(
    client: redis.Redis,
) -> None:
    own, lost, handed_on, taken = (str(uuid.uuid4()) for _ in range(4))
    holder = "running:host:1"
    client.set(leases.key(own), holder, ex=2)
    client.set(leases.key(handed_on), "retrying", ex=60)
    client.set(leases.key(taken), "running:host:2", ex=60)
    try:
        leases.Leases(client).renew({t: holder for t in (own, lost, handed_on, taken)})
        assert client.get(leases.key(own)) == holder.encode()
        assert client.ttl(leases.key(own)) > 2  # extended to RUNNING_SECONDS
        assert client.get(leases.key(lost)) == holder.encode()  # Redis lost it: made again
        assert client.get(leases.key(handed_on)) == b"retrying"
        assert client.get(leases.key(taken)) == b"running:host:2"
    finally:
        client.delete(*(leases.key(t) for t in (own, lost, handed_on, taken)))
