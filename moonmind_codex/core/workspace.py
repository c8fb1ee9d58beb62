"""Per-run workspace volumes: their names and labels (pure).

Every run has a Docker named volume of its own, mounted in its job containers at ``/work``; the
run works in ``/work/<run_id>`` inside it. No job container mounts another run's volume, so a
job can neither read nor change another run's checkout. (Engine 20.10 cannot mount a volume's
subdirectory, so one shared volume cannot give each job only its own directory.)

The name is derived from the run id alone, under a fleet-wide prefix, so every phase of a run
(on whichever worker delivery) mounts the same volume and an operator can tell whose it is.
"""

from __future__ import annotations

import re
from datetime import datetime

# The Docker mount point in every job container, and the run's directory inside it.
WORKSPACE_MOUNT = "/work"
DEFAULT_PREFIX = "moonmind_codex_run_"
MAX_PREFIX_LENGTH = 64
# Label value of io.moonmind.codex.role on a run's volume (and on the container preparing it).
ROLE = "workspace"

# A run id (moonmind_codex.core.runs): only characters a Docker volume name may hold.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start workspace volume names, or None when it can."""
    if not _PREFIX.fullmatch(prefix):
        return "use letters, digits, '_', '.' or '-', starting with a letter or digit"
    if len(prefix) > MAX_PREFIX_LENGTH:
        return f"use at most {MAX_PREFIX_LENGTH} characters"
    return None


def run_volume_name(prefix: str, run_id: str) -> str:
    """The Docker named volume holding run ``run_id``'s workspace: ``<prefix><run_id>``.

    Every valid run id (1-128 letters, digits, '_', '.', '-', starting with a letter or digit)
    gives a valid volume name, and two run ids never give the same name.
    """
    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"workspace volume prefix {prefix!r} is not valid: {problem}")
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} is not valid: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return prefix + run_id


def run_of_volume(prefix: str, name: str) -> str | None:
    """The run whose workspace volume ``name`` is under ``prefix``, or None (not one of ours)."""
    if not name.startswith(prefix):
        return None
    run_id = name[len(prefix) :]
    return run_id if _RUN_ID.fullmatch(run_id) else None


def workspace_path(run_id: str) -> str:
    """The run's working tree, as its jobs (and anyone mounting its volume at /work) see it."""
    return f"{WORKSPACE_MOUNT}/{run_id}"


def keep_reason(
    status: str | None, final: bool, finished_at: datetime | None, cutoff: datetime
) -> str | None:
    """Why a run's workspace volume must stay, or None when it may be removed.

    Only a run the run store knows, in a final state (``final``), that finished before
    ``cutoff`` loses its workspace: a pending, running or unknown run keeps it.
    """
    if status is None:
        return "the run is not in the run store"
    if not final:
        return f"the run is {status}"
    if finished_at is None:
        return f"the run is {status} but has no finish time"
    if finished_at > cutoff:
        return f"the run finished at {finished_at:%Y-%m-%dT%H:%M:%SZ}, within the retention"
    return None
