"""No login in any log: sign-ins, a move, a login check and a Codex phase under journald.

Two real systemd + Docker hosts whose engines keep every container's output in the journal
(`log-driver: journald` in /etc/docker/daemon.json, set before provisioning, as a site whose
logs are shipped would have it). playbooks/site.yml provisions them: host A the broker and
shards 0 and 1, host B shard 2. Then, as an operator would:

- shard 0 and shard 1 are signed in with `moonmind-codex login --from-file -` and shard 2 with
  `--api-key-stdin`, the CLI in the worker image as the runbook runs it (`docker run`, its own
  output kept by the engine, no `--rm` so the container is still there to be read), each login
  full of random markers (access, refresh and id tokens and account id; the API key);
- a Codex phase runs on shard 0 through the broker (pre-flight, job container, phase log,
  audit record, run store);
- shard 1 moves to host B (site.yml with the edited inventory, then playbooks/move_login.yml
  at -vvv);
- playbooks/login_check.yml runs at normal verbosity and at -vvv.

Then ONE scan looks for every marker, literally and in base64 (both alphabets, every
alignment) and hex, in everything the run produced: each host's whole journal
(`journalctl -o export`, decompressed fields, container output from the journald driver
included), `docker logs` and `docker inspect` (environment, arguments, labels) of every
container on each host, exited ones too, and of the host containers themselves, a dump of every
SQLite file (the run store), the environment of every process on each host, every regular file
on each host (its root file system, /run, and all of /var/lib/docker: every image layer as the
engine stores it, container layers, volumes, engine metadata; only /proc, /sys, /dev and the
overlay mounts of running containers, whose files are their layers', are left out), the
stdout and stderr of every playbook run, and every file the test wrote on the controller (and
Ansible's local temporary directory).

A marker may be found only inside the auth volumes (the login's home). The scan proves it can
see: each login's markers are found in its volume's auth.json, the phase's output (a control
line) in the journal under the job container's name and in the phase log, and a file of the
images in their layers under /var/lib/docker/overlay2.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from harness.hosts import (
    REPO,
    ansible_playbook,
    docker,
    fleet_inventory_of,
    remove_host,
    start_host,
    wait_for_consumers,
    wait_until,
    write_inventory,
)
from moonmind_codex.core.routing import shard_for_key
from tests.ansible.conftest import copy_images

pytestmark = pytest.mark.integration

PLAYBOOKS = REPO / "playbooks"
CONFIG_DIR = "/etc/moonmind-codex"
WORKER_IMAGE = "moonmind-codex/worker:latest"
JOB_IMAGE = "moonmind-codex/job:latest"
SHARDS = 3
VOLUMES_DIR = "/var/lib/docker/volumes"
# A line of every image's Debian base: the scan must find it in the image layers.
IMAGE_CONTROL = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"'
# Files of the running containers' overlay mounts are their layers' files, scanned there.
FILESYSTEM_SCAN = r"""
set -u
find / \( -path /proc -o -path /sys -o -path /dev -o -path '/var/lib/docker/overlay2/*/merged' \) \
    -prune -o -type f -print0 \
  | xargs -0 -r -n 4000 sh -c \
      'echo "$#" >&2; exec grep -a -o -s -H -Z -F -f /dev/shm/mmc-needles -- "$@"' sh
rm -f /dev/shm/mmc-needles
exit 0
"""
SQLITE_DUMP = r"""
import sqlite3, subprocess, sys
found = subprocess.run(
    ["find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", "-o", "-path", "/dev", "-o",
     "-path", "/var/lib/docker/overlay2/*/merged", ")", "-prune", "-o", "-type", "f",
     "(", "-name", "*.sqlite*", "-o", "-name", "*.db", ")", "-print"],
    capture_output=True, text=True).stdout.split()
for path in found:
    if path.endswith(("-wal", "-shm", "-journal")):
        continue
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        sys.stdout.write(f"-- {path}\n")
        for line in db.iterdump():
            sys.stdout.write(line + "\n")
        db.close()
    except sqlite3.Error as exc:
        sys.stdout.write(f"-- {path}: not readable as SQLite: {exc}\n")
