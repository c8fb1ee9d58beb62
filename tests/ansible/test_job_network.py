"""Job containers cannot reach the broker, the host or other containers; the internet they can.

On a real systemd + Docker host (harness.hosts), so the rules land in that host's own firewall,
never in the CI machine's: the role moonmind_codex_job_network makes the jobs' network and its
firewall. A broker stand-in (a TCP listener in a container on the host engine's default bridge,
its port published on every host address, as the broker role publishes RabbitMQ), a service of
the host itself, a "remote broker" on another machine (a listener on the CI machine's engine,
whose address the inventory lists as the broker's) and another job's container all answer a
control container on the default bridge, so each refusal below is the firewall's doing, not a
broken set-up. The job is started by the worker's own code path (``jobs.launch_job`` with
default settings, so on the default ``MOONMIND_CODEX_JOB_NETWORK``) through the host's engine.

Every refusal is "No route to host" at once (the rules' icmp-admin-prohibited), not a timeout:
Docker's own rules drop silently, so the errno shows which rule said no.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from harness.hosts import (
    ansible_playbook,
    hosts_inventory,
    recap_changed,
    remove_host,
    start_host,
    wait_until,
    write_inventory,
)
from harness.hosts import docker as outer_docker
from moonmind_codex.core.messages import Fix, create_job_network
from moonmind_codex.engine.jobs import JobSpec, PreflightBlocked, launch_job
from moonmind_codex.settings import Settings
from moonmind_codex.worker.guards import WorkerStartupError, check_worker_startup
from tests.ansible.conftest import copy_images

pytestmark = pytest.mark.integration

JOB_IMAGE = "moonmind-codex/job:latest"
NETWORK = Settings().job_network
BRIDGE = "mmc-jobs0"
FIREWALL = "/usr/local/sbin/moonmind-codex-job-firewall"
BANNER = "mmc-listener"
BROKER_PORT = 5672
HOST_SERVICE_PORT = 2222
OTHER_JOB_PORT = 7000
OUTSIDE = ("deb.debian.org", 80)

# A listener that greets every connection with its banner (the probe checks it got that far).
LISTENER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16)\n"
    "while True:\n"
    "    c,_=s.accept(); c.sendall(b'" + BANNER + "\\n'); c.close()\n"
)

# Connects to every target; prints {name: "ok" | errno name}. The outside target gets an HTTP
# request, so "ok" there means a real answer from the internet, through DNS.
PROBE = """
import errno, json, socket, sys
targets = json.loads(sys.argv[1])
out = {}
for name, (host, port) in targets.items():
    try:
        with socket.create_connection((host, port), timeout=6) as s:
            s.settimeout(6)
            if name == "outside":
                s.sendall(b"HEAD / HTTP/1.0\\r\\nHost: " + host.encode() + b"\\r\\n\\r\\n")
                out[name] = "ok" if s.recv(64).startswith(b"HTTP/") else "no http answer"
            else:
                out[name] = "ok" if s.recv(64).startswith(b"BANNER") else "no banner"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc)) if exc.errno else type(exc).__name__
print("PROBE " + json.dumps(out, sort_keys=True))
""".replace("BANNER", BANNER)


def run(host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command on the host (its own shell, its own engine)."""
    return outer_docker("exec", host, *args, check=check)


def inner_ip(host: str, container: str, network: str) -> str:
    return run(
        host, "docker", "inspect", "--format",
        f"{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}", container,
    ).stdout.strip()  # fmt: skip


def outer_ip(container: str) -> str:
    return outer_docker(
        "inspect", "--format", "{{.NetworkSettings.IPAddress}}", container
    ).stdout.strip()


def probe_result(output: str) -> dict[str, str]:
    lines = [line for line in output.splitlines() if line.startswith("PROBE ")]
    assert lines, f"the probe printed no result: {output[-2000:]}"
    result: dict[str, str] = json.loads(lines[-1].removeprefix("PROBE "))
    return result


