"""Alembic environment: migrations run against the platform's DATABASE_URL."""

from __future__ import annotations

from sqlalchemy import create_engine, pool

from alembic import context
from core.schema import metadata
from core.settings import load_settings

target_metadata = metadata


def run_migrations() -> None:
    url = context.config.attributes.get("database_url") or load_settings().database_url
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
