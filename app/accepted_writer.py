"""Records accepted tasks in Postgres right after Kafka acknowledged them, so that a
GET just after the 202 finds the task.

Request threads hand their rows to one writer thread per process, which commits them
in groups (one transaction for everything that arrived meanwhile): under load, many
requests share one commit instead of paying one each. If Postgres is unreachable the
request is still accepted (it is durable in Kafka), and the recorder writes the row
when the ACCEPTED event reaches it.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert

from core.schema import task_events, tasks

log = logging.getLogger(__name__)

GROUP_MAX = 1000
_Item = tuple[list[dict[str, Any]], list[dict[str, Any]], Future[None]]


class AcceptedWriter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="accepted-writer", daemon=True)
        self._thread.start()

    def record(
        self, task_rows: list[dict[str, Any]], event_rows: list[dict[str, Any]]
    ) -> Future[None]:
        future: Future[None] = Future()
        self._queue.put((task_rows, event_rows, future))
        return future

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < GROUP_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
            task_rows = [row for rows, _, _ in group for row in rows]
            event_rows = [row for _, rows, _ in group for row in rows]
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(tasks).on_conflict_do_nothing(), task_rows)
                    conn.execute(insert(task_events).on_conflict_do_nothing(), event_rows)
            except Exception as exc:
                for _, _, future in group:
                    future.set_exception(exc)
            else:
                for _, _, future in group:
                    future.set_result(None)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
