"""The package's layers: which module may import which, and which third-party packages each uses.

Every import counts, a function's own and a type checker's (``TYPE_CHECKING``) too: a layer
that imports a higher one only "for a type" still needs it to be there. Lowest first:

    core      pure decisions and texts; the standard library only
    gate      the pre-flight inside the job image; core and the standard library only
    settings  the one settings module; core
    store     the run store and the audit log; core, settings, SQLAlchemy, Alembic
    engine    everything that talks to the Docker engine; core, gate, settings, store, Docker SDK
    producer  routing and sending runs; core, settings, store, Celery, no Docker SDK
    worker    the Celery worker and its phase; all of the above
    cli       the operators' commands; everything

A module in a folder named after its layer (``moonmind_codex/core/``) is placed by the folder;
LAYER_OF places the one that is not in one.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "moonmind_codex"
NAME = "moonmind_codex"

LAYERS = ("core", "gate", "settings", "store", "engine", "producer", "worker", "cli")
# The one module outside a layer folder: ``python -m moonmind_codex``.
LAYER_OF = {"__main__": "cli"}
# The package root hands on the public API lazily: it names every layer by design, and only
# cli reads it (for __version__).
ROOT = "__init__"
MAY_IMPORT = {
    "core": {"core"},
    "gate": {"core", "gate"},
    "settings": {"core", "settings"},
    "store": {"core", "settings", "store"},
    "engine": {"core", "gate", "settings", "store", "engine"},
    "producer": {"core", "settings", "store", "producer"},
    "worker": {"core", "gate", "settings", "store", "engine", "producer", "worker"},
    "cli": set(LAYERS),
}
# Third-party packages (top-level import names) a layer may use; cli may use any.
THIRD_PARTY = {
    "core": set(),
    "gate": set(),
    "settings": set(),
    "store": {"sqlalchemy", "alembic"},
    "engine": {"docker", "requests"},
    "producer": {"celery", "kombu", "cryptography", "yaml"},
    "worker": {"celery", "kombu", "docker", "requests", "billiard"},
}
# Imports a layer's rules refuse that are known and tolerated, each with why: (module,
# third-party package) -> reason. Each entry must still be true, so a fixed one is taken off.
KNOWN_LEAKS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    """``moonmind_codex/core/fence.py`` -> ``core.fence``."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def package_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for p in sorted(PACKAGE.rglob("*.py"))
        if "versions" not in p.parts  # Alembic revisions: data, loaded by Alembic
    }


