"""The two things operators install, built from this checkout and used where it cannot help.

- The Ansible collection ``moonmind.codex``: ``ansible-galaxy collection build``, then
  ``ansible-galaxy collection install --offline`` into a temporary collections path, then its
  playbooks run by collection name from a temporary directory, with a minimal ansible.cfg that
  names no roles, filters or collections of the checkout (and no ``ANSIBLE_*`` variable from
  the caller). The site playbook runs in check mode against ``inventory/local``: this machine,
  which needs only the engine and images ``scripts/setup.sh`` made, not a deployed fleet.
- The Python wheel: built with pip from a copy of the tracked sources, installed with its
  dependencies into a fresh venv (from the package sources ``scripts/setup.sh`` uses), run
  outside the checkout.

Nothing here needs Galaxy: the collection's one dependency (community.docker) is the copy the
``ansible`` package brought into the venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from harness.hosts import REPO

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
COLLECTION = "moonmind.codex"
COLLECTION_PLAYBOOKS = sorted(p.stem for p in (REPO / "playbooks").glob("*.yml"))
# What an operator's archive holds; anything else (tests, images, the Python package, caches)
# leaked past galaxy.yml's build_ignore.
ARCHIVE_TOP_LEVEL = {
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "docs",
    "meta",
    "playbooks",
    "plugins",
    "roles",
}
# A version no source file spells: `moonmind-codex --version` can only print it by reading the
# installed package's metadata.
LOCAL_VERSION_LABEL = "distcheck"
MINIMAL_ANSIBLE_CFG = """\
# Nothing from the checkout: no roles_path, no filter_plugins, no collections_path.
[defaults]
interpreter_python = auto_silent
retry_files_enabled = false
"""


def run(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """stdout of a command that must have succeeded (else its output, for the failure)."""
    assert done.returncode == 0, (
        f"{' '.join(map(str, done.args))} exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-4000:]}"
    )
    return done.stdout


def pyproject_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def galaxy() -> dict[str, object]:
    data = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert isinstance(data, dict)
    return data


def filter_names() -> set[str]:
    """Every filter the collection's plugins define (read from the files, no Ansible import)."""
    return {
        match
        for path in sorted((REPO / "plugins" / "filter").glob("*.py"))
        for match in re.findall(r'"(moonmind_codex_\w+)":', path.read_text())
    }


# --- the collection -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collection")


@pytest.fixture(scope="module")
def collection_tarball(collection_work: Path) -> Path:
    out = collection_work / "build"
    out.mkdir()
    ok(
        run(
            [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out)],
            cwd=REPO,
        )
    )
    tarballs = sorted(out.glob("*.tar.gz"))
    assert [t.name for t in tarballs] == [f"moonmind-codex-{galaxy()['version']}.tar.gz"]
    return tarballs[0]


@pytest.fixture(scope="module")
def isolated_env(collection_work: Path) -> dict[str, str]:
    """An environment whose Ansible knows nothing of the checkout, only the installed copy."""
    cfg = collection_work / "ansible.cfg"
    cfg.write_text(MINIMAL_ANSIBLE_CFG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(cfg),
        ANSIBLE_COLLECTIONS_PATH=str(collection_work / "collections"),
        ANSIBLE_HOME=str(collection_work / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
    )
    return env


@pytest.fixture(scope="module")
def installed_collection(
    collection_tarball: Path, collection_work: Path, isolated_env: dict[str, str]
) -> Path:
    ok(
        run(
            [
                str(VENV_BIN / "ansible-galaxy"),
                "collection",
                "install",
                "--offline",
                "-p",
                str(collection_work / "collections"),
                str(collection_tarball),
            ],
            cwd=collection_work,
            env=isolated_env,
        )
    )
    root = collection_work / "collections" / "ansible_collections" / "moonmind" / "codex"
    assert (root / "MANIFEST.json").is_file()
    return root


def playbook(
    env: Mapping[str, str], cwd: Path, *args: str, timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    return run([str(VENV_BIN / "ansible-playbook"), *args], cwd=cwd, env=env, timeout_s=timeout_s)


def test_collection_version_is_the_python_package_version() -> None:
    assert galaxy()["namespace"] == "moonmind"
    assert galaxy()["name"] == "codex"
    assert galaxy()["version"] == pyproject_version()


def test_collection_archive_holds_only_the_ansible_content(collection_tarball: Path) -> None:
    with tarfile.open(collection_tarball) as archive:
        names = archive.getnames()
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == ARCHIVE_TOP_LEVEL
    roles = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "meta").is_dir())
    for role in roles:
        assert f"roles/{role}/meta/main.yml" in names
    for name in COLLECTION_PLAYBOOKS:
        assert f"playbooks/{name}.yml" in names
    assert "meta/runtime.yml" in names
    shipped = {n for n in names if n.startswith("plugins/filter/") and n.endswith(".py")}
    in_repo = {f"plugins/filter/{p.name}" for p in (REPO / "plugins" / "filter").glob("*.py")}
    assert shipped == in_repo
    assert not [n for n in names if "__pycache__" in n or n.startswith("playbooks/collections")]


