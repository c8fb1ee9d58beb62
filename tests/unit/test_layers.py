"""The package's layers: which module may import which, and which third-party packages each uses.

Every import counts, a function's own and a type checker's (``TYPE_CHECKING``) too: a layer
that imports a higher one only "for a type" still needs it to be there. Lowest first:

    core      pure decisions and texts; the standard library only
    gate      the pre-flight inside the job image; core and the standard library only
    settings  the one settings module; core
    store     the run store and the audit log; core, settings, SQLAlchemy, Alembic
    docker    everything that talks to the engine; core, gate, settings, store, the Docker SDK
    producer  routing and sending runs; core, settings, store, Celery, no Docker SDK
    worker    the Celery worker and its phase; all of the above
    cli       the operators' commands; everything

The package is flat today; LAYER_OF says where each module belongs until the modules move into
folders of those names (issue 19), when this test reads the folders instead.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "moonmind_codex"
NAME = "moonmind_codex"

LAYERS = ("core", "gate", "settings", "store", "docker", "producer", "worker", "cli")
LAYER_OF = {
    **dict.fromkeys(
        [
            "assignments",
            "authfile",
            "exitcodes",
            "failover",
            "fence",
            "fleet_status",
            "health",
            "keepalive",
            "messages",
            "phase_result",
            "policy",
            "preflight_eval",
            "probe_report",
            "routing",
            "runs",
            "shard",
            "workspace",
        ],
        "core",
    ),
    **dict.fromkeys(("gate", "probe"), "gate"),
    "settings": "settings",
    **dict.fromkeys(("runstore", "audit", "migrations.env"), "store"),
    **dict.fromkeys(
        ("dockerio", "containers", "run_volumes", "jobs", "preflight", "login"), "docker"
    ),
    **dict.fromkeys(("router", "submit", "recording", "hooks", "signing"), "producer"),
    **dict.fromkeys(("celery_app", "phase", "guards", "keepalive_scheduler", "worker"), "worker"),
    **dict.fromkeys(("cli", "metrics", "__main__"), "cli"),
}
# The package's own __init__ hands on the public API lazily: it names every layer by design.
EXEMPT = {"__init__"}
MAY_IMPORT = {
    "core": {"core"},
    "gate": {"core", "gate"},
    "settings": {"core", "settings"},
    "store": {"core", "settings", "store"},
    "docker": {"core", "gate", "settings", "store", "docker"},
    "producer": {"core", "settings", "store", "producer"},
    "worker": {"core", "gate", "settings", "store", "docker", "producer", "worker"},
    "cli": set(LAYERS),
}
# The package root (the public API, __version__) is above every layer: only cli reads it.
ROOT = "__init__"
# Third-party packages (top-level import names) a layer may use; cli may use any.
THIRD_PARTY = {
    "core": set(),
    "gate": set(),
    "settings": set(),
    "store": {"sqlalchemy", "alembic"},
    "docker": {"docker", "requests"},
    "producer": {"celery", "kombu", "cryptography"},
    "worker": {"celery", "kombu", "docker", "requests", "billiard"},
}
# Known, to be moved where they belong (issue 19): each entry must still be true, so a fixed one
# is taken off the list. (module, third-party package): why it is wrong.
KNOWN_LEAKS = {
    ("keepalive_scheduler", "sqlalchemy"): "its shard-activity query belongs in the store",
    ("preflight", "sqlalchemy"): "it catches SQLAlchemyError: the store should raise its own",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for p in sorted(PACKAGE.rglob("*.py"))
        if "versions" not in p.parts  # Alembic revisions: data, loaded by Alembic
    }


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports: top-level names of third-party packages, and
    ``moonmind_codex.<module>`` for the package's own (``from moonmind_codex import x`` names
    module x when it is one)."""
    found: set[str] = set()
    modules = package_modules()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == NAME:
                for alias in node.names:
                    found.add(f"{NAME}.{alias.name}" if alias.name in modules else NAME)
            else:
                found.add(node.module)
    return found


def own_and_foreign(path: Path) -> tuple[set[str], set[str]]:
    """(the package's modules imported, third-party top-level packages imported)."""
    own, foreign = set(), set()
    for name in imports_of(path):
        top = name.split(".", 1)[0]
        if top == NAME:
            own.add(name.removeprefix(f"{NAME}.") if name != NAME else "__init__")
        elif top not in sys.stdlib_module_names and top != "__future__":
            foreign.add(top)
    return own, foreign


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(set(package_modules()) - set(LAYER_OF) - EXEMPT)
    assert unplaced == [], f"give these modules a layer in LAYER_OF: {unplaced}"
    gone = sorted(set(LAYER_OF) - set(package_modules()))
    assert gone == [], f"LAYER_OF names modules that no longer exist: {gone}"


@pytest.mark.parametrize("module", sorted(set(LAYER_OF)))
def test_a_module_imports_only_its_own_and_lower_layers(module: str) -> None:
    layer = LAYER_OF[module]
    own, _ = own_and_foreign(package_modules()[module])
    wrong = sorted(
        f"{imported} ({LAYER_OF.get(imported, 'the package root')})"
        for imported in own
        if LAYER_OF.get(imported) not in MAY_IMPORT[layer]
        and not (imported == ROOT and layer == "cli")
    )
    assert wrong == [], f"{module} ({layer}) imports above or beside its layer: {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in LAYER_OF if LAYER_OF[m] != "cli"))
def test_a_module_uses_only_its_layers_third_party_packages(module: str) -> None:
    layer = LAYER_OF[module]
    _, foreign = own_and_foreign(package_modules()[module])
    known = {package for (leaking, package) in KNOWN_LEAKS if leaking == module}
    extra = sorted(foreign - THIRD_PARTY[layer] - known)
    assert extra == [], f"{module} ({layer}) imports {extra}, which its layer may not use"
    fixed = sorted(known - foreign)
    assert fixed == [], f"{module} no longer imports {fixed}: take it off KNOWN_LEAKS"


def test_the_checks_see_a_wrong_import(tmp_path: Path) -> None:
    """The control: an upward import, a function's own, is found (the walk reaches it)."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from moonmind_codex.settings import Settings\n"
        "def f():\n    from moonmind_codex import phase\n    import docker\n"
    )
    assert imports_of(planted) == {
        "typing",
        "moonmind_codex.settings",
        "moonmind_codex.phase",
        "docker",
    }
