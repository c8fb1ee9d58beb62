"""Every exit status this project gives, in one place, with the sysexits(3) names.

The CLI, the worker, the job image's entry point (``images/job/moonmind-codex-job``), the
systemd unit template and the login-check role all use these numbers; ``docs/internals.md``
documents them from :data:`DOCUMENTED`. The unit stops restarting on :data:`FINAL_FOR_SYSTEMD`,
the statuses where a retry cannot help until an operator changes something.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # The operation ran and failed (a login that could not be written, a phase that failed).
    FAILURE = 1
    # A pre-flight said "blocked" (Nagios' CRITICAL): monitoring treats it as an alert.
    BLOCKED = 2
    # EX_USAGE: bad command-line arguments.
    USAGE = 64
    # EX_DATAERR: bad input data (an auth file that is not a login, a bad run id).
    DATAERR = 65
    # EX_UNAVAILABLE: the Docker engine or the broker cannot be reached; retrying may help.
    UNAVAILABLE = 69
    # EX_SOFTWARE: a bug in moonmind-codex; the message asks for a report.
    SOFTWARE = 70
    # EX_CANTCREAT: the lock file in the auth volume cannot be opened (volume not writable).
    CANTCREAT = 73
    # EX_TEMPFAIL: the auth volume is busy (another job holds its lock); retry later.
    TEMPFAIL = 75
    # EX_CONFIG: bad settings, a missing volume or a volume already served; only an operator
    # can fix it.
    CONFIG = 78


# Retrying these cannot help; the unit template lists them in RestartPreventExitStatus.
FINAL_FOR_SYSTEMD: tuple[ExitCode, ...] = (
    ExitCode.USAGE,
    ExitCode.DATAERR,
    ExitCode.CONFIG,
)

DOCUMENTED: dict[ExitCode, str] = {
    ExitCode.OK: "success (a pre-flight said ok or warn)",
    ExitCode.FAILURE: "the operation ran and failed; the message says why",
    ExitCode.BLOCKED: (
        "a pre-flight login check is blocked, or (status) a shard is quarantined or fenced; the "
        "message gives the fix"
    ),
    ExitCode.USAGE: "bad command-line arguments",
    ExitCode.DATAERR: "bad input data (an auth file that is not a login, a bad run id)",
    ExitCode.UNAVAILABLE: (
        "the Docker engine, the broker or the run store is unavailable; retry when it is back"
    ),
    ExitCode.SOFTWARE: "internal error (a bug): please report it",
    ExitCode.CANTCREAT: "the auth volume is not writable by the job uid (repair it)",
    ExitCode.TEMPFAIL: "the auth volume is busy (a job holds its lock); retry later",
    ExitCode.CONFIG: (
        "bad settings, or the shard's volume is missing or already served: fix the "
        "configuration; the worker unit does not restart on it"
    ),
}
