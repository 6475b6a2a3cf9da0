"""electronic signatures (people, public keys; the HMAC secret leaves the database) and a lot's product profile

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 17:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=300), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('tenant', 'username')
    )
    op.create_table('signing_public_keys',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.Column('retired_ns', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('tenant', 'id')
    )
    op.drop_table('signing_keys')  # a secret beside the records it signs proves nothing to an auditor
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('profile', sa.String(length=64), nullable=True))
    with op.batch_alter_table('batch_decisions', schema=None) as batch_op:
        batch_op.alter_column('signature', existing_type=sa.String(length=64), type_=sa.String(length=256),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('batch_decisions', schema=None) as batch_op:
        batch_op.alter_column('signature', existing_type=sa.String(length=256), type_=sa.String(length=64),
                              existing_nullable=False)
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('profile')
    op.create_table('signing_keys',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant')
    )
    op.drop_table('signing_public_keys')
    op.drop_table('users')
