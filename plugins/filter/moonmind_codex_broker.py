"""The fleet's broker users and what each may do: least privilege on RabbitMQ's vhost ``/``;
and the servers' certificate names and the URLs clients reach the broker and the run store by.

Pure functions (no Ansible import needed to test them), used by the broker role to write the
broker's definitions file and by the test harness to start the same broker.

The broker's definitions declare the topology: the default queue and every Codex queue, each
with a topic exchange of its name bound by exactly that name (Celery would send a task for a
direct exchange through the default exchange, ``amq.default``, and the right to publish there is
the right to publish to every queue). No runtime user may declare, bind or delete them (no
configure permission): configure would let a user bind a queue of its own to a shard's exchange
and receive copies of that shard's tasks. What each user may do:

- ``codex-shard-N`` (shard N's worker): consumes only its own queue; publishes what a Codex phase
  sends on (a busy retry or the run's next phase on its own queue, the next ordinary phase or
  the run-failed callback on the default queue, the result to the sender's reply queue through
  the default exchange).
- ``codex-producer`` (the CLI and host applications submitting runs): publishes to the Codex
  queues and the default queue; consumes nothing but its own reply queues.
- ``codex-app-worker`` (a host application's default-queue workers): consumes the default queue;
  publishes what its phases send on (Codex phases, results).
Every user declares and reads its own reply queues (the rpc result backend: random UUID names).
No user has a tag (no administrator, no management). Remote control of shard workers is off, so
no user needs the ``celery.pidbox`` exchange; heartbeats and events are off (``celeryev``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

NOTHING = "^$"
# The rpc result backend's reply queue of each producer app: a random UUID.
REPLY_QUEUE = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Publishing to the default exchange (results to a reply queue) is checked as amq.default.
DEFAULT_EXCHANGE = r"amq\.default"
PRODUCER_USER = "codex-producer"
APP_WORKER_USER = "codex-app-worker"


def shard_user(shard: int) -> str:
    return f"codex-shard-{shard}"


def _any_of(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$"


def fleet_queue_names(
    shard_count: int,
    queue_prefix: str = "codex",
    default_queue: str = "celery",
    mode: str = "sharded",
) -> list[str]:
    """The default queue, then every Codex queue (one per shard, or the single shared one)."""
    if mode == "single":
        return [default_queue, queue_prefix]
    return [default_queue, *(f"{queue_prefix}-{n}" for n in range(shard_count))]


def broker_users(
    shard_count: int,
    queue_prefix: str = "codex",
    default_queue: str = "celery",
    mode: str = "sharded",
) -> list[dict[str, Any]]:
    """Every broker user with its configure, write and read patterns, shards first."""
    prefix = re.escape(queue_prefix)
    default = re.escape(default_queue)
    all_codex = prefix if mode == "single" else prefix + r"-\d+"
    users: list[dict[str, Any]] = []
    for shard in range(shard_count):
        own = prefix if mode == "single" else f"{prefix}-{shard}"
        users.append(
            {
                "name": shard_user(shard),
                "configure": _any_of(REPLY_QUEUE),
                "write": _any_of(own, default, DEFAULT_EXCHANGE),
                "read": _any_of(own, REPLY_QUEUE),
            }
        )
    users.append(
        {
            "name": PRODUCER_USER,
            "configure": _any_of(REPLY_QUEUE),
            "write": _any_of(all_codex, default),
            "read": _any_of(REPLY_QUEUE),
        }
    )
    users.append(
        {
            "name": APP_WORKER_USER,
            "configure": _any_of(REPLY_QUEUE),
            "write": _any_of(all_codex, default, DEFAULT_EXCHANGE),
            "read": _any_of(default, REPLY_QUEUE),
        }
    )
    return users


def rabbit_password_hash(name: str, password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password)).

    The 4-byte salt is derived from the user and password instead of drawn at random, so the
    same password gives the same file and a second playbook run changes nothing; it still
    differs per user and per password.
    """
    seed = f"moonmind-codex broker salt\0{name}\0{password}".encode()
    salt = hashlib.sha256(seed).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def broker_definitions(
    users: list[dict[str, Any]], passwords: Mapping[str, str], queues: list[str]
) -> str:
    """The broker's definitions file (RabbitMQ's format): users with password hashes, their
    permissions on /, and the queues with their exchanges and bindings."""
    missing = [u["name"] for u in users if not passwords.get(u["name"])]
    if missing:
        raise ValueError(f"no password for broker user(s) {', '.join(missing)}")
    definitions = {
        "users": [
            {
                "name": u["name"],
                "password_hash": rabbit_password_hash(u["name"], passwords[u["name"]]),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": "",
            }
            for u in users
        ],
        "vhosts": [{"name": "/"}],
        "exchanges": [
            {
                "name": q,
                "vhost": "/",
                "type": "topic",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for q in queues
        ],
        "queues": [
            {"name": q, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}
            for q in queues
        ],
        "bindings": [
            {
                "source": q,
                "vhost": "/",
                "destination": q,
                "destination_type": "queue",
                "routing_key": q,
                "arguments": {},
            }
            for q in queues
        ],
        "permissions": [
            {
                "user": u["name"],
                "vhost": "/",
                "configure": u["configure"],
                "write": u["write"],
                "read": u["read"],
            }
            for u in users
        ],
    }
    return json.dumps(definitions, indent=1, sort_keys=True) + "\n"


def subject_alt_names(names: list[str]) -> list[str]:
    """``DNS:`` or ``IP:`` entries for a certificate, in order, without duplicates."""
    entries: list[str] = []
    for raw in names:
        name = str(raw).strip()
        if not name:
            continue
        try:
            entry = f"IP:{ipaddress.ip_address(name)}"
        except ValueError:
            entry = f"DNS:{name}"
        if entry not in entries:
            entries.append(entry)
    return entries


def _url_authority(user: str, password: str, host: str, port: int | str) -> str:
    """``user:password@host:port`` of a URL.

    User and password are percent-encoded whole (a ``/``, ``@`` or ``:`` in them must not end
    the field); an IPv6 address gets its brackets.
    """
    address = str(host).strip()
    try:
        if ipaddress.ip_address(address).version == 6:
            address = f"[{address}]"
    except ValueError:
        pass
    return f"{quote(user, safe='')}:{quote(password, safe='')}@{address}:{int(port)}"


def amqp_url(user: str, password: str, host: str, port: int | str, tls: bool = True) -> str:
    """The URL a worker or producer uses: ``amqps://`` (TLS) or ``amqp://``, vhost ``/``."""
    scheme = "amqps" if tls else "amqp"
    return f"{scheme}://{_url_authority(user, password, host, port)}//"


def postgresql_url(
    user: str, password: str, host: str, port: int | str, database: str, ca_path: str
) -> str:
    """The run store's ``postgresql+psycopg://`` URL (the workers role's ``database_url``).

    ``verify-full``: the server's certificate must be the fleet CA's and name the host, so a
    machine that takes over the database's address without it gets no password.
    """
    query = urlencode({"sslmode": "verify-full", "sslrootcert": ca_path})
    return (
        f"postgresql+psycopg://{_url_authority(user, password, host, port)}"
        f"/{quote(database, safe='')}?{query}"
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "moonmind_codex_broker_users": broker_users,
            "moonmind_codex_broker_definitions": broker_definitions,
            "moonmind_codex_fleet_queue_names": fleet_queue_names,
            "moonmind_codex_subject_alt_names": subject_alt_names,
            "moonmind_codex_amqp_url": amqp_url,
            "moonmind_codex_postgresql_url": postgresql_url,
        }
