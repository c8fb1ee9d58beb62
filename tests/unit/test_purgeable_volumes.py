"""Which auth volumes a purge deletes (plugins/filter/moonmind_codex_volumes.py): only this
fleet's volumes of shards the host no longer keeps."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from moonmind_codex_volumes import FilterModule, purgeable_volumes

TEMPLATE = "codex_auth_{shard}"


def test_the_filter_is_exported_to_ansible() -> None:
    assert FilterModule().filters()["moonmind_codex_purgeable_volumes"] is purgeable_volumes


def test_the_volumes_of_shards_the_host_keeps_stay() -> None:
    found = ["0 codex_auth_0", "1 codex_auth_1", "2 codex_auth_2"]
    assert purgeable_volumes(found, [0, "2"], TEMPLATE) == ["codex_auth_1"]
    assert purgeable_volumes(found, [], TEMPLATE) == [
        "codex_auth_0",
        "codex_auth_1",
        "codex_auth_2",
    ]


def test_another_fleets_volume_and_odd_lines_are_left_alone() -> None:
    found = [
        "3 other_fleet_auth_3",  # another fleet's name for shard 3
        "x codex_auth_x",  # a shard label that is not a number
        "4",  # no name
        "5 codex_auth_5 extra",
        "",
        "6 codex_auth_6",
    ]
    assert purgeable_volumes(found, [], TEMPLATE) == ["codex_auth_6"]
