"""Fuzzing settings: any string as the value of every ``MOONMIND_CODEX_*`` variable.

``load_settings(env)`` returns settings or raises only ``SettingsError`` naming the variable;
a ``*_FILE`` twin holding any bytes is read or refused the same way. Profiles and longer runs:
see ``tests/unit/fuzz_profiles.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from moonmind_codex.settings import (
    ENV_PREFIX,
    NON_RUNTIME_NAMES,
    Settings,
    SettingsError,
    load_settings,
)
from tests.unit.fuzz_profiles import examples

NAMES = sorted({f.upper() for f in Settings.__dataclass_fields__} | {"AUTH_VOLUME"})
BASE = {ENV_PREFIX + "ENV_FILE": ""}
values = st.one_of(
    st.text(max_size=40),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["", " ", "0", "-1", "1e400", "nan", "inf", "{shard}", "x{shard}", "sharded"]),
)


def load(env: dict[str, str], *names: str) -> Settings | None:
    try:
        return load_settings({**BASE, **env})
    except SettingsError as exc:
        message = str(exc)
        assert any(ENV_PREFIX + name in message for name in names), message
        return None


@pytest.mark.parametrize("name", NAMES)
@examples(100)
@given(value=values)
def test_any_value_of_one_variable(name: str, value: str) -> None:
    load({ENV_PREFIX + name: value}, name)


@examples(200)
@given(st.dictionaries(st.sampled_from(NAMES), values))
def test_any_values_of_many_variables(chosen: dict[str, str]) -> None:
    load({ENV_PREFIX + k: v for k, v in chosen.items()}, *chosen)


# Names the settings module knows but refuses with a message of their own: the fingerprint key
# is read from a file only (its bare name says so instead of "not a setting").
FILE_ONLY_SECRETS = {"FINGERPRINT_KEY"}


@examples(100)
@given(st.text(min_size=1, max_size=20))
# Found by the random search: a file-only secret's bare name (the oracle once called it unknown);
# names match case-sensitively, so a lower-case setting name is unknown.
@example("FINGERPRINT_KEY")
@example("shard")
@example("SHARD_FILE_FILE")
def test_an_unknown_variable_is_named(suffix: str) -> None:
    # Settings, and the names the settings module knows are not settings (build-time, per job).
    known = set(NAMES) | set(NON_RUNTIME_NAMES) | FILE_ONLY_SECRETS
    if suffix.removesuffix("_FILE") in known or suffix in known:
        return
    with pytest.raises(SettingsError, match="is not a moonmind-codex setting"):
        load_settings({**BASE, ENV_PREFIX + suffix: "1"})


@pytest.mark.parametrize("name", ["BROKER_URL", "DATABASE_URL", "SHARD_COUNT", "JOB_UID"])
@examples(50)
@given(content=st.binary(max_size=64))
def test_any_bytes_in_a_file_twin(name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "value")
        path.write_bytes(content)
        load({ENV_PREFIX + name + "_FILE": str(path)}, name)


@examples(50)
@given(st.text(max_size=40))
def test_any_path_in_a_file_twin(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        load({ENV_PREFIX + "BROKER_URL_FILE": str(Path(directory, "f" + text))}, "BROKER_URL")


@examples(100)
@given(
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=1, max_value=2**32 - 2),
    st.floats(min_value=1e-3, max_value=1e9),
)
def test_good_values_are_accepted(count: int, uid: int, timeout: float) -> None:
    settings = load(
        {
            ENV_PREFIX + "SHARD_COUNT": str(count),
            ENV_PREFIX + "SHARD": str(count - 1),
            ENV_PREFIX + "JOB_UID": f" {uid} ",
            ENV_PREFIX + "JOB_TIMEOUT_SECONDS": repr(timeout),
        }
    )
    assert settings is not None
    assert (settings.shard_count, settings.shard, settings.job_uid) == (count, count - 1, uid)
    assert settings.job_timeout_seconds == timeout
