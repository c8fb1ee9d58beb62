"""The login stays in auth.json: neither a job, the shard's config.toml nor a repository's
.codex/config.toml can switch the real Codex CLI's credential store (issue: logins)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.logins import JOB_IMAGE
from moonmind_codex.core.workspace import run_volume_name
from moonmind_codex.engine.jobs import JobSpec, launch_job
from moonmind_codex.engine.preflight import run_preflight
from moonmind_codex.settings import Settings
from tests.integration.conftest import VolumeFactory, in_volume, unique

SettingsFor = Callable[..., Settings]
KEYRING = 'cli_auth_credentials_store = \\"keyring\\"'
# What a careless job or a repository could do: both configs the CLI reads say keyring.
SWITCH = (
    f'printf "{KEYRING}\\n" > /home/app/.codex/config.toml; '
    f'mkdir -p .codex; printf "{KEYRING}\\n" > .codex/config.toml'
)


def job(client: Any, settings: Settings, run_id: str, phase: str, command: list[str]) -> Any:
    spec = JobSpec(
        run_id=run_id, phase=phase, command=command, shard=settings.locate_shard(0),
        timeout_s=120, preflight=True,
    )  # fmt: skip
    return launch_job(settings, spec, client)


def workspace_files(client: Any, workspace: str, run_id: str) -> list[str]:
    """What is in the run's directory of its own volume (``workspace``: the volumes' prefix)."""
    volume = run_volume_name(workspace, run_id)
    listing: bytes = client.containers.run(
        JOB_IMAGE, entrypoint=["ls", "-A", f"/work/{run_id}"], command=[], remove=True,
        volumes={volume: {"bind": "/work", "mode": "ro"}}, network_mode="none",
    )  # fmt: skip
    return listing.decode().split()


def test_a_job_and_a_repository_cannot_switch_the_store_and_the_cli_still_reads_auth_json(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    run_id = unique("run")
    switched = job(client, settings, run_id, "switch", ["sh", "-c", SWITCH])
    assert switched.outcome == "succeeded", switched.log_path.read_text()

    # The next phase of the same run works in the repository that now says keyring.
    after = job(client, settings, run_id, "next", ["codex", "login", "status"])
    assert after.outcome == "succeeded", after.log_path.read_text()
    assert after.preflight is not None and after.preflight.status == "ok"
    report = after.preflight_report
    assert report is not None
    store = report["credential_store"]
    assert (store["effective"], store["source"], store["pinned"]) == (
        "file",
        "/etc/codex/managed_config.toml",
        True,
    )
    said = {layer["path"]: layer.get("value") for layer in store["layers"]}
    assert said["/home/app/.codex/config.toml"] == "keyring"
    assert said[f"/work/{run_id}/.codex/config.toml"] == "keyring"
    # The config changed, so the real CLI was asked again (no cached verdict), and it read the
    # login from auth.json: in the pre-flight and in the job's own working directory.
    assert report["codex_status"]["cached"] is False
    assert report["codex_status"]["exit_code"] == 0
    assert "API key configured" in after.log_path.read_text()  # the real CLI, in the repository
    assert "OPENAI_API_KEY" in in_volume(volume, "cat /home/app/.codex/auth.json")

    # The operators' stand-alone check says the same.
    check = run_preflight(settings, 0)
    assert check.status == "ok"
    assert any(
        f.name == "credential store" and f.status == "ok" and "pinned" in f.detail
        for f in check.findings
    )


@pytest.fixture(scope="module")
def unpinned_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real job image without its managed config: what the pin protects against."""
    context = tmp_path_factory.mktemp("unpinned")
    (context / "Dockerfile").write_text(
        f"FROM {JOB_IMAGE}\nUSER 0:0\nRUN rm /etc/codex/managed_config.toml\nUSER 1000:1000\n"
    )
    tag = f"mmc-test-unpinned-{secrets.token_hex(4)}:latest"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], check=True, timeout=300)
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True)


def test_without_the_pin_the_switch_takes_the_shard_down_and_the_pre_flight_says_why(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, unpinned_image: str
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume, job_image=unpinned_image)
    workspace = settings.workspace_volume_prefix
    run_id = unique("run")
    # Unpinned but still file: a warning that names the risk, and the phase runs.
    first = job(client, settings, run_id, "switch", ["sh", "-c", SWITCH])
    assert first.outcome == "succeeded"
    assert first.preflight is not None and first.preflight.status == "warn"
    assert "not pinned" in first.preflight.reason
    # Now the real CLI cannot find the login (it looks in a keyring): the pre-flight blocks
    # with the cause, and the phase's command never starts.
    blocked = job(client, settings, run_id, "next", ["sh", "-c", "echo ran > ran-marker"])
    assert blocked.outcome == "blocked"
    assert blocked.preflight is not None
    assert "'keyring' credential store" in blocked.preflight.reason
    assert f"/work/{run_id}/.codex/config.toml" in blocked.preflight.reason
    assert "managed_config.toml" in (blocked.preflight.remediation or "")
    cli = blocked.preflight_report["codex_status"] if blocked.preflight_report else {}
    assert cli.get("exit_code") not in (0, None)  # the real CLI failed too
    assert workspace_files(client, workspace, run_id) == [".codex"]  # no ran-marker
