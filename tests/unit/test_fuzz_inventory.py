"""Fuzzing inventory variables: any YAML value for every variable validate.yml reads.

``moonmind_codex_inventory_errors`` (plugins/filter, called by playbooks/validate.yml) returns
its documented list of problems, each a sentence naming the host or shard and the fix; it never
raises, and a fleet of any size is checked in bounded time. Profiles and longer runs: see
``tests/unit/fuzz_profiles.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fuzz_profiles import examples
from tests.unit.fuzz_strategies import yaml_values

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from moonmind_codex_inventory import MAX_LISTED_GAPS, inventory_errors

hosts = st.from_regex(r"\A[a-z][a-z0-9.-]{0,15}\Z")
counts = st.one_of(yaml_values, st.integers(), st.integers(min_value=-3, max_value=8))
shard_lists = st.one_of(
    yaml_values, st.lists(st.one_of(st.integers(min_value=-2, max_value=8), yaml_values))
)


def assert_problems(errors: Any) -> list[str]:
    assert isinstance(errors, list) and all(isinstance(e, str) and e for e in errors)
    return errors


@examples(300)
@given(
    st.lists(hosts, unique=True, max_size=4),
    st.lists(hosts, unique=True, max_size=2),
    counts,
    st.one_of(yaml_values, st.text(max_size=30)),
    st.data(),
)
def test_any_variables_give_a_list_of_problems(
    workers: list[str], brokers: list[str], count: Any, broker_url: Any, data: st.DataObject
) -> None:
    hostvars: dict[str, Any] = {}
    for host in workers:
        chosen = data.draw(st.one_of(st.none(), shard_lists, yaml_values))
        hostvars[host] = {} if chosen is None else {"moonmind_codex_shards": chosen}
    errors = assert_problems(inventory_errors(workers, hostvars, brokers, count, broker_url))
    starts = ("host ", "shard ", "moonmind_codex_", "group ", "both ", "no ")
    for error in errors:
        assert error.startswith(starts) or "more shards after shard" in error, error


@examples(100)
@given(st.lists(hosts, unique=True, min_size=1, max_size=3), st.one_of(yaml_values, st.text()))
def test_a_host_whose_variables_are_not_a_mapping(workers: list[str], odd: Any) -> None:
    hostvars = {host: odd for host in workers}
    errors = inventory_errors(workers, hostvars, ["mq"], 1, "")
    assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)


@examples(100)
@given(st.integers(min_value=1, max_value=2**64))
def test_any_shard_count_is_checked_in_bounded_time(count: int) -> None:
    errors = inventory_errors(["a"], {"a": {"moonmind_codex_shards": [0]}}, ["mq"], count, "")
    assert len(errors) <= MAX_LISTED_GAPS + 1
    if count > 1 + MAX_LISTED_GAPS:
        assert errors[-1].startswith(f"{count - 1 - MAX_LISTED_GAPS} more shards after shard ")


@examples(100)
@given(st.integers(min_value=1, max_value=12), st.lists(hosts, unique=True, min_size=1, max_size=4),
       st.randoms(use_true_random=False))  # fmt: skip
def test_good_inventories_are_accepted(count: int, workers: list[str], rnd: Any) -> None:
    hostvars: dict[str, dict[str, list[int]]] = {h: {"moonmind_codex_shards": []} for h in workers}
    for shard in range(count):
        hostvars[rnd.choice(workers)]["moonmind_codex_shards"].append(shard)
    assert inventory_errors(workers, hostvars, ["mq"], count, "") == []
    assert inventory_errors(workers, hostvars, [], count, "amqp://u:p@mq:5672//", "password") == []
