"""Hypothesis settings for the fuzz modules (``tests/unit/test_fuzz_*.py``).

Imported by each fuzz module, which then loads the profile named by ``HYPOTHESIS_PROFILE``:

- ``ci`` (the default): a bounded number of examples, so each fuzz module finishes in about
  20 s on a loaded two-core machine;
- ``long``: fifty times as many, for a search before a release or after changing a parser::

      HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/unit/test_fuzz_authfile.py

- ``mutation``: a fifth as many (at least 10), from a fixed seed, for ``scripts/mutation.sh``:
  each mutant reruns the tests that reach it, so the search must be short and the same every
  time (a mutant killed in one run and not the next would make the floor flaky).

All print the reproduction blob of a failure (``@reproduce_failure``) and Hypothesis names the
seed (``--hypothesis-seed``); rerun with that seed to replay the same search. No example database
is kept (``database=None``), so nothing is written into the checkout.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_SCALE = {"ci": 1.0, "long": 50.0, "mutation": 0.2}

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "derandomize": False,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=100, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=5000, **_COMMON)  # type: ignore[arg-type]
settings.register_profile(
    "mutation",
    max_examples=20,
    **{**_COMMON, "derandomize": True},  # type: ignore[arg-type]
)
settings.load_profile(PROFILE if PROFILE in _SCALE else "ci")


def examples(ci_count: int) -> settings:
    """One test's settings: ``ci_count`` examples under ``ci``, fifty times that under ``long``,
    a fifth (at least 10) under ``mutation``."""
    return settings(max_examples=max(10, round(ci_count * _SCALE.get(PROFILE, 1.0))))
