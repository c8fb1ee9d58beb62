"""`make fuzz` (scripts/fuzz.sh): the random search finds a planted oracle bug, and a sound
module passes after its time; the landing gate's profile is derandomised."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PLANTED = """
from hypothesis import given, strategies as st

from tests.unit.fuzz_profiles import examples


@examples(100)
@given(st.text(max_size=30))
def test_planted(text: str) -> None:
    # The planted oracle bug: it claims no generated text holds a "Z".
    assert "Z" not in text
"""

SOUND = """
from hypothesis import given, strategies as st

from tests.unit.fuzz_profiles import examples


@examples(100)
@given(st.text(max_size=30))
def test_sound(text: str) -> None:
    assert text.upper().lower() == text.upper().lower().upper().lower()
"""


def _fuzz(module: Path, seconds: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    env |= {"FUZZ_TESTS": str(module), "FUZZ_SECONDS": str(seconds), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "fuzz.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_make_fuzz_fails_on_a_planted_oracle_bug_and_names_the_seed(tmp_path: Path) -> None:
    module = tmp_path / "test_planted_fuzz.py"
    module.write_text(PLANTED)
    done = _fuzz(module, 20)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "Failing test case: test_planted(" in done.stdout, done.stdout[-2000:]
    assert "replay it with" in done.stdout and "--hypothesis-seed=" in done.stdout


def test_make_fuzz_passes_a_sound_module_after_its_time(tmp_path: Path) -> None:
    module = tmp_path / "test_sound_fuzz.py"
    module.write_text(SOUND)
    done = _fuzz(module, 3)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "found nothing" in done.stdout


def test_an_unknown_profile_is_refused_not_replaced() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import tests.unit.fuzz_profiles"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ | {"HYPOTHESIS_PROFILE": "fuz"},
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "HYPOTHESIS_PROFILE='fuz' is not a profile" in done.stderr


def test_the_landing_gate_search_is_the_same_every_run() -> None:
    from hypothesis import settings

    from tests.unit import fuzz_profiles

    if fuzz_profiles.PROFILE == "ci":
        assert settings.default.derandomize
    assert settings.get_profile("ci").derandomize
    assert settings.get_profile("mutation").derandomize
    assert not settings.get_profile("fuzz").derandomize
