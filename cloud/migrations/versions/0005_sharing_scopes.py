"""sharing scopes: assets a tenant shares with an outside organisation (a grantee), and the grantee a customer key
speaks for

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('shares',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('grantee', sa.String(length=64), nullable=False),
    sa.Column('asset', sa.String(length=128), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'grantee', 'asset')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('grantee', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('grantee')
    op.drop_table('shares')
