"""The job network's pure parts: its name in Python and Ansible, the fix text, the error match,
and the firewall script's refusal of bad settings (before it touches any rule).

The rules themselves are proved on a real host in tests/ansible/test_job_network.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker.errors
import pytest
import requests
import yaml

from moonmind_codex.core.messages import Fix, create_job_network, render_fix
from moonmind_codex.core.shard import Shard
from moonmind_codex.engine.job_gate import missing_network
from moonmind_codex.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "moonmind_codex_job_network"
SCRIPT = ROLE / "files" / "moonmind-codex-job-firewall"
SHARD = Shard(number=3, queue="codex-3", volume="codex_auth_3", host="w2")
FIX = (
    "on host w2, make the job network and its firewall: ansible-playbook playbooks/site.yml "
    "--limit w2 (role moonmind_codex_job_network), or set MOONMIND_CODEX_JOB_NETWORK to a "
    "network that exists"
)


def test_jobs_default_to_the_network_the_playbook_makes() -> None:
    fleet = yaml.safe_load(
        (REPO / "roles" / "moonmind_codex" / "defaults" / "main.yml").read_text()
    )
    role = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert Settings().job_network == "moonmind_codex_jobs"
    assert load_settings({}).job_network == "moonmind_codex_jobs"
    assert fleet["moonmind_codex_job_network"] == Settings().job_network
    assert role["moonmind_codex_job_network_name"] == "{{ moonmind_codex_job_network }}"
    assert load_settings({"MOONMIND_CODEX_JOB_NETWORK": "none"}).job_network == "none"


def test_a_missing_job_network_names_the_playbook_the_role_and_the_setting() -> None:
    assert create_job_network("w2") == FIX
    assert render_fix(Fix.CREATE_JOB_NETWORK, SHARD) == FIX


def api_error(explanation: str, status: int = 404) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.NotFound("start failed", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("explanation", "network", "missing"),
    [
        ("network moonmind_codex_jobs not found", "moonmind_codex_jobs", True),
        ("network moonmind_codex_jobs not found", "moonmind_codex_jobs2", False),
        ("network other not found", "moonmind_codex_jobs", False),
        ("No such volume: codex_auth_3", "moonmind_codex_jobs", False),
    ],
)
def test_only_the_engines_missing_network_error_for_that_network_counts(
    explanation: str, network: str, missing: bool
) -> None:
    assert missing_network(api_error(explanation), network) is missing


def firewall(
    tmp_path: Path, settings: str, mode: str = "check"
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "job-firewall.env"
    config.write_text(settings)
    return subprocess.run(
        ["bash", str(SCRIPT), mode, str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ('BRIDGE=""\n', "BRIDGE must be an interface name"),
        ("BRIDGE=a-name-longer-than-15\n", "BRIDGE must be an interface name"),
        ('BRIDGE="mmc jobs"\n', "BRIDGE must be an interface name"),
        ('BRIDGE=mmc-jobs0\nBLOCKED_CIDRS="10.0.0.0/8 example.com"\n', "not an IPv4 address"),
        ('BRIDGE=mmc-jobs0\nBLOCKED_CIDRS="fd00::/8"\n', "not an IPv4 address"),
        ('BRIDGE=mmc-jobs0\nBLOCKED_INTERFACES="docker+ a;b"\n', "bad interface name"),
    ],
)
def test_the_firewall_script_refuses_bad_settings_before_any_rule(
    tmp_path: Path, settings: str, complaint: str
) -> None:
    done = firewall(tmp_path, settings, "apply")
    assert done.returncode == 2
    assert complaint in done.stderr


def test_the_firewall_script_knows_only_its_three_modes(tmp_path: Path) -> None:
    done = firewall(tmp_path, "BRIDGE=mmc-jobs0\n", "flush")
    assert done.returncode == 2
    assert "usage:" in done.stderr
