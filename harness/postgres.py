"""A throw-away PostgreSQL cluster (Debian's postgresql), for the run store's tests.

PostgreSQL refuses to run as root, so on a root machine the cluster runs as the ``postgres``
system user that Debian's package creates; it listens only on a Unix socket in its own
directory (no TCP port), and is removed afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: run scripts/setup.sh (it installs Debian's "
            "postgresql package)"
        )
    return found[-1]


def _as_cluster_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def running_postgres(timeout_s: float = 60) -> Iterator[str]:
    """Start a cluster; yield a SQLAlchemy URL for its ``postgres`` database."""
    base = Path(tempfile.mkdtemp(prefix="mmc-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    os.chmod(base, 0o700)
    subprocess.run(
        _as_cluster_user([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    # No TCP port at all: the server listens only on a Unix socket in its own directory, so
    # there is no port to choose and none another process could take first.
    started = subprocess.run(
        _as_cluster_user(
            [
                _bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(base / "server.log"),
                "-o",
                f"-k {base} -c listen_addresses='' -c fsync=off",
                "-w",
                "-t",
                str(int(timeout_s)),
                "start",
            ]
        ),
        capture_output=True,
        timeout=timeout_s + 10,
        check=False,
    )
    if started.returncode != 0:
        log = (base / "server.log").read_text(errors="replace")[-2000:]
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {log}")
    try:
        # pg_ctl -w returned only once the server accepts connections.
        yield f"postgresql+psycopg://postgres@/postgres?host={base}"
    finally:
        subprocess.run(
            _as_cluster_user([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)
