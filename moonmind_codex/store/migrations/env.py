"""Alembic environment: runs on the connection that
:func:`moonmind_codex.store.engine.migrate` gives."""

from __future__ import annotations

from alembic import context

from moonmind_codex.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode rebuilds tables when a migration needs it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
