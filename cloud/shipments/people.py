"""The people who sign quality decisions: accounts with a password hashed by scrypt (memory-hard: a stolen
registry does not give up passwords to a GPU farm cheaply), and the re-authentication every signature needs.

21 CFR 11.200(a): a signature not based on biometrics uses two distinct identification components (here the
login name and the password), both entered at the moment of signing; 11.100(a): it is unique to one individual
(one account per person, never reused: an account is disabled, not deleted). An API key says which client may
call the route; the password says which person signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from cloud.registry import Registry, User
from cloud.shipments.records import ShipmentConflict, ShipmentInvalid

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""16 MiB and ~50 ms per hash: OWASP's floor for scrypt, paid once per sign-in or signature."""
MIN_PASSWORD = 12
SIGNING_ROLES = ("qa", "qp", "admin")
ROLES = ("viewer", "operator", "qa", "qp", "admin")
"""``qp``: the qualified person, who signs the last stage of a release where the profile asks for one."""
_USERNAME = re.compile(r"[a-z][a-z0-9._-]{1,63}")


class SignatureRefused(PermissionError):
    """The signer could not be re-authenticated, or may not sign (HTTP 403): the decision is not taken."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def user_dict(u: User) -> dict[str, Any]:
    return {"username": u.username, "full_name": u.full_name, "role": u.role, "disabled": u.disabled,
            "created_ns": u.created_ns}


def signer_name(u: User) -> str:
    """How a signature names its signer: the printed name and the unique login (11.50(a)(1))."""
    return f"{u.full_name} ({u.username})"


def create_user(registry: Registry, tenant: str, actor: str, *, username: str, full_name: str, role: str,
                password: str) -> dict[str, Any]:
    """A person's account; the audit trail keeps who created it (never the password or its hash)."""
    if not _USERNAME.fullmatch(username):
        raise ShipmentInvalid("username: 2-64 characters, lowercase letters, digits, '.', '_' or '-', "
                              "starting with a letter")
    if role not in ROLES:
        raise ShipmentInvalid(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD or password.strip() != password:
        raise ShipmentInvalid(f"password: at least {MIN_PASSWORD} characters, no leading or trailing spaces")
    if not full_name.strip():
        raise ShipmentInvalid("full_name: required; it is printed with every signature")
    with registry.session() as s:
        if s.get(User, (tenant, username)) is not None:
            raise ShipmentConflict(f"user {username!r} exists; a login is never reused")
        u = User(tenant=tenant, username=username, full_name=full_name.strip(), role=role,
                 password_hash=hash_password(password), disabled=False, created_ns=time.time_ns())
        s.add(u)
        out = user_dict(u)
        registry.audit(s, tenant, actor, "user.create", f"user:{username}", after=out)
    return out


def list_users(registry: Registry, tenant: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    with registry.session() as s:
        return [user_dict(u) for u in s.scalars(select(User).where(User.tenant == tenant).order_by(User.username))]


def disable_user(registry: Registry, tenant: str, actor: str, username: str, reason: str) -> dict[str, Any]:
    """The person signs no more (left, or the password was disclosed); the account stays, so the login is never
    given to someone else and the signatures it made keep their name."""
    with registry.session() as s:
        u = s.get(User, (tenant, username))
        if u is None:
            raise LookupError(f"no user {username!r}")
        before = user_dict(u)
        u.disabled = True
        out = user_dict(u)
        registry.audit(s, tenant, actor, "user.disable", f"user:{username}", reason=reason, before=before, after=out)
    return out


def authenticate_signer(s: Any, tenant: str, username: str, password: str) -> User:
    """The person signing, re-authenticated now; SignatureRefused names why not (not which component was wrong,
    for a wrong login or password: that would tell a guesser which half to keep)."""
    u = s.get(User, (tenant, username))
    if u is None or u.disabled or not check_password(password, u.password_hash):
        if u is None:
            hash_password(password)  # the same time as a wrong password: no telling which logins exist
        raise SignatureRefused("signature refused: login name or password does not match an active account")
    if u.role not in SIGNING_ROLES:
        raise SignatureRefused(f"signature refused: {username} is {u.role}; only qa, qp or admin sign decisions")
    return u
