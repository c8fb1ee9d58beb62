"""The run store's address for the workers: a PostgreSQL URL the fleet's database role serves.

Pure functions (no Ansible import needed to test them), used by the workers role to write each
host's ``database_url`` secret (0400; read through ``MOONMIND_CODEX_DATABASE_URL_FILE``).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import quote, urlencode


def postgresql_url(
    user: str, password: str, host: str, port: int | str, database: str, ca_path: str
) -> str:
    """``postgresql+psycopg://`` over TLS that checks the server's name against the fleet CA.

    ``verify-full``: a machine that takes over the database's address without the CA's
    certificate gets no password. User and password are percent-encoded whole; an IPv6 address
    gets its brackets.
    """
    address = str(host).strip()
    try:
        if ipaddress.ip_address(address).version == 6:
            address = f"[{address}]"
    except ValueError:
        pass
    query = urlencode({"sslmode": "verify-full", "sslrootcert": ca_path})
    return (
        f"postgresql+psycopg://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@{address}:{int(port)}/{quote(database, safe='')}?{query}"
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"moonmind_codex_postgresql_url": postgresql_url}
