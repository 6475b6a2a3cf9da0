"""gateway epochs: bounded per-(gateway, epoch) deduplication state instead of one ingest_seen row per batch

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled in by the gateway-epoch work (issue 17, item 1)."""


def downgrade() -> None:
    """Filled in by the gateway-epoch work (issue 17, item 1)."""
