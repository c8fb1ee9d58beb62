"""Hold the pure modules to a mutation-score floor, from the results ``mutmut run`` left behind.

Reads ``mutants/<module path>.meta`` (mutmut 3's per-file results) for every module listed in
``[tool.mutmut] only_mutate`` of pyproject.toml and the list of equivalent mutants
(``tests/mutation/equivalent.txt``: one ``<mutant id> <reason>`` a line), prints one row per
module (killed, survived, equivalent, score) and exits 1 when:

- a module, or all of them together, scores below the floor (killed / (mutants - equivalent));
- a listed equivalent mutant no longer exists, or a test killed it after all (the list must stay
  true; a timeout of a listed mutant is the machine being slow and does not count);
- an equivalent line has no reason, or a mutant was left unchecked (an interrupted run).

A timeout or a crash counts as killed (the mutant was detected); "no tests" counts as survived.
Survivors are printed by id on failure: ``mutmut show <id>`` shows the change no test noticed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

FLOOR = 90.0
DEFAULT_EQUIVALENTS = Path("tests/mutation/equivalent.txt")

# mutmut 3's exit codes (mutmut/stats.py), sorted into what the floor needs.
KILLED_CODES = frozenset({1, 3, 24, -24, 36, 152, 255, -9, -11})
SURVIVED_CODES = frozenset({0, 5, 33})  # survived, or no test reached the mutant
# Only a failing test proves a listed equivalent wrong: a timeout says the machine was busy (CI
# runs mutation testing beside other work), not that a test noticed the change.
FAILED_BY_A_TEST = 1
# 34 (skipped) and 37 (caught by a type check) cannot happen with this configuration.


@dataclass
class ModuleScore:
    module: str
    killed: list[str] = field(default_factory=list)
    survived: list[str] = field(default_factory=list)
    equivalent: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.killed) + len(self.survived) + len(self.equivalent) + len(self.unchecked)

    @property
    def score(self) -> float:
        """Percent of the non-equivalent mutants killed (100 for a module with none)."""
        counted = self.total - len(self.equivalent)
        return 100.0 if counted == 0 else 100.0 * len(self.killed) / counted


def read_equivalents(path: Path) -> tuple[dict[str, str], list[str]]:
    """``{mutant id: reason}`` and the problems of the file (a line without a reason, twice)."""
    equivalents: dict[str, str] = {}
    problems: list[str] = []
    if not path.exists():
        return equivalents, problems
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        mutant, _, reason = text.partition(" ")
        if not reason.strip():
            problems.append(f"{path}:{number}: {mutant} has no reason")
        elif mutant in equivalents:
            problems.append(f"{path}:{number}: {mutant} is listed twice")
        equivalents[mutant] = reason.strip()
    return equivalents, problems


def module_name(source: str) -> str:
    """``moonmind_codex/core/routing.py`` -> ``moonmind_codex.core.routing`` (mutmut's ids)."""
    return source.removesuffix(".py").replace("/", ".")


def score_modules(
    results: dict[str, dict[str, int | None]], equivalents: dict[str, str]
) -> tuple[list[ModuleScore], list[str]]:
    """Each module's score from mutmut's ``{module: {mutant id: exit code}}``, and the problems
    of the equivalent list (a listed mutant that does not exist or was killed)."""
    scores: list[ModuleScore] = []
    problems: list[str] = []
    seen: set[str] = set()
    for module, codes in sorted(results.items()):
        row = ModuleScore(module)
        for mutant, code in sorted(codes.items()):
            seen.add(mutant)
            if code is None:
                row.unchecked.append(mutant)
            elif mutant in equivalents:
                if code == FAILED_BY_A_TEST:
                    problems.append(
                        f"{mutant} is listed as equivalent but a test kills it: remove its line"
                    )
                    row.killed.append(mutant)
                else:
                    row.equivalent.append(mutant)
            elif code in KILLED_CODES:
                row.killed.append(mutant)
            else:
                row.survived.append(mutant)
        scores.append(row)
    for mutant in sorted(set(equivalents) - seen):
        problems.append(f"{mutant} is listed as equivalent but no such mutant exists: remove it")
    return scores, problems


def load_results(root: Path) -> tuple[dict[str, dict[str, int | None]], list[str]]:
    """mutmut's results for every module of ``[tool.mutmut] only_mutate``."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    sources: list[str] = config["tool"]["mutmut"]["only_mutate"]
    results: dict[str, dict[str, int | None]] = {}
    problems: list[str] = []
    for source in sources:
        meta = root / "mutants" / f"{source}.meta"
        if not meta.exists():
            problems.append(f"{meta} is missing: run `mutmut run` first (scripts/mutation.sh)")
            continue
        data = json.loads(meta.read_text(encoding="utf-8"))
        results[module_name(source)] = dict(data["exit_code_by_key"])
    return results, problems


def report(scores: list[ModuleScore], floor: float) -> tuple[list[str], list[str]]:
    """The table's lines, and the failures (modules and total below the floor, unchecked)."""
    lines = [
        f"{'module':<37} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv':>5} {'score':>6}"
    ]
    failures: list[str] = []
    everything = ModuleScore("total")
    for row in [*scores, everything]:
        if row is everything:
            for other in scores:
                everything.killed += other.killed
                everything.survived += other.survived
                everything.equivalent += other.equivalent
                everything.unchecked += other.unchecked
        lines.append(
            f"{row.module:<37} {row.total:>7} {len(row.killed):>6} {len(row.survived):>8} "
            f"{len(row.equivalent):>5} {row.score:>5.1f}%"
        )
        if row.score < floor:
            failures.append(f"{row.module} scores {row.score:.1f}%, below the floor of {floor:g}%")
        if row.unchecked and row is not everything:
            failures.append(f"{row.module} has {len(row.unchecked)} unchecked mutants")
    return lines, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout")
    parser.add_argument("--equivalents", type=Path, help="default: tests/mutation/equivalent.txt")
    parser.add_argument("--floor", type=float, default=FLOOR, help="percent (default 90)")
    args = parser.parse_args(argv)
    equivalents_path = args.equivalents or args.root / DEFAULT_EQUIVALENTS

    results, problems = load_results(args.root)
    equivalents, listing_problems = read_equivalents(equivalents_path)
    scores, stale = score_modules(results, equivalents)
    lines, failures = report(scores, args.floor)
    print("\n".join(lines))
    failures = problems + listing_problems + stale + failures
    if not failures:
        print(f"mutation floor of {args.floor:g}% holds for every pure module")
        return 0
    survivors = [m for row in scores for m in row.survived + row.unchecked]
    if survivors:
        print(f"\nsurviving mutants ({len(survivors)}; `mutmut show ID` shows each change):")
        print("\n".join(f"  {m}" for m in survivors))
    print("\nmutation floor FAILED:")
    print("\n".join(f"  {f}" for f in failures))
    return 1


if __name__ == "__main__":
    sys.exit(main())
