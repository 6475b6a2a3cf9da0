"""The consignee hears before the goods arrive: a trailer whose compressor fails is replayed through the real ingest
pipeline and rule runner (tests/test_coldchain_scenarios.py's replay); its shipment's consignee has an e-mail
address on a real SMTP server (aiosmtpd in a process of its own, delivering to a Maildir) and a webhook (an HTTP
server on loopback). The thermal twin's predicted excursion reaches both, with the forecast as evidence, while the
simulated clock is still before the product air crosses the limit; the quarantine follows when it does."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import mailbox
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from cloud.platform import Platform
from cloud.registry import Asset, Site, Tenant
from cloud.shipments import attach
from cloud.shipments.notices import ConsigneeNotifier
from cloud.webhooks.targets import AddressPolicy
from simulators.trailer import Trailer, TrailerParams, simulate_fleet
from tests.harness.processes import wait_until
from tests.harness.servers import free_port
from tests.test_coldchain_scenarios import LIMIT_C, TENANT, Gateway, close, fault, replay

S = 10**9
T0 = 1_748_822_400 * S
FAILURE = fault("compressor_failure", 8, 240)  # 08:00 on the first day


@pytest.fixture(scope="module")
def smtp(tmp_path_factory):
    """aiosmtpd, a real SMTP server process, writing what it receives to a Maildir."""
    box = tmp_path_factory.mktemp("maildir") / "inbox"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c",
                             "aiosmtpd.handlers.Mailbox", str(box)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        import socket

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_until(up, timeout=20, what="aiosmtpd listening")
        yield port, box
    finally:
        proc.terminate()
        proc.wait(10)


class _Hook(BaseHTTPRequestHandler):
    got: list[tuple[int, dict, bytes]] = []
    clock: dict[str, int] = {}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.got.append((self.clock["now"], dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def notified(tmp_path_factory, smtp):
    smtp_port, box = smtp
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    (run,) = simulate_fleet([Trailer("trailer-c", TrailerParams(), seed=12, faults=[FAILURE])], T0, 20 * 3600, 10)
    secret: dict[str, str] = {}

    def setup(platform: Platform) -> None:
        with platform.registry.session() as s:
            s.add(Tenant(id=TENANT, name=TENANT))
            s.add_all([Site(tenant=TENANT, id="dc-1"), Site(tenant=TENANT, id="store-7")])
            s.add(Asset(tenant=TENANT, id="trailer-c", type="refrigerated-trailer", gateway="gw-trailer-c",
                        first_seen_ns=T0))
        svc = attach(platform)
        svc.notices = ConsigneeNotifier(platform.registry, AddressPolicy(["127.0.0.1"]), "127.0.0.1", smtp_port)
        svc.create_shipment(TENANT, "dispatcher", profile="chilled-2-8", origin_site="dc-1",
                            destination_site="store-7", shipment_id="to-store-7", reference="PO 4711")
        svc.add_leg(TENANT, "dispatcher", "to-store-7", "trailer-c", T0)
        svc.add_batch(TENANT, "dispatcher", "to-store-7", lot="LOT-C", product="vaccine", quantity=50)
        secret["v"] = svc.set_consignee(TENANT, "dispatcher", "to-store-7", name="Store 7 receiving",
                                        email="receiving@store7.example",
                                        webhook=f"http://127.0.0.1:{hook.server_port}/notices")["secret"]
        assess = platform.rules.assess_now

        def assess_and_deliver(now_ns=None):  # the simulated clock, and notices delivered within its tick
            _Hook.clock["now"] = now_ns
            n = assess(now_ns=now_ns)
            platform.notifier.drain()
            return n

        platform.rules.assess_now = assess_and_deliver

    _Hook.got.clear()
    platform, alerts = replay(tmp_path_factory.mktemp("notices"), [Gateway(run)], 20 * 3600, tick_s=300,
                              setup=setup)
    hook.shutdown()
    yield run, alerts, list(_Hook.got), mailbox.Maildir(box, create=False), secret["v"]
    close(platform)


def _crossing(run) -> int:
    sa = run.points["supply_air"]
    return int(sa.t_ns[np.argmax((sa.t_ns >= FAILURE.start_ns) & (sa.values >= LIMIT_C))])


def test_the_consignee_webhook_hears_the_predicted_excursion_before_it_starts_with_the_forecast(notified):
    run, alerts, hooks, _, secret = notified
    events = [json.loads(body)["event"] for _, _, body in hooks]
    assert events == ["excursion.predicted", "batches.quarantined"]
    sim_now, headers, body = hooks[0]
    assert sim_now < _crossing(run)  # told while the product was still in range
    notice = json.loads(body)
    assert (notice["shipment"], notice["reference"], notice["lots"], notice["asset"]) == ("to-store-7", "PO 4711",
                                                                                       ["LOT-C"], "trailer-c")
    assert notice["limit_c"] == LIMIT_C and notice["lead_s"] > 0 and notice["evidence"]["forecast"]["t_ns"]
    assert "calibrated thermal twin" in notice["explanation"]
    assert headers["X-Twin-Signature"] == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Twin-Event"] == "excursion.predicted"
    predicted = next(a for a in alerts if a["rule"] == "coldchain:excursion-predicted")
    assert predicted["opened_ns"] <= sim_now < _crossing(run)  # the tick that raised it
    quarantined = json.loads(hooks[1][2])
    assert quarantined["lots"] == ["LOT-C"] and hooks[1][0] > sim_now


def test_the_consignee_inbox_on_a_real_smtp_server_receives_both_notices(notified):
    _, _, _, box, _ = notified
    mails = sorted((email.message_from_bytes(m.as_bytes(), policy=email.policy.default) for m in box),
                   key=lambda m: m["Subject"])
    assert len(mails) == 2
    subjects = [m["Subject"] for m in mails]
    assert subjects[0].startswith("Shipment to-store-7 (PO 4711): excursion expected at ")
    assert subjects[1].startswith("Shipment to-store-7 (PO 4711): lots LOT-C quarantined")
    assert all(m["To"] == "receiving@store7.example" for m in mails)
    first = mails[0]
    text = first.get_body(("plain",)).get_content()
    assert "calibrated thermal twin" in text
    attached = next(p for p in first.walk() if p.get_filename() == "notice.json")
    assert json.loads(attached.get_payload(decode=True))["event"] == "excursion.predicted"
