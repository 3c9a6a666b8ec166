"""Database engine factory. Engines are built by entry points and disposed at shutdown."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

from core.settings import Settings


def make_engine(
    settings: Settings,
    *,
    pool_size: int = 5,
    max_overflow: int | None = None,
    application: str = "",
) -> Engine:
    """A pooled engine for the platform database; connections are checked before use.
    `max_overflow` (by default `pool_size`): connections beyond the pool, each opened for
    one use and closed after it (a TCP connect and a SCRAM exchange every time)."""
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"application_name": application or "taskplatform", "connect_timeout": 5},
    )
