"""commands: what was asked of a device through its gateway, its lifecycle, who asked and why

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('commands',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('asset', sa.String(length=128), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('value', sa.JSON(), nullable=True),
    sa.Column('issued_by', sa.String(length=200), nullable=False),
    sa.Column('why', sa.Text(), nullable=False),
    sa.Column('confirmed', sa.Boolean(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('issued_ns', sa.BigInteger(), nullable=False),
    sa.Column('expires_ns', sa.BigInteger(), nullable=False),
    sa.Column('delivered_ns', sa.BigInteger(), nullable=True),
    sa.Column('finished_ns', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('tenant', 'id')
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.create_index('commands_asset', ['tenant', 'asset', 'issued_ns'], unique=False)
        batch_op.create_index('commands_outstanding', ['tenant', 'gateway', 'state'], unique=False)


def downgrade() -> None:
    op.drop_table('commands')
