"""The run store's database: engines for SQLite and PostgreSQL, migrations one process at a
time, the transaction every query runs in, and errors that never show a password."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
# What a read of the store may raise once it is open (the database went away, a table is
# missing): callers above the store catch these, not the driver's or SQLAlchemy's own.
STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError,)


def _prepare_sqlite_file(database: Path) -> None:
    """Create the database file, its migration lock file and directory, owned like their parent.

    Workers (uid 10001) and the operator's CLI (root) share one SQLite file in the workers'
    state directory: a file root created would be read-only for the workers. SQLite itself
    gives its -wal and -shm files the database file's owner when it runs as root.
    """
    missing: list[Path] = []
    parent = database.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    owner = parent.stat()
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o750)
        except FileExistsError:
            continue  # another process starting at the same moment made it
        if os.geteuid() == 0:
            os.chown(directory, owner.st_uid, owner.st_gid)
    for path in (database, _sqlite_migration_lock_path(database)):
        if not path.exists():
            path.touch(mode=0o640)
            if os.geteuid() == 0:
                os.chown(path, owner.st_uid, owner.st_gid)


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL; None for another database or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    database = url.split("///", 1)[1] if "///" in url else ""
    return Path(database) if database and database != ":memory:" else None


def make_engine(url: str, *, prepare: bool = True) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and enforced foreign keys.

    ``prepare``: create a missing SQLite file, its directory and its migration lock file.
    """
    if url.startswith("sqlite"):
        database = sqlite_file(url)
        if prepare and database is not None:
            _prepare_sqlite_file(database)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


# Any fixed number: every process migrating one PostgreSQL database queues on this lock.
_MIGRATION_LOCK_KEY = 0x6D6D635F636F6478


def _sqlite_migration_lock_path(database: Path) -> Path:
    # Not the database file itself: closing any descriptor of it would drop the POSIX locks
    # SQLite holds on it in this process.
    return database.with_name(database.name + ".migrate-lock")


@contextmanager
def _one_migration_at_a_time(engine: Engine) -> Iterator[None]:
    """Serialise migrations across processes (workers of one host start together).

    Two processes creating the schema at once would both see an empty database and the second
    would fail on a table the first just made.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield  # PostgreSQL takes its advisory lock inside the migration's own transaction
        return
    lock_path = _sqlite_migration_lock_path(Path(database))
    descriptor = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o640)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the packaged migrations, one process at a time."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _one_migration_at_a_time(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class StoreBase:
    """The engine and one transaction per method: what each group of the store's queries uses."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session


class StoreUnavailable(Exception):
    """The run store cannot be read; the message names where (no password) and why."""


def redacted_url(url: str) -> str:
    """``url`` with its password (in the URL or its query) shown as ``***``."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return "(a URL that cannot be parsed)"
    query = {
        key: ("***" if "password" in key.lower() else value) for key, value in parsed.query.items()
    }
    return parsed.set(query=query).render_as_string(hide_password=True)


def unavailable(url: str, exc: Exception) -> StoreUnavailable:
    """The error for a store at ``url`` that failed with ``exc`` (no password in it)."""
    return StoreUnavailable(f"cannot read the run store at {redacted_url(url)}: {_why(exc, url)}")


def _why(exc: Exception, url: str) -> str:
    """The driver's own first line (not SQLAlchemy's SQL and links), with no password in it."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    why = lines[0] if lines else type(cause).__name__
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return why
    secrets = [parsed.password, *(v for k, v in parsed.query.items() if "password" in k.lower())]
    for secret in secrets:
        if isinstance(secret, str) and secret:
            why = why.replace(secret, "***")
    return why


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
