"""Failover of new runs: where a run goes when its key's shard is quarantined or fenced.

Pure, no I/O. Used only when a run gets its first queue (``MOONMIND_CODEX_FAILOVER``); the
assignment is then recorded and sticky, so a run never moves once it has a shard. The rule is
rendezvous hashing over the healthy shards: each shard scores SHA-256(key, shard) and the
highest healthy score wins. Every producer picks the same shard for a key, and the keys of one
unavailable shard spread over all the others instead of piling onto its neighbour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection


def score(key: str, shard: int) -> int:
    """The rendezvous weight of ``shard`` for ``key`` (stable across processes and hosts)."""
    digest = hashlib.sha256(f"{key}\0{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def failover_shard(key: str, primary: int, shard_count: int, unavailable: Collection[int]) -> int:
    """``primary`` when it is available, else the healthy shard ranked first for ``key``.

    When no shard is healthy the primary stands: the run is blocked there as without failover.
    """
    if primary not in unavailable:
        return primary
    healthy = [n for n in range(shard_count) if n not in unavailable]
    if not healthy:
        return primary
    return max(healthy, key=lambda n: (score(key, n), -n))
