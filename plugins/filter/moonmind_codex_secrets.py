"""Reading one of the fleet's credentials on the controller, by path.

The broker role needs every broker user's password at once (to hash them into one file); a
``lookup`` cannot be mapped over a list, and ``query`` with ``errors='ignore'`` drops missing
files and would pair the wrong users with the wrong passwords. This filter reads one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# What a credential the credentials role has not made yet reads as in check mode, where that
# role writes nothing: the preview shows the change without a real secret.
CHECK_MODE_PLACEHOLDER = "not-made-yet-in-check-mode"


class MissingCredentialError(ValueError):
    pass


def secret_or_preview(path: str, check_mode: bool = False) -> str:
    """The stripped content of ``path``; in check mode a placeholder when it does not exist."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if check_mode:
            return CHECK_MODE_PLACEHOLDER
        raise MissingCredentialError(
            f"credential {path} does not exist: run playbooks/site.yml, whose first play makes "
            "the fleet's credentials (roles/moonmind_codex_credentials), or restore that "
            "directory from its backup"
        ) from None
    if not text:
        raise MissingCredentialError(
            f"credential {path} is empty: delete it and run playbooks/site.yml to make a new one"
        )
    return text


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"moonmind_codex_secret_or_preview": secret_or_preview}