def test_installed_collection_is_found_by_name_and_nothing_else_is_configured(
    installed_collection: Path, collection_work: Path, isolated_env: dict[str, str]
) -> None:
    listing = ok(
        run(
            [str(VENV_BIN / "ansible-galaxy"), "collection", "list", COLLECTION, "--format=json"],
            cwd=collection_work,
            env=isolated_env,
        )
    )
    found = json.loads(listing)
    assert found == {
        str(installed_collection.parents[1]): {COLLECTION: {"version": pyproject_version()}}
    }
    dump = ok(
        run(
            [str(VENV_BIN / "ansible-config"), "dump", "--only-changed"],
            cwd=collection_work,
            env=isolated_env,
        )
    )
    assert str(REPO) not in dump, dump


@pytest.mark.parametrize("name", COLLECTION_PLAYBOOKS)
def test_installed_collection_playbook_passes_syntax_check_by_collection_name(
    name: str, installed_collection: Path, collection_work: Path, isolated_env: dict[str, str]
) -> None:
    assert name.isidentifier(), (
        f"playbooks/{name}.yml cannot be run as {COLLECTION}.{name}: a collection's playbook is "
        f"named by a Python identifier (rename it to {name.replace('-', '_')}.yml)"
    )
    done = playbook(isolated_env, collection_work, f"{COLLECTION}.{name}", "--syntax-check")
    out = ok(done)
    assert f"playbook: {installed_collection}/playbooks/{name}.yml" in out


def test_installed_collection_filters_resolve_by_collection_name_only(
    installed_collection: Path, collection_work: Path, isolated_env: dict[str, str]
) -> None:
    """The plugins ship and load as moonmind.codex.*; their short names are not configured."""
    results = collection_work / "filters.json"
    fqcn = collection_work / "fqcn.yml"
    fqcn.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Filters by collection name",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                        "fleet": {"a": {"moonmind_codex_shards": [0, 1]}},
                        "rows": [
                            {
                                "shard": 0,
                                "volume": "codex_auth_0",
                                "host": "h",
                                "status": "ok",
                                "reason": "",
                            }
                        ],
                    },
                    "tasks": [
                        {
                            "name": "Write what each filter returns",
                            "ansible.builtin.copy": {
                                "dest": str(results),
                                "mode": "0644",
                                "content": "{{ {"
                                "'errors': ['a'] | moonmind.codex.moonmind_codex_inventory_errors("
                                "fleet, ['b'], 2), "
                                "'owners': ['a'] | moonmind.codex.moonmind_codex_shard_owners("
                                "fleet), "
                                "'rows': rows | map('moonmind.codex.moonmind_codex_login_row') "
                                "| list} | to_json }}",
                            },
                        }
                    ],
                }
            ]
        )
    )
    ok(playbook(isolated_env, collection_work, "-i", "localhost,", str(fqcn)))
    result = json.loads(results.read_text())
    assert result["errors"] == []
    assert result["owners"] == {"0": "a", "1": "a"}
    assert result["rows"][0].split()[:4] == ["0", "codex_auth_0", "h", "ok"]

    short = collection_work / "short.yml"
    short.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "A filter by its short name",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.debug": {
                                "msg": "{{ [] | moonmind_codex_shard_owners({}) }}"
                            }
                        }
                    ],
                }
            ]
        )
    )
    done = playbook(isolated_env, collection_work, "-i", "localhost,", str(short))
    assert done.returncode != 0
    assert "No filter named 'moonmind_codex_shard_owners'" in done.stdout + done.stderr


def test_collection_content_calls_its_filters_by_collection_name(
    installed_collection: Path,
) -> None:
    """Inside an installed collection a short filter name resolves nowhere (Ansible applies no
    collection search path to filters): every use in its roles and playbooks is moonmind.codex.*.
    """
    names = filter_names()
    assert names, "no filters found in plugins/filter"
    short = re.compile(r"(?<![\w.])(" + "|".join(sorted(names)) + r")\b")
    offenders = [
        f"{path.relative_to(installed_collection)}:{number}: {line.strip()}"
        for path in sorted(installed_collection.glob("*/**/*"))
        if path.is_file() and path.suffix in {".yml", ".yaml", ".j2"}
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if short.search(line)
    ]
    assert not offenders, "use moonmind.codex.<filter>:\n" + "\n".join(offenders)


