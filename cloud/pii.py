"""Personal data in the cloud: pseudonymised at ingest before anything is stored or logged, masked for
readers without ``pii:read``, and found or erased per subject on request.

Why here and not only at the gateway: a gateway without a key (an old one, a third-party one speaking
the wire) sends personal values in clear. Ingest pseudonymises them with the cloud's key
(``TWIN_PII_KEY_FILE``); without a key it drops them and counts them. A value that already is a
pseudonym (``models.pii.is_pseudonym``) was made at the edge and is kept as it is.

**One key for edge and cloud.** The gateways' ``pii_key_file`` and the cloud's ``TWIN_PII_KEY_FILE``
hold the same per-deployment secret, so a driver has one pseudonym whichever side made it: data stays
linkable across gateways, and a subject request (which computes the pseudonym from the clear id with
the cloud's key) finds what the edge pseudonymised too. A gateway with a different key would create
pseudonyms no subject request can find; the key is part of a gateway's provisioning, like its
certificate. The HMAC also covers the tenant, so tenants never share pseudonyms.

**Which text points are personal.** Those the asset's type marks ``personal``. A text point the cloud
cannot classify (asset of unknown type, or a point its type does not list) is treated as personal:
pseudonymising a harmless state name is a small loss, storing a name in clear is not recoverable.

**Who sees them.** The ``pii:read`` permission (roles ``qa`` and ``admin``: QA investigates who had a
load during an excursion; operators and viewers run the fleet without needing to know). Readers without
it get ``models.pii.masked`` of every pseudonym in a response; readers with it see the pseudonym, never
the clear value, which the platform does not hold.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from cloud.registry import Asset, AssetTypeRecord, Registry
from cloud.store import Rows, SubjectHit, TimeSeriesStore
from models.catalogue import AssetType, builtin_types
from models.pii import is_pseudonym, masked, pseudonym
from models.wire import TextSeries, WireError, inflate

log = logging.getLogger("cloud.pii")

PII_READ = "pii:read"
PII_READERS = frozenset({"qa", "admin"})
"""Roles holding ``pii:read``."""
MAX_TEXT_CHARS = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""A lone surrogate (JSON allows ``\\ud800``) has no UTF-8 encoding: it could be neither hashed nor stored."""
_TYPES_MAX = 100_000
TYPES_TTL_S = 60.0
WITHHELD = b"(payload withheld: unreadable telemetry with text points may carry personal data)"


class PiiKeyError(RuntimeError):
    """The configured key file is missing or empty: refusing to start beats storing clear values."""


def load_key(path: str | Path | None) -> bytes | None:
    """The HMAC key from a file (whitespace stripped, as the gateway reads it), or None when not configured."""
    if not path:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise PiiKeyError(f"TWIN_PII_KEY_FILE={path}: cannot read the key ({exc.strerror})") from None
    if len(key) < 16:
        raise PiiKeyError(f"TWIN_PII_KEY_FILE={path}: the key must be at least 16 bytes")
    return key


def may_read(role: str) -> bool:
    return role in PII_READERS


def mask_value(value: Any) -> Any:
    """A pseudonym masked; anything else as it is (numbers, non-personal text)."""
    return masked(value) if isinstance(value, str) and is_pseudonym(value) else value