"""


def host_docker(host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return docker("exec", host, "docker", *args, check=check)


def raw(argv: list[str], stdin: bytes | None = None, timeout_s: float = 600) -> bytes:
    """The stdout and stderr of ``argv`` as bytes (whatever they hold)."""
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout_s, check=False)
    return done.stdout + done.stderr


# --- markers -------------------------------------------------------------------------------


def marker(what: str) -> str:
    return f"mmcleak{what}{secrets.token_hex(10)}"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def jwt(subject: str, exp: datetime) -> str:
    """A fake JWT: the marker base64-encoded in its claims and literally as its signature."""
    claims = {"exp": int(exp.timestamp()), "sub": subject}
    return f"{_b64({'alg': 'RS256'})}.{_b64(claims)}.{subject}"


@dataclass(frozen=True)
class ChatGPTLogin:
    markers: dict[str, str]

    @classmethod
    def new(cls, name: str) -> ChatGPTLogin:
        fields = ("access_token", "refresh_token", "id_token", "account_id")
        return cls({f"{name}.{f}": marker(f.split("_")[0]) for f in fields})

    def auth_json(self) -> bytes:
        now = datetime.now(UTC)
        values = {key.split(".", 1)[1]: value for key, value in self.markers.items()}
        tokens = {
            "id_token": jwt(values["id_token"], now + timedelta(days=1)),
            "access_token": jwt(values["access_token"], now + timedelta(days=1)),
            "refresh_token": values["refresh_token"],
            "account_id": values["account_id"],
        }
        return json.dumps(
            {
                "auth_mode": "chatgpt",
                "OPENAI_API_KEY": None,
                "tokens": tokens,
                "last_refresh": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()


def encodings(text: str) -> set[str]:
    """``text`` literally, as hex, and in base64 (standard and URL-safe) at every alignment.

    Only the base64 characters that depend on ``text`` alone: a login base64-encoded inside
    something longer still shows them.
    """
    data = text.encode()
    found = {text, data.hex()}
    for offset in range(3):
        padded = b"\0" * offset + data
        whole = (len(padded) // 3) * 4
        start = 4 if offset else 0
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            found.add(encode(padded).decode()[start:whole])
    return found


# --- the scan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    where: str
    label: str


@dataclass
class Scan:
    """One search for every needle through every source; ``labels``: needle to what it is."""

    labels: Mapping[str, str]
    hits: list[Hit] = field(default_factory=list)
    # What was read: source kind to (sources, bytes or files).
    covered: dict[str, list[int]] = field(default_factory=dict)
    # The hosts are scanned at the same time.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _found(self, kind: str, amount: int, hits: list[Hit]) -> None:
        with self.lock:
            counts = self.covered.setdefault(kind, [0, 0])
            counts[0] += 1
            counts[1] += amount
            self.hits += hits

    def data(self, kind: str, where: str, data: bytes) -> None:
        hits = [
            Hit(where, label) for needle, label in self.labels.items() if needle.encode() in data
        ]
        self._found(kind, len(data), hits)

    def host_files(self, host: str) -> None:
        """Every regular file of ``host`` through grep on the host (gigabytes: not copied out)."""
        needles = "".join(f"{needle}\n" for needle in self.labels).encode()
        done = subprocess.run(
            ["docker", "exec", "-i", host, "bash", "-c",
             f"cat > /dev/shm/mmc-needles\n{FILESYSTEM_SCAN}"],
            input=needles, capture_output=True, timeout=900, check=True,
        )  # fmt: skip
        files = sum(int(n) for n in done.stderr.split() if n.isdigit())
        hits = []
        for line in done.stdout.splitlines():
            path, _, needle = line.partition(b"\0")
            where = f"{host}:{path.decode('utf-8', 'replace')}"
            hits.append(Hit(where, self.labels.get(needle.decode("utf-8", "replace"), "?")))
        self._found("files", files, hits)

    def controller_tree(self, root: Path) -> None:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                data = path.read_bytes()
            except OSError:
                continue  # removed meanwhile (Ansible's temporary files of other runs)
            self.data("controller files", f"controller:{path}", data)

    def found(self, label_prefix: str) -> set[str]:
        return {hit.where for hit in self.hits if hit.label.startswith(label_prefix)}


def scan_host(scan: Scan, host: str) -> None:
    scan.data(
        "journal",
        f"{host}: journalctl -o export",
        raw(["docker", "exec", host, "journalctl", "--no-pager", "-o", "export"]),
    )
    containers = host_docker(host, "ps", "-aq", "--no-trunc").stdout.split()
    assert containers, f"no container on {host}"
    for container in containers:
        scan.data(
            "docker logs",
            f"{host}: docker logs {container[:12]}",
            raw(["docker", "exec", host, "docker", "logs", container]),
        )
        scan.data(
            "docker inspect",
            f"{host}: docker inspect {container[:12]}",
            raw(["docker", "exec", host, "docker", "inspect", container]),
        )
    scan.data(
        "process environments",
        f"{host}: /proc/*/environ",
        raw(["docker", "exec", host, "sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null; true"]),
    )
    scan.data(
        "SQLite dumps",
        f"{host}: SQLite files",
        raw(["docker", "exec", "-i", host, "python3", "-"], stdin=SQLITE_DUMP.encode()),
    )
    scan.host_files(host)


# --- the run -------------------------------------------------------------------------------


@dataclass
class Run:
    hosts: tuple[str, str]
    work: Path
    archives: Path
    outputs: Path
    logins: dict[int, ChatGPTLogin]
    api_marker: str
    api_key: str
    run_id: str
    phase_control: str
    broker_password: str = field(default_factory=lambda: f"not-a-login-{secrets.token_hex(4)}")
    played: list[str] = field(default_factory=list)
    phase_result: dict[str, Any] = field(default_factory=dict)
    journal_json: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scan: Scan | None = None

    def inventory(self, shards_a: list[int], shards_b: list[int]) -> Path:
        host_a, host_b = self.hosts
        inventory = fleet_inventory_of(
            {host_a: shards_a, host_b: shards_b},
            host_a,
            SHARDS,
            moonmind_codex_broker_password=self.broker_password,
            moonmind_codex_images_source="load",
            moonmind_codex_images_archive_dir=str(self.archives),
            moonmind_codex_workers_allowed_commands=["codex", "sh"],
        )
        return write_inventory(self.work / f"hosts-{'-'.join(map(str, shards_a))}.yml", inventory)

    def play(self, inventory: Path, playbook: str, *args: str) -> str:
        done = ansible_playbook(inventory, PLAYBOOKS / playbook, *args)
        name = f"{len(self.played):02d}-{playbook.removesuffix('.yml')}{''.join(args)}"
        (self.outputs / f"{name}.stdout").write_text(done.stdout)
        (self.outputs / f"{name}.stderr").write_text(done.stderr)
        self.played.append(f"{playbook} {' '.join(args)}")
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
        return done.stdout

    def cli(self, host: str, name: str, *args: str, stdin: bytes) -> str:
        """``moonmind-codex ARGS`` in the worker image as the runbook runs it (output kept)."""
        gid = docker("exec", host, "stat", "-c", "%g", "/var/run/docker.sock").stdout.strip()
        done = subprocess.run(
            ["docker", "exec", "-i", host, "docker", "run", "-i", "--name", name,
             f"--group-add={gid}", "-v", "/var/run/docker.sock:/var/run/docker.sock",
             "-v", f"{CONFIG_DIR}:{CONFIG_DIR}:ro", f"--env-file={CONFIG_DIR}/fleet.env",
             WORKER_IMAGE, *args],
            input=stdin, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        out = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert done.returncode == 0, out
        return out


def set_journald_driver(host: str) -> None:
    """The host engine's default logging driver: journald (daemon.json), before provisioning."""
    docker(
        "exec", host, "python3", "-c",
        "import json, pathlib; p = pathlib.Path('/etc/docker/daemon.json');"
        "c = json.loads(p.read_text()) if p.exists() else {};"
        "c['log-driver'] = 'journald'; p.write_text(json.dumps(c, indent=2))",
    )  # fmt: skip
    docker("exec", host, "systemctl", "restart", "docker")
    wait_until(
        lambda: host_docker(host, "info", check=False).returncode == 0,
        f"the engine of {host} after its restart",
        timeout_s=90,
    )


