"""A canary job image for chosen shards: parsed, checked against the fleet, used per shard."""

from __future__ import annotations

from types import SimpleNamespace

import docker
import pytest

from moonmind_codex.engine.containers import (
    JobImageContainer,
    api_create_config,
    create_kwargs,
    docker_run_argv,
)
from moonmind_codex.settings import SettingsError, load_settings, parse_shard_job_images

CANARY = "registry.example.com:5000/moonmind-codex/job:codex-0.170.0"


def test_pairs_are_parsed_with_spaces_and_empty_items_ignored() -> None:
    assert parse_shard_job_images(f" 2={CANARY} , ,0=moonmind-codex/job@sha256:ab12 ") == {
        2: CANARY,
        0: "moonmind-codex/job@sha256:ab12",
    }
    assert parse_shard_job_images(None) == {} == parse_shard_job_images("")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("2", "'2' is not SHARD=IMAGE"),
        ("two=img", "'two=img' is not SHARD=IMAGE"),
        ("-1=img", "'-1=img' is not SHARD=IMAGE"),
        ("2=", "'2=' is not SHARD=IMAGE"),
        ("2=has space", "'2=has space' is not SHARD=IMAGE"),
        ("2=a,2=b", "shard 2 is given twice"),
    ],
)
def test_a_bad_pair_is_refused_naming_it(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match="MOONMIND_CODEX_SHARD_JOB_IMAGES") as failure:
        parse_shard_job_images(raw)
    assert message in str(failure.value)


def test_a_shard_outside_the_fleet_is_refused() -> None:
    env = {"MOONMIND_CODEX_SHARD_COUNT": "3", "MOONMIND_CODEX_SHARD_JOB_IMAGES": f"3={CANARY}"}
    with pytest.raises(SettingsError, match=r"names shard 3, out of range .*0\.\.2"):
        load_settings(env)


def test_only_the_canary_shards_get_the_canary_image_in_every_container_form() -> None:
    settings = load_settings(
        {
            "MOONMIND_CODEX_SHARD_COUNT": "3",
            "MOONMIND_CODEX_JOB_IMAGE": "moonmind-codex/job:0.169.0",
            "MOONMIND_CODEX_SHARD_JOB_IMAGES": f"2={CANARY}",
        }
    )
    assert [settings.job_image_for(n) for n in range(3)] == [
        "moonmind-codex/job:0.169.0",
        "moonmind-codex/job:0.169.0",
        CANARY,
    ]
    for number, image in ((1, "moonmind-codex/job:0.169.0"), (2, CANARY)):
        spec = JobImageContainer(
            role="probe", shard=settings.locate_shard(number), command=["true"], name="n"
        )
        assert create_kwargs(settings, spec)["image"] == image
        # The low-level form builds its config offline (a pinned API version, no engine call).
        offline = SimpleNamespace(api=docker.APIClient(version="1.41"))
        assert api_create_config(offline, settings, spec)["Image"] == image
        argv = docker_run_argv(settings, spec)
        assert image in argv and argv[argv.index(image) - 1] != "--env"
