"""``python -m harness.seed_hosts HOST...``: each host's engine volume starts as the image store.

For host containers started by something other than :func:`harness.hosts.start_host` (Molecule's
create playbook): ``<HOST>-docker``, the volume the host mounts at /var/lib/docker, is made a copy
of the shared image store (worker, job and broker images) before the host first starts. A volume
that already exists is left as it is (a host being re-created keeps its engine's data): the
command prints ``kept <volume>`` for it and ``seeded <volume>`` for a new one.
"""

from __future__ import annotations

import sys

from harness.hosts import docker, seed_engine


def main(hosts: list[str]) -> int:
    if not hosts:
        print("usage: python -m harness.seed_hosts HOST [HOST...]", file=sys.stderr)
        return 2
    for host in hosts:
        volume = f"{host}-docker"
        if docker("volume", "inspect", volume, check=False).returncode == 0:
            print(f"kept {volume}")
            continue
        seed_engine(host)
        print(f"seeded {volume}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
