"""Commands to devices, and desired state carried to them: the cloud half of the actuator loop.

A command (set a writable property, a command the asset type declares, a gateway rebirth, the acknowledgement of an
alarm the device raised itself: ``acknowledge_alarm``, when an operator acknowledges its alert) is checked against the
asset's type (declared, right type, in range), stored with who issued it and why, and put in its gateway's
queue: every outstanding command of a gateway, published retained on its ``commands`` topic, so a gateway that
is offline gets them when it connects — for as long as their TTL lasts. The gateway reports delivered, then
succeeded, failed or expired (``commands/reported``); each report moves the stored command forward (never back)
and goes to WebSocket clients; a finished command leaves the queue. What nobody confirmed by its TTL is expired
here (``expire_due``), and leaves the queue too, so a gateway that comes back later never runs it.

Desired state uses the same path: a desired value of a writable property that the device does not report yet
becomes a ``set`` command; the twin's delta closes when the device reports the value.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from cloud.registry import Asset, CommandRecord, CustodyLeg, Registry, Shipment
from models import topics
from models.catalogue import AssetType, get_type
from models.wire import TERMINAL_STATES, Command, CommandQueue, CommandReport, WireError, decode, encode

log = logging.getLogger("cloud.commands")

OUTSTANDING = ("pending", "delivered")
ACK_TTL_S = 86400.0
"""How long the acknowledgement of a device's alarm waits for its gateway: it stays true while the condition waits
for one (a condition acknowledged there meanwhile answers BadConditionBranchAlreadyAcked: failed, and harmless)."""
_ORDER = {"pending": 0, "delivered": 1, "succeeded": 2, "failed": 2, "expired": 2}
_EXPIRED_UNDELIVERED = "not delivered to its gateway within its TTL"
_EXPIRED_DELIVERED = "delivered, but no result from the gateway within its TTL"
_EXPIRED_HERE = (_EXPIRED_UNDELIVERED, _EXPIRED_DELIVERED)


class InvalidCommand(ValueError):
    """A command the asset cannot take; ``field`` names what was wrong (for a 422 naming it)."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(msg)
        self.field = field


class NoGateway(LookupError):
    """The asset exists but no gateway serves it: nothing could carry the command."""


class NeedsConfirmation(InvalidCommand):
    """The value would take a load outside its profile: only with ``confirm``."""

    def __init__(self, msg: str) -> None:
        super().__init__("confirm", msg)


class RateLimited(RuntimeError):
    def __init__(self, retry_after_s: float, msg: str) -> None:
        super().__init__(msg)
        self.retry_after_s = retry_after_s


def check_set(atype: AssetType, prop: object, value: object, field: str = "value") -> float:
    """A desired value for ``prop`` as the device takes it; InvalidCommand naming the field otherwise."""
    if not isinstance(prop, str) or prop not in atype.writable:
        declared = ", ".join(sorted(atype.writable)) or "none"
        raise InvalidCommand("property", f"{prop!r} is not a writable property of {atype.id} (writable: {declared})")
    try:
        return atype.writable[prop].check(value)
    except ValueError as exc:
        raise InvalidCommand(field, f"{prop}: {exc}") from None


def command_out(r: CommandRecord) -> dict[str, Any]:
    return {"id": r.id, "asset": r.asset, "gateway": r.gateway, "action": r.action, "args": r.args,
            "state": r.state, "reason": r.reason, "value": r.value, "issued_by": r.issued_by, "why": r.why,
            "confirmed": r.confirmed, "evidence": r.evidence, "issued_ns": r.issued_ns, "expires_ns": r.expires_ns,
            "delivered_ns": r.delivered_ns, "finished_ns": r.finished_ns}


