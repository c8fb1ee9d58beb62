"""The credentials filter: a missing or empty credential fails naming the file and the fix,
except in check mode, where the credentials role has not made it yet."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from moonmind_codex_secrets import (
    CHECK_MODE_PLACEHOLDER,
    FilterModule,
    MissingCredentialError,
    secret_or_preview,
)


def test_a_credential_reads_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "codex-producer"
    path.write_text("s3cret-value\n")
    assert secret_or_preview(str(path)) == "s3cret-value"
    assert secret_or_preview(str(path), check_mode=True) == "s3cret-value"


def test_a_missing_credential_fails_naming_it_and_the_playbook(tmp_path: Path) -> None:
    path = tmp_path / "broker-passwords" / "codex-shard-3"
    with pytest.raises(MissingCredentialError) as failure:
        secret_or_preview(str(path))
    assert str(path) in str(failure.value)
    assert "run playbooks/site.yml" in str(failure.value)


def test_in_check_mode_a_credential_not_made_yet_is_a_placeholder(tmp_path: Path) -> None:
    missing = tmp_path / "codex-shard-3"
    assert secret_or_preview(str(missing), check_mode=True) == CHECK_MODE_PLACEHOLDER
    assert not missing.exists()


@pytest.mark.parametrize("check_mode", [False, True])
def test_an_empty_credential_fails_even_in_check_mode(tmp_path: Path, check_mode: bool) -> None:
    path = tmp_path / "codex-producer"
    path.write_text(" \n")
    with pytest.raises(MissingCredentialError, match="is empty: delete it"):
        secret_or_preview(str(path), check_mode=check_mode)


def test_the_filter_is_exported_to_ansible() -> None:
    assert FilterModule().filters() == {"moonmind_codex_secret_or_preview": secret_or_preview}
