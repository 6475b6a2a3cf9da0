"""machine profiles (ISO 20816 class, bearing, speed per machine) and raw-waveform snapshots

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 20:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('machine_profiles',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('asset', sa.String(length=128), nullable=False),
    sa.Column('profile', sa.JSON(), nullable=False),
    sa.Column('updated_ns', sa.BigInteger(), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'asset')
    )
    op.create_table('waveform_snapshots',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('asset', sa.String(length=128), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=300), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('t0_ns', sa.BigInteger(), nullable=False),
    sa.Column('t1_ns', sa.BigInteger(), nullable=False),
    sa.Column('received_ns', sa.BigInteger(), nullable=False),
    sa.Column('sample_rate_hz', sa.Float(), nullable=False),
    sa.Column('channels', sa.Integer(), nullable=False),
    sa.Column('blocks', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('waveform_snapshots', schema=None) as batch_op:
        batch_op.create_index('waveform_snapshots_asset', ['tenant', 'asset', 't0_ns'], unique=False)


def downgrade() -> None:
    op.drop_table('waveform_snapshots')
    op.drop_table('machine_profiles')