class CommandService:
    """``publish(topic, payload, retain)`` is the broker link (None: this process cannot reach gateways);
    ``notify(tenant, command)`` tells live clients. At most ``rate_per_min`` commands per asset a minute."""

    def __init__(self, registry: Registry, publish: Callable[[str, bytes, bool], bool] | None,
                 notify: Callable[[str, dict], None], rate_per_min: int = 30, sweep_s: float = 1.0) -> None:
        self.registry = registry
        self.publish = publish
        self.notify = notify
        self.rate_per_min = rate_per_min
        self.sweep_s = sweep_s
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters = {"commands_issued": 0, "commands_reports": 0, "commands_expired": 0}

    # -- issuing ----------------------------------------------------------------------------------

    def _asset(self, tenant: str, asset: str) -> tuple[str | None, str | None]:
        """The asset's type id and gateway; LookupError for an unknown asset."""
        with self.registry.session() as s:
            a = s.get(Asset, (tenant, asset))
            if a is None:
                raise LookupError(f"no asset {asset!r}")
            return a.type, a.gateway

    def asset_type(self, tenant: str, asset: str) -> tuple[AssetType, str | None]:
        """The asset's type and gateway; LookupError for an unknown asset (or one of a type nobody knows)."""
        type_id, gateway = self._asset(tenant, asset)
        try:
            return get_type(type_id or ""), gateway
        except KeyError:
            raise LookupError(f"asset {asset!r} is of type {type_id!r}, which declares nothing writable") from None

    def _checked(self, tenant: str, asset: str, action: str, args: dict[str, Any],
                 confirmed: bool) -> tuple[dict[str, Any], str | None, str]:
        """The command's arguments as stored, the asset's gateway, and why a setpoint is outside the profile of the
        load in custody (confirmed). ``acknowledge`` (a device's own alarm, ``acknowledge_alarm``) needs no
        declaration of the asset's type; ``set`` and ``command`` are checked against it."""
        if action == "acknowledge":
            condition = args.get("condition")
            if not isinstance(condition, str) or not condition:
                raise InvalidCommand("condition", "an acknowledgement names the condition")
            return ({"condition": condition, "comment": str(args.get("comment") or "")[:2000]},
                    self._asset(tenant, asset)[1], "")
        atype, gateway = self.asset_type(tenant, asset)
        if action == "set":
            args = {"property": args.get("property"), "value": check_set(atype, args.get("property"),
                                                                         args.get("value"))}
            outside = ""
            if atype.writable[args["property"]].guard == "load_profile":
                outside = self.outside_load_profile(tenant, asset, args["value"])
                if outside and not confirmed:
                    raise NeedsConfirmation(f"{outside}: send confirm: true to apply it anyway")
            return args, gateway, outside
        if action == "command":
            name = args.get("name")
            if not isinstance(name, str) or name not in atype.commands:
                declared = ", ".join(sorted(atype.commands)) or "none"
                raise InvalidCommand("name", f"{name!r} is not a command of {atype.id} (commands: {declared})")
            return {"name": name}, gateway, ""
        return {}, gateway, ""

    def issue(self, tenant: str, asset: str, action: str, args: dict[str, Any], *, ttl_s: float, actor: str,
              why: str = "", confirmed: bool = False, evidence: dict | None = None) -> dict[str, Any]:
        """Check, store, audit and queue a command; the stored command. InvalidCommand, LookupError, NoGateway,
        RateLimited say why not."""
        args, gateway, outside = self._checked(tenant, asset, action, args, confirmed)
        if gateway is None:
            raise NoGateway(f"asset {asset!r} has no gateway to carry the command")
        if action != "acknowledge":  # at most one per alert: nothing to meter
            self._take_rate(tenant, asset)
        now = time.time_ns()
        row = CommandRecord(tenant=tenant, id=secrets.token_hex(8), asset=asset, gateway=gateway, action=action,
                            args=args, state="pending", reason="", value=None, issued_by=actor, why=why,
                            confirmed=confirmed, evidence=evidence or {}, issued_ns=now,
                            expires_ns=now + int(ttl_s * 1e9))
        with self.registry.session() as s:
            s.add(row)
            self.registry.audit(s, tenant, actor, f"command.{action}", f"asset:{asset}", reason=why,
                                after={"command": row.id, "args": args, "ttl_s": ttl_s, "confirmed": confirmed,
                                       "outside_profile": outside, "evidence": evidence or {}})
        self.counters["commands_issued"] += 1
        out = command_out(row)
        log.info("command %s issued: %s %s on %s by %s", row.id, action, args, asset, actor,
                 extra={"tenant": tenant, "asset": asset, "command": row.id})
        self.notify(tenant, out)
        self.publish_queue(tenant, gateway)
        return out

    def acknowledge_alarm(self, tenant: str, alert: dict[str, Any], actor: str, note: str) -> dict[str, Any] | None:
        """An operator's acknowledgement of an alert raised from a device's own alarm (an OPC-UA condition: evidence
        ``source`` opcua), carried back to the device: an ``acknowledge`` command with the condition, the note as
        its comment and the alert in its evidence. None for any other alert, or one the device reported acknowledged
        already; a command that could not be issued comes back as ``{"state": "not sent", "reason": ...}``."""
        ev = alert.get("evidence") or {}
        if ev.get("source") != "opcua" or not ev.get("condition") or ev.get("acked") == 1:
            return None
        why = f"alert {alert['id']} acknowledged" + (f": {note}" if note else "")
        try:
            return self.issue(tenant, alert["asset"], "acknowledge", {"condition": ev["condition"], "comment": note},
                              ttl_s=ACK_TTL_S, actor=actor, why=why, evidence={"alert": alert["id"]})
        except (LookupError, InvalidCommand) as exc:
            log.warning("alert %s acknowledged, but not on the device: %s", alert["id"], exc,
                        extra={"tenant": tenant, "asset": alert["asset"]})
            return {"state": "not sent", "reason": str(exc)}

    def outside_load_profile(self, tenant: str, asset: str, value: float) -> str:
        """Why ``value`` (a temperature the unit will hold) is outside the profile of the shipment in the asset's
        custody now; empty when it is inside, or nothing is loaded."""
        from cloud.rules.coldchain.profiles import ProfileError, load_profile

        with self.registry.session() as s:
            leg = s.scalars(select(CustodyLeg).where(CustodyLeg.tenant == tenant, CustodyLeg.asset == asset,
                                                     CustodyLeg.to_ns.is_(None))
                            .order_by(CustodyLeg.from_ns.desc()).limit(1)).first()
            shipment = s.get(Shipment, (tenant, leg.shipment)) if leg is not None else None
            if shipment is None:
                return ""
            ref, sid = shipment.profile, shipment.id
        try:
            profile = load_profile(ref)
        except ProfileError:
            return f"shipment {sid}'s profile {ref!r} cannot be read, so the value cannot be checked against it"
        for b in profile.boundaries:
            if bool(b.out_of_range(value)):
                return (f"{value:g} degC is outside profile {profile.name} of shipment {sid} in custody "
                        f"({b.name}: {b.condition()})")
        return ""

    def _take_rate(self, tenant: str, asset: str) -> None:
        now = time.monotonic()
        with self._lock:
            q = self._recent.setdefault((tenant, asset), deque())
            while q and now - q[0] > 60:
                q.popleft()
            if len(q) >= self.rate_per_min:
                raise RateLimited(60 - (now - q[0]), f"at most {self.rate_per_min} commands a minute for {asset}")
            q.append(now)

    def sets_for_delta(self, tenant: str, asset: str, delta: dict[str, Any], *, actor: str, why: str,
                       ttl_s: float = 3600.0, confirmed: bool = False,
                       evidence: dict | None = None) -> list[dict[str, Any]]:
        """A ``set`` for each writable property whose desired value the device does not report yet, unless one
        with that value is already outstanding; each carries the change's evidence (a what-if's forecast)."""
        atype, _ = self.asset_type(tenant, asset)
        with self.registry.session() as s:
            outstanding = [r.args for r in s.scalars(select(CommandRecord).where(
                CommandRecord.tenant == tenant, CommandRecord.asset == asset, CommandRecord.action == "set",
                CommandRecord.state.in_(OUTSTANDING)))]
        out = []
        for prop, d in sorted(delta.items()):
            if prop in atype.writable and {"property": prop, "value": float(d["desired"])} not in outstanding:
                out.append(self.issue(tenant, asset, "set", {"property": prop, "value": d["desired"]}, ttl_s=ttl_s,
                                      actor=actor, why=why, confirmed=confirmed, evidence=evidence))
        return out

    # -- reading ---------------------------------------------------------------------------------

    def get(self, tenant: str, asset: str, command_id: str) -> dict[str, Any] | None:
        self.expire_due()
        with self.registry.session() as s:
            r = s.get(CommandRecord, (tenant, command_id))
            return command_out(r) if r is not None and r.asset == asset else None

    # -- the gateway's side ------------------------------------------------------------------------

    def publish_queue(self, tenant: str, gateway: str) -> bool:
        """Every outstanding command of the gateway, retained (an empty queue too: it replaces the last)."""
        if self.publish is None:
            return False
        now = time.time_ns()
        with self.registry.session() as s:
            rows = list(s.scalars(select(CommandRecord).where(
                CommandRecord.tenant == tenant, CommandRecord.gateway == gateway,
                CommandRecord.state.in_(OUTSTANDING), CommandRecord.expires_ns > now)
                .order_by(CommandRecord.issued_ns).limit(1000)))
        queue = CommandQueue(commands=[Command(id=r.id, asset=r.asset, action=r.action, args=r.args,  # type: ignore[arg-type]
                                               issued_ns=r.issued_ns, expires_ns=r.expires_ns) for r in rows])
        ok = self.publish(topics.commands(tenant, gateway), encode(queue), True)
        if not ok:
            log.warning("command queue of %s/%s not published: broker unreachable (sent again with the next change)",
                        tenant, gateway)
        return ok

    def on_report(self, topic: str, payload: bytes) -> None:
        """MQTT handler for ``twin/v1/+/+/commands/reported``: move the command forward, never back."""
        try:
            parts = topics.parse(topic)
            rep = decode(payload, CommandReport)
        except (ValueError, WireError) as exc:
            log.warning("bad command report on %s: %s", topic, exc)
            return
        self.counters["commands_reports"] += 1
        now = time.time_ns()
        with self.registry.session() as s:
            r = s.get(CommandRecord, (parts.tenant, rep.id))
            if r is None or r.gateway != parts.gateway:
                return  # not this gateway's to report on
            # Expired here is a guess that nothing will come (``expire_due``); the gateway knows better. Its result
            # wins, and its late "delivered" (a loaded link can bring it after the sweep) is recorded, not dropped.
            expired_here = r.state == "expired" and (r.reason or "") in _EXPIRED_HERE
            late_result = expired_here and rep.state in ("succeeded", "failed")
            if expired_here and rep.state == "delivered" and r.delivered_ns is None:
                r.delivered_ns, r.reason = now, _EXPIRED_DELIVERED
            elif _ORDER[rep.state] <= _ORDER[r.state] and not late_result:
                return  # a repeat, or older than what is known
            elif rep.state == "delivered":
                r.state, r.delivered_ns = rep.state, now
            else:
                r.state = rep.state
                r.delivered_ns = r.delivered_ns or now
                finite = not isinstance(rep.value, float) or math.isfinite(rep.value)  # JSON columns take no NaN
                r.finished_ns, r.reason, r.value = now, rep.reason, rep.value if finite else None
            out = command_out(r)
        log.info("command %s %s%s", rep.id, rep.state, f": {rep.reason}" if rep.reason else "",
                 extra={"tenant": parts.tenant, "asset": rep.asset, "command": rep.id})
        self.notify(parts.tenant, out)
        if rep.state in TERMINAL_STATES:
            self.publish_queue(parts.tenant, parts.gateway)

    def expire_due(self) -> int:
        """Outstanding commands past their TTL: expired, out of their gateway's queue. A delivered one the
        gateway is still working on may yet report its result (``on_report``)."""
        now = time.time_ns()
        with self.registry.session() as s:
            rows = list(s.scalars(select(CommandRecord).where(CommandRecord.state.in_(OUTSTANDING),
                                                              CommandRecord.expires_ns <= now).limit(1000)))
            for r in rows:
                r.state, r.finished_ns = "expired", now
                r.reason = _EXPIRED_UNDELIVERED if r.delivered_ns is None else _EXPIRED_DELIVERED
            done = [(r.tenant, r.gateway, command_out(r)) for r in rows]
        for tenant, _, out in done:
            self.notify(tenant, out)
        for tenant, gateway in {(t, g) for t, g, _ in done}:
            self.publish_queue(tenant, gateway)
        self.counters["commands_expired"] += len(done)
        return len(done)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sweep, name="command-expiry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _sweep(self) -> None:
        while not self._stop.wait(self.sweep_s):
            try:
                self.expire_due()
            except Exception:  # a database hiccup must not end expiry for good
                log.exception("command expiry sweep failed")
