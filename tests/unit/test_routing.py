from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonmind_codex.core.routing import (
    jump_hash,
    modulo_shard_for_key,
    shard_for_key,
    shard_queue,
    stable_digest,
)
from tests.unit.fuzz_profiles import examples

KEYS = [f"org-{i % 13}/repo-{i}" for i in range(5000)]


def test_shards_stay_in_range_and_are_balanced() -> None:
    for n in (1, 2, 3, 8, 16):
        counts = [0] * n
        for key in KEYS:
            shard = shard_for_key(key, n)
            assert 0 <= shard < n
            counts[shard] += 1
        assert min(counts) > 0.8 * len(KEYS) / n


@pytest.mark.parametrize("n", [3, 8, 16])
def test_growing_moves_about_one_in_n_plus_one_keys(n: int) -> None:
    moved = sum(shard_for_key(k, n) != shard_for_key(k, n + 1) for k in KEYS) / len(KEYS)
    assert abs(moved - 1 / (n + 1)) < 0.02
    # Moved keys only ever go to the new shard: no reshuffle among existing shards.
    for key in KEYS:
        before, after = shard_for_key(key, n), shard_for_key(key, n + 1)
        assert after in (before, n)
    modulo_moved = sum(
        modulo_shard_for_key(k, n) != modulo_shard_for_key(k, n + 1) for k in KEYS
    ) / len(KEYS)
    assert modulo_moved > 0.6


def test_digest_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; the shard of a key must not be.
    code = (
        "from moonmind_codex.core.routing import shard_for_key;"
        "print([shard_for_key(f'k{i}', 7) for i in range(50)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str([shard_for_key(f"k{i}", 7) for i in range(50)])


def test_known_values_never_change() -> None:
    # Pinned so a refactor cannot silently move every run to another login.
    assert stable_digest("org/repo") == 0x57B681C5CF8EFDC2  # first 8 bytes of its SHA-256
    assert [shard_for_key(k, 3) for k in ("repo-a", "repo-b", "repo-c", "repo-d")] == [0, 1, 1, 2]


def test_known_values_in_a_large_and_a_small_fleet_never_change() -> None:
    # Many jumps per key at 1000 shards: any change to the jump arithmetic moves some of these.
    keys = [f"org/repo-{i}" for i in range(12)]
    assert [shard_for_key(k, 1000) for k in keys] == [
        631,
        725,
        847,
        65,
        524,
        457,
        481,
        696,
        71,
        674,
        387,
        306,
    ]
    assert [shard_for_key(k, 7) for k in keys] == [1, 1, 2, 2, 5, 6, 1, 3, 1, 2, 5, 3]


def test_the_jump_formula_holds_at_the_edge_of_its_31_bit_range() -> None:
    # A digest whose next generator state is 5 (its top 31 bits 0): the first jump is exactly
    # 2**31 / (0 + 1), past the last of 2**31 buckets, so the key stays in bucket 0.
    key = 9194556166681899348
    assert (key * 2862933555777941757 + 1) % 2**64 == 5
    assert jump_hash(key, 2**31) == 0
    assert jump_hash(key, 2**31 + 1) == 2**31


def test_the_benchmarks_modulo_placement_is_the_digest_modulo_n() -> None:
    assert modulo_shard_for_key("org/repo", 1) == 0
    assert modulo_shard_for_key("org/repo", 7) == 0x57B681C5CF8EFDC2 % 7
    assert isinstance(modulo_shard_for_key("org/repo", 7), int)


def test_bad_input() -> None:
    with pytest.raises(ValueError) as caught:
        stable_digest("")
    assert str(caught.value) == "an affinity key must be a non-empty string"
    with pytest.raises(ValueError) as caught:
        shard_for_key("org/\ud800repo", 3)
    assert str(caught.value) == (
        "the affinity key 'org/\\ud800repo' is not valid text (it holds a lone surrogate): "
        "use the repository or run id as UTF-8"
    )
    assert not isinstance(caught.value, UnicodeError)
    with pytest.raises(ValueError, match="at least 1"):
        jump_hash(5, 0)
    with pytest.raises(ValueError, match="at least 1"):
        modulo_shard_for_key("a", 0)


def test_queue_names() -> None:
    assert shard_queue("codex", 4) == "codex-4"


# Any text a producer can send (lone surrogates cannot be encoded and never reach a router).
KEY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80)


@examples(300)
@given(KEY_TEXT, st.integers(min_value=1, max_value=300))
def test_any_key_keeps_its_shard_or_moves_to_the_new_one_when_the_fleet_grows(
    key: str, shards: int
) -> None:
    shard = shard_for_key(key, shards)
    assert 0 <= shard < shards
    assert shard_for_key(key, shards) == shard  # the same answer every time
    assert shard_for_key(key, shards + 1) in (shard, shards)
    assert shard_queue("codex", shard) == f"codex-{shard}"


@examples(50)
@given(st.lists(KEY_TEXT, min_size=400, max_size=400, unique=True))
def test_any_four_hundred_keys_spread_over_four_shards(keys: list[str]) -> None:
    counts = [0] * 4
    for key in keys:
        counts[shard_for_key(key, 4)] += 1
    # 100 expected per shard; below 50 would be a broken spread (odds of chance: about 1e-8).
    assert min(counts) >= 50, counts
