"""Verify must fail when it verifies nothing: Molecule treats a run with no tests as passed.

The whole verify step (Molecule sets MOONMIND_CODEX_VERIFY=all, see molecule.yml) must collect
every module below with exactly its number of tests. A partial run (one file, one test, -k)
must select at least one test, each from a module listed here. Skips fail either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleetops import restore_fleet

# Test module -> tests it collects (testinfra multiplies a module's tests by its hosts).
TESTS_PER_MODULE = {
    "test_hosts.py": 16,  # 8 tests x 2 worker hosts
    "test_fleet.py": 12,
}
_deselected: list[pytest.Item] = []
# A test that leaves the fleet changed for good (it does not put it back) runs after every other.
LEAVES_FLEET_CHANGED = "leaves_fleet_changed"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{LEAVES_FLEET_CHANGED}: the test leaves the fleet changed; it runs last",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort: every other test keeps its order.
    items.sort(key=lambda item: item.get_closest_marker(LEAVES_FLEET_CHANGED) is not None)


@pytest.fixture(scope="session", autouse=True)
def converged_fleet_first() -> None:
    """Every verify starts from the fleet as inventory/hosts.yml has it.

    The last test of an earlier verify may have left it changed; when nothing differs (the
    verify right after converge) this only looks.
    """
    restore_fleet()


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    counted: dict[str, int] = {}
    for item in session.items:
        name = Path(str(item.fspath)).name
        counted[name] = counted.get(name, 0) + 1
    unknown = sorted(set(counted) - set(TESTS_PER_MODULE))
    if unknown:
        raise pytest.UsageError(
            f"molecule verify: modules missing from TESTS_PER_MODULE: {unknown}"
        )
    if os.environ.get("MOONMIND_CODEX_VERIFY") == "all":
        if _deselected or counted != TESTS_PER_MODULE:
            raise pytest.UsageError(
                f"molecule verify collected {counted} ({len(_deselected)} deselected), expected "
                f"{TESTS_PER_MODULE}: a module is missing, failed to import or lost tests"
            )
    elif not session.items:
        raise pytest.UsageError("molecule verify selected no test")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter is not None else {}
    if any(stats.get(kind) for kind in ("skipped", "xfailed", "xpassed")) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
