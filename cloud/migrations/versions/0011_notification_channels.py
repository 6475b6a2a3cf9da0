"""notification channels: a webhook's format (json, slack, teams, email) and its route (minimum severity, asset group)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhooks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='json', nullable=False))
        batch_op.add_column(sa.Column('min_severity', sa.String(length=16), server_default='low', nullable=False))
        batch_op.add_column(sa.Column('asset_group', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webhooks', schema=None) as batch_op:
        batch_op.drop_column('asset_group')
        batch_op.drop_column('min_severity')
        batch_op.drop_column('kind')
