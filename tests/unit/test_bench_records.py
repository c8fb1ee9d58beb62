"""The benchmarks' result files and bench/README.md say the same thing.

Every ``bench/bench_<name>.py`` has ``bench/results/<name>.json`` in the one shape written by
``bench.stats`` (machine, target rows, target_met) and a row in the README's table. Rules for
that row (also stated in bench/README.md):

- its "target" cell names exactly the file's targets as ``<comparison> <number>`` (for example
  ``<= 1.5x``, ``== 0``): the set of (comparison, number) pairs in the cell is the set in the file;
- its "recorded" cell carries each target's ``display`` verbatim, and at least one occurrence
  is followed by ``(met`` or ``(not met`` (bold allowed) agreeing with the file; no occurrence
  followed by a verdict disagrees;
- ``display`` is the measured value rounded: it holds one number, equal to ``measured`` to the
  decimals it shows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench.stats import COMPARISONS, bench_record, finish, target_row

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
README = BENCH / "README.md"
BENCHMARKS = sorted(p.stem.removeprefix("bench_") for p in BENCH.glob("bench_*.py"))
ROW_KEYS = {"name", "target", "comparison", "measured", "met", "display"}
MACHINE_KEYS = {"cpu", "cores", "memory_gib", "kernel", "python", "docker"}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
TARGET_IN_CELL = re.compile(r"(<=|>=|==)\s*(-?\d+(?:\.\d+)?)")
VERDICT = re.compile(r"\s*\(\**\s*(not met|met)\b", re.IGNORECASE)


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    assert path.is_file(), f"bench_{name}.py has no results file {path.relative_to(ROOT)}"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def readme_cells(name: str) -> dict[str, str]:
    """The README table row of ``bench_<name>.py``: benchmark, what, target, recorded."""
    rows = [
        line
        for line in README.read_text(encoding="utf-8").splitlines()
        if line.startswith(f"| `bench_{name}.py` |")
    ]
    assert len(rows) == 1, f"bench/README.md needs exactly one table row for bench_{name}.py"
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", rows[0].strip())[1:-1]]
    assert len(cells) == 4, f"the row of bench_{name}.py must have 4 cells: {cells}"
    return dict(zip(("benchmark", "what", "target", "recorded"), cells, strict=True))


def occurrences(text: str, display: str) -> list[int]:
    """End offsets of ``display`` in ``text``, not inside a longer number."""
    pattern = re.compile(r"(?<![\d.\-+])" + re.escape(display) + r"(?!\d|\.\d)")
    return [m.end() for m in pattern.finditer(text)]


def test_every_benchmark_has_a_results_file_and_a_readme_row() -> None:
    assert set(BENCHMARKS) == {"routing", "preflight", "enqueue", "runs", "secure", "converge"}
    results = {p.stem for p in RESULTS.glob("*.json")}
    assert results == set(BENCHMARKS), "a results file without its benchmark, or the reverse"
    for name in BENCHMARKS:
        readme_cells(name)


@pytest.mark.parametrize(
    ("comparison", "measured", "target", "met"),
    [
        ("<=", 1.0, 1.0, True),
        ("<=", 1.0001, 1.0, False),
        (">=", 1.0, 1.0, True),
        (">=", 0.9999, 1.0, False),
        ("==", 0, 0, True),
        ("==", 1, 0, False),
    ],
)
def test_target_row_judges_measured_against_target(
    comparison: str, measured: float, target: float, met: bool
) -> None:
    row = target_row("t", measured, target, comparison, "{:.2f}")
    assert set(row) == ROW_KEYS
    assert row["met"] is met
    assert row["display"] == f"{measured:.2f}"
    record = bench_record([row], machine={"cpu": "x"})
    assert record["target_met"] is met
    with pytest.raises(ValueError, match="comparison"):
        target_row("t", measured, target, "<", "{}")


def test_finish_prints_each_target_writes_the_record_and_exits_by_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    met = target_row("fast", 1.0, 2.0, "<=", "{:.1f} s")
    missed = target_row("ratio", 1.3, 1.05, "<=", "{:.2f}x")
    path = tmp_path / "r.json"
    assert finish([met], path, machine={"cpu": "x"}, samples=3) == 0
    assert json.loads(path.read_text()) == {
        "machine": {"cpu": "x"},
        "targets": [met],
        "target_met": True,
        "samples": 3,
    }
    assert finish([met, missed], None, machine={"cpu": "x"}) == 1
    assert capsys.readouterr().out.splitlines() == [
        "target: fast <= 2.0: 1.0 s MET",
        "target: fast <= 2.0: 1.0 s MET",
        "target: ratio <= 1.05: 1.30x NOT MET",
    ]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_record_shape_and_verdicts(name: str) -> None:
    data = load(name)
    assert set(data["machine"]) >= MACHINE_KEYS, "machine: bench.stats.machine() details"
    assert all(data["machine"][k] for k in MACHINE_KEYS)
    targets = data["targets"]
    assert isinstance(targets, list)
    assert targets, "at least one target row"
    assert len({t["name"] for t in targets}) == len(targets), "target names are unique"
    for t in targets:
        assert set(t) == ROW_KEYS, t
        assert t["comparison"] in COMPARISONS, t
        assert isinstance(t["measured"], int | float)
        assert not isinstance(t["measured"], bool)
        assert isinstance(t["target"], int | float)
        assert t["met"] is COMPARISONS[t["comparison"]](t["measured"], t["target"]), t
    assert data["target_met"] is all(t["met"] for t in targets)
    assert not {"met", "target"} & set(data), "the old per-file verdict keys are gone"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_display_is_the_measured_value_rounded(name: str) -> None:
    for t in load(name)["targets"]:
        numbers = NUMBER.findall(t["display"])
        assert len(numbers) == 1, f"display holds one number: {t['display']!r}"
        shown = numbers[0]
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        assert abs(float(shown) - t["measured"]) <= 0.5 * 10**-decimals + 1e-9, t


@pytest.mark.parametrize("name", BENCHMARKS)
def test_readme_target_cell_names_the_files_targets(name: str) -> None:
    cell = readme_cells(name)["target"]
    in_readme = {(c, float(v)) for c, v in TARGET_IN_CELL.findall(cell)}
    in_file = {(t["comparison"], float(t["target"])) for t in load(name)["targets"]}
    assert in_readme == in_file, f"bench_{name}.py: README target cell {cell!r}"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_readme_recorded_cell_shows_each_measured_value_and_verdict(name: str) -> None:
    cell = readme_cells(name)["recorded"]
    data = load(name)
    for t in data["targets"]:
        ends = occurrences(cell, t["display"])
        assert ends, f"bench_{name}.py: README row lacks {t['display']!r} ({t['name']})"
        verdicts = [m.group(1).lower() for e in ends if (m := VERDICT.match(cell, e))]
        want = "met" if t["met"] else "not met"
        assert verdicts, f"bench_{name}.py: {t['display']!r} needs '(met' or '(not met' after it"
        assert set(verdicts) == {want}, (
            f"bench_{name}.py: README says {verdicts} after {t['display']!r}, file says {want}"
        )
    overall = re.search(r"not met", cell, re.IGNORECASE) is not None
    assert overall is not data["target_met"], "the row says 'not met' exactly when one is not met"
