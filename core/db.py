"""Database engine factory. Engines are built by entry points and disposed at shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError

from core.settings import Settings

T = TypeVar("T")
_IDLE_SINCE = "taskplatform_idle_since"


def make_engine(
    settings: Settings,
    *,
    pool_size: int = 5,
    max_overflow: int | None = None,
    application: str = "",
    ping_after_idle: float | None = None,
) -> Engine:
    """A pooled engine for the platform database. `max_overflow` (by default
    `pool_size`): connections beyond the pool, each opened for one use and closed after it
    (a TCP connect and a SCRAM exchange every time).

    A connection is checked before use: every time, or with `ping_after_idle` only when it
    has rested in the pool that many seconds. The ping is a round trip of its own, as dear
    as a short query; a busy connection proved alive a moment ago, and a query on one that
    died since fails with `connection_invalidated` (see `once_more_if_disconnected`)."""
    engine = create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=ping_after_idle is None,
        pool_recycle=1800,
        connect_args={"application_name": application or "taskplatform", "connect_timeout": 5},
    )
    if ping_after_idle is not None:
        _ping_when_rested(engine, ping_after_idle)
    return engine


def _ping_when_rested(engine: Engine, seconds: float) -> None:
    @event.listens_for(engine, "checkin")
    def _rested_from(dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_rested(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < seconds:
            return  # just opened, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and checks out another (or opens one).
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


def once_more_if_disconnected(read: Callable[[], T]) -> T:
    """`read()`, and once more if its connection turned out to be dead (Postgres
    restarted, or the connection was ended): the pool has then dropped every connection
    opened before, so the second try gets a new one. For reads only: a write that lost
    its connection may or may not have committed."""
    try:
        return read()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return read()
