"""Operator-facing remediation texts: the exact command that fixes each failure.

Pure functions, one place per message, so the CLI, the worker, the pre-flight and the Ansible
login check all tell operators the same thing.
"""

from __future__ import annotations


def login_command(shard: int) -> str:
    """Device-code ChatGPT sign-in of one shard's volume, run on the shard's host."""
    return f"moonmind-codex login --shard {shard}"


def login_alternatives(shard: int) -> str:
    return (
        f"or copy a login made elsewhere: moonmind-codex login --shard {shard} --from-file "
        f"auth.json; or use an API key: moonmind-codex login --shard {shard} --api-key-stdin"
    )


def relogin(shard: int, volume: str, host: str, *, again: bool = True) -> str:
    """Sign a volume in; ``again=False`` for one that never held a login."""
    return (
        f"on host {host}, sign volume {volume} in{' again' if again else ''}: "
        f"{login_command(shard)} ({login_alternatives(shard)})"
    )


def repair(shard: int, volume: str, host: str) -> str:
    return (
        f"on host {host}, restore owner and modes of volume {volume}: "
        f"moonmind-codex repair --shard {shard}"
    )


def create_volume(shard: int, volume: str, host: str) -> str:
    return (
        f"volume {volume} does not exist on host {host}: provision it with "
        f"ansible-playbook playbooks/site.yml --limit {host} (shard {shard} must be listed in "
        f"that host's moonmind_codex_shards), then sign it in with {login_command(shard)}"
    )


def start_docker(host: str) -> str:
    return (
        f"start the Docker engine on host {host} (systemctl start docker, or dockerd on hosts "
        "without systemd) and check it with `docker info`"
    )


def check_docker_then_retry(shard: int, host: str) -> str:
    return (
        f"on host {host}, check the Docker engine and the job image, then retry: "
        f"moonmind-codex preflight --shard {shard}"
    )


def volume_busy(volume: str, holder: str) -> str:
    return f"auth volume {volume} is in use by {holder}; wait for it to finish or stop it"


def doubly_assigned(volume: str, holder: str, host: str) -> str:
    return (
        f"auth volume {volume} is already used by worker {holder} on host {host}: each volume "
        "belongs to exactly one worker; fix the inventory (each shard on one host) and run "
        "playbooks/site.yml, or stop the other worker"
    )


def refresh_soon(shard: int, volume: str, host: str, age_days: float) -> str:
    return (
        f"the login in {volume} was last refreshed {age_days:.1f} days ago; if runs start to "
        f"fail, on host {host} run {login_command(shard)}"
    )
