"""Verify must fail when it verifies nothing: Molecule treats a run with no tests as passed.

The whole verify step (Molecule sets MOONMIND_CODEX_VERIFY=all, see molecule.yml) must collect
every module below with exactly its number of tests. A partial run (one file, one test, -k)
must select at least one test, each from a module listed here. Skips fail either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Test module -> tests it collects (testinfra multiplies a module's tests by its hosts).
TESTS_PER_MODULE = {
    "test_hosts.py": 16,  # 8 tests x 2 worker hosts
    "test_fleet.py": 12,
}
_deselected: list[pytest.Item] = []


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
