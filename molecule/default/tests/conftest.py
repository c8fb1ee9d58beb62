"""Verify must fail when it verifies nothing: Molecule treats a run with no tests as passed."""

from __future__ import annotations

import pytest

MINIMUM_TESTS = 22


def pytest_collection_finish(session: pytest.Session) -> None:
    if len(session.items) < MINIMUM_TESTS:
        raise pytest.UsageError(
            f"molecule verify collected {len(session.items)} tests, expected at least "
            f"{MINIMUM_TESTS}: the testinfra tests are missing or failed to import"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