def layer_of(module: str) -> str | None:
    """A module's layer: its folder's when it is in a layer folder, else LAYER_OF's."""
    folder = module.split(".", 1)[0]
    if "." in module and folder in LAYERS:
        return folder
    return LAYER_OF.get(module)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full dotted name; ``from moonmind_codex[.folder]
    import x`` names module x when x is one."""
    found: set[str] = set()
    modules = package_modules()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == NAME or node.module.startswith(f"{NAME}."):
                inside = node.module.removeprefix(NAME).lstrip(".")
                for alias in node.names:
                    name = f"{inside}.{alias.name}".lstrip(".")
                    found.add(f"{NAME}.{name}" if name in modules else node.module)
            else:
                found.add(node.module)
    return found


def own_and_foreign(path: Path) -> tuple[set[str], set[str]]:
    """(the package's modules imported, as ``core.fence`` or ``core.__init__``; third-party
    top-level packages imported)."""
    modules = package_modules()
    own, foreign = set(), set()
    for name in imports_of(path):
        top = name.split(".", 1)[0]
        if top == NAME:
            inside = name.removeprefix(NAME).lstrip(".")
            own.add(inside if inside in modules else f"{inside}.{ROOT}".lstrip("."))
        elif top not in sys.stdlib_module_names and top != "__future__":
            foreign.add(top)
    return own, foreign


PLACED = sorted(m for m in package_modules() if layer_of(m) is not None)


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in package_modules() if layer_of(m) is None and m != ROOT)
    assert unplaced == [], f"put these in a layer folder, or in LAYER_OF: {unplaced}"
    gone = sorted(set(LAYER_OF) - set(package_modules()))
    assert gone == [], f"LAYER_OF names modules that are not there: {gone}"


@pytest.mark.parametrize("module", PLACED)
def test_a_module_imports_only_its_own_and_lower_layers(module: str) -> None:
    layer = layer_of(module)
    assert layer is not None
    own, _ = own_and_foreign(package_modules()[module])
    wrong = sorted(
        f"{imported} ({layer_of(imported) or 'the package root'})"
        for imported in own
        if layer_of(imported) not in MAY_IMPORT[layer] and not (imported == ROOT and layer == "cli")
    )
    assert wrong == [], f"{module} ({layer}) imports above or beside its layer: {wrong}"


@pytest.mark.parametrize("module", [m for m in PLACED if layer_of(m) != "cli"])
def test_a_module_uses_only_its_layers_third_party_packages(module: str) -> None:
    layer = layer_of(module)
    assert layer is not None
    _, foreign = own_and_foreign(package_modules()[module])
    known = {package for (leaking, package) in KNOWN_LEAKS if leaking == module}
    extra = sorted(foreign - THIRD_PARTY[layer] - known)
    assert extra == [], f"{module} ({layer}) imports {extra}, which its layer may not use"
    fixed = sorted(known - foreign)
    assert fixed == [], f"{module} no longer imports {fixed}: take it off KNOWN_LEAKS"


def test_the_checks_see_a_wrong_import(tmp_path: Path) -> None:
    """The control: imports a type checker's, a function's own and a folder's are all found."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from moonmind_codex.settings import Settings\n"
        "def f():\n    from moonmind_codex.worker import phase\n    import docker\n"
        "    from moonmind_codex.core import fence\n"
    )
    assert imports_of(planted) == {
        "typing",
        "moonmind_codex.settings",
        "moonmind_codex.worker.phase",
        "moonmind_codex.core.fence",
        "docker",
    }
    assert own_and_foreign(planted) == (
        {"settings.__init__", "worker.phase", "core.fence"},
        {"docker"},
    )


# Modules of core with nothing for mutmut to change (no function), for which it writes no
# results: the folder's docstring, the probe report's constants.
NOTHING_TO_MUTATE = {"core.__init__", "core.probe_report"}
# Outside core and mutation-tested too: the routing decisions a producer makes.
MUTATED_OUTSIDE_CORE = {"producer.router"}


def test_the_mutation_set_is_the_core_folder() -> None:
    """scripts/mutation.sh mutates exactly core's modules (and the router): a module added to
    core is mutation-tested from its first commit."""
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    mutated = {
        module_name(PACKAGE.parent / source) for source in config["tool"]["mutmut"]["only_mutate"]
    }
    core = {m for m in package_modules() if layer_of(m) == "core"}
    assert mutated == (core - NOTHING_TO_MUTATE) | MUTATED_OUTSIDE_CORE
    for module in NOTHING_TO_MUTATE:
        tree = ast.parse(package_modules()[module].read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)], module


def _readme_module_map() -> str:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `moonmind_codex/` |")]
    assert len(rows) == 1, "the README's layout table has one row for moonmind_codex/"
    return rows[0]


def test_the_readme_module_map_is_the_tree() -> None:
    """Every layer folder and every module is named in the README's map, in its folder's part,
    and the map names nothing that is not there: a moved or added module updates the map."""
    row = _readme_module_map()
    parts = {
        folder: row.split(f"`{folder}/`", 1) for folder in LAYERS if (PACKAGE / folder).is_dir()
    }
    missing = sorted(f"{folder}/" for folder, split in parts.items() if len(split) != 2)
    assert missing == [], f"the README's module map does not name {missing}"
    for folder in parts:
        # This folder's part of the row: up to the next layer folder's name.
        section = parts[folder][1].split(";", 1)[0]
        modules = sorted(p.stem for p in (PACKAGE / folder).glob("*.py") if p.stem != "__init__")
        unnamed = [m for m in modules if f"`{m}`" not in section]
        assert unnamed == [], f"the README's map of {folder}/ does not name {unnamed}"
    named = set(re.findall(r"`([a-z_]+)`", row))
    known = {m.rsplit(".", 1)[-1] for m in package_modules()} | set(LAYERS)
    extra = sorted(named - known - {"install_routing", "migrations", "moonmind_codex"})
    assert extra == [], f"the README's module map names modules that are not there: {extra}"
