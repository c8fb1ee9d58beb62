"""Copied logins fenced: every keyed fingerprint of a login each auth volume presented.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_fingerprints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("volume", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("shard", sa.Integer),
        sa.Column("auth_digest", sa.String(64)),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("fingerprint", "volume", name="uq_login_fingerprint_volume"),
    )
    op.create_index("ix_login_fingerprints_fingerprint", "login_fingerprints", ["fingerprint"])
    op.create_index("ix_login_fingerprints_volume", "login_fingerprints", ["volume"])


def downgrade() -> None:
    op.drop_table("login_fingerprints")
