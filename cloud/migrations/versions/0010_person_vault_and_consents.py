"""people: the identity vault (identities encrypted, the key outside the database) and consents (who may see
what of a person, from when to when)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('identity_vault',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'subject')
    )
    op.create_table('person_consents',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=False),
    sa.Column('grantee', sa.String(length=64), nullable=False),
    sa.Column('points', sa.JSON(), nullable=False),
    sa.Column('from_ns', sa.BigInteger(), nullable=False),
    sa.Column('to_ns', sa.BigInteger(), nullable=True),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_person_consents_subject', 'person_consents', ['tenant', 'subject'], unique=False)
    op.create_index('ix_person_consents_grantee', 'person_consents', ['tenant', 'grantee'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_person_consents_grantee', table_name='person_consents')
    op.drop_index('ix_person_consents_subject', table_name='person_consents')
    op.drop_table('person_consents')
    op.drop_table('identity_vault')