def mask_deep(obj: Any) -> Any:
    """Every pseudonym in a JSON-shaped value masked, wherever it sits (reported points, deltas, ...)."""
    if isinstance(obj, str):
        return mask_value(obj)
    if isinstance(obj, dict):
        return {k: mask_deep(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask_deep(v) for v in obj]
    return obj


class Pseudonymiser:
    """Ingest's side: turns the text series of a batch into what may be stored, counting what it did.

    Counters (in the dict it is given, so they appear in the ingest worker's metrics):
    ``personal_pseudonymised`` (arrived in clear, pseudonymised here), ``personal_kept`` (arrived as
    pseudonyms), ``personal_dropped`` (arrived in clear, no key), ``text_rejected`` (non-personal text that
    is too long or holds control characters; personal values that are not valid Unicode)."""

    def __init__(self, key: bytes | None, counters: dict[str, int] | None = None) -> None:
        self.key = key
        self.counters = counters if counters is not None else {}
        for k in ("personal_pseudonymised", "personal_kept", "personal_dropped", "text_rejected"):
            self.counters.setdefault(k, 0)
        self._types: dict[tuple[str, str], tuple[float, AssetType | None]] = {}

    # -- which points are personal -------------------------------------------------------------
    def asset_types(self, registry: Registry,
                    assets: Iterable[tuple[str, str]]) -> dict[tuple[str, str], AssetType | None]:
        """(tenant, asset) -> its asset type, from the registry (cached for a minute; None if unknown)."""
        now = time.monotonic()
        want = set(assets)
        out = {k: v[1] for k in want if (v := self._types.get(k)) is not None and now - v[0] < TYPES_TTL_S}
        ask = list(want - out.keys())
        if ask:
            with registry.session() as s:
                types = dict(((t, a), typ) for t, a, typ in s.execute(
                    select(Asset.tenant, Asset.id, Asset.type).where(tuple_(Asset.tenant, Asset.id).in_(ask))))
                own = {(r.tenant, r.id): r.definition for r in s.scalars(select(AssetTypeRecord).where(
                    AssetTypeRecord.tenant.in_({t for t, _ in ask})))}
            if len(self._types) + len(ask) > _TYPES_MAX:
                self._types.clear()
            for k in ask:
                out[k] = _resolve_type(k[0], types.get(k), own)
                self._types[k] = (now, out[k])
        return out

    @staticmethod
    def is_personal(asset_type: AssetType | None, point: str) -> bool:
        spec = asset_type.points.get(point) if asset_type is not None else None
        return True if spec is None else spec.personal

    # -- what may be stored --------------------------------------------------------------------
    def protect(self, tenant: str, values: list[str]) -> tuple[list[int], list[str]]:
        """(indices kept, stored values) for a personal point's values."""
        keep, out = [], []
        for i, v in enumerate(values):
            if is_pseudonym(v):
                self.counters["personal_kept"] += 1
            elif _SURROGATE.search(v):
                self.counters["text_rejected"] += 1  # dropped, not dead-lettered: it may still be personal
                continue
            elif self.key is None:
                self.counters["personal_dropped"] += 1
                continue
            else:
                v = pseudonym(self.key, tenant, v)
                self.counters["personal_pseudonymised"] += 1
            keep.append(i)
            out.append(v)
        return keep, out

    def prepare_batch(self, tenant: str, text: list[TextSeries],
                      types: dict[tuple[str, str], AssetType | None],
                      rows: Rows) -> tuple[list[TextSeries], list[tuple[str, TextSeries]]]:
        """The batch's text series as they may be stored (added to ``rows``), and those refused with the reason.

        The returned series replace the batch's own, so nothing downstream (rules, hooks, logs) ever holds a
        clear personal value. Reasons name the asset and point, never the value."""
        safe: list[TextSeries] = []
        refused: list[tuple[str, TextSeries]] = []
        for ser in text:
            personal = self.is_personal(types.get((tenant, ser.asset)), ser.point)
            if personal:
                idx, values = self.protect(tenant, ser.values)
                t_ns = [ser.t_ns[i] for i in idx]
            else:
                bad = next((i for i, v in enumerate(ser.values)
                            if len(v) > MAX_TEXT_CHARS or _CONTROL.search(v) or _SURROGATE.search(v)), None)
                if bad is not None:
                    self.counters["text_rejected"] += 1
                    # As the dead letter keeps it: a lone surrogate escaped, since it has no UTF-8 encoding.
                    kept = [v.encode("utf-8", "backslashreplace").decode() for v in ser.values]
                    refused.append((f"{ser.asset}/{ser.point}: text sample {bad} is longer than {MAX_TEXT_CHARS} "
                                    "characters or holds control characters or lone surrogates",
                                    TextSeries(asset=ser.asset, point=ser.point, t_ns=list(ser.t_ns), values=kept)))
                    continue
                t_ns, values = list(ser.t_ns), list(ser.values)
            if t_ns:
                safe.append(TextSeries(asset=ser.asset, point=ser.point, t_ns=t_ns, values=values))
                rows.extend_text(tenant, ser.asset, ser.point, t_ns, values, personal=personal)
        return safe, refused

    def scrub_payload(self, payload: bytes, registry: Registry | None = None) -> bytes:
        """A dead letter's payload without clear text values: every text value that is not a pseudonym is
        pseudonymised (or withheld without a key). Whether a point is personal is not known for a message
        that failed validation, so all text values are treated as personal. A payload that cannot be read
        but may hold text points is withheld whole; one that is neither JSON nor zlib is kept as it is.
        With the ``registry``, the numbers of points its asset's type marks personal (a person's glucose) are
        withheld too (``values``: null)."""
        try:
            raw = inflate(payload)
        except WireError:
            if payload[:1] == b"\x78":
                return WITHHELD  # compressed beyond the bound or corrupt: its content cannot be checked
            raw = payload  # too large, or not JSON at all: looked at as it is
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or JSON no parser should take (deep, 5,000-digit ints)
            # A "text" key may be spelt with escapes (\u0074ext): any escape counts as a possible text key.
            return WITHHELD if b'"text"' in raw or b"\\u" in raw else payload
        withheld = registry is not None and self._withhold_personal_numbers(obj, registry)
        text = obj.get("text") if isinstance(obj, dict) else None
        if text is None:
            return json.dumps(obj).encode() if withheld else payload
        if not isinstance(text, list):
            return WITHHELD
        for ser in text:
            if isinstance(ser, dict) and isinstance(ser.get("values"), list):
                ser["values"] = [self._scrub(str(obj.get("tenant")), v) for v in ser["values"]]
            elif isinstance(ser, dict):
                ser.pop("values", None)
            else:
                return WITHHELD
        return json.dumps(obj).encode()

    def _withhold_personal_numbers(self, obj: Any, registry: Registry) -> bool:
        """Null the ``values`` of numeric series whose point the asset's type marks personal; whether any was."""
        series = obj.get("series") if isinstance(obj, dict) else None
        if not isinstance(series, list):
            return False
        tenant = str(obj.get("tenant"))
        named = [s for s in series if isinstance(s, dict) and _nameable(s.get("asset"))
                 and isinstance(s.get("point"), str) and s.get("values") is not None]
        try:
            types = self.asset_types(registry, {(tenant, s["asset"][:256]) for s in named})
        except SQLAlchemyError:  # the registry is down: whose numbers these are is unknown, so none are kept
            for s in named:
                s["values"] = None
            return bool(named)
        found = False
        for s in named:
            t = types.get((tenant, s["asset"][:256]))
            spec = t.points.get(s["point"]) if t is not None else None
            if spec is not None and spec.personal:
                s["values"], found = None, True
        return found

    def _scrub(self, tenant: str, v: Any) -> Any:
        if not isinstance(v, str) or is_pseudonym(v):
            return v
        return pseudonym(self.key, tenant, v) if self.key is not None else "(withheld)"


def _resolve_type(tenant: str, type_id: str | None, own: dict[tuple[str, str], dict]) -> AssetType | None:
    if type_id is None:
        return None
    definition = own.get((tenant, type_id))
    if definition is not None:
        try:
            return AssetType.model_validate(definition)
        except ValueError:
            log.warning("asset type %s/%s does not validate: its text points are treated as personal",
                        tenant, type_id)
            return None
    return builtin_types().get(type_id)


# -- subject requests --------------------------------------------------------------------------
class NoKey(RuntimeError):
    """Subject requests need the key that made the pseudonyms."""


@dataclass
class SubjectReport:
    """Where a subject's data is: the pseudonym (never the clear id) and each (asset, point) holding it."""

    pseudonym: str
    hits: list[SubjectHit]

    @property
    def samples(self) -> int:
        return sum(h.count for h in self.hits)


class SubjectRequests:
    """Find and erase a data subject's personal data (GDPR art. 15 and 17) from the clear id they give.

    The clear id is used only to compute the pseudonym, in memory; it is not logged, stored or audited.
    Erasure is audited with the pseudonym and what was deleted, so the trail shows the request was honoured
    without recreating the data it removed."""

    def __init__(self, registry: Registry, store: TimeSeriesStore, key: bytes | None) -> None:
        self.registry, self.store, self.key = registry, store, key

    def pseudonym_of(self, tenant: str, subject: str) -> str:
        """The pseudonym of a clear id; a pseudonym (read off a record) is taken as it is."""
        if is_pseudonym(subject):
            return subject
        if self.key is None:
            raise NoKey("no TWIN_PII_KEY_FILE configured: the pseudonym of a subject cannot be computed")
        return pseudonym(self.key, tenant, subject)

    def find(self, tenant: str, clear_id: str) -> SubjectReport:
        pn = self.pseudonym_of(tenant, clear_id)
        return SubjectReport(pn, self.store.find_subject(tenant, pn))

    def erase(self, tenant: str, clear_id: str, actor: str, reason: str = "") -> SubjectReport:
        """Delete every sample of the subject; the report says what there was."""
        found = self.find(tenant, clear_id)
        erased = self.store.erase_subject(tenant, found.pseudonym)
        with self.registry.session() as s:
            self.registry.audit(s, tenant, actor, "subject.erase", f"subject:{found.pseudonym}", reason=reason,
                                before={"samples": found.samples, "where": [asdict(h) for h in found.hits]},
                                after={"samples": 0, "erased": erased})
        return found


def _nameable(asset: Any) -> bool:
    """Whether ``asset`` could name a registered asset, so asking the registry about it is safe: a string that
    UTF-8 can encode (no lone surrogates) and without NUL. Anything else is no one's: its numbers stay."""
    if not isinstance(asset, str) or "\x00" in asset:
        return False
    try:
        asset.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
