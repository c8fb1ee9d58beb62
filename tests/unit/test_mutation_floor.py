"""scripts/mutation_floor.py, the CI gate on mutmut's results, run on results written here.

The layout is mutmut 3's: ``mutants/<source>.meta`` holds ``exit_code_by_key`` (1 killed, 0
survived, 33 no test reached it, 36 timeout, None not run yet).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutation_floor.py"
ROUTING = "moonmind_codex.routing.x_jump_hash__mutmut_"


def checkout(tmp_path: Path, codes: dict[str, int | None], equivalents: str = "") -> Path:
    """A checkout whose one pure module (routing) has mutants ``ROUTING + n`` with ``codes``."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mutmut]\nonly_mutate = ["moonmind_codex/routing.py"]\n', encoding="utf-8"
    )
    meta = tmp_path / "mutants" / "moonmind_codex" / "routing.py.meta"
    meta.parent.mkdir(parents=True)
    results = {ROUTING + n: code for n, code in codes.items()}
    meta.write_text(json.dumps({"exit_code_by_key": results}), encoding="utf-8")
    listing = tmp_path / "tests" / "mutation" / "equivalent.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text(equivalents, encoding="utf-8")
    return tmp_path


def floor(root: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout


def killed(count: int, start: int = 1) -> dict[str, int | None]:
    return {str(n): 1 for n in range(start, start + count)}


def test_ninety_percent_killed_holds_and_a_timeout_counts_as_killed(tmp_path: Path) -> None:
    code, out = floor(checkout(tmp_path, {**killed(8), "9": 36, "10": 0}))
    assert code == 0, out
    assert "moonmind_codex.routing                     10      9        1     0  90.0%" in out
    assert "mutation floor of 90% holds" in out


def test_below_the_floor_fails_and_names_each_survivor(tmp_path: Path) -> None:
    code, out = floor(checkout(tmp_path, {**killed(7), "8": 0, "9": 33, "10": 0}))
    assert code == 1
    assert "moonmind_codex.routing scores 70.0%, below the floor of 90%" in out
    survivors = out.split("surviving mutants (3;")[1]
    assert all(f"  {ROUTING}{n}\n" in survivors for n in ("8", "9", "10"))


def test_listed_equivalents_leave_the_score_and_must_stay_true(tmp_path: Path) -> None:
    listing = f"# why\n{ROUTING}9 same value either way\n{ROUTING}10 same again\n"
    code, out = floor(checkout(tmp_path, {**killed(8), "9": 0, "10": 0}, listing))
    assert code == 0, out
    assert "moonmind_codex.routing                     10      8        0     2 100.0%" in out
    # A listed mutant a test now kills, one that no longer exists, and one without a reason.
    listing += f"{ROUTING}1 thought equivalent\n{ROUTING}99 gone\n{ROUTING}8\n"
    code, out = floor(checkout(tmp_path / "again", {**killed(8), "9": 0, "10": 0}, listing))
    assert code == 1
    assert f"{ROUTING}1 is listed as equivalent but a test kills it: remove its line" in out
    assert f"{ROUTING}99 is listed as equivalent but no such mutant exists: remove it" in out
    assert f"equivalent.txt:6: {ROUTING}8 has no reason" in out
    # A listed mutant that timed out on a busy machine is still equivalent; only a test's
    # failure (exit code 1) says otherwise.
    slow = f"# why\n{ROUTING}9 same value either way\n{ROUTING}10 same again\n"
    code, out = floor(checkout(tmp_path / "slow", {**killed(8), "9": -24, "10": 0}, slow))
    assert code == 0, out
    assert "moonmind_codex.routing                     10      8        0     2 100.0%" in out


def test_an_unfinished_or_missing_run_fails(tmp_path: Path) -> None:
    code, out = floor(checkout(tmp_path, {**killed(20), "21": None}))
    assert code == 1 and "moonmind_codex.routing has 1 unchecked mutants" in out
    (tmp_path / "mutants" / "moonmind_codex" / "routing.py.meta").unlink()
    code, out = floor(tmp_path)
    assert code == 1 and "routing.py.meta is missing: run `mutmut run` first" in out
