"""Cross-host inventory rules, checked once before any host is touched.

Pure functions (no Ansible import needed to test them): every shard 0..count-1 on exactly one
host of ``codex_workers``, ids are real integers, a broker is defined exactly once, and the
run store at most once (a ``codex_database`` host or an external URL, never both).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

BROKER_SECURITY_MODES = ("tls", "password")
CPUSET = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")
CPUSET_VARIABLES = ("moonmind_codex_codex_cpuset", "moonmind_codex_broker_cpuset")
DATABASE_URL_SCHEMES = ("postgresql+psycopg://", "postgresql://", "sqlite:///")
FIX_SHARDS = "set moonmind_codex_shards to a list of integers, e.g. [0, 1]"
# Gaps listed one by one; the rest are counted (a count of 10**9 must not make 10**9 lines).
MAX_LISTED_GAPS = 20


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def inventory_errors(
    workers: Sequence[str],
    hostvars: Mapping[str, Mapping[str, Any]],
    brokers: Sequence[str],
    shard_count: Any,
    external_broker_url: Any = "",
    broker_security: Any = "tls",
    databases: Sequence[str] = (),
    external_database_url: Any = "",
) -> list[str]:
    """Every problem with the fleet's inventory, each naming the host/shard and the fix."""
    errors: list[str] = []
    count: int | None = shard_count
    if not _is_int(shard_count) or shard_count < 1:
        errors.append(
            f"moonmind_codex_shard_count must be a positive integer, got {shard_count!r:.80}: "
            "set it in group_vars/all (e.g. moonmind_codex_shard_count: 3)"
        )
        count = None
    if not workers:
        errors.append(
            "group codex_workers is empty: add at least one host with moonmind_codex_shards"
        )
    owners: dict[int, list[str]] = {}
    for host in workers:
        errors.extend(_host_errors(host, hostvars.get(host, {}), count, owners))
    errors.extend(_coverage_errors(owners, count))
    errors.extend(_broker_errors(brokers, external_broker_url))
    errors.extend(_security_errors(external_broker_url, broker_security))
    errors.extend(_database_errors(databases, external_database_url, broker_security))
    errors.extend(_cpuset_errors([*workers, *brokers, *databases], hostvars))
    return errors


def _host_errors(
    host: str, host_vars: Mapping[str, Any], count: int | None, owners: dict[int, list[str]]
) -> list[str]:
    """One host's moonmind_codex_shards; records each valid shard's host in ``owners``."""
    if not isinstance(host_vars, Mapping):
        return [
            f"host {host}: its variables are {type(host_vars).__name__}, not a mapping; "
            f"define the host in the inventory with moonmind_codex_shards ({FIX_SHARDS})"
        ]
    shards = host_vars.get("moonmind_codex_shards")
    if shards is None:
        return [
            f"host {host}: moonmind_codex_shards is not set; {FIX_SHARDS} "
            "(or [] for a host that serves no shard)"
        ]
    if not isinstance(shards, list | tuple):
        return [f"host {host}: moonmind_codex_shards is {shards!r:.80}, not a list; {FIX_SHARDS}"]
    errors: list[str] = []
    for shard in shards:
        if not _is_int(shard):
            errors.append(f"host {host}: shard {shard!r:.80} is not an integer; {FIX_SHARDS}")
        elif count is not None and not 0 <= shard < count:
            errors.append(
                f"host {host}: shard {shard} is out of range for moonmind_codex_shard_count="
                f"{count} (valid: 0..{count - 1}); remove it or raise the count"
            )
        else:
            owners.setdefault(shard, []).append(host)
    return errors


def _coverage_errors(owners: Mapping[int, list[str]], count: int | None) -> list[str]:
    """Shards on several hosts, and (for a valid count) shards on none."""
    errors = [
        f"shard {shard} is assigned to {len(hosts)} hosts ({', '.join(hosts)}): a login "
        "must live on exactly one host; keep it in one host's moonmind_codex_shards"
        for shard, hosts in sorted(owners.items())
        if len(hosts) > 1
    ]
    if count is not None:
        # Walks at most len(owners) + MAX_LISTED_GAPS shards, whatever the count.
        listed: list[int] = []
        shard = 0
        while shard < count and len(listed) < MAX_LISTED_GAPS:
            if shard not in owners:
                listed.append(shard)
            shard += 1
        errors.extend(
            f"shard {gap} is assigned to no host (gap): add {gap} to one host's "
            "moonmind_codex_shards, or lower moonmind_codex_shard_count"
            for gap in listed
        )
        unlisted = count - sum(1 for s in owners if 0 <= s < count) - len(listed)
        if unlisted > 0:
            errors.append(
                f"{unlisted} more shards after shard {listed[-1]} are assigned to no host: give "
                "every shard 0..moonmind_codex_shard_count-1 to one host, or lower "
                "moonmind_codex_shard_count"
            )
    return errors


