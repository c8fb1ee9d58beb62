"""Small helpers shared by the benchmarks: percentiles, a machine description, target rows.

Every benchmark writes one JSON shape (checked against bench/README.md by
tests/unit/test_bench_records.py)::

    {"machine": machine(), "targets": [target_row(...), ...], "target_met": all(met), ...}

where each target row is {"name", "target", "comparison", "measured", "met", "display"}: ``met``
is ``comparison(measured, target)`` and ``display`` is ``measured`` rounded as the README shows
it (the README's row for the benchmark carries it verbatim, followed by "(met)" or
"(not met)").
"""

from __future__ import annotations

import json
import operator
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

# A target's comparison: measured <comparison> target.
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
}


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def distribution(samples: list[float]) -> dict[str, float]:
    return {
        "n": float(len(samples)),
        "min": min(samples),
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p95": percentile(samples, 95),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


def format_distribution(name: str, d: dict[str, float], unit: str = "s") -> str:
    return (
        f"{name:<34} n={int(d['n']):<4} min={d['min']:.3f}{unit} p50={d['p50']:.3f}{unit} "
        f"p90={d['p90']:.3f}{unit} p95={d['p95']:.3f}{unit} max={d['max']:.3f}{unit}"
    )


def machine() -> dict[str, str]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except OSError:
            return "unknown"

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            mem_kb = int(fh.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": f"{mem_kb / 1024 / 1024:.1f}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": run("docker", "version", "--format", "{{.Server.Version}}"),
    }


def target_row(
    name: str, measured: float, target: float, comparison: str, display: str
) -> dict[str, Any]:
    """One target, judged here and only here: met = ``measured <comparison> target``.

    ``display`` is a format string for the measured value as the README shows it, for example
    ``"{:.2f} s"`` or ``"{:.2f}x"``: it must round, not reword, the measured value.
    """
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {sorted(COMPARISONS)}: {comparison!r}")
    return {
        "name": name,
        "target": target,
        "comparison": comparison,
        "measured": measured,
        "met": bool(COMPARISONS[comparison](measured, target)),
        "display": display.format(measured),
    }


def format_target(row: dict[str, Any]) -> str:
    """The printed line of one target row."""
    verdict = "MET" if row["met"] else "NOT MET"
    return f"target: {row['name']} {row['comparison']} {row['target']}: {row['display']} {verdict}"


def bench_record(targets: list[dict[str, Any]], **results: Any) -> dict[str, Any]:
    """The JSON of one run: the machine, the target rows, whether all were met, the results.

    ``machine`` may be passed in ``results`` (with extra details such as load averages);
    otherwise :func:`machine` describes this one.
    """
    details = results.pop("machine", None) or machine()
    return {
        "machine": details,
        "targets": targets,
        "target_met": all(row["met"] for row in targets),
        **results,
    }


def write_record(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def finish(targets: list[dict[str, Any]], json_path: str | Path | None, **results: Any) -> int:
    """A benchmark's end: print each target's line, write the record, exit 0 only if all met."""
    for row in targets:
        print(format_target(row))
    data = bench_record(targets, **results)
    if json_path:
        write_record(json_path, data)
    return 0 if data["target_met"] else 1
