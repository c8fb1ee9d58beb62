"""Suite-wide guards: a run that collects too little, skips, or expects failures is not green.

A skipped integration test usually means a missing component (engine, image, broker); passing
the suite anyway would claim behaviour that was never exercised, so skips fail the session, and
so do xfail and xpass (a test that is allowed to fail proves nothing either way).

Every test module is listed below with the number of tests it collects at least. A module that
vanishes (deleted, renamed, an import-time skip) or collects fewer fails the run; a new module
that is not listed fails it too, so the list is kept true. Partial runs (explicit paths) check
the listed modules under those paths; ``-k``/``-m`` selections check only that something ran,
unless CI is set, where every module under the given paths must still be collected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

# The CLI reads a provisioned host's /etc/moonmind-codex/fleet.env under the process environment;
# tests say every setting themselves, so a fleet deployed on this machine must not leak in.
os.environ.setdefault("MOONMIND_CODEX_ENV_FILE", "")

TESTS = Path(__file__).resolve().parent
# Raise a number as tests are added; lower it only together with a deliberate removal.
MINIMUM_TESTS_PER_MODULE = {
    "ansible/test_check_mode_fresh_host.py": 1,
    "ansible/test_credentials.py": 7,
    "ansible/test_fleet_changes.py": 10,
    "ansible/test_fleet_settings_reach_workers.py": 1,
    "ansible/test_hosts_without_systemd.py": 3,
    "ansible/test_images_pull_mode.py": 2,
    "ansible/test_job_network.py": 7,
    "ansible/test_inventory_validation.py": 19,
    "ansible/test_no_login_in_logs.py": 3,
    "ansible/test_worker_unit_restart_policy.py": 5,
    "integration/test_broker_security.py": 25,
    "integration/test_canary_image.py": 1,
    "integration/test_celery_e2e.py": 17,
    "integration/test_cli.py": 29,
    "integration/test_containers.py": 3,
    "integration/test_credential_store.py": 2,
    "integration/test_engine_timeouts.py": 2,
    "integration/test_faults_e2e.py": 4,
    "integration/test_fleet_status.py": 12,
    "integration/test_guards_login.py": 8,
    "integration/test_images.py": 8,
    "integration/test_job_cpuset.py": 1,
    "integration/test_jobs.py": 13,
    "integration/test_keepalive_e2e.py": 2,
    "integration/test_login_fence_e2e.py": 3,
    "integration/test_phase_records.py": 16,
    "integration/test_preflight.py": 24,
    "integration/test_run_workspaces.py": 4,
    "integration/test_runs_e2e.py": 13,
    "integration/test_runstore.py": 25,
    "packaging/test_distribution.py": 14,
    "packaging/test_release.py": 5,
    "unit/test_audit.py": 4,
    "unit/test_broker_users.py": 34,
    "unit/test_database_url.py": 3,
    "unit/test_bench_cores.py": 6,
    "unit/test_bench_records.py": 32,
    "unit/test_authfile.py": 78,
    "unit/test_cli_args.py": 21,
    "unit/test_collection_guard.py": 7,
    "unit/test_fuzz_authfile.py": 9,
    "unit/test_fuzz_cli.py": 8,
    "unit/test_fuzz_inventory.py": 4,
    "unit/test_fuzz_runner.py": 4,
    "unit/test_fuzz_regressions.py": 38,
    "unit/test_fuzz_runs.py": 6,
    "unit/test_fuzz_settings.py": 35,
    "unit/test_fuzz_task_args.py": 12,
    "unit/test_failover.py": 9,
    "unit/test_fence.py": 23,
    "unit/test_fleet_status.py": 24,
    "unit/test_gate.py": 46,
    "unit/test_job_naming.py": 6,
    "unit/test_layers.py": 120,
    "unit/test_keepalive.py": 41,
    "unit/test_job_network.py": 13,
    "unit/test_messages.py": 21,
    "unit/test_mutation_floor.py": 4,
    "unit/test_phase_result.py": 2,
    "unit/test_policy.py": 19,
    "unit/test_preflight_eval.py": 35,
    "unit/test_preflight_findings.py": 66,
    "unit/test_probe.py": 13,
    "unit/test_role_inputs.py": 8,
    "unit/test_secret_files.py": 6,
    "unit/test_shard_job_images.py": 9,
    "unit/test_router.py": 21,
    "unit/test_purgeable_volumes.py": 3,
    "unit/test_routing.py": 13,
    "unit/test_runs.py": 92,
    "unit/test_settings.py": 43,
    "unit/test_shape.py": 8,
    "unit/test_signing.py": 30,
    "unit/test_workspace.py": 38,
}


def _module(path: Path) -> str:
    return path.resolve().relative_to(TESTS).as_posix()


def _selected_roots(config: pytest.Config) -> list[Path]:
    roots = []
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        roots.append(path)
    return roots


def _under(module: str, roots: list[Path]) -> bool:
    path = TESTS / module
    return any(path == root or root in path.parents for root in roots)


def collection_problems(
    collected: dict[str, int],
    roots: list[Path],
    exact_counts: bool,
    ignored: Sequence[Path] = (),
) -> list[str]:
    """What is wrong with a collection of ``collected`` tests per module (pure).

    Modules under an ``ignored`` path (``--ignore``) are another run's: CI runs ``tests/ansible``
    beside ``pytest tests --ignore=tests/ansible``, and each run checks its own part.
    """
    problems = [
        f"{module} is not listed in tests/conftest.py (add it with its test count)"
        for module in sorted(collected)
        if module not in MINIMUM_TESTS_PER_MODULE
    ]
    for module, minimum in sorted(MINIMUM_TESTS_PER_MODULE.items()):
        if not _under(module, roots) or _under(module, list(ignored)):
            continue
        found = collected.get(module, 0)
        if found == 0:
            problems.append(f"{module} collected no test (deleted, renamed or failed to import)")
        elif exact_counts and found < minimum:
            problems.append(f"{module} collected {found} tests, at least {minimum} expected")
    return problems


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.items:
        raise pytest.UsageError("no tests collected: refusing to report an empty run as green")
    selected_subset = bool(session.config.option.keyword or session.config.option.markexpr)
    if selected_subset and not os.environ.get("CI"):
        return
    collected: dict[str, int] = {}
    for item in session.items:
        if TESTS in item.path.resolve().parents:
            module = _module(item.path)
            collected[module] = collected.get(module, 0) + 1
    roots = _selected_roots(session.config)
    # Node ids (file::test) select single tests: only whole modules and folders are counted.
    whole = [r for r, arg in zip(roots, session.config.args, strict=True) if "::" not in arg]
    ignored = [Path(path).resolve() for path in session.config.getoption("ignore") or []]
    problems = collection_problems(collected, whole, not selected_subset, ignored)
    if problems:
        raise pytest.UsageError("test collection is incomplete: " + "; ".join(problems))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for kind in ("skipped", "xfailed", "xpassed"):
        found = terminalreporter.stats.get(kind, [])
        if found:
            terminalreporter.write_line(
                f"{len(found)} test(s) {kind}: {kind} is a failure in this project "
                "(a test that did not run, or may fail, proves nothing)",
                red=True,
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus != 0:
        return
    if any(reporter.stats.get(kind) for kind in ("skipped", "xfailed", "xpassed")):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
