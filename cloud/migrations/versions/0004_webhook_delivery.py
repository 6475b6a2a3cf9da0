"""webhook delivery: durable per-delivery retry state, and each webhook's creation, rotation and last outcome

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhooks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('created_ns', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('rotated_ns', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('last_delivered_ns', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('last_error', sa.Text(), server_default='', nullable=False))
        batch_op.create_index('webhooks_tenant', ['tenant'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('webhook_id', sa.Integer(), nullable=False),
    sa.Column('event', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.Column('next_try_ns', sa.BigInteger(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('webhook_deliveries_due', ['state', 'tenant', 'next_try_ns'], unique=False)
        batch_op.create_index('webhook_deliveries_webhook', ['webhook_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('webhook_deliveries_webhook')
        batch_op.drop_index('webhook_deliveries_due')
    op.drop_table('webhook_deliveries')

    with op.batch_alter_table('webhooks', schema=None) as batch_op:
        batch_op.drop_index('webhooks_tenant')
        batch_op.drop_column('last_error')
        batch_op.drop_column('last_delivered_ns')
        batch_op.drop_column('rotated_ns')
        batch_op.drop_column('created_ns')
