"""a shipment's consignee (e-mail, webhook and its secret, the organisation whose customer keys see it)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consignee', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('consignee_grantee', sa.String(length=64), nullable=True))
        batch_op.create_index('shipments_consignee', ['tenant', 'consignee_grantee'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.drop_index('shipments_consignee')
        batch_op.drop_column('consignee_grantee')
        batch_op.drop_column('consignee')
