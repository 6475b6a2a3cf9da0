"""gateway epochs: bounded per-(gateway, epoch) deduplication state instead of one ingest_seen row per batch

A gateway whose outbox was wiped starts its sequence again at 0 under a new epoch; ingest keeps, per (gateway,
epoch), the highest sequence written and a bitmap of the window below it (cloud/ingest.py, SeqWindow). What
``ingest_seen`` held becomes the state of epoch "" (gateways from before epochs send none). The gateway row
gains its current epoch, its clock offset and its count of future-stamped samples.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

WINDOW = 4096
"""Sequences kept below the high-water mark (cloud/ingest.py SEQ_WINDOW at the time of this migration)."""


def upgrade() -> None:
    with op.batch_alter_table('gateways', schema=None) as batch_op:
        batch_op.add_column(sa.Column('epoch', sa.String(length=32), server_default='', nullable=False))
        batch_op.add_column(sa.Column('epoch_since_ns', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('clock_offset_ns', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('clock_checked_ns', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('future_samples', sa.BigInteger(), server_default='0', nullable=False))

    epochs = op.create_table('ingest_epochs',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.String(length=32), nullable=False),
    sa.Column('high_seq', sa.BigInteger(), nullable=False),
    sa.Column('window', sa.LargeBinary(), nullable=False),
    sa.Column('missing', sa.BigInteger(), nullable=False),
    sa.Column('first_seen_ns', sa.BigInteger(), nullable=False),
    sa.Column('last_seen_ns', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'gateway', 'epoch')
    )

    # What ingest_seen says, as the window of epoch "": the last WINDOW sequences of each gateway.
    conn = op.get_bind()
    seen = sa.table('ingest_seen', sa.column('tenant'), sa.column('gateway'), sa.column('seq'))
    gateways = sa.table('gateways', sa.column('tenant'), sa.column('id'), sa.column('missing_seqs'))
    missing = {(t, g): m or 0 for t, g, m in conn.execute(sa.select(gateways.c.tenant, gateways.c.id,
                                                                     gateways.c.missing_seqs))}
    highs = conn.execute(sa.select(seen.c.tenant, seen.c.gateway, sa.func.max(seen.c.seq))
                         .group_by(seen.c.tenant, seen.c.gateway)).all()
    now = time.time_ns()
    rows = []
    for tenant, gateway, high in highs:
        bits = 0
        for (seq,) in conn.execute(sa.select(seen.c.seq).where(
                seen.c.tenant == tenant, seen.c.gateway == gateway, seen.c.seq > high - WINDOW)):
            bits |= 1 << (high - seq)
        rows.append({'tenant': tenant, 'gateway': gateway, 'epoch': '', 'high_seq': high,
                     'window': bits.to_bytes(WINDOW // 8, 'little'), 'missing': missing.get((tenant, gateway), 0),
                     'first_seen_ns': now, 'last_seen_ns': now})
    if rows:
        op.bulk_insert(epochs, rows)
    op.drop_table('ingest_seen')


def downgrade() -> None:
    seen = op.create_table('ingest_seen',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'gateway', 'seq')
    )
    conn = op.get_bind()
    epochs = sa.table('ingest_epochs', sa.column('tenant'), sa.column('gateway'), sa.column('epoch'),
                      sa.column('high_seq'), sa.column('window'))
    rows = []
    for tenant, gateway, high, window in conn.execute(sa.select(
            epochs.c.tenant, epochs.c.gateway, epochs.c.high_seq, epochs.c.window).where(epochs.c.epoch == '')):
        bits = int.from_bytes(window, 'little')
        rows += [{'tenant': tenant, 'gateway': gateway, 'seq': high - i} for i in range(bits.bit_length())
                 if bits >> i & 1 and high - i >= 0]
    if rows:
        op.bulk_insert(seen, rows)
    op.drop_table('ingest_epochs')
    with op.batch_alter_table('gateways', schema=None) as batch_op:
        batch_op.drop_column('future_samples')
        batch_op.drop_column('clock_checked_ns')
        batch_op.drop_column('clock_offset_ns')
        batch_op.drop_column('epoch_since_ns')
        batch_op.drop_column('epoch')
