"""Operator-facing remediation texts: the exact command that fixes each failure.

Pure functions, one place per message, so the CLI, the worker, the pre-flight and the Ansible
login check all tell operators the same thing. Findings name a :class:`Fix`;
:func:`render_fix` turns it into the text for one shard.
"""

from __future__ import annotations

from enum import Enum

from moonmind_codex.core.shard import Shard

ENV_PREFIX = "MOONMIND_CODEX_"


class Fix(Enum):
    """The kinds of fix a failed check can call for."""

    SIGN_IN = "sign-in"
    SIGN_IN_AGAIN = "sign-in-again"
    REPAIR = "repair"
    CREATE_VOLUME = "create-volume"
    START_DOCKER = "start-docker"
    RETRY = "retry"
    CHECK_VOLUME = "check-volume"
    LOAD_IMAGE = "load-image"
    REFRESH_SOON = "refresh-soon"
    CHECK_CLOCK = "check-clock"
    PIN_FILE_STORE = "pin-file-store"
    SIGN_IN_REJECTED = "sign-in-rejected"
    CREATE_JOB_NETWORK = "create-job-network"
    LOGIN_COPIED = "login-copied"


def login_command(shard: Shard) -> str:
    """Device-code ChatGPT sign-in of one shard's volume, run on the shard's host."""
    return f"moonmind-codex login --shard {shard.number}"


def login_alternatives(shard: Shard) -> str:
    n = shard.number
    return (
        f"or copy a login made elsewhere: moonmind-codex login --shard {n} --from-file "
        f"auth.json; or use an API key: moonmind-codex login --shard {n} --api-key-stdin"
    )


def _sign_in(shard: Shard, action: str) -> str:
    return f"on host {shard.host}, {action}: {login_command(shard)} ({login_alternatives(shard)})"


def sign_in(shard: Shard) -> str:
    """For a volume that never held a login (new, or emptied by a move)."""
    return _sign_in(shard, f"sign volume {shard.volume} in")


def sign_in_again(shard: Shard) -> str:
    """For a volume whose login is unusable."""
    return _sign_in(shard, f"sign volume {shard.volume} in again")


def sign_in_rejected(shard: Shard, reason: str, when: str) -> str:
    """For a shard quarantined because the server rejected its login (see docs/runbook.md)."""
    return (
        f"sign in again: the server rejected this login ({reason}, {when}); "
        + _sign_in(shard, f"import a new login into volume {shard.volume}")
        + "; never run `codex logout` on a shard"
    )


def login_copied(shard: Shard, copy_of: str) -> str:
    """For a volume fenced because another shard registered the same login first."""
    return (
        f"on host {shard.host}, sign volume {shard.volume} in with a login of its own (a new "
        f"sign-in, not a copy of another shard's auth.json): {login_command(shard)}; the fence "
        f"lifts by itself once the volume holds another login. If the copy to drop is the one "
        f"of {copy_of} instead, run `moonmind-codex login-fence resolve --shard {shard.number}` "
        "on this host, then sign that shard in with its own login"
    )


def repair(shard: Shard) -> str:
    return (
        f"on host {shard.host}, restore owner and modes of volume {shard.volume}: "
        f"moonmind-codex repair --shard {shard.number}"
    )


def create_volume(shard: Shard) -> str:
    return (
        f"volume {shard.volume} does not exist on host {shard.host}: provision it with "
        f"ansible-playbook playbooks/site.yml --limit {shard.host} (shard {shard.number} must "
        f"be listed in that host's moonmind_codex_shards), then sign it in with "
        f"{login_command(shard)}"
    )


def create_job_network(host: str) -> str:
    """For a job network (MOONMIND_CODEX_JOB_NETWORK) the host's engine does not have."""
    return (
        f"on host {host}, make the job network and its firewall: ansible-playbook "
        f"playbooks/site.yml --limit {host} (role moonmind_codex_job_network), or set "
        f"{ENV_PREFIX}JOB_NETWORK to a network that exists"
    )


def start_docker(host: str) -> str:
    return (
        f"start the Docker engine on host {host} (systemctl start docker, or dockerd on hosts "
        "without systemd) and check it with `docker info`"
    )


def check_docker_then_retry(shard: Shard) -> str:
    return (
        f"on host {shard.host}, check the Docker engine and the job image, then retry: "
        f"moonmind-codex preflight --shard {shard.number}"
    )


