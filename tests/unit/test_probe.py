"""The probe's gathering logic against real files and a stand-in `codex` on PATH."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from moonmind_codex.gate import probe
from tests.unit.helpers import assert_no_secret, chatgpt_auth

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake_codex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "codex"
    # Like the real CLI, it echoes part of a key: the probe must not pass that on.
    script.write_text("#!/bin/sh\necho 'API key configured - sk-SECRET-KEY-1234'\nexit 0\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_gather_reports_modes_and_inspection(tmp_path: Path, fake_codex: Path) -> None:
    home = tmp_path / ".codex"
    home.mkdir(mode=0o700)
    (home / "auth.json").write_text(json.dumps(chatgpt_auth(NOW)))
    (home / "auth.json").chmod(0o600)
    report = probe.gather(home, NOW)
    assert report["dir"]["mode"] == "0700" and report["dir"]["writable"] is True
    assert report["auth_file"]["mode"] == "0600" and report["auth_file"]["readable"] is True
    assert report["inspection"]["auth_mode"] == "chatgpt"
    assert report["auth_digest"] == hashlib.sha256((home / "auth.json").read_bytes()).hexdigest()
    assert report["codex_status"]["summary"] == "Logged in using an API key"
    assert report["codex_status"]["exit_code"] == 0
    assert_no_secret(json.dumps(report))
    assert not [p for p in home.iterdir() if p.name.startswith(".moonmind-codex-probe-")]


def test_gather_without_auth_file(tmp_path: Path, fake_codex: Path) -> None:
    home = tmp_path / ".codex"
    home.mkdir()
    report = probe.gather(home, NOW, run_status=False)
    assert report["auth_file"] == {"exists": False}
    assert report["inspection"] is None
    assert report["auth_digest"] is None


def test_gather_missing_dir(tmp_path: Path) -> None:
    report = probe.gather(tmp_path / "nope", NOW, run_status=False)
    assert report["dir"] == {"exists": False}


@pytest.mark.parametrize(
    ("output", "phrase"),
    [
        ("Logged in using ChatGPT\n", "Logged in using ChatGPT"),
        ("API key configured - sk-abc***123\n", "Logged in using an API key"),
        ("Not logged in\n", "Not logged in"),
        ("Error: something sk-SECRET-KEY-1234\n", "unrecognised output"),
        ("", "no output"),
    ],
)
def test_status_output_is_reduced_to_known_phrases(output: str, phrase: str) -> None:
    assert probe.summarise_status_output(output) == phrase


def test_missing_codex_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = probe.run_codex_status()
    assert result["exit_code"] is None and "not on PATH" in result["error"]


def test_main_prints_exactly_one_json_object(tmp_path: Path, fake_codex: Path) -> None:
    home = tmp_path / ".codex"
    home.mkdir()
    env = dict(os.environ, CODEX_HOME=str(home))
    done = subprocess.run(
        [sys.executable, "-m", "moonmind_codex.gate.probe"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["codex_home"] == str(home)


def write_config(path: Path, store: str | None, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = 'model = "o3"\n' + (f'cli_auth_credentials_store = "{store}"\n' if store else "")
    path.write_text(body)
    path.chmod(mode)


def test_the_effective_store_follows_the_clis_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, project, managed = tmp_path / "home", tmp_path / "run", tmp_path / "etc" / "managed.toml"
    monkeypatch.setattr(probe, "MANAGED_CONFIG", managed)
    home.mkdir()
    assert probe.credential_store(home, project)["effective"] == "file"  # the CLI's default
    assert probe.credential_store(home, project)["source"] == "default"
    write_config(home / "config.toml", "keyring")
    assert probe.credential_store(home, project)["effective"] == "keyring"
    write_config(project / ".codex" / "config.toml", "auto")  # the repository outranks home
    found = probe.credential_store(home, project)
    assert (found["effective"], found["source"]) == ("auto", str(project / ".codex/config.toml"))
    assert probe.credential_store(home, None)["effective"] == "keyring"  # no run, no project
    write_config(managed, "file")  # the managed layer outranks both
    found = probe.credential_store(home, project)
    assert (found["effective"], found["source"]) == ("file", str(managed))


def test_only_a_root_owned_managed_file_pins_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    managed = tmp_path / "managed.toml"
    monkeypatch.setattr(probe, "MANAGED_CONFIG", managed)
    write_config(managed, "file")
    expected_pin = os.getuid() == 0  # the test's own files are root's only when run as root
    assert probe.credential_store(tmp_path, None)["pinned"] is expected_pin
    managed.chmod(0o666)  # writable by anyone: a job could change it
    assert probe.credential_store(tmp_path, None)["pinned"] is False


def test_a_config_that_is_not_toml_is_reported_not_quoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "MANAGED_CONFIG", tmp_path / "absent.toml")
    (tmp_path / "config.toml").write_text('token = "SECRET-REFRESH-beef" [[[')
    found = probe.credential_store(tmp_path, None)
    assert found["layers"][0]["error"] == "not valid TOML"
    assert found["effective"] == "file"
    assert_no_secret(json.dumps(found))
