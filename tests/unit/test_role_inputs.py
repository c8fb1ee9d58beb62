"""Every role input is declared in its argument_specs and listed in docs/inventory.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "defaults").is_dir())


def documented_names() -> set[str]:
    """Full names in docs/inventory.md, plus `_suffix` shorthands expanded under their role."""
    names: set[str] = set()
    role = ""
    for line in (REPO / "docs" / "inventory.md").read_text().splitlines():
        heading = re.match(r"^### `(moonmind_codex_\w+)`", line)
        if heading:
            role = heading.group(1)
            continue
        if not line.startswith("|"):
            continue
        for token in re.findall(r"`([A-Za-z_][\w]*)`", line):
            if token.startswith("moonmind_codex_"):
                names.add(token)
            elif token.startswith("_") and role:
                names.add(role + token)
    return names


def test_there_are_roles_to_check() -> None:
    assert len(ROLES) >= 6, ROLES


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_declared_and_documented(role: str) -> None:
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    declared = set(specs["argument_specs"]["main"]["options"])
    assert set(defaults) - declared == set(), (
        f"declare these in roles/{role}/meta/argument_specs.yml"
    )
    assert all(name.startswith(role + "_") for name in declared), (
        "role inputs carry the role prefix"
    )
    missing = declared - documented_names()
    assert missing == set(), "list these in docs/inventory.md"
