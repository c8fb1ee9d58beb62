"""The run store and the audit log: runs, phases, attempts and shard records in SQL.

May import: ``moonmind_codex.core``, ``moonmind_codex.settings``, this folder, SQLAlchemy and
Alembic. The Alembic migrations are data in ``migrations/`` (packaged, loaded by Alembic).
"""
