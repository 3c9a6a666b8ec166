"""Database engine factory. Engines are built by entry points and disposed at shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_loads
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import QueuePool

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
    event.listen(engine, "connect", lambda connection, record: read_json_with_orjson(connection))
    if ping_after_idle is not None:
        _ping_when_rested(engine, ping_after_idle)
    return engine


def read_json_with_orjson(connection: Any) -> None:
    """json and jsonb columns (a task's payload, result and timeline) parsed by orjson on
    this psycopg connection (sync or async), as the API parses request bodies, rather
    than the standard library's json: four times faster on a task's timeline."""
    set_json_loads(orjson.loads, connection)


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


def fetch_one(engine: Engine, sql: str, params: Mapping[str, Any]) -> Any:
    """The first row of `sql` (psycopg's pyformat, as SQLAlchemy compiles for it) as a named
    tuple, or None: through the driver alone on a pooled connection, in autocommit (no
    BEGIN, no ROLLBACK), without SQLAlchemy's connection and result objects around it. A
    connection found dead is dropped and the read goes on with the next (one per pooled
    connection at most, then a new one); a failure is raised as SQLAlchemy's own."""
    dbapi = engine.dialect.loaded_dbapi
    pooled = engine.pool.size() if isinstance(engine.pool, QueuePool) else 0
    for tries_left in range(pooled + 1, -1, -1):
        fairy = engine.raw_connection()
        try:
            connection = fairy.driver_connection
            assert connection is not None
            connection.autocommit = True  # while idle: a flag, no round trip
            try:
                with connection.cursor(row_factory=namedtuple_row) as cursor:
                    return cursor.execute(sql, params).fetchone()
            finally:
                if not connection.closed:
                    connection.autocommit = False
        except dbapi.Error as exc:
            dead = engine.dialect.is_disconnect(exc, fairy.dbapi_connection, None)
            if dead:
                fairy.invalidate(exc)
            if dead and tries_left:
                continue
            raise DBAPIError.instance(
                sql, dict(params), exc, dbapi.Error, connection_invalidated=dead
            ) from exc
        finally:
            fairy.close()
    raise AssertionError("unreachable")
