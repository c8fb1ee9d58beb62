"""`make release` (scripts/release.sh): one version's wheel, collection and image archives.

The release is built for real (pip's wheel, ansible-galaxy's collection, docker save of one
image, the broker's, to keep the test short), then used as an operator would: the checksums
verify, the wheel installs in a fresh venv whose `moonmind-codex --version` prints the release's
version, the collection installs offline and is found by name at that version, and the image
archive is the one the images role loads (the image id beside it, the engine's own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from harness.hosts import REPO

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 900):
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout_s
    )


def outside_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release") / f"moonmind-codex-{VERSION}"
    done = run(["bash", "scripts/release.sh", "--images", "broker", "--out", str(out)], cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_release_holds_one_version_and_its_checksums_verify(release: Path) -> None:
    files = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    assert files == [
        "SHA256SUMS",
        "images/IMAGES",
        "images/broker.tar",
        "images/broker.tar.id",
        f"moonmind-codex-{VERSION}.tar.gz",
        f"moonmind_codex-{VERSION}-py3-none-any.whl",
    ]
    verified = run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=release)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert len(verified.stdout.splitlines()) == len(files) - 1  # every file but SHA256SUMS
    # A changed byte is caught.
    with (release / "images" / "IMAGES").open("a") as tampered:
        tampered.write(" ")
    assert run(["sha256sum", "--check", "SHA256SUMS"], cwd=release).returncode != 0
    (release / "images" / "IMAGES").write_text((release / "images" / "IMAGES").read_text()[:-1])


def test_the_image_archive_is_the_engines_image_at_the_release_version(release: Path) -> None:
    image_id = (release / "images" / "broker.tar.id").read_text().strip()
    inspected = run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", "moonmind-codex/broker:latest"],
        cwd=REPO,
    )
    assert inspected.stdout.strip() == image_id
    assert (release / "images" / "IMAGES").read_text().split() == ["broker", image_id, VERSION]
    with tarfile.open(release / "images" / "broker.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["moonmind-codex/broker:latest"]


def test_the_wheel_installs_in_a_fresh_venv_at_the_release_version(
    release: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path).returncode == 0
    wheel = release / f"moonmind_codex-{VERSION}-py3-none-any.whl"
    installed = run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        cwd=tmp_path,
        env=outside_env(),
    )
    assert installed.returncode == 0, installed.stderr
    shown = run(
        [str(venv / "bin" / "moonmind-codex"), "--version"], cwd=tmp_path, env=outside_env()
    )
    assert shown.stdout.strip() == f"moonmind-codex {VERSION}", shown.stdout + shown.stderr


def test_the_collection_installs_offline_and_is_found_by_name(
    release: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in outside_env().items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
    )
    tarball = release / f"moonmind-codex-{VERSION}.tar.gz"
    galaxy = str(VENV_BIN / "ansible-galaxy")
    installed = run(
        [galaxy, "collection", "install", "--offline", "-p", str(tmp_path / "collections"),
         str(tarball)],
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = run(
        [galaxy, "collection", "list", "moonmind.codex", "--format=json"], cwd=tmp_path, env=env
    )
    found = json.loads(listed.stdout)
    versions = [c["version"] for path in found.values() for c in path.values()]
    assert versions == [VERSION], listed.stdout


def test_a_release_refuses_two_versions_and_a_finished_release_before_building(
    tmp_path: Path, release: Path
) -> None:
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "release.sh", copy / "scripts" / "release.sh")
    shutil.copy2(REPO / "pyproject.toml", copy / "pyproject.toml")
    galaxy = (REPO / "galaxy.yml").read_text().replace(f"version: {VERSION}", "version: 9.9.9")
    (copy / "galaxy.yml").write_text(galaxy)
    refused = run(["bash", "scripts/release.sh", "--no-images", "--out", "out"], cwd=copy)
    assert refused.returncode == 65
    assert f"pyproject.toml says version '{VERSION}' and galaxy.yml '9.9.9'" in refused.stderr
    assert not (copy / "out").exists(), "nothing is built before the versions agree"

    again = run(["bash", "scripts/release.sh", "--no-images", "--out", str(release)], cwd=REPO)
    assert again.returncode == 73 and "already holds a release" in again.stderr
