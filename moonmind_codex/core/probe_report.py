"""What the pre-flight probe reports and its judge reads: the report's version and fixed phrases.

Shared by the probe (in the job image) and the judgement (``preflight_eval``, on the worker)
without either importing the other: the judgement is pure, the probe does I/O.
"""

from __future__ import annotations

# Raised when the report's shape changes: a worker refuses a report of another version.
PROBE_VERSION = 1
AUTH_FILE_NAME = "auth.json"
# The probe's summary when `codex login status` could not reach the sign-in service.
STATUS_UNVERIFIED = "access token not verified: the sign-in service cannot be reached"
