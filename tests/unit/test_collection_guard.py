"""The collection guard of tests/conftest.py: a vanished or unlisted module fails the run."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import MINIMUM_TESTS_PER_MODULE, TESTS, collection_problems

FULL = dict(MINIMUM_TESTS_PER_MODULE)


def test_the_full_list_passes() -> None:
    assert collection_problems(FULL, [TESTS], exact_counts=True) == []


def test_a_deleted_module_fails_the_run() -> None:
    for module in MINIMUM_TESTS_PER_MODULE:
        without = {m: n for m, n in FULL.items() if m != module}
        assert collection_problems(without, [TESTS], exact_counts=True) == [
            f"{module} collected no test (deleted, renamed or failed to import)"
        ]


def test_a_module_that_lost_tests_or_is_not_listed_fails_the_run() -> None:
    fewer = {**FULL, "unit/test_routing.py": 1}
    assert collection_problems(fewer, [TESTS], exact_counts=True) == [
        f"unit/test_routing.py collected 1 tests, at least {FULL['unit/test_routing.py']} expected"
    ]
    assert collection_problems({**FULL, "unit/test_new.py": 3}, [TESTS], exact_counts=True) == [
        "unit/test_new.py is not listed in tests/conftest.py (add it with its test count)"
    ]


def test_partial_runs_check_the_modules_under_their_paths() -> None:
    only_unit = {m: n for m, n in FULL.items() if m.startswith("unit/")}
    assert collection_problems(only_unit, [TESTS / "unit"], exact_counts=True) == []
    problems = collection_problems(only_unit, [TESTS / "integration"], exact_counts=True)
    assert problems and all(p.startswith("integration/") for p in problems)


def test_a_run_beside_an_ignored_folder_checks_everything_else() -> None:
    # CI: `pytest tests/ansible` beside `pytest tests --ignore=tests/ansible`.
    ansible = TESTS / "ansible"
    rest = {m: n for m, n in FULL.items() if not m.startswith("ansible/")}
    assert collection_problems(rest, [TESTS], exact_counts=True, ignored=[ansible]) == []
    without_jobs = {m: n for m, n in rest.items() if m != "integration/test_jobs.py"}
    assert collection_problems(without_jobs, [TESTS], exact_counts=True, ignored=[ansible]) == [
        "integration/test_jobs.py collected no test (deleted, renamed or failed to import)"
    ]
    # Ignoring a folder does not excuse an unlisted module anywhere.
    assert collection_problems(
        {**rest, "ansible/test_new.py": 1}, [TESTS], exact_counts=True, ignored=[ansible]
    ) == ["ansible/test_new.py is not listed in tests/conftest.py (add it with its test count)"]


def test_a_listed_module_exists_on_disk() -> None:
    assert sorted(p.relative_to(TESTS).as_posix() for p in TESTS.glob("*/test_*.py")) == sorted(
        MINIMUM_TESTS_PER_MODULE
    )


def test_an_empty_selection_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/unit/test_routing.py", "-k", "no_such_test", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0 and "no tests collected" in done.stdout + done.stderr