def prepare_host(host: str, archives: Path, images: tuple[str, ...]) -> None:
    start_host(host, images=images)
    set_journald_driver(host)
    copy_images(host, archives, *images)


def in_parallel(*calls: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def guarded(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def wait_for_consumer(host: str, shard: int) -> None:
    try:
        wait_for_consumers(host, [shard])
    except AssertionError as exc:
        unit = f"moonmind-codex-worker@{shard}"
        log = docker("exec", host, "journalctl", "-n", "20", "-u", unit, check=False).stdout
        raise AssertionError(f"{exc}; the journal of {unit}:\n{log}") from None


def key_for(shard: int) -> str:
    return next(
        k for k in (f"org/leak-{i}" for i in range(1000)) if shard_for_key(k, SHARDS) == shard
    )


def journal_entries(host: str) -> list[dict[str, Any]]:
    out = docker("exec", host, "journalctl", "--no-pager", "-o", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def message(entry: Mapping[str, Any]) -> str:
    value = entry.get("MESSAGE", "")
    return bytes(value).decode("utf-8", "replace") if isinstance(value, list) else str(value)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("no-login-in-logs")
    tag = secrets.token_hex(3)
    this = Run(
        hosts=(f"mmc-leak-a-{tag}", f"mmc-leak-b-{tag}"),
        work=work,
        archives=work / "archives",
        outputs=work / "ansible",
        logins={0: ChatGPTLogin.new("login0"), 1: ChatGPTLogin.new("login1")},
        api_marker=(api_marker := marker("apikey")),
        # The CLI shows an API key's first and last characters: the marker sits in the middle.
        api_key=f"sk-test-{secrets.token_hex(8)}-{api_marker}-{secrets.token_hex(8)}",
        run_id=f"leak-{tag}",
        phase_control=f"mmc-control-phase-{secrets.token_hex(8)}",
    )
    this.outputs.mkdir()
    host_a, host_b = this.hosts
    try:
        in_parallel(
            lambda: prepare_host(host_a, this.archives, ("worker", "job", "broker")),
            lambda: prepare_host(host_b, this.archives, ("worker", "job")),
        )
        first = this.inventory([0, 1], [2])
        this.play(first, "site.yml")

        # Sign-ins, as the runbook does them on the shard's host.
        for shard in (0, 1):
            out = this.cli(
                host_a, f"mmc-leak-import-{shard}", "login", f"--shard={shard}", "--from-file=-",
                stdin=this.logins[shard].auth_json(),
            )  # fmt: skip
            assert f"volume codex_auth_{shard} signed in" in out, out
        out = this.cli(
            host_b, "mmc-leak-import-2", "login", "--shard=2", "--api-key-stdin",
            stdin=this.api_key.encode(),
        )  # fmt: skip
        assert "volume codex_auth_2 signed in" in out, out

        # A Codex phase on shard 0 through the broker: pre-flight, job, phase log, audit, store.
        wait_for_consumer(host_a, 0)
        # As the host's producer (its own broker user where the broker has one per role).
        enqueued = host_docker(
            host_a, "exec", f"--env=MOONMIND_CODEX_BROKER_URL_FILE={CONFIG_DIR}/broker_url",
            "moonmind-codex-worker-0", "moonmind-codex", "enqueue",
            f"--run-id={this.run_id}", "--phase=plan", f"--repository={key_for(0)}",
            "--timeout=120", "--wait", "--",
            "sh", "-c", f"echo {this.phase_control}; codex login status",
            check=False,
        )  # fmt: skip
        assert enqueued.returncode == 0, enqueued.stdout + enqueued.stderr
        this.phase_result = json.loads(enqueued.stdout)

        # The move of shard 1 to host B, the runbook's way.
        moved = this.inventory([0], [1, 2])
        this.play(moved, "site.yml")
        this.play(moved, "move_login.yml", "-vvv", "-e", "shard=1", "-e", f"from_host={host_a}")
        this.play(moved, "login_check.yml")
        this.play(moved, "login_check.yml", "-vvv")

        this.journal_json = {host: journal_entries(host) for host in this.hosts}
        labels = {
            **{n: name for login in this.logins.values() for name, value in login.markers.items()
               for n in encodings(value)},
            **{n: "apikey" for n in encodings(this.api_marker)},
            this.phase_control: "control.phase",
            this.run_id: "control.run",
            IMAGE_CONTROL: "control.image",
        }  # fmt: skip
        scan = Scan(labels)
        in_parallel(*(partial(scan_host, scan, host) for host in this.hosts))
        for host in this.hosts:
            scan.data(
                "docker logs", f"outer engine: docker logs {host}", raw(["docker", "logs", host])
            )
            scan.data(
                "docker inspect",
                f"outer engine: docker inspect {host}",
                raw(["docker", "inspect", host]),
            )
        scan.controller_tree(work)
        local_tmp = Path(os.environ.get("ANSIBLE_LOCAL_TEMP", Path.home() / ".ansible" / "tmp"))
        if local_tmp.is_dir():
            scan.controller_tree(local_tmp)
        this.scan = scan
        yield this
    finally:
        for host in this.hosts:
            remove_host(host)


LOGIN_LABELS = ("login", "apikey")


def where_expected(run: Run) -> dict[str, str]:
    """Each login marker's label prefix: the one file it must be found in (its volume's)."""
    host_a, host_b = run.hosts
    return {
        "login0.": f"{host_a}:{VOLUMES_DIR}/codex_auth_0/_data/auth.json",
        "login1.": f"{host_b}:{VOLUMES_DIR}/codex_auth_1/_data/auth.json",
        "apikey": f"{host_b}:{VOLUMES_DIR}/codex_auth_2/_data/auth.json",
    }


def test_the_engines_keep_every_container_output_in_the_journal(run: Run) -> None:
    """The journald driver was really in use: kept output of jobs and CLI containers is there."""
    for host in run.hosts:
        driver = host_docker(host, "info", "--format", "{{.LoggingDriver}}").stdout.strip()
        assert driver == "journald", host
    assert run.phase_result.get("outcome") == "succeeded", run.phase_result
    host_a, _ = run.hosts
    by_container: dict[str, list[str]] = {}
    for entry in run.journal_json[host_a]:
        if "CONTAINER_NAME" in entry:
            by_container.setdefault(str(entry["CONTAINER_NAME"]), []).append(message(entry))
    job = [name for name, lines in by_container.items() if run.phase_control in lines]
    assert job and all(name.startswith("moonmind-codex-job-") for name in job), sorted(by_container)
    assert any("signed in" in line for line in by_container.get("mmc-leak-import-0", [])), sorted(
        by_container
    )
    assert any(name.startswith("moonmind-codex-worker-") for name in by_container)


def test_the_scan_finds_what_is_really_there(run: Run) -> None:
    """The control: markers in the volumes' auth.json, the phase's output, the store, the images."""
    assert run.scan is not None
    scan = run.scan
    # The encoded needles: a marker inside longer base64 or hex, at any alignment, is seen.
    needles = encodings(run.api_marker)
    for prefix in ("", "x", "xy"):
        wrapped = f"{prefix}{{{run.api_marker}}}".encode()
        for shown in (
            base64.b64encode(wrapped),
            base64.urlsafe_b64encode(wrapped),
            wrapped.hex().encode(),
        ):
            assert any(n.encode() in shown for n in needles), (prefix, shown)
    for prefix, path in where_expected(run).items():
        labels = {label for label in scan.labels.values() if label.startswith(prefix)}
        assert labels, prefix
        for label in labels:
            assert path in scan.found(label), (label, sorted(scan.found(label)))
    host_a, _ = run.hosts
    phase = scan.found("control.phase")
    assert f"{host_a}: journalctl -o export" in phase, sorted(phase)
    assert any(w.startswith(f"{host_a}:/var/lib/moonmind-codex/artifacts/") for w in phase), phase
    stored = scan.found("control.run")
    assert f"{host_a}: SQLite files" in stored, sorted(stored)
    assert f"{host_a}:/var/lib/moonmind-codex/audit/codex-audit.jsonl" in stored, sorted(stored)
    layers = scan.found("control.image")
    assert any(
        w.startswith(f"{host_a}:/var/lib/docker/overlay2/") and "/diff/" in w for w in layers
    ), sorted(layers)[:20]
    kinds = ("journal", "docker logs", "docker inspect", "process environments", "SQLite dumps")
    for kind in (*kinds, "files", "controller files"):
        sources, amount = scan.covered.get(kind, [0, 0])
        assert sources > 0 and amount > 0, (kind, scan.covered)
    assert scan.covered["files"][1] > 10_000, scan.covered  # whole file systems, not a corner
    outputs = {p.name for p in run.outputs.iterdir()}
    assert len(outputs) == 2 * len(run.played) == 10, sorted(outputs)


def test_no_login_marker_anywhere_but_in_the_auth_volumes(run: Run) -> None:
    assert run.scan is not None
    inside = tuple(f"{host}:{VOLUMES_DIR}/codex_auth_" for host in run.hosts)
    leaks = sorted(
        {
            f"{hit.label} in {hit.where}"
            for hit in run.scan.hits
            if hit.label.startswith(LOGIN_LABELS) and not hit.where.startswith(inside)
        }
    )
    assert not leaks, "login markers outside the auth volumes:\n" + "\n".join(leaks)
