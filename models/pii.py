"""Pseudonyms for personal data (a driver, a patient): a keyed HMAC, so the same person maps to the
same pseudonym (data stays linkable for the business) but nobody without the key can go back, and a
subject's data can be found again from the clear value for access or erasure requests.

The gateway pseudonymises before anything leaves it; ingest pseudonymises whatever still arrives in
clear. Both use this function, so a pseudonym made at the edge and one made at ingest agree.
"""

from __future__ import annotations

import hashlib
import hmac
import re

PREFIX = "pn_"
_PATTERN = re.compile(r"^pn_[0-9a-f]{32}$")


def pseudonym(key: bytes, tenant: str, value: str) -> str:
    digest = hmac.new(key, f"{tenant}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:32]


def is_pseudonym(value: str) -> bool:
    return bool(_PATTERN.match(value))


def masked(value: str) -> str:
    """What a reader without ``pii:read`` sees: enough to tell two subjects apart on screen, no more."""
    return value[:7] + "…" if is_pseudonym(value) else "…"
