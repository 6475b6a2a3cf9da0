"""Alert webhooks as a hostile admin and a hung receiver would meet them: refused targets (loopback, private,
link-local, metadata, a name resolving to loopback, a redirect to loopback), the allow-list, one tenant's hung
endpoint against another tenant's alerts, retry state across a restart, the signed timestamp, list/delete/rotate
across tenants, and credentials kept out of logs. Real receivers are HTTP servers this module starts on
loopback; the registry runs on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import Webhook, WebhookDelivery
from cloud.settings import CloudSettings
from tests.harness.processes import wait_until

REPLAY_WINDOW_NS = 300 * 1_000_000_000


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on a loopback address that records each POST and answers ``status`` (a 3xx with
    ``location``), or holds the request until the test ends when ``hang`` is set."""

    host: str = "127.0.0.1"
    status: int = 204
    location: str = ""
    hang: bool = False
    got: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append(Received(self.path, dict(self.headers.items()), body))
                if receiver.hang:
                    receiver.release.wait(60)
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        return self.server.server_port

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for r in started:
        r.stop()


def _receiver(receivers: list[Receiver], **kw) -> Receiver:
    r = Receiver(**kw).start()
    receivers.append(r)
    return r


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'reg.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_db")


@dataclass
class Cloud:
    """A platform on the test's registry with admin keys for tenants acme and globex, and API clients."""

    platform: Platform
    keys: dict[str, str]

    def api(self, tenant: str = "acme") -> TestClient:
        return TestClient(create_app(self.platform), headers={"Authorization": f"Bearer {self.keys[tenant]}"})

    def alert(self, tenant: str = "acme", rule: str = "supply-air-high") -> int:
        alert_id, _ = self.platform.alerts.raise_alert(tenant, "trailer-001", rule, "high", "too warm",
                                                       {"limit": 8.0, "values": [9.1]})
        return alert_id

    def deliveries(self) -> list[WebhookDelivery]:
        with self.platform.registry.session() as s:
            return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


@pytest.fixture
def open_cloud(db_url: str, tmp_path: Path) -> Iterator:
    """Opens platforms on one registry (a second call is a restart on the same database); closes them all."""
    opened: list[Platform] = []

    def open_(**settings) -> Cloud:
        settings = {"webhook_retry_base_s": 0.2, **settings}
        p = Platform.open(CloudSettings(database_url=db_url, store="embedded",
                                        embedded_path=str(tmp_path / f"ts{len(opened)}.sqlite"), **settings))
        opened.append(p)
        keys = {t: p.registry.create_api_key(t, "admin", f"{t}-admin", key=f"key-{t}-0123456789")
                for t in ("acme", "globex")}
        return Cloud(p, keys)

    yield open_
    for p in opened:
        p.close()


def _verify(secret: str, got: Received, now_ns: int | None = None) -> dict:
    """The receiver's check, as the README spells it: the HMAC of the exact body, then its sent_ns within the
    replay window (and the delivery id, which a receiver remembers for the window)."""
    expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, got.headers["X-Twin-Signature"]):
        raise ValueError("bad signature")
    event = json.loads(got.body)
    if abs((now_ns or time.time_ns()) - event["sent_ns"]) > REPLAY_WINDOW_NS:
        raise ValueError("outside the replay window")
    return event


