"""Alembic environment: runs on the connection :func:`moonmind_codex.runstore.migrate` gives."""

from __future__ import annotations

from alembic import context

from moonmind_codex.runstore import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode rebuilds tables when a migration needs it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
