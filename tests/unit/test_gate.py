"""The in-job pre-flight's pure parts: the CLI verdict's key, the cache, the verdict line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moonmind_codex.gate import KNOWN_VERDICT_ENV, VERDICT_PREFIX, known_verdict, verdict_key
from moonmind_codex.jobs import _VerdictFilter
from moonmind_codex.preflight import (
    CliVerdictCache,
    gate_environment,
    read_verdict,
    verdict_line,
)
from moonmind_codex.probe import PROBE_VERSION
from moonmind_codex.settings import Settings

AUTH = b'{"OPENAI_API_KEY": "sk-test"}'


def test_the_key_changes_with_every_input_the_cli_reads() -> None:
    base = verdict_key("0.169.0", {"auth.json": AUTH, "config.toml": None})
    assert base is not None and len(base) == 64
    assert verdict_key("0.169.0", {"config.toml": None, "auth.json": AUTH}) == base  # no order
    others = {
        verdict_key("0.170.0", {"auth.json": AUTH, "config.toml": None}),
        verdict_key("0.169.0", {"auth.json": AUTH + b" ", "config.toml": None}),
        verdict_key("0.169.0", {"auth.json": AUTH, "config.toml": b""}),  # empty is not absent
        verdict_key("0.169.0", {"auth.json": None, "config.toml": AUTH}),  # moved between files
    }
    assert base not in others and len(others) == 4


def test_no_key_without_a_known_cli_version() -> None:
    assert verdict_key(None, {"auth.json": AUTH}) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a" * 64 + " Logged in using ChatGPT", ("a" * 64, "Logged in using ChatGPT")),
        (None, None),
        ("", None),
        ("a" * 63 + " Logged in", None),  # not a sha256
        ("a" * 64, None),  # no summary
    ],
)
def test_known_verdict_is_read_strictly(raw: str | None, expected: object) -> None:
    assert known_verdict(raw) == expected


def report(gate: str, exit_code: int = 0, key: str | None = "k" * 64) -> dict[str, object]:
    return {
        "probe_version": PROBE_VERSION,
        "codex_home": "/home/app/.codex",
        "dir": {"exists": True, "uid": 1000, "mode": "0700", "writable": True},
        "auth_file": {"exists": True, "uid": 1000, "mode": "0600", "readable": True},
        "inspection": {"auth_mode": "api_key", "problems": []},
        "codex_status": {"exit_code": exit_code, "summary": "Logged in using an API key"},
        "cli_verdict_key": key,
        "gate": gate,
    }


def test_the_cache_learns_good_verdicts_and_forgets_on_a_bad_one() -> None:
    cache = CliVerdictCache()
    assert cache.known("v") is None
    cache.learn("v", report("go"))
    assert cache.known("v") == "k" * 64 + " Logged in using an API key"
    assert cache.known("other") is None
    cache.learn("v", report("blocked", exit_code=1))
    assert cache.known("v") is None
    cache.learn("v", report("go", key=None))  # unknown CLI version: nothing to remember
    assert cache.known("v") is None
    cache.learn("v", None)
    assert cache.known("v") is None


def test_the_job_container_gets_the_policy_and_the_known_verdict() -> None:
    settings = Settings(job_uid=1001, last_refresh_warn_days=3.5, preflight_timeout_seconds=9.0)
    environment = gate_environment(settings, "k" * 64 + " Logged in")
    assert environment["MOONMIND_CODEX_PREFLIGHT"] == "1"
    assert environment["MOONMIND_CODEX_GATE_JOB_UID"] == "1001"
    assert float(environment["MOONMIND_CODEX_GATE_WARN_DAYS"]) == 3.5
    assert float(environment["MOONMIND_CODEX_GATE_TIMEOUT_SECONDS"]) == 9.0
    assert environment[KNOWN_VERDICT_ENV] == "k" * 64 + " Logged in"
    assert KNOWN_VERDICT_ENV not in gate_environment(settings, None)


def line(content: dict[str, object]) -> bytes:
    return (VERDICT_PREFIX + json.dumps(content)).encode()


def test_the_verdict_line_is_only_the_first_stderr_line() -> None:
    verdict = line(report("go"))
    assert verdict_line(verdict + b"\nlater\n") == verdict
    assert verdict_line(b"job output first\n" + verdict + b"\n") is None
    assert verdict_line(b"") is None


def test_a_go_verdict_is_judged_with_the_workers_own_shard() -> None:
    settings = Settings(shard_count=3)
    shard = settings.locate_shard(2)
    result, parsed = read_verdict(settings, shard, line(report("go")), 0.5)
    assert (result.status, result.shard, result.blocked) == ("ok", shard, False)
    assert parsed is not None and parsed["gate"] == "go"


def test_a_blocked_verdict_names_the_shard_and_the_fix() -> None:
    settings = Settings(shard_count=3)
    shard = settings.locate_shard(1)
    result, _ = read_verdict(settings, shard, line(report("blocked", exit_code=1)), 0.5)
    assert result.blocked
    assert "codex_auth_1" in result.message() and "moonmind-codex login --shard 1" in (
        result.remediation or ""
    )


@pytest.mark.parametrize(
    ("verdict", "exit_code", "expected"),
    [
        (None, 1, "printed no readable verdict (exit code 1)"),
        (b"[moonmind-codex] pre-flight not json", 1, "printed no readable verdict"),
        (None, 73, "cannot open the job lock in volume codex_auth_0"),
    ],
)
def test_no_readable_verdict_blocks_with_the_reason(
    verdict: bytes | None, exit_code: int, expected: str
) -> None:
    settings = Settings()
    result, parsed = read_verdict(settings, settings.locate_shard(0), verdict, 0.1, exit_code)
    assert result.blocked and parsed is None
    assert expected in result.reason


def test_images_of_different_versions_are_named_when_they_disagree() -> None:
    settings = Settings()
    # The job image blocked a login this worker judges fine.
    result, _ = read_verdict(settings, settings.locate_shard(0), line(report("blocked")), 0.1)
    assert result.blocked and "different versions" in result.reason


def test_the_live_log_drops_the_verdict_line_wherever_the_chunks_split() -> None:
    verdict = line(report("go"))
    stream = verdict + b"\nfirst\nsecond " + VERDICT_PREFIX.encode() + b"kept\n"
    for size in (1, 7, 64, len(stream)):
        live = _VerdictFilter(active=True)
        out = b"".join(live.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        assert out == b"first\nsecond " + VERDICT_PREFIX.encode() + b"kept\n"
    assert _VerdictFilter(active=False).feed(stream) == stream


def test_the_gate_imports_nothing_beyond_the_standard_library() -> None:
    """The job image has no third-party Python packages: the gate must not need any."""
    root = Path(__file__).parents[2]
    probe = (
        f"import sys; sys.path.insert(0, {str(root)!r}); import moonmind_codex.gate; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    # -S: no site-packages at all, as in the image.
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", probe], capture_output=True, text=True, check=True
    )
    loaded = set(done.stdout.split())
    assert "moonmind_codex" in loaded
    assert not loaded & {"docker", "celery", "kombu", "sqlalchemy", "requests", "alembic"}
