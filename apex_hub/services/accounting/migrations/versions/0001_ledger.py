"""The ledger: sessions, append-only session events, APEL exports, service state.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("user_slug", sa.String(63), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("pod", sa.String(253), nullable=False),
        sa.Column("group", sa.String(255), nullable=True),
        sa.Column("profile", sa.String(255), nullable=False),
        sa.Column("image", sa.String(1024), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.Float(), nullable=False),
        sa.Column("pvc_bytes", sa.BigInteger(), nullable=True),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("stop", sa.DateTime(), nullable=True),
        sa.Column("stop_reason", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_sessions_user", "sessions", ["user"])
    op.create_index("ix_sessions_group", "sessions", ["group"])
    op.create_index("ix_sessions_start", "sessions", ["start"])
    op.create_index("ix_sessions_stop", "sessions", ["stop"])
    op.create_index("ix_sessions_user_server_start", "sessions", ["user", "server", "start"])
    op.create_table(
        "session_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.id"), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_index("ix_session_events_session_id", "session_events", ["session_id"])
    op.create_table(
        "apel_exports",
        sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.id"), primary_key=True),
        sa.Column("file", sa.String(255), nullable=False),
        sa.Column("exported", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "service_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_state")
    op.drop_table("apel_exports")
    op.drop_index("ix_session_events_session_id", "session_events")
    op.drop_table("session_events")
    for name in (
        "ix_sessions_user_server_start",
        "ix_sessions_stop",
        "ix_sessions_start",
        "ix_sessions_group",
        "ix_sessions_user",
    ):
        op.drop_index(name, "sessions")
    op.drop_table("sessions")