@dataclass
class Site:
    host: str
    engine: docker.DockerClient
    remote_ip: str
    targets: dict[str, tuple[str, int]]
    tmp: Path
    inventory: Path
    playbook: Path

    def control_probe(self, targets: dict[str, tuple[str, int]]) -> dict[str, str]:
        """The probe in a plain container on the host engine's default bridge."""
        done = run(
            self.host, "docker", "run", "--rm", "--network", "bridge", "--entrypoint", "python3",
            JOB_IMAGE, "-c", PROBE, json.dumps(targets), check=False,
        )  # fmt: skip
        return probe_result(done.stdout + done.stderr)

    def control_reaches_every_target(self) -> None:
        """Every listener answers the control container (they may still be starting)."""
        wanted = dict.fromkeys(self.targets, "ok")
        deadline = time.monotonic() + 90
        while (seen := self.control_probe(self.targets)) != wanted:
            assert time.monotonic() < deadline, f"not every target answers the control: {seen}"
            time.sleep(1)

    def settings(self) -> Settings:
        """A shard worker's settings on this host, the job network left at its default."""
        settings = Settings(
            shard=0,
            shard_count=1,
            host_name=self.host,
            auth_volume_override="codex_auth_0",
            artifacts_dir=self.tmp / "artifacts",
            audit_log=self.tmp / "audit.jsonl",
        )
        assert settings.job_network == NETWORK
        return settings

    def job_probe(self, label: str) -> dict[str, str]:
        """The probe as a Codex phase's command, in a job container made by jobs.launch_job."""
        settings = self.settings()
        spec = JobSpec(
            run_id=f"net-{label}-{secrets.token_hex(3)}",
            phase="probe",
            command=["python3", "-c", PROBE, json.dumps(self.targets)],
            shard=settings.served_shard,
            timeout_s=120,
        )
        result = launch_job(settings, spec, self.engine)
        return probe_result(result.log_path.read_text())

    def firewall_check(self) -> subprocess.CompletedProcess[str]:
        return run(self.host, FIREWALL, "check", check=False)

    def playbook_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = ansible_playbook(self.inventory, self.playbook, *args)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        return done


def engine_of(host: str) -> docker.DockerClient:
    """The host's own engine, through its socket as seen from the host container's PID 1."""
    pid = outer_docker("inspect", "--format", "{{.State.Pid}}", host).stdout.strip()
    return docker.DockerClient(base_url=f"unix:///proc/{pid}/root/run/docker.sock", timeout=120)


def wait_for_engine(host: str) -> None:
    wait_until(lambda: run(host, "docker", "info", check=False).returncode == 0, "docker info")


def start_listeners(host: str) -> None:
    """The broker stand-in (published) and a service of the host itself, both answering."""
    run(
        host, "docker", "run", "-d", "--name", "broker", "--restart", "always",
        "--network", "bridge", "-p", f"{BROKER_PORT}:{BROKER_PORT}", "--entrypoint", "python3",
        JOB_IMAGE, "-c", LISTENER, str(BROKER_PORT),
    )  # fmt: skip
    start_host_service(host)


def start_host_service(host: str) -> None:
    outer_docker("exec", "-d", host, "python3", "-c", LISTENER, str(HOST_SERVICE_PORT))


