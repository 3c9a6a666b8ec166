"""`GET /api/v1/tasks/<task_id>` answered on the API process's event loop, without a hop
to a pool thread and without the Flask app, in the common case: a key this process
checked in the last CACHE_SECONDS (app.auth), no query string, and a task that Postgres
has and the key may read. Everything else goes on to the Flask app and is answered as
it always was: a missing, unknown or stale key, a task not recorded yet (the app looks
in the just-accepted cache) or another team's (404), a Postgres that fails or keeps its
connections busy. The direct answer is the app's 200, byte for byte, counted in the same
request metrics (tests/app/test_direct_read.py holds both to it).

The query is the app's (app.queries.task_query), prepared, on a few connections of an
asyncio pool (psycopg_pool) that each API process opens on its loop: while Postgres
works on one read, the loop parses and answers the others.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import make_url

from app.metrics import count
from app.queries import task_from_row, task_query
from core.db import read_json_with_orjson

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from app.services import Services

log = logging.getLogger(__name__)

PREFIX = "/api/v1/tasks/"
ROUTE = "/api/v1/tasks/<task_id>"  # as Flask names it in the request metrics
# A read waits this long for a free connection before the app takes it over.
CONNECTION_WAIT_SECONDS = 1.0
# After a failure of Postgres, reads go through the app (which answers 503, or reads
# again on a fresh connection) for this long before the direct path is tried again.
BACK_OFF_SECONDS = 1.0
_BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))


class DirectRead:
    """The direct path of one API process; `answer` is called on its event loop."""

    def __init__(
        self, services: Services, *, connections: int = 4, database_url: str | None = None
    ) -> None:
        self.services = services
        self.connections = connections
        # Where its connections go: the app's database unless told otherwise (a test).
        self.database_url = database_url or services.settings.database_url
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._back_off_until = 0.0

    async def answer(self, scope: MutableMapping[str, Any]) -> bytes | None:
        """The JSON body of the app's 200 for this request, or None: the app answers it."""
        path: str = scope["path"]
        if (
            scope["method"] != "GET"
            or scope["query_string"]
            or not path.startswith(PREFIX)
            or "/" in path[len(PREFIX) :]
            or self.backing_off()
        ):
            return None
        started = time.perf_counter()
        authorization: bytes | None = None
        for name, value in scope["headers"]:
            if name in _BODY_HEADERS:
                return None  # a GET with a body: the app reads (and ignores) it
            if name == b"authorization":
                if authorization is not None:
                    return None  # two: the app reads them joined, as one
                authorization = value
        scheme, _, key = (authorization or b"").decode("latin-1").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        fresh, principal = self.services.keys.cached(key)
        if not fresh or principal is None:
            return None
        try:
            task_id = uuid.UUID(path[len(PREFIX) :])
        except ValueError:
            return None
        row = await self._read(task_id)
        if row is None:
            return None
        task = task_from_row(row)
        if not principal.may_act_for(task["team"]):
            return None
        body = orjson.dumps(task)
        count(ROUTE, "GET", 200, started)
        return body

    async def _read(self, task_id: uuid.UUID) -> Any:
        if self._pool is None:
            return None  # not opened (a front run without its lifespan)
        sql, params = task_query(self.services.engine.dialect, task_id)
        try:
            async with self._pool.connection(timeout=CONNECTION_WAIT_SECONDS) as conn:
                cursor = await conn.execute(sql, params, prepare=True)
                return await cursor.fetchone()
        except Exception as exc:  # the app's read says what is wrong, or reads again
            self._back_off_until = time.monotonic() + BACK_OFF_SECONDS
            log.warning("direct read failed, the app answers for %gs: %r", BACK_OFF_SECONDS, exc)
            return None

    async def open(self) -> None:
        """Open the connections, on the loop that will use them (they connect in the
        background: a Postgres away at start-up only sends reads to the app)."""
        url = make_url(self.database_url).set(drivername="postgresql")
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            url.render_as_string(hide_password=False),
            min_size=self.connections,
            max_size=self.connections,
            kwargs={
                "autocommit": True,
                "application_name": "api-direct-read",
                "connect_timeout": 5,
            },
            configure=_configure,
            open=False,
            name="direct-read",
        )
        await pool.open(wait=False)
        self._pool = pool

    def backing_off(self) -> bool:
        """Whether reads go to the app for now, after a failure of Postgres."""
        return time.monotonic() < self._back_off_until

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


async def _configure(conn: AsyncConnection[Any]) -> None:
    # Rows as named tuples and JSON through orjson, as the app's own read has them.
    conn.row_factory = namedtuple_row
    read_json_with_orjson(conn)
