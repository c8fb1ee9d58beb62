"""The shard value: one shard as the fleet knows it (standard library only, cheap to import)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Shard"]


@dataclass(frozen=True)
class Shard:
    """One shard as the fleet knows it: where its login lives and which queue feeds it.

    Made only by :meth:`Settings.locate_shard` (or :attr:`Settings.served_shard`), so every
    message, audit record, container label and job spec names the same four values.
    """

    number: int
    queue: str
    volume: str
    host: str

    def __str__(self) -> str:
        return f"shard {self.number} (volume {self.volume} on host {self.host})"

    def as_fields(self) -> dict[str, int | str]:
        """The flat JSON form used by results, audit records and labels."""
        return {"shard": self.number, "queue": self.queue, "volume": self.volume, "host": self.host}