def check_volume(shard: Shard) -> str:
    # Owner and modes cannot be the cause (the engine refused before any uid touched it):
    # the volume's filesystem or driver options are.
    v = shard.volume
    return (
        f"on host {shard.host}, volume {v} must be a writable local volume: check "
        f"`docker volume inspect {v}` (driver, options such as 'ro'); if it is wrong, remove "
        f"it (docker volume rm {v}), recreate it with ansible-playbook playbooks/site.yml "
        f"--limit {shard.host} and sign it in: {login_command(shard)}"
    )


def load_image(host: str) -> str:
    return (
        f"build or load it on {host}: scripts/setup.sh on a development machine, or "
        f"ansible-playbook playbooks/site.yml --limit {host}"
    )


def refresh_soon(shard: Shard, age_days: float) -> str:
    return (
        f"the login in {shard.volume} was last refreshed {age_days:.1f} days ago; if runs "
        f"start to fail, on host {shard.host} run {login_command(shard)}"
    )


def check_clock(shard: Shard) -> str:
    return (
        f"on host {shard.host}, check the clock (timedatectl, or `date -u` against a trusted "
        f"source); if it is right, the login in {shard.volume} was written with a wrong date: "
        f"sign it in again: {login_command(shard)}"
    )


def pin_file_store(shard: Shard) -> str:
    return (
        "use the fleet's job image, which pins the Codex CLI to file storage with a root-owned "
        '/etc/codex/managed_config.toml (cli_auth_credentials_store = "file"): '
        + load_image(shard.host)
    )


def busy_too_long(shard: Shard, retry_seconds: float, retries: int) -> str:
    """A phase gave up on its volume's lock after ``retries`` waits of ``retry_seconds``."""
    waited = retries * retry_seconds
    return (
        f"the auth volume {shard.volume} of {shard} stayed busy through {retries} retries "
        f"(about {waited:g} s): another job or an operator's login holds its lock. On host "
        f"{shard.host}, find the holder with `docker ps --filter "
        f"label=io.moonmind.codex.volume={shard.volume}`, let it finish or stop it, then retry "
        f"the run (limits: {ENV_PREFIX}BUSY_MAX_RETRIES, {ENV_PREFIX}BUSY_RETRY_SECONDS)"
    )


def doubly_assigned(volume: str, holder: str, host: str) -> str:
    return (
        f"auth volume {volume} is already used by worker {holder} on host {host}: each volume "
        "belongs to exactly one worker; fix the inventory (each shard on one host) and run "
        "playbooks/site.yml, or stop the other worker"
    )


def render_fix(
    fix: Fix,
    shard: Shard,
    *,
    age_days: float | None = None,
    rejected: tuple[str, str] | None = None,
    copy_of: str | None = None,
) -> str:
    """The text of ``fix`` for ``shard``; ``rejected`` is the server's (reason, when).

    ``copy_of`` names the shard that holds the same login (a fenced copy).
    """
    if fix is Fix.LOGIN_COPIED:
        return login_copied(shard, copy_of or "another shard")
    if fix is Fix.SIGN_IN_REJECTED:
        reason, when = rejected or ("reason unknown", "time unknown")
        return sign_in_rejected(shard, reason, when)
    if fix is Fix.REFRESH_SOON:
        return refresh_soon(shard, age_days if age_days is not None else 0.0)
    simple = {
        Fix.SIGN_IN: sign_in,
        Fix.SIGN_IN_AGAIN: sign_in_again,
        Fix.REPAIR: repair,
        Fix.CREATE_VOLUME: create_volume,
        Fix.RETRY: check_docker_then_retry,
        Fix.CHECK_VOLUME: check_volume,
        Fix.CHECK_CLOCK: check_clock,
        Fix.PIN_FILE_STORE: pin_file_store,
    }
    if fix in simple:
        return simple[fix](shard)
    for_host = {Fix.START_DOCKER: start_docker, Fix.CREATE_JOB_NETWORK: create_job_network}
    return for_host.get(fix, load_image)(shard.host)


def unreadable_reason(exc: BaseException) -> str:
    """Why a file could not be read, in a few words: the system's reason (``strerror``), else
    what is wrong with its bytes or its path (a NUL byte in a path raises ValueError)."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return str(strerror)
    return "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not a usable path"
