"""Covering indexes for the usage of one user or one group in a period.

A quota check reads the sessions of a user and of each of their groups that overlap the period: the
running ones (``stop IS NULL``) and those stopped after its start. These indexes hold, after the
user or group and the stop time, every column the usage needs (start, cpu, memory, GPUs): both reads
are range scans of the index alone, however long the ledger's history. Before, the group's index
led to every session the group ever had, each looked up in the table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

USAGE = ["stop", "start", "cpu", "memory_bytes", "gpu"]


def upgrade() -> None:
    op.create_index("ix_sessions_user_usage", "sessions", ["user", *USAGE])
    op.create_index("ix_sessions_group_usage", "sessions", ["group", *USAGE])


def downgrade() -> None:
    op.drop_index("ix_sessions_group_usage", "sessions")
    op.drop_index("ix_sessions_user_usage", "sessions")
