"""core.db: pinging only connections that rested, and trying a read once more on a
connection found dead."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from core.db import fetch_one, make_engine, once_more_if_disconnected
from core.settings import Settings


class _Dead(Exception):
    pass


def _failing(invalidated: bool, times: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def read() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise DBAPIError("SELECT 1", {}, _Dead(), connection_invalidated=invalidated)
        return "row"

    return calls, read


def test_a_read_whose_connection_died_is_tried_once_more() -> None:
    calls, read = _failing(invalidated=True, times=1)
    assert once_more_if_disconnected(read) == "row"  # type: ignore[arg-type]
    assert len(calls) == 2


def test_only_once_and_only_for_a_dead_connection() -> None:
    calls, read = _failing(invalidated=True, times=2)
    with pytest.raises(DBAPIError):
        once_more_if_disconnected(read)  # type: ignore[arg-type]
    assert len(calls) == 2
    calls, read = _failing(invalidated=False, times=1)
    with pytest.raises(DBAPIError):
        once_more_if_disconnected(read)  # type: ignore[arg-type]
    assert len(calls) == 1


def _backend(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _end(engine: Engine, pid: int) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()


@pytest.fixture()
def killer(stack: Settings) -> Iterator[Engine]:
    engine = make_engine(stack, pool_size=1, application="tests-killer")
    yield engine
    engine.dispose()


@pytest.fixture()
def one_connection(stack: Settings) -> Iterator[Callable[[float], Engine]]:
    """Engines of one pooled connection that ping it after it rested the given seconds."""
    made: list[Engine] = []

    def make(ping_after_idle: float) -> Engine:
        made.append(
            make_engine(stack, pool_size=1, max_overflow=0, ping_after_idle=ping_after_idle)
        )
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


@pytest.mark.stack
def test_a_rested_connection_is_pinged_and_replaced_when_dead(
    one_connection: Callable[[float], Engine], killer: Engine
) -> None:
    engine = one_connection(0.0)
    first = _backend(engine)
    _end(killer, first)
    assert _backend(engine) != first  # no error: the ping found it gone


@pytest.mark.stack
def test_a_connection_in_use_is_not_pinged_and_the_read_is_tried_again(
    one_connection: Callable[[float], Engine], killer: Engine
) -> None:
    engine = one_connection(3600.0)
    first = _backend(engine)
    _end(killer, first)
    with pytest.raises(DBAPIError) as raised:
        _backend(engine)  # not pinged: the query itself finds the connection dead
    assert raised.value.connection_invalidated
    _end(killer, _backend(engine))
    assert once_more_if_disconnected(lambda: _backend(engine)) != first


@pytest.mark.stack
def test_fetch_one_goes_past_every_dead_pooled_connection_to_a_new_one(
    stack: Settings, killer: Engine
) -> None:
    engine = make_engine(stack, pool_size=3, max_overflow=0, ping_after_idle=3600.0)
    try:
        held = [engine.connect() for _ in range(3)]  # three connections in the pool
        pids = {int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in held}
        for conn in held:
            conn.close()
        for pid in pids:
            _end(killer, pid)
        row = fetch_one(engine, "SELECT pg_backend_pid() AS pid, %(n)s::int AS n", {"n": 7})
        assert row.n == 7 and row.pid not in pids
    finally:
        engine.dispose()


@pytest.mark.stack
def test_fetch_one_raises_sqlalchemys_errors_and_answers_none_for_no_row(
    one_connection: Callable[[float], Engine],
) -> None:
    engine = one_connection(3600.0)
    assert fetch_one(engine, "SELECT 1 WHERE false", {}) is None
    with pytest.raises(DBAPIError) as raised:
        fetch_one(engine, "SELECT 1 / %(zero)s::int", {"zero": 0})
    assert not raised.value.connection_invalidated
    assert fetch_one(engine, "SELECT 2 AS two", {}).two == 2  # the connection is usable again


@pytest.mark.stack
def test_json_and_jsonb_columns_are_parsed_by_orjson(killer: Engine) -> None:
    """Both through SQLAlchemy and through fetch_one: orjson reads a JSON number beyond
    64 bits as a float (as the API reads request bodies), the standard library as an int."""
    big = "123456789012345678901234567890"
    sql = f"SELECT '[{big}]'::json AS j, '[{big}]'::jsonb AS jb"
    with killer.connect() as conn:
        row = conn.execute(text(sql)).one()
    assert row.j == row.jb == [float(big)]
    assert fetch_one(killer, sql, {}).j == [float(big)]
