"""Hypothesis settings for the fuzz modules (``tests/unit/test_fuzz_*.py``).

Imported by each fuzz module, which then loads the profile named by ``HYPOTHESIS_PROFILE``:

- ``ci`` (the default, so ``make test`` and CI): a bounded number of examples from a fixed
  derandomised search, the same on every run. A random search must not decide whether work
  lands; cases a random search found are pinned with ``@example`` beside their test.
- ``fuzz``: the random search, ten times as many examples, for ``make fuzz`` (which repeats
  it with new seeds for a set time, ``scripts/fuzz.sh``) or by hand after changing a parser::

      HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest tests/unit/test_fuzz_authfile.py

  ``long``: the same random search with fifty times as many examples, before a release.
- ``mutation``: a fifth as many (at least 10), derandomised, for ``scripts/mutation.sh``:
  each mutant reruns the tests that reach it, so the search must be short and the same every
  time (a mutant killed in one run and not the next would make the floor flaky).

All print the reproduction blob of a failure (``@reproduce_failure``) and Hypothesis names the
seed (``--hypothesis-seed``); rerun with that seed to replay the same search. No example database
is kept (``database=None``), so nothing is written into the checkout: a failure found by the
random search is kept as an ``@example`` (and the oracle or the product fixed).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_SCALE = {"ci": 1.0, "fuzz": 10.0, "long": 50.0, "mutation": 0.2}

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("fuzz", max_examples=1000, derandomize=False, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=5000, derandomize=False, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("mutation", max_examples=20, derandomize=True, **_COMMON)  # type: ignore[arg-type]
if PROFILE not in _SCALE:
    # A typo must not quietly run the short fixed search in place of the one asked for.
    raise RuntimeError(
        f"HYPOTHESIS_PROFILE={PROFILE!r} is not a profile; use one of {', '.join(_SCALE)}"
    )
settings.load_profile(PROFILE)


def examples(ci_count: int) -> settings:
    """One test's settings: ``ci_count`` examples under ``ci``, ten times that under ``fuzz``
    (fifty under ``long``), a fifth (at least 10) under ``mutation``."""
    return settings(max_examples=max(10, round(ci_count * _SCALE.get(PROFILE, 1.0))))
