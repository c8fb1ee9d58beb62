"""The workers' URL of the fleet's managed run store (plugins/filter/moonmind_codex_broker)."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from moonmind_codex_broker import FilterModule, postgresql_url


def test_the_filter_is_exported_to_ansible() -> None:
    assert FilterModule().filters()["moonmind_codex_postgresql_url"] is postgresql_url


def test_the_url_checks_the_servers_name_against_the_fleet_ca() -> None:
    url = postgresql_url(
        "moonmind_codex", "pw", "10.0.0.7", "5432", "moonmind_codex", "/etc/m/tls/ca.crt"
    )
    assert url == (
        "postgresql+psycopg://moonmind_codex:pw@10.0.0.7:5432/moonmind_codex"
        "?sslmode=verify-full&sslrootcert=%2Fetc%2Fm%2Ftls%2Fca.crt"
    )


def test_what_sqlalchemy_reads_back_is_what_went_in() -> None:
    url = make_url(postgresql_url("u@x", "a/b@c:d%?&", " fd00::7 ", 5433, "db", "/ca dir/ca.crt"))
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "u@x",
        "a/b@c:d%?&",
        "fd00::7",
        5433,
        "db",
    )
    assert dict(url.query) == {"sslmode": "verify-full", "sslrootcert": "/ca dir/ca.crt"}
