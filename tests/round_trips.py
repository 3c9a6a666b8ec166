"""Counting a Redis client's round trips (each pipeline or command is one packed send)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.connection import AbstractConnection


@contextmanager
def redis_round_trips() -> Iterator[list[Any]]:
    """What the block sends to Redis, one entry per round trip."""
    sent: list[Any] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        sent.append(args)
        original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counting)
        yield sent