# -- refusals --------------------------------------------------------------------------------------
def test_registration_refuses_loopback_private_link_local_multicast_and_metadata_targets(open_cloud, receivers):
    cloud = open_cloud()
    target = _receiver(receivers)
    api = cloud.api()
    port = target.port
    cases = {
        f"http://127.0.0.1:{port}/internal-admin": "127.0.0.1 is a loopback address",
        f"http://[::1]:{port}/hook": "::1 is a loopback address",
        f"http://[::ffff:127.0.0.1]:{port}/hook": "::ffff:7f00:1 is a loopback address",  # as pydantic spells it
        "http://10.0.0.5/hook": "10.0.0.5 is a private address",
        "http://192.168.1.10/hook": "192.168.1.10 is a private address",
        "http://172.16.0.1/hook": "172.16.0.1 is a private address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a cloud metadata address",
        "http://[fd00:ec2::254]/latest/meta-data/": "fd00:ec2::254 is a cloud metadata address",
        "http://100.100.100.200/latest/meta-data/": "100.100.100.200 is a cloud metadata address",
        "http://169.254.10.1/hook": "169.254.10.1 is a link-local address",
        "http://[fe80::1]/hook": "fe80::1 is a link-local address",
        "http://224.0.0.1/hook": "224.0.0.1 is a multicast address",
        f"http://0.0.0.0:{port}/hook": "0.0.0.0 is an unspecified address",
        "http://240.0.0.1/hook": "240.0.0.1 is a reserved address",
        "http://100.64.0.1/hook": "100.64.0.1 is not a globally routable address",
    }
    for url, reason in cases.items():
        r = api.post("/api/v1/webhooks", json={"url": url})
        assert r.status_code == 422, (url, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == f"url: {reason}; TWIN_WEBHOOK_ALLOW can admit it", url
        assert r.json()["errors"][0]["where"] == "body.url"
    assert api.get("/api/v1/webhooks").json()["items"] == []
    cloud.alert()
    cloud.platform.notifier.drain()
    assert target.got == []


def test_a_host_name_resolving_to_loopback_is_refused(open_cloud, receivers):
    cloud = open_cloud()
    target = _receiver(receivers)
    r = cloud.api().post("/api/v1/webhooks", json={"url": target.url(host="localhost")})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("url: localhost resolves to ")
    assert "which is a loopback address" in r.json()["detail"]
    r = cloud.api().post("/api/v1/webhooks", json={"url": "http://no-such-host.invalid/hook"})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("url: host no-such-host.invalid does not resolve (")


def test_a_redirect_to_loopback_is_not_followed(open_cloud, receivers):
    """The receiver the allow-list admits (127.0.0.2) answers 307 to 127.0.0.1, which it does not admit."""
    internal = _receiver(receivers, host="127.0.0.1")
    front = _receiver(receivers, host="127.0.0.2", status=307, location=internal.url("/internal-admin"))
    cloud = open_cloud(webhook_allow=["127.0.0.2/32"])
    assert cloud.api().post("/api/v1/webhooks", json={"url": internal.url()}).status_code == 422
    assert cloud.api().post("/api/v1/webhooks", json={"url": front.url()}).status_code == 201
    cloud.alert()
    wait_until(lambda: cloud.deliveries() and cloud.deliveries()[0].state == "failed", timeout=10,
               what="the delivery given up")
    (d,) = cloud.deliveries()
    assert (d.attempts, d.last_error) == (1, f"HTTP 307: redirect to {internal.url('/internal-admin')} not followed")
    assert (len(front.got), internal.got) == (1, [])
    assert cloud.platform.notifier.counters["webhooks_failed"] == 1


def test_the_address_is_checked_again_at_delivery(open_cloud, receivers):
    """Registered while the allow-list admitted loopback, delivered after a restart without it: refused, and
    nothing reaches the receiver."""
    target = _receiver(receivers)
    first = open_cloud(webhook_allow=["127.0.0.1"])
    assert first.api().post("/api/v1/webhooks", json={"url": target.url()}).status_code == 201
    first.platform.close()
    second = open_cloud()
    second.alert()
    wait_until(lambda: second.deliveries() and second.deliveries()[0].state == "failed", timeout=10,
               what="the delivery refused")
    (d,) = second.deliveries()
    assert (d.attempts, d.last_error) == (1, "refused: 127.0.0.1 is a loopback address; TWIN_WEBHOOK_ALLOW can "
                                             "admit it")
    assert target.got == []
    assert second.platform.notifier.counters["webhooks_refused"] == 1


# -- the allow-list --------------------------------------------------------------------------------
def test_the_allow_list_admits_a_network_and_a_host_name_and_nothing_else(open_cloud, receivers):
    target = _receiver(receivers)
    other = _receiver(receivers, host="127.0.0.2")
    cloud = open_cloud(webhook_allow=["127.0.0.1/32", "localhost"])
    api = cloud.api()
    assert api.post("/api/v1/webhooks", json={"url": target.url("/by-address")}).status_code == 201
    assert api.post("/api/v1/webhooks", json={"url": target.url("/by-name", host="localhost")}).status_code == 201
    r = api.post("/api/v1/webhooks", json={"url": other.url()})
    assert (r.status_code, r.json()["detail"]) == (422, "url: 127.0.0.2 is a loopback address; TWIN_WEBHOOK_ALLOW "
                                                        "can admit it")
    cloud.alert()
    wait_until(lambda: len(target.got) == 2, timeout=10, what="both deliveries")
    by_path = {g.path: g for g in target.got}
    assert sorted(by_path) == ["/by-address", "/by-name"]
    # Connected to the checked address, and told the name the URL gave.
    assert by_path["/by-name"].headers["Host"] == f"localhost:{target.port}"
    assert by_path["/by-address"].headers["Host"] == f"127.0.0.1:{target.port}"
    assert other.got == [] and cloud.deliveries() == []


def test_a_bad_allow_list_entry_stops_start_up_naming_it():
    with pytest.raises(ValueError, match="TWIN_WEBHOOK_ALLOW: 'not a host!' is neither a network"):
        CloudSettings(webhook_allow="10.0.0.0/8, not a host!")
    assert CloudSettings(webhook_allow='["10.0.0.0/8", "hooks.plant.internal"]').webhook_allow == [
        "10.0.0.0/8", "hooks.plant.internal"]


# -- delivery ----------------------------------------------------------------------------------------
def test_a_hung_endpoint_delays_only_its_own_tenant(open_cloud, receivers):
    hung = _receiver(receivers, hang=True)
    fine = _receiver(receivers, host="127.0.0.2")
    cloud = open_cloud(webhook_allow=["127.0.0.0/8"], webhook_timeout_s=1.0, webhook_retry_base_s=60.0)
    assert cloud.api("globex").post("/api/v1/webhooks", json={"url": hung.url()}).status_code == 201
    assert cloud.api("acme").post("/api/v1/webhooks", json={"url": fine.url()}).status_code == 201
    for i in range(3):
        cloud.alert("globex", rule=f"rule-{i}")
    wait_until(lambda: hung.got, timeout=5, interval=0.02, what="the hung endpoint holding a delivery")
    t0 = time.monotonic()
    cloud.alert("acme")
    wait_until(lambda: fine.got, timeout=5, interval=0.01, what="acme's delivery")
    took = time.monotonic() - t0
    assert took < 2.0, f"acme's alert took {took:.2f} s behind globex's hung endpoint"
    assert len(hung.got) == 1  # still holding its first delivery: globex's other two wait behind it
    print(f"acme delivered in {took * 1000:.0f} ms while globex's endpoint hung")
    # The hung attempts end at the timeout and wait for their retry; each was sent once.
    wait_until(lambda: [(d.tenant, d.attempts, d.last_error) for d in cloud.deliveries()] == [
        ("globex", 1, "ReadTimeout: timed out")] * 3, timeout=10, what="globex's three attempts timed out")
    assert len(hung.got) == 3


def test_retry_state_survives_a_restart(open_cloud, receivers):
    target = _receiver(receivers, status=503)
    first = open_cloud(webhook_allow=["127.0.0.1"], webhook_retry_base_s=3.0)
    assert first.api().post("/api/v1/webhooks", json={"url": target.url()}).status_code == 201
    first.alert()
    wait_until(lambda: [d.attempts for d in first.deliveries()] == [1], timeout=10, interval=0.02,
               what="the first failed attempt recorded")
    (d,) = first.deliveries()
    assert (d.state, d.last_error, d.next_try_ns > time.time_ns()) == ("pending", "HTTP 503", True)
    first.platform.close()
    assert len(target.got) == 1

    target.status = 204
    second = open_cloud(webhook_allow=["127.0.0.1"])
    wait_until(lambda: len(target.got) == 2, timeout=10, what="the pending delivery resumed after the restart")
    wait_until(lambda: second.deliveries() == [], timeout=5, what="the delivered row gone")
    a, b = (json.loads(g.body) for g in target.got)
    assert (a["delivery"], b["delivery"], a["event"], b["event"]) == (d.id, d.id, "alert.opened", "alert.opened")
    assert b["sent_ns"] > a["sent_ns"]  # a fresh timestamp for every attempt
    assert second.platform.notifier.counters["webhooks_sent"] == 1
    listed = second.api().get("/api/v1/webhooks").json()["items"]
    assert [(h["pending"], h["last_error"], h["last_delivered_ns"] is not None) for h in listed] == [(0, "", True)]


def test_two_processes_on_one_registry_deliver_each_event_once(open_cloud, receivers):
    """Each claims a due delivery by moving its next try ahead first; the other then finds it taken."""
    target = _receiver(receivers)
    one = open_cloud(webhook_allow=["127.0.0.1"])
    two = open_cloud(webhook_allow=["127.0.0.1"])
    assert one.api().post("/api/v1/webhooks", json={"url": target.url()}).status_code == 201
    for i in range(20):
        one.alert(rule=f"rule-{i}")
        two.platform.notifier.webhooks.sweep()  # as its periodic sweep would: it goes after the same rows
    wait_until(lambda: len(target.got) >= 20 and one.deliveries() == [], timeout=20, what="20 deliveries")
    one.platform.notifier.drain()
    two.platform.notifier.drain()
    ids = [json.loads(g.body)["delivery"] for g in target.got]
    assert (len(ids), len(set(ids))) == (20, 20)
    sent = [c.platform.notifier.counters["webhooks_sent"] for c in (one, two)]
    assert sum(sent) == 20
    print(f"deliveries made by each process: {sent}")


def test_a_delivery_is_given_up_after_the_last_attempt(open_cloud, receivers):
    target = _receiver(receivers, status=500)
    cloud = open_cloud(webhook_allow=["127.0.0.1"], webhook_max_attempts=3, webhook_retry_base_s=0.05)
    assert cloud.api().post("/api/v1/webhooks", json={"url": target.url()}).status_code == 201
    cloud.alert()
    wait_until(lambda: cloud.deliveries() and cloud.deliveries()[0].state == "failed", timeout=10,
               what="the delivery given up")
    assert [(d.attempts, d.last_error) for d in cloud.deliveries()] == [(3, "HTTP 500")]
    assert len(target.got) == 3
    c = cloud.platform.notifier.counters
    assert (c["webhooks_retried"], c["webhooks_failed"], c["webhooks_sent"]) == (2, 1, 0)
    listed = cloud.api().get("/api/v1/webhooks").json()["items"]
    assert [(h["pending"], h["failed"], h["last_error"]) for h in listed] == [(0, 1, "HTTP 500")]


def test_the_body_carries_a_signed_timestamp_for_a_replay_window(open_cloud, receivers):
    target = _receiver(receivers)
    cloud = open_cloud(webhook_allow=["127.0.0.1"])
    secret = cloud.api().post("/api/v1/webhooks", json={"url": target.url()}).json()["secret"]
    alert_id = cloud.alert()
    before = time.time_ns()
    cloud.platform.notifier.drain()
    (got,) = target.got
    event = _verify(secret, got)
    assert (event["event"], event["alert"]["id"], event["alert"]["asset"]) == ("alert.opened", alert_id,
                                                                               "trailer-001")
    assert abs(event["sent_ns"] - before) < 5_000_000_000
    assert got.headers["X-Twin-Timestamp"] == str(event["sent_ns"])
    assert got.headers["X-Twin-Delivery"] == str(event["delivery"])
    assert got.headers["X-Twin-Event"] == "alert.opened"
    # A replay after the window fails on the timestamp; moving the timestamp fails the signature.
    with pytest.raises(ValueError, match="outside the replay window"):
        _verify(secret, got, now_ns=event["sent_ns"] + REPLAY_WINDOW_NS + 1)
    moved = got.body.replace(str(event["sent_ns"]).encode(), str(time.time_ns()).encode())
    with pytest.raises(ValueError, match="bad signature"):
        _verify(secret, Received(got.path, got.headers, moved))
    with pytest.raises(ValueError, match="bad signature"):
        _verify("another-secret", got)


# -- list, delete, rotate --------------------------------------------------------------------------------
def test_list_delete_and_rotate_belong_to_the_tenant(open_cloud, receivers):
    target = _receiver(receivers)
    cloud = open_cloud(webhook_allow=["127.0.0.1"])
    acme, globex = cloud.api("acme"), cloud.api("globex")
    a1 = acme.post("/api/v1/webhooks", json={"url": target.url("/a1")}).json()
    a2 = acme.post("/api/v1/webhooks", json={"url": target.url("/a2")}).json()
    g1 = globex.post("/api/v1/webhooks", json={"url": target.url("/g1")}).json()
    assert [h["id"] for h in acme.get("/api/v1/webhooks").json()["items"]] == [a1["id"], a2["id"]]
    assert [h["id"] for h in globex.get("/api/v1/webhooks").json()["items"]] == [g1["id"]]
    page = acme.get("/api/v1/webhooks", params={"limit": 1}).json()
    assert [h["id"] for h in page["items"]] == [a1["id"]]
    assert [h["id"] for h in acme.get("/api/v1/webhooks", params={"cursor": page["next_cursor"]}).json()[
        "items"]] == [a2["id"]]
    assert "secret" not in page["items"][0]

    # Another tenant's webhook is not there for globex.
    assert globex.delete(f"/api/v1/webhooks/{a1['id']}").status_code == 404
    r = globex.post(f"/api/v1/webhooks/{a1['id']}/rotate")
    assert (r.status_code, r.headers["content-type"]) == (404, "application/problem+json")
    for bad in ("0", "abc", str(2**40)):
        assert acme.delete(f"/api/v1/webhooks/{bad}").status_code == 422, bad
    assert acme.get("/api/v1/webhooks", params={"cursor": "W10"}).status_code == 422
    viewer = cloud.platform.registry.create_api_key("acme", "viewer", "victor")
    as_viewer = TestClient(create_app(cloud.platform), headers={"Authorization": f"Bearer {viewer}"})
    assert as_viewer.get("/api/v1/webhooks").status_code == 403

    rotated = acme.post(f"/api/v1/webhooks/{a1['id']}/rotate").json()
    assert rotated["id"] == a1["id"] and rotated["secret"] != a1["secret"] and rotated["rotated_ns"] > 0
    assert acme.delete(f"/api/v1/webhooks/{a2['id']}").status_code == 204
    assert acme.delete(f"/api/v1/webhooks/{a2['id']}").status_code == 404
    assert [h["id"] for h in acme.get("/api/v1/webhooks").json()["items"]] == [a1["id"]]

    cloud.alert("acme")
    wait_until(lambda: len(target.got) == 1, timeout=10, what="the delivery to the rotated webhook")
    cloud.platform.notifier.drain()
    (got,) = target.got
    assert got.path == "/a1"  # the deleted webhook receives nothing
    _verify(rotated["secret"], got)
    with pytest.raises(ValueError, match="bad signature"):
        _verify(a1["secret"], got)
    actions = [e["action"] for e in acme.get("/api/v1/audit").json()["items"]]
    assert actions[:4] == ["webhook.delete", "webhook.rotate", "webhook.create", "webhook.create"]
    with cloud.platform.registry.session() as s:
        assert s.scalars(select(Webhook.id).where(Webhook.tenant == "acme")).all() == [a1["id"]]


def test_deleting_a_webhook_drops_what_it_still_had_to_deliver(open_cloud, receivers):
    target = _receiver(receivers, status=503)
    cloud = open_cloud(webhook_allow=["127.0.0.1"], webhook_retry_base_s=30.0)
    hook = cloud.api().post("/api/v1/webhooks", json={"url": target.url()}).json()
    cloud.alert()
    wait_until(lambda: [d.attempts for d in cloud.deliveries()] == [1], timeout=10, what="a pending retry")
    assert cloud.api().get("/api/v1/webhooks").json()["items"][0]["pending"] == 1
    assert cloud.api().delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert cloud.deliveries() == []


# -- credentials ---------------------------------------------------------------------------------------
def test_no_credentials_of_a_url_in_logs_answers_or_the_audit_trail(open_cloud, receivers, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "cloud"):
        caplog.set_level(logging.DEBUG, logger=name)
    target = _receiver(receivers, status=500)
    cloud = open_cloud(webhook_allow=["127.0.0.1"], webhook_max_attempts=2, webhook_retry_base_s=0.05)
    api = cloud.api()
    url = f"http://alice:pa55word@127.0.0.1:{target.port}/hook?token=t0ps3cret&team=ops"
    created = api.post("/api/v1/webhooks", json={"url": url})
    refused = api.post("/api/v1/webhooks", json={"url": "http://bob:hunter22@10.0.0.1/h?key=s3cr3tkey"})
    assert (created.status_code, refused.status_code) == (201, 422)
    cloud.alert()
    wait_until(lambda: cloud.deliveries() and cloud.deliveries()[0].state == "failed", timeout=10,
               what="both attempts failed")
    # The receiver got the credentials: they are used, only never shown.
    assert len(target.got) == 2
    assert target.got[0].headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pa55word").decode()
    assert target.got[0].path == "/hook?token=t0ps3cret&team=ops"
    listed = api.get("/api/v1/webhooks").text
    audit = api.get("/api/v1/audit").text
    assert created.json()["url"] == f"http://***@127.0.0.1:{target.port}/hook?token=***&team=***"
    assert f"webhook {created.json()['id']} of acme (http://***@127.0.0.1:{target.port}/hook?token=***&team=***)" \
        in caplog.text
    shown = caplog.text + created.text + refused.text + listed + audit + repr(cloud.deliveries()[0].last_error)
    for secret in ("pa55word", "t0ps3cret", "hunter22", "s3cr3tkey"):
        assert secret not in shown, secret