def _broker_errors(brokers: Sequence[str], external_broker_url: Any) -> list[str]:
    """Exactly one broker: one codex_broker host, or an external URL."""
    errors: list[str] = []
    external = isinstance(external_broker_url, str) and external_broker_url.strip() != ""
    if len(brokers) > 1:
        errors.append(
            f"group codex_broker has {len(brokers)} hosts ({', '.join(brokers)}): "
            "put exactly one host in it"
        )
    if external and brokers:
        errors.append(
            "both moonmind_codex_broker_url and a codex_broker host are set: use the "
            "external URL or the managed broker, not both"
        )
    if not external and not brokers:
        errors.append(
            "no broker defined: put one host in group codex_broker, or set "
            "moonmind_codex_broker_url (amqp://user:password@host:5672//)"
        )
    return errors


def _security_errors(external_broker_url: Any, broker_security: Any) -> list[str]:
    """The trust mode exists and fits the broker (TLS, users and signing need a managed one)."""
    if broker_security not in BROKER_SECURITY_MODES:
        return [
            f"moonmind_codex_broker_security is {broker_security!r:.80}: set it to "
            + " or ".join(BROKER_SECURITY_MODES)
        ]
    external = isinstance(external_broker_url, str) and external_broker_url.strip() != ""
    if external and broker_security == "tls":
        return [
            "moonmind_codex_broker_url points at a broker the fleet does not manage, but "
            "moonmind_codex_broker_security is tls (the fleet's own TLS broker, users and "
            "signing keys): set moonmind_codex_broker_security: password, or remove the URL and "
            "put one host in codex_broker"
        ]
    return []


def _database_errors(
    databases: Sequence[str], external_database_url: Any, broker_security: Any
) -> list[str]:
    """At most one run store: a codex_database host (tls mode), an external URL, or SQLite."""
    errors: list[str] = []
    if external_database_url is None:
        external_database_url = ""
    if not isinstance(external_database_url, str):
        return [
            f"moonmind_codex_database_url is a {type(external_database_url).__name__}, not a "
            "string: set it to postgresql+psycopg://USER:PASSWORD@HOST/DB (vault it), or leave "
            "it empty"
        ]
    external = external_database_url.strip() != ""
    if len(databases) > 1:
        errors.append(
            f"group codex_database has {len(databases)} hosts ({', '.join(databases)}): "
            "the run store is one PostgreSQL server; put exactly one host in it"
        )
    if external and databases:
        errors.append(
            "both moonmind_codex_database_url and a codex_database host are set: use your own "
            "PostgreSQL (the URL) or the managed one (the host), not both"
        )
    if external and not external_database_url.strip().startswith(DATABASE_URL_SCHEMES):
        errors.append(
            "moonmind_codex_database_url must start with "
            + " or ".join(DATABASE_URL_SCHEMES)
            + " (e.g. postgresql+psycopg://moonmind:PASSWORD@db.internal/moonmind, vaulted)"
        )
    if databases and broker_security != "tls":
        errors.append(
            "a codex_database host serves the run store over TLS with the fleet CA, which is "
            "made in the tls mode only: set moonmind_codex_broker_security: tls, or use your own "
            "PostgreSQL through moonmind_codex_database_url"
        )
    return errors


def _cpuset_errors(hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Core lists in the cpuset syntax ("1", "2-7", "1,3") or empty, on every host."""
    errors: list[str] = []
    for host in dict.fromkeys(hosts):
        host_vars = hostvars.get(host, {})
        if not isinstance(host_vars, Mapping):
            continue  # reported by _host_errors for a worker; a broker's own vars are not read
        for name in CPUSET_VARIABLES:
            value = host_vars.get(name, "")
            if value is None or value == "":
                continue
            if not isinstance(value, str) or not CPUSET.fullmatch(value):
                errors.append(
                    f"host {host}: {name} is {value!r:.80}, not a core list: use the cpuset "
                    'syntax ("1", "2-7", "1,3"), or "" for any core'
                )
    return errors


def shard_owners(
    workers: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]
) -> dict[int, str]:
    """{shard: host} for a valid inventory."""
    return {
        shard: host
        for host in workers
        for shard in hostvars.get(host, {}).get("moonmind_codex_shards") or []
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "moonmind_codex_inventory_errors": inventory_errors,
            "moonmind_codex_shard_owners": shard_owners,
        }