def test_installed_collection_site_runs_in_check_mode_on_the_local_inventory(
    installed_collection: Path, collection_work: Path, isolated_env: dict[str, str]
) -> None:
    """`ansible-playbook -i inventory/local moonmind.codex.site --check`: every task comes from
    the installed copy (the -vv task paths), none from the checkout, and nothing fails."""
    done = playbook(
        isolated_env,
        collection_work,
        "-i",
        str(REPO / "inventory" / "local"),
        f"{COLLECTION}.site",
        "--check",
        "-vv",
        timeout_s=900,
    )
    out = ok(done)
    recap = out.split("PLAY RECAP")[-1]
    assert re.search(r"^local\s+:.*failed=0", recap, re.MULTILINE), recap
    task_paths = re.findall(r"^task path: (\S+):\d+$", out, re.MULTILINE)
    assert task_paths, out[-3000:]
    outside = sorted({p for p in task_paths if not p.startswith(f"{installed_collection}/")})
    assert not outside, f"tasks not from the installed collection: {outside}"
    roles_run = {p.split("/roles/", 1)[1].split("/", 1)[0] for p in task_paths if "/roles/" in p}
    assert {"moonmind_codex_docker", "moonmind_codex_workers", "moonmind_codex_login_check"} <= (
        roles_run
    )


# --- the wheel ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="module")
def built_version() -> str:
    return f"{pyproject_version()}+{LOCAL_VERSION_LABEL}"


@pytest.fixture(scope="module")
def wheel(wheel_work: Path, built_version: str) -> Path:
    """pip's wheel of a copy of the sources git knows (tracked, or new and not ignored).

    A copy, so the build's own files (build/, *.egg-info) never land in the checkout that other
    runs share; its version carries a local label no source file spells.
    """
    listed = ok(
        run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    )
    src = wheel_work / "src"
    for name in filter(None, listed.split("\0")):
        origin = REPO / name
        if origin.is_file() and not origin.is_symlink():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, src / name)
    pyproject = src / "pyproject.toml"
    text, replaced = re.subn(
        r'^version = "[^"]+"$',
        f'version = "{built_version}"',
        pyproject.read_text(),
        count=1,
        flags=re.MULTILINE,
    )
    assert replaced == 1, "no version line in pyproject.toml's [project]"
    pyproject.write_text(text)
    out = wheel_work / "dist"
    ok(
        run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
            cwd=wheel_work,
            timeout_s=600,
        )
    )
    wheels = sorted(out.glob("*.whl"))
    assert [w.name for w in wheels] == [f"moonmind_codex-{built_version}-py3-none-any.whl"]
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, wheel_work: Path) -> Path:
    """A new venv with only the wheel and the dependencies it declares."""
    venv = wheel_work / "venv"
    ok(run([sys.executable, "-m", "venv", str(venv)], cwd=wheel_work))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    ok(
        run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
            cwd=wheel_work,
            env=env,
            timeout_s=900,
        )
    )
    return venv


def outside_checkout_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}


def test_wheel_holds_the_package_its_typing_marker_and_the_cli(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert {n.split("/", 1)[0] for n in names} == {"moonmind_codex", dist_info}
    assert "moonmind_codex/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names, "the wheel carries the Apache-2.0 text"
    assert "moonmind_codex/cli/app.py" in names
    # Every module and migration of the source tree: a subpackage or data file missing from the
    # build configuration would be left out of the wheel without an error.
    source = Path(__file__).resolve().parents[2] / "moonmind_codex"
    expected = {
        f"moonmind_codex/{p.relative_to(source).as_posix()}"
        for p in source.rglob("*")
        if p.suffix in (".py", ".mako") and "__pycache__" not in p.parts
    }
    assert expected - set(names) == set(), "left out of the wheel"
    assert re.search(
        r"^moonmind-codex = moonmind_codex\.cli\.app:main$", entry_points, re.MULTILINE
    )


def test_fresh_venv_cli_prints_the_version_from_package_metadata(
    fresh_venv: Path, wheel_work: Path, built_version: str
) -> None:
    metadata_version = ok(
        run(
            [
                str(fresh_venv / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('moonmind-codex'))",
            ],
            cwd=wheel_work,
            env=outside_checkout_env(),
        )
    ).strip()
    assert metadata_version == built_version
    printed = ok(
        run(
            [str(fresh_venv / "bin" / "moonmind-codex"), "--version"],
            cwd=wheel_work,
            env=outside_checkout_env(),
        )
    )
    assert printed.strip() == f"moonmind-codex {built_version}"


def test_fresh_venv_imports_the_installed_package_with_py_typed(
    fresh_venv: Path, wheel_work: Path, built_version: str
) -> None:
    script = (
        "import importlib.resources, json, moonmind_codex; "
        "print(json.dumps({'file': moonmind_codex.__file__, "
        "'version': moonmind_codex.__version__, "
        "'py_typed': importlib.resources.files('moonmind_codex').joinpath('py.typed').is_file()}))"
    )
    found = json.loads(
        ok(
            run(
                [str(fresh_venv / "bin" / "python"), "-c", script],
                cwd=wheel_work,
                env=outside_checkout_env(),
            )
        )
    )
    assert Path(found["file"]).is_relative_to(fresh_venv), found
    assert found["py_typed"] is True
    assert found["version"] == built_version
