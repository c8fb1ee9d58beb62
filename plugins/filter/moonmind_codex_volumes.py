"""Which auth volumes a purge deletes: this fleet's volumes of shards no longer on the host."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def purgeable_volumes(found: Iterable[str], kept_shards: Iterable[Any], template: str) -> list[str]:
    """The names among ``found`` (``docker volume ls`` lines ``<shard label> <name>``) to delete.

    A volume goes when its shard label is a shard number, that shard is not one the host keeps,
    and its name is this fleet's name for that shard (``template`` with ``{shard}``): another
    fleet on the same engine names its volumes its own way, and they are not this purge's.
    """
    kept = {int(shard) for shard in kept_shards}
    chosen = []
    for line in found:
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdecimal():
            continue
        shard, name = fields
        if int(shard) not in kept and name == template.replace("{shard}", shard):
            chosen.append(name)
    return chosen


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"moonmind_codex_purgeable_volumes": purgeable_volumes}
