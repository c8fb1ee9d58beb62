"""Format one pre-flight result (PreflightResult.to_dict()) as a table row."""

from __future__ import annotations

from typing import Any


def login_row(result: dict[str, Any]) -> str:
    return (
        f"{result.get('shard', '?')!s:<6} {result.get('volume', '?'):<17} "
        f"{result.get('host', '?'):<20} {result.get('status', '?'):<8} "
        f"{result.get('codex_version') or '?':<9} {result.get('reason', '')}"
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"moonmind_codex_login_row": login_row}
