"""shipments: consignments, custody legs, batches, excursions and signed quality decisions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 02:21:02.763610
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('excursions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('asset', sa.String(length=128), nullable=False),
    sa.Column('start_ns', sa.BigInteger(), nullable=False),
    sa.Column('end_ns', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('alert_id', sa.Integer(), nullable=True),
    sa.Column('recorded_ns', sa.BigInteger(), nullable=False),
    sa.Column('recorded_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('excursions', schema=None) as batch_op:
        batch_op.create_index('excursions_alert', ['tenant', 'alert_id'], unique=True)
        batch_op.create_index('excursions_asset_time', ['tenant', 'asset', 'start_ns'], unique=False)

    op.create_table('signing_keys',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant')
    )
    op.create_table('shipments',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('profile', sa.String(length=64), nullable=False),
    sa.Column('origin_site', sa.String(length=64), nullable=False),
    sa.Column('destination_site', sa.String(length=64), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('tenant', 'id')
    )
    op.create_table('batches',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('lot', sa.String(length=128), nullable=False),
    sa.Column('shipment', sa.String(length=64), nullable=False),
    sa.Column('product', sa.String(length=200), nullable=False),
    sa.Column('quantity', sa.Float(), nullable=False),
    sa.Column('unit', sa.String(length=32), nullable=False),
    sa.Column('loaded_ns', sa.BigInteger(), nullable=True),
    sa.Column('unloaded_ns', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_ns', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['tenant', 'shipment'], ['shipments.tenant', 'shipments.id'], ),
    sa.PrimaryKeyConstraint('tenant', 'lot')
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('batches_shipment', ['tenant', 'shipment'], unique=False)

    op.create_table('custody_legs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('shipment', sa.String(length=64), nullable=False),
    sa.Column('asset', sa.String(length=128), nullable=False),
    sa.Column('point', sa.String(length=128), nullable=False),
    sa.Column('from_ns', sa.BigInteger(), nullable=False),
    sa.Column('to_ns', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['tenant', 'shipment'], ['shipments.tenant', 'shipments.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('custody_legs', schema=None) as batch_op:
        batch_op.create_index('custody_legs_asset_time', ['tenant', 'asset', 'from_ns'], unique=False)
        batch_op.create_index('custody_legs_shipment', ['tenant', 'shipment'], unique=False)

    op.create_table('batch_decisions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('lot', sa.String(length=128), nullable=False),
    sa.Column('meaning', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('signer', sa.String(length=200), nullable=False),
    sa.Column('signed_ns', sa.BigInteger(), nullable=False),
    sa.Column('record', sa.JSON(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['tenant', 'lot'], ['batches.tenant', 'batches.lot'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('batch_decisions', schema=None) as batch_op:
        batch_op.create_index('batch_decisions_lot', ['tenant', 'lot'], unique=False)

    op.create_table('batch_excursions',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('lot', sa.String(length=128), nullable=False),
    sa.Column('excursion_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['excursion_id'], ['excursions.id'], ),
    sa.ForeignKeyConstraint(['tenant', 'lot'], ['batches.tenant', 'batches.lot'], ),
    sa.PrimaryKeyConstraint('tenant', 'lot', 'excursion_id')
    )


def downgrade() -> None:
    op.drop_table('batch_excursions')
    with op.batch_alter_table('batch_decisions', schema=None) as batch_op:
        batch_op.drop_index('batch_decisions_lot')

    op.drop_table('batch_decisions')
    with op.batch_alter_table('custody_legs', schema=None) as batch_op:
        batch_op.drop_index('custody_legs_shipment')
        batch_op.drop_index('custody_legs_asset_time')

    op.drop_table('custody_legs')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('batches_shipment')

    op.drop_table('batches')
    op.drop_table('shipments')
    op.drop_table('signing_keys')
    with op.batch_alter_table('excursions', schema=None) as batch_op:
        batch_op.drop_index('excursions_asset_time')
        batch_op.drop_index('excursions_alert')

    op.drop_table('excursions')