def targets_of(host: str, remote_ip: str) -> dict[str, tuple[str, int]]:
    """Where each listener answers, from a container of the host's engine."""
    host_ip = outer_ip(host)
    docker0 = run(host, "sh", "-c", "ip -4 -o addr show docker0 | awk '{print $4}'").stdout
    return {
        "broker_published": (host_ip, BROKER_PORT),
        "broker_published_docker0": (docker0.strip().split("/")[0], BROKER_PORT),
        "broker_container": (inner_ip(host, "broker", "bridge"), BROKER_PORT),
        "host_service": (host_ip, HOST_SERVICE_PORT),
        "remote_broker": (remote_ip, BROKER_PORT),
        "outside": OUTSIDE,
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("job-network")
    suffix = secrets.token_hex(3)
    host = f"mmc-test-jobnet-{suffix}"
    remote = f"mmc-test-jobnet-remote-{suffix}"
    try:
        # Another machine's broker: a listener on the CI machine's engine, beside the host.
        outer_docker(
            "run", "-d", "--name", remote, "--network", "bridge", "--entrypoint", "python3",
            JOB_IMAGE, "-c", LISTENER, str(BROKER_PORT),
        )  # fmt: skip
        start_host(host, images=("job",))
        copy_images(host, tmp / "archives", "job")
        start_listeners(host)
        for volume in ("codex_auth_0", "moonmind_codex_workspaces"):
            run(host, "docker", "volume", "create", volume)
            run(
                host, "docker", "run", "--rm", "--network", "none", "--user", "0:0",
                "--entrypoint", "chown", "-v", f"{volume}:/v", JOB_IMAGE, "1000:1000", "/v",
            )  # fmt: skip
        remote_ip = outer_ip(remote)
        inventory = write_inventory(
            tmp / "hosts.yml",
            hosts_inventory([host], moonmind_codex_job_network_broker_addresses=[remote_ip]),
        )
        playbook = tmp / "job_network.yml"
        playbook.write_text(
            "- name: Job network\n  hosts: all\n  roles:\n    - moonmind_codex_job_network\n"
        )
        yield Site(
            host=host,
            engine=engine_of(host),
            remote_ip=remote_ip,
            targets=targets_of(host, remote_ip),
            tmp=tmp,
            inventory=inventory,
            playbook=playbook,
        )
    finally:
        remove_host(host)
        outer_docker("rm", "-f", remote, check=False)


BLOCKED = {
    "broker_published": "EHOSTUNREACH",
    "broker_published_docker0": "EHOSTUNREACH",
    "broker_container": "EHOSTUNREACH",
    "host_service": "EHOSTUNREACH",
    "remote_broker": "EHOSTUNREACH",
    "outside": "ok",
}


def test_before_the_role_a_worker_refuses_to_start_and_a_job_is_blocked_naming_the_fix(
    site: Site,
) -> None:
    settings = site.settings()
    with pytest.raises(WorkerStartupError) as refused:
        check_worker_startup(settings, site.engine)
    assert str(refused.value) == (
        f"job network {NETWORK} (MOONMIND_CODEX_JOB_NETWORK) does not exist on host "
        f"{site.host}; the worker will not start (it never runs jobs on another network). "
        + create_job_network(site.host)
    )
    spec = JobSpec(
        run_id="net-missing", phase="probe", command=["true"], shard=settings.served_shard,
        timeout_s=60, preflight=True,
    )  # fmt: skip
    with pytest.raises(PreflightBlocked) as blocked:
        launch_job(settings, spec, site.engine)
    finding = blocked.value.finding
    assert (finding.name, finding.status, finding.fix) == (
        "job network",
        "blocked",
        Fix.CREATE_JOB_NETWORK,
    )
    assert NETWORK in finding.detail
    # Nothing was left behind: no container of the job, and no network made on the side.
    assert (
        site.engine.containers.list(all=True, filters={"label": "io.moonmind.codex.role=job"}) == []
    )
    assert run(site.host, "docker", "network", "inspect", NETWORK, check=False).returncode != 0


def test_check_mode_then_converge_twice_without_a_second_change(site: Site) -> None:
    try:
        socket.create_connection(OUTSIDE, timeout=10).close()
    except OSError as exc:
        pytest.fail(f"{OUTSIDE} is not reachable from this machine ({exc}): no outside control")
    preview = site.playbook_run("--check")
    assert recap_changed(preview.stdout) > 0
    assert run(site.host, "docker", "network", "inspect", NETWORK, check=False).returncode != 0
    assert run(site.host, "test", "-e", FIREWALL, check=False).returncode != 0

    first = site.playbook_run()
    assert recap_changed(first.stdout) > 0
    second = site.playbook_run()
    assert recap_changed(second.stdout) == 0, second.stdout[-3000:]
    assert site.playbook_run("--check").returncode == 0

    options = json.loads(
        run(
            site.host, "docker", "network", "inspect", "--format", "{{json .Options}}", NETWORK
        ).stdout
    )
    assert options["com.docker.network.bridge.name"] == BRIDGE
    assert options["com.docker.network.bridge.enable_icc"] == "false"
    assert site.firewall_check().returncode == 0
    active = run(site.host, "systemctl", "is-enabled", "moonmind-codex-job-firewall.service")
    assert active.stdout.strip() == "enabled"


def test_control_container_on_the_default_bridge_reaches_every_target(site: Site) -> None:
    site.control_reaches_every_target()


def test_job_reaches_the_internet_but_not_the_broker_the_host_or_other_containers(
    site: Site,
) -> None:
    assert site.job_probe("converged") == BLOCKED


def test_jobs_cannot_reach_each_other_on_the_job_network(site: Site) -> None:
    run(
        site.host, "docker", "run", "-d", "--name", "other-job", "--network", NETWORK,
        "--entrypoint", "python3", JOB_IMAGE, "-c", LISTENER, str(OTHER_JOB_PORT),
    )  # fmt: skip
    try:
        other = (inner_ip(site.host, "other-job", NETWORK), OTHER_JOB_PORT)
        # It listens: the host's own shell reaches it (the host is not a job).
        wait_until(
            lambda: run(
                site.host, "python3", "-c",
                f"import socket; socket.create_connection({other!r}, timeout=3)", check=False,
            ).returncode == 0,
            "the other job's listener",
        )  # fmt: skip
        job = dict(site.targets)
        site.targets = {"other_job": other}
        try:
            assert site.job_probe("icc") == {"other_job": "EHOSTUNREACH"}
        finally:
            site.targets = job
    finally:
        run(site.host, "docker", "rm", "-f", "other-job", check=False)


def test_rules_come_back_after_an_engine_restart_and_a_reboot(site: Site) -> None:
    # Rules gone (an operator's flush), then the engine restarts: the unit applies them again.
    run(site.host, "iptables", "-D", "DOCKER-USER", "-i", BRIDGE, "-j", "MOONMIND-JOBS-FORWARD")
    run(site.host, "iptables", "-F", "MOONMIND-JOBS-FORWARD")
    assert site.firewall_check().returncode == 1
    run(site.host, "systemctl", "restart", "docker.service")
    wait_for_engine(site.host)
    assert site.firewall_check().returncode == 0, site.firewall_check().stdout
    assert site.job_probe("engine-restart") == BLOCKED

    # A reboot: a fresh network namespace, empty iptables, the engine started by systemd.
    outer_docker("restart", site.host)
    wait_for_engine(site.host)
    wait_until(lambda: site.firewall_check().returncode == 0, "the firewall unit after the reboot")
    site.engine = engine_of(site.host)
    start_host_service(site.host)
    wait_until(
        lambda: (
            run(
                site.host, "docker", "inspect", "broker", "--format", "{{.State.Running}}"
            ).stdout.strip()
            == "true"
        ),
        "the broker stand-in after the reboot",
    )
    site.targets = targets_of(site.host, site.remote_ip)
    site.control_reaches_every_target()
    assert site.job_probe("reboot") == BLOCKED

    changed = site.playbook_run()
    assert recap_changed(changed.stdout) == 0, changed.stdout[-3000:]


def test_role_puts_back_rules_that_drifted(site: Site) -> None:
    run(site.host, "iptables", "-A", "MOONMIND-JOBS-INPUT", "-j", "ACCEPT")
    run(site.host, "iptables", "-D", "INPUT", "-i", BRIDGE, "-j", "MOONMIND-JOBS-INPUT")
    run(site.host, "iptables", "-A", "INPUT", "-i", BRIDGE, "-j", "MOONMIND-JOBS-INPUT")
    assert site.firewall_check().returncode == 1
    repaired = site.playbook_run()
    assert recap_changed(repaired.stdout) == 1
    assert site.firewall_check().returncode == 0
    assert run(site.host, "iptables", "-S", "INPUT").stdout.splitlines()[1] == (
        f"-A INPUT -i {BRIDGE} -j MOONMIND-JOBS-INPUT"
    )
