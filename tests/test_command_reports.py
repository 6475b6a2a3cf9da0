"""How a gateway's reports move a stored command (``CommandService.on_report``), on a real SQLite registry.

The cloud expires an outstanding command once its TTL passes; under load the gateway's "delivered" can arrive
after that sweep, and its result after that. The gateway ran the command, so its result is what happened: CI saw
a failed write stay "expired" for good because the late "delivered" was dropped and the result then refused."""

from __future__ import annotations

import time

import pytest

from cloud.commands import CommandService
from cloud.registry import CommandRecord, Registry
from models import topics
from models.wire import CommandReport, encode


@pytest.fixture
def service(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'reg.db'}")
    registry.create_schema()
    svc = CommandService(registry, lambda topic, payload, retain: True, lambda tenant, out: None)
    return svc


def _issue(svc: CommandService, cid: str, ttl_ns: int) -> None:
    now = time.time_ns()
    with svc.registry.session() as s:
        s.add(CommandRecord(tenant="acme", id=cid, asset="trailer-1", gateway="gw-1", action="set",
                            args={"property": "setpoint", "value": -17}, state="pending", reason="", value=None,
                            issued_by="test", why="", confirmed=False, evidence={}, issued_ns=now,
                            expires_ns=now + ttl_ns))


def _report(svc: CommandService, cid: str, state: str, reason: str = "", value=None, gateway: str = "gw-1") -> None:
    svc.on_report(topics.commands_reported("acme", gateway),
                  encode(CommandReport(gateway=gateway, id=cid, asset="trailer-1", state=state, reason=reason,
                                       value=value)))


def _row(svc: CommandService, cid: str) -> tuple:
    with svc.registry.session() as s:
        r = s.get(CommandRecord, ("acme", cid))
        return r.state, r.reason, r.value, r.delivered_ns is not None, r.finished_ns is not None


def test_a_result_reported_after_the_cloud_expired_the_command_is_what_is_kept(service):
    _issue(service, "c1", ttl_ns=0)
    assert service.expire_due() == 1
    assert _row(service, "c1") == ("expired", "not delivered to its gateway within its TTL", None, False, True)
    _report(service, "c1", "delivered")  # late: kept as delivered, still expired until a result comes
    assert _row(service, "c1") == ("expired", "delivered, but no result from the gateway within its TTL", None,
                                   True, True)
    _report(service, "c1", "failed", "the OPC-UA server did not take the write; tried 3 times")
    assert _row(service, "c1") == ("failed", "the OPC-UA server did not take the write; tried 3 times", None,
                                   True, True)
    _report(service, "c1", "succeeded", value=-17.0)  # a finished command never moves again
    assert _row(service, "c1")[0] == "failed"


def test_a_result_is_kept_even_when_the_late_delivered_report_was_lost(service):
    _issue(service, "c2", ttl_ns=0)
    service.expire_due()
    _report(service, "c2", "succeeded", "written and read back", -17.0)
    assert _row(service, "c2") == ("succeeded", "written and read back", -17.0, True, True)


def test_what_the_gateway_itself_expired_stays_expired_and_other_gateways_are_ignored(service):
    _issue(service, "c3", ttl_ns=60 * 10**9)
    _report(service, "c3", "succeeded", value=-17.0, gateway="gw-2")  # not its gateway: ignored
    assert _row(service, "c3") == ("pending", "", None, False, False)
    _report(service, "c3", "expired", "reached the gateway after its TTL")
    _report(service, "c3", "delivered")
    _report(service, "c3", "succeeded", value=-17.0)
    assert _row(service, "c3") == ("expired", "reached the gateway after its TTL", None, True, True)
    assert service.counters["commands_reports"] == 4
