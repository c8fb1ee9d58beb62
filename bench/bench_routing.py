"""Keys moved when a fleet grows from n to n+1 shards: jump hash vs ``digest % n`` vs ideal.

Both placements are computed side by side over the same keys in one run. Target: jump hash
within one percentage point of the ideal 1/(n+1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stats import finish, target_row
from moonmind_codex.core.routing import modulo_shard_for_key, shard_for_key

# Distance of jump hash's moved fraction from the ideal 1/(n+1), percentage points, at most.
TARGET_POINTS = 1.0
SIZES = (3, 8, 16)


def moved_fraction(keys: list[str], place: object, n: int) -> float:
    assert callable(place)
    moved = sum(1 for k in keys if place(k, n) != place(k, n + 1))
    return moved / len(keys)


def spread(keys: list[str], n: int) -> tuple[float, float]:
    """Smallest and largest shard load as a fraction of the mean (balance check)."""
    counts = [0] * n
    for k in keys:
        counts[shard_for_key(k, n)] += 1
    mean = len(keys) / n
    return min(counts) / mean, max(counts) / mean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--json", type=str, default="", help="also write results to this file")
    args = parser.parse_args()
    keys = [f"github.com/org-{i % 997}/repo-{i}" for i in range(args.keys)]
    rows = []
    targets = []
    print(f"keys: {len(keys)}")
    print(
        f"{'n->n+1':>8} {'ideal':>8} {'jump':>8} {'hash%n':>8} {'jump-ideal':>11} "
        f"{'hash%n/jump':>12} {'min/mean':>9} {'max/mean':>9}"
    )
    for n in SIZES:
        t0 = time.perf_counter()
        jump = moved_fraction(keys, shard_for_key, n)
        modulo = moved_fraction(keys, modulo_shard_for_key, n)
        ideal = 1 / (n + 1)
        lo, hi = spread(keys, n)
        delta_points = (jump - ideal) * 100
        targets.append(
            target_row(
                f"n={n}->{n + 1}: distance of jump from ideal (percentage points)",
                abs(delta_points),
                TARGET_POINTS,
                "<=",
                "{:.2f} points",
            )
        )
        rows.append(
            {
                "n": n,
                "ideal": ideal,
                "jump": jump,
                "modulo": modulo,
                "jump_minus_ideal_points": delta_points,
                "modulo_over_jump": modulo / jump,
                "min_load_over_mean": lo,
                "max_load_over_mean": hi,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"{n:>3}->{n + 1:<4} {ideal:8.4f} {jump:8.4f} {modulo:8.4f} {delta_points:+10.2f}p "
            f"{modulo / jump:11.1f}x {lo:9.3f} {hi:9.3f}"
        )
    return finish(targets, args.json, keys=len(keys), rows=rows)


if __name__ == "__main__":
    sys.exit(main())
