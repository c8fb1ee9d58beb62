"""Shard health: a login the server rejected quarantines its shard; each change is an event.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shard_health",
        sa.Column("volume", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255)),
        sa.Column("shard", sa.Integer),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("auth_digest", sa.String(64)),
        sa.Column("run_id", sa.String(128)),
        sa.Column("phase", sa.String(128)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_shard_health_status", "shard_health", ["status"])
    op.create_table(
        "shard_health_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("volume", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("shard", sa.Integer),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("auth_digest", sa.String(64)),
        sa.Column("run_id", sa.String(128)),
        sa.Column("phase", sa.String(128)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_shard_health_events_volume", "shard_health_events", ["volume"])


def downgrade() -> None:
    op.drop_table("shard_health_events")
    op.drop_table("shard_health")
