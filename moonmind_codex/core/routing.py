"""Stable shard selection: which ``codex-{n}`` queue a run's affinity key belongs to.

Pure functions, no I/O. Python's ``hash()`` is salted per process, so keys are digested with
SHA-256 and placed with jump consistent hash (Lamping and Veach, 2014): growing a fleet from n
to n+1 shards moves about 1/(n+1) of keys, where ``digest % n`` would move about n/(n+1).
"""

from __future__ import annotations

import hashlib

_JUMP_MULTIPLIER = 2862933555777941757
_MASK64 = (1 << 64) - 1


def stable_digest(key: str) -> int:
    """A 64-bit integer that is the same for ``key`` in every process, host and release."""
    if not isinstance(key, str) or key == "":
        raise ValueError("an affinity key must be a non-empty string")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"the affinity key {key!r:.80} is not valid text (it holds a lone surrogate): "
            "use the repository or run id as UTF-8"
        ) from None
    return int.from_bytes(hashlib.sha256(encoded).digest()[:8], "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit ``key`` into ``0..buckets-1``."""
    if buckets < 1:
        raise ValueError(f"the number of shards must be at least 1, got {buckets}")
    key &= _MASK64
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK64
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def shard_for_key(key: str, shard_count: int) -> int:
    """The shard that serves affinity key ``key`` in a fleet of ``shard_count`` shards."""
    return jump_hash(stable_digest(key), shard_count)


def modulo_shard_for_key(key: str, shard_count: int) -> int:
    """The naive ``digest % n`` placement, kept only as the benchmark's point of comparison."""
    if shard_count < 1:
        raise ValueError(f"the number of shards must be at least 1, got {shard_count}")
    return stable_digest(key) % shard_count


def shard_queue(prefix: str, shard: int) -> str:
    """Queue name for a shard in sharded mode: ``codex-0``, ``codex-1``, ..."""
    return f"{prefix}-{shard}"
