"""Notification channels beyond the signed webhook: e-mail through a real SMTP server process (aiosmtpd, writing a
Maildir), Slack- and Teams-shaped bodies to a real HTTP receiver on loopback, each routed by alert severity and
asset group, configured through the API by an admin and delivered by the webhooks' worker (retries, dead letters)."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import mailbox
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import Asset, WebhookDelivery
from cloud.settings import CloudSettings
from simulators.rig.servers import free_port
from tests.harness.processes import wait_until


@pytest.fixture(scope="module")
def smtp(tmp_path_factory) -> Iterator[tuple[int, mailbox.Maildir]]:
    box = tmp_path_factory.mktemp("maildir") / "inbox"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c",
                             "aiosmtpd.handlers.Mailbox", str(box)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    try:
        wait_until(up, timeout=20, what="aiosmtpd listening")
        yield port, mailbox.Maildir(box)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def chat() -> Iterator[tuple[str, list[tuple[str, dict]]]]:
    """A loopback HTTP server recording each POST's path and JSON body, answering 200 as Slack and Teams do."""
    got: list[tuple[str, dict]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", got
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def routed(tmp_path_factory, smtp, chat):
    """Four channels, three alerts; returns what each channel received."""
    smtp_port, box = smtp
    url, got = chat
    work = tmp_path_factory.mktemp("notify")
    p = Platform.open(CloudSettings(database_url=f"sqlite:///{work / 'reg.sqlite'}", store="embedded",
                                    embedded_path=str(work / "ts.sqlite"), webhook_allow=["127.0.0.1"],
                                    webhook_retry_base_s=0.2, smtp_host="127.0.0.1", smtp_port=smtp_port))
    try:
        key = p.registry.create_api_key("acme", "admin", "ops", key="key-acme-notify-0123456789")
        viewer = p.registry.create_api_key("acme", "viewer", "looker")
        with p.registry.session() as s:
            s.add_all([Asset(tenant="acme", id="trailer-001", type="refrigerated-trailer", site="depot-north"),
                       Asset(tenant="acme", id="pump-007", type="rotating-machine", site="plant-east")])
        api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
        channels = {
            "slack": {"kind": "slack", "target": f"{url}/services/T000/B000/a1B2c3D4e5F6g7H8i9J0k1L2"},
            "teams": {"kind": "teams", "target": f"{url}/webhookb2/teams", "min_severity": "critical"},
            "mail": {"kind": "email", "target": "cold-chain@example.com", "asset_group": "site:depot-north"},
            "mail_machines": {"kind": "email", "target": "maintenance@example.com", "min_severity": "high",
                              "asset_group": "type:rotating-machine"},
        }
        created = {k: api.post("/api/v1/notification-channels", json=v) for k, v in channels.items()}
        refused = {
            "viewer": TestClient(create_app(p), headers={"Authorization": f"Bearer {viewer}"}).post(
                "/api/v1/notification-channels", json=channels["slack"]).status_code,
            "bad_group": api.post("/api/v1/notification-channels", json={**channels["mail"],
                                                                         "asset_group": "fleet"}).json(),
            "bad_mail": api.post("/api/v1/notification-channels", json={"kind": "email",
                                                                        "target": "not-an-address"}).status_code,
            "private": api.post("/api/v1/notification-channels", json={"kind": "teams",
                                                                       "target": "http://10.0.0.7/hook"}).json(),
        }
        p.alerts.raise_alert("acme", "trailer-001", "supply-air-high", "high", "supply air 9.1 °C",
                             {"limit": 8.0, "values": [9.1]})
        p.alerts.raise_alert("acme", "pump-007", "bearing-zone-c", "critical", "vibration in zone C",
                             {"rms_mm_s": 7.4})
        p.alerts.raise_alert("acme", "pump-007", "seal-temp", "medium", "seal warm", {"c": 71})
        p.notifier.drain(20)
        wait_until(lambda: len(got) >= 4 and len(box) >= 2, timeout=20, what="the chat posts and two e-mails")
        with p.registry.session() as s:
            left = list(s.scalars(select(WebhookDelivery)))
        parsed = [email.message_from_bytes(box.get_bytes(k), policy=email.policy.default) for k in box.iterkeys()]
        mails = sorted((str(m["To"]), str(m["Subject"]), m.get_content()) for m in parsed)
        listed = api.get("/api/v1/webhooks").json()["items"]
        yield {"created": created, "refused": refused, "got": list(got), "mails": mails, "left": left,
               "listed": listed}
    finally:
        p.close()


def test_an_admin_configures_chat_and_email_channels_and_sees_them_among_the_webhooks(routed):
    assert {k: r.status_code for k, r in routed["created"].items()} == dict.fromkeys(routed["created"], 201)
    assert sorted((h["kind"], h["min_severity"], h["asset_group"]) for h in routed["listed"]) == [
        ("email", "high", "type:rotating-machine"), ("email", "low", "site:depot-north"),
        ("slack", "low", None), ("teams", "critical", None)]
    slack = next(h for h in routed["listed"] if h["kind"] == "slack")
    assert slack["url"].endswith("/services/T000/B000/***")  # the hook's token is never shown


def test_channels_refuse_a_viewer_a_bad_group_a_bad_address_and_a_private_target(routed):
    r = routed["refused"]
    assert r["viewer"] == 403
    assert r["bad_group"]["status"] == 422 and "site:<id>, line:<id> or type:<id>" in json.dumps(r["bad_group"])
    assert r["bad_mail"] == 422
    assert r["private"]["status"] == 422 and "10.0.0.7 is a private address" in r["private"]["detail"]


def test_slack_gets_every_alert_as_text_and_blocks_and_teams_only_the_critical_one_as_a_message_card(routed):
    slack = [b for path, b in routed["got"] if path.startswith("/services/")]
    teams = [b for path, b in routed["got"] if path == "/webhookb2/teams"]
    assert sorted(b["text"] for b in slack) == [
        "[CRITICAL] pump-007: vibration in zone C (opened)", "[HIGH] trailer-001: supply air 9.1 °C (opened)",
        "[MEDIUM] pump-007: seal warm (opened)"]
    assert all(b["blocks"][0]["type"] == "section" and b["blocks"][1]["fields"] for b in slack)
    (card,) = teams
    assert (card["@type"], card["summary"], card["themeColor"]) == (
        "MessageCard", "[CRITICAL] pump-007: vibration in zone C (opened)", "C0392B")
    assert {f["name"]: f["value"] for f in card["sections"][0]["facts"]}["Rule"] == "bearing-zone-c"


def test_email_goes_through_the_real_smtp_server_routed_by_asset_group_and_severity(routed):
    assert [(to, subject) for to, subject, _ in routed["mails"]] == [
        ("cold-chain@example.com", "[HIGH] trailer-001: supply air 9.1 °C (opened)"),
        ("maintenance@example.com", "[CRITICAL] pump-007: vibration in zone C (opened)")]
    body = routed["mails"][1][2]
    assert "Rule: bearing-zone-c" in body and '"rms_mm_s": 7.4' in body
    assert routed["left"] == []  # every delivery made, none pending or given up


def test_an_email_channel_without_a_relay_is_given_up_at_once_and_says_why(tmp_path):
    p = Platform.open(CloudSettings(database_url=f"sqlite:///{tmp_path / 'reg.sqlite'}", store="embedded",
                                    embedded_path=str(tmp_path / "ts.sqlite")))
    try:
        key = p.registry.create_api_key("acme", "admin", "ops")
        api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
        assert api.post("/api/v1/notification-channels", json={"kind": "email", "target": "qa@example.com"}
                        ).status_code == 201
        p.alerts.raise_alert("acme", "trailer-001", "supply-air-high", "high", "too warm", {"limit": 8.0})
        wait_until(lambda: api.get("/api/v1/webhooks").json()["items"][0]["failed"] == 1, what="the given-up e-mail")
        (hook,) = api.get("/api/v1/webhooks").json()["items"]
        assert (hook["pending"], hook["last_error"]) == (0, "no TWIN_SMTP_HOST: e-mail channels cannot deliver")
        assert p.counters()["webhooks_failed"] == 1
    finally:
        p.close()
