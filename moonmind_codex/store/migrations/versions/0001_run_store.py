"""Run store: runs, phase attempts, sticky queue assignments.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spec_workflow_runs",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("repository", sa.String(512)),
        sa.Column("affinity_key", sa.String(512)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(255)),
        sa.Column("shard", sa.Integer),
        sa.Column("volume", sa.String(255)),
        sa.Column("host", sa.String(255)),
        sa.Column("preflight_status", sa.String(16)),
        sa.Column("preflight_message", sa.Text),
        sa.Column("chain_id", sa.String(255)),
        sa.Column("definition", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_runs_status", "spec_workflow_runs", ["status"])
    op.create_index("ix_runs_shard", "spec_workflow_runs", ["shard"])
    op.create_table(
        "spec_workflow_task_states",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(128),
            sa.ForeignKey("spec_workflow_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("phase", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("task_id", sa.String(255)),
        sa.Column("container_name", sa.String(255)),
        sa.Column("exit_code", sa.Integer),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.Column("log_path", sa.String(1024)),
        sa.Column("artifact_path", sa.String(1024)),
        sa.UniqueConstraint("run_id", "phase", "attempt", name="uq_phase_attempt"),
    )
    op.create_index("ix_spec_workflow_task_states_run_id", "spec_workflow_task_states", ["run_id"])
    op.create_table(
        "run_queue_assignments",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_queue_assignments")
    op.drop_table("spec_workflow_task_states")
    op.drop_table("spec_workflow_runs")
