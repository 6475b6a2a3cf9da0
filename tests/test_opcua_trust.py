"""Which OPC-UA servers the edge source trusts: a trust list (``trust_dir``), and trust on first use.

Every test runs a real ``OpcUaSourceRunner`` against real asyncua servers (``SimOpcUaServer``) offering only
Basic256Sha256 SignAndEncrypt and a password login, started on free loopback ports. The server's certificate
is never given to the source (``server_cert_file``): it comes from the endpoint list, and only the trust list
decides. A refused server must not get the password: the servers' login check records every login it sees.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge.config import OpcUaSource
from edge.sources.opcua import OpcUaSourceRunner, fingerprint
from simulators import opcua_server
from simulators.opcua_server import APPLICATION_URI, SimOpcUaServer, generate_certificate
from tests.harness import free_port
from tests.harness.opcua import Recorder, client_certificate
from tests.harness.processes import wait_until

TYPE = "refrigerated-trailer"
ASSET = "trailer-301"
T0 = 1_700_000_000_000_000_000
USERS = {"edge": "s3cret-pw"}
FAST = {"publishing_interval_ms": 20, "keepalive_s": 1.0, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
        "reconnect_jitter": 0.2, "request_timeout_s": 3}

StartSource = Callable[..., OpcUaSourceRunner]


@pytest.fixture
def logins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every username a simulator's login check was asked about (ActivateSession carries the password)."""
    seen: list[str] = []
    lock = threading.Lock()
    check = opcua_server._PasswordUsers.get_user

    def recording(self: object, iserver: object, username: str | None = None, password: str | None = None,
                  certificate: object = None) -> object:
        with lock:
            seen.append(username or "")
        return check(self, iserver, username, password, certificate)

    monkeypatch.setattr(opcua_server._PasswordUsers, "get_user", recording)
    return seen


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return client_certificate(tmp_path_factory.mktemp("client-pki"))


@pytest.fixture
def servers() -> Iterator[Callable[..., SimOpcUaServer]]:
    """Start secured simulators (closed after the test); ``cert_dir`` decides which certificate each shows."""
    started: list[SimOpcUaServer] = []

    def start(cert_dir: Path, port: int | None = None) -> SimOpcUaServer:
        server = SimOpcUaServer(port or free_port(), [(ASSET, TYPE)], security=["SignAndEncrypt"], users=USERS,
                                cert_dir=cert_dir)
        server.start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.close()


@pytest.fixture
def start_source(client_cert: tuple[Path, Path]) -> Iterator[StartSource]:
    runners: list[OpcUaSourceRunner] = []

    def start(server: SimOpcUaServer, sink: Recorder, **options: object) -> OpcUaSourceRunner:
        cert, key = client_cert
        cfg = OpcUaSource.model_validate({
            "type": "opcua", "endpoint": server.endpoint, "security": "SignAndEncrypt", "cert_file": cert,
            "key_file": key, "username": "edge", "password": USERS["edge"],
            "nodes": [{"node": server.node_id(ASSET, "supply_air"), "asset": ASSET, "point": "supply_air"}],
            **FAST, **options})
        runner = OpcUaSourceRunner(cfg)
        runner.start(sink)
        runners.append(runner)
        return runner

    yield start
    for r in runners:
        r.stop()


def der(path: Path) -> x509.Certificate:
    return x509.load_der_x509_certificate(path.read_bytes())


def ca_issued_server_cert(directory: Path, days_valid: tuple[int, int] = (-1, 30),
                          uri: str = APPLICATION_URI) -> tuple[Path, Path]:
    """A CA (``directory/ca/ca.pem``) and a server certificate it issued for ``uri``, valid from/to those days
    around now, in ``directory/server`` under the names SimOpcUaServer looks for in a ``cert_dir``."""
    ca_key = cert_gen.generate_private_key()
    ca = cert_gen.generate_self_signed_app_certificate(ca_key, "assettwin test CA", {}, [], [], days=60)
    key = cert_gen.generate_private_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "sim")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days_valid[0]))
            .not_valid_after(now + datetime.timedelta(days=days_valid[1]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                         data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca").mkdir(parents=True)
    (directory / "server").mkdir()
    (directory / "ca" / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server" / "server_cert.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (directory / "server" / "server_key.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
    return directory / "ca", directory / "server"


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "reason", "") == "untrusted server certificate"]


# -- a trust list ----------------------------------------------------------------------------------------------
def test_a_server_whose_certificate_is_in_the_trust_list_is_used(tmp_path, servers, start_source, logins):
    server = servers(tmp_path / "server")
    trust = tmp_path / "trusted"
    trust.mkdir()
    shutil.copy(server.cert_file, trust / "plc-7.der")
    server.set_value(ASSET, "supply_air", 4.5, source_ts_ns=T0)
    rec = Recorder()
    runner = start_source(server, rec, trust_dir=trust)
    assert rec.wait_value(ASSET, "supply_air", 4.5)[2] == T0
    c = runner.counters()
    assert (c["opcua_untrusted"], c["opcua_pinned"], c["opcua_errors"]) == (0, 0, 0)
    assert logins == ["edge"]
    assert sorted(p.name for p in trust.iterdir()) == ["plc-7.der"], "a trust list is read, never written"


def test_a_server_whose_certificate_a_trusted_ca_issued_is_used(tmp_path, servers, start_source, logins):
    ca_dir, server_dir = ca_issued_server_cert(tmp_path / "pki")
    server = servers(server_dir)
    server.set_value(ASSET, "supply_air", 5.25, source_ts_ns=T0)
    rec = Recorder()
    runner = start_source(server, rec, trust_dir=ca_dir)  # only the CA is in it, as PEM
    assert rec.wait_value(ASSET, "supply_air", 5.25)[2] == T0
    assert runner.counters()["opcua_untrusted"] == 0 and logins == ["edge"]


def test_an_untrusted_server_is_refused_logged_once_and_counted_and_never_gets_the_password(
        tmp_path, servers, start_source, logins, caplog):
    server = servers(tmp_path / "server")
    other = tmp_path / "other"
    generate_certificate(other / "cert.der", other / "key.pem", APPLICATION_URI, server=True)
    trust = tmp_path / "trusted"
    trust.mkdir()
    shutil.copy(other / "cert.der", trust / "the-real-plc.der")
    server.set_value(ASSET, "supply_air", 6.0, source_ts_ns=T0)
    rec = Recorder()
    with caplog.at_level(logging.DEBUG, logger="edge.sources.opcua"):
        runner = start_source(server, rec, trust_dir=trust)
        wait_until(lambda: runner.counters()["opcua_untrusted"] >= 3, 20, what="three refused connection attempts")
    assert rec.samples == [] and runner.counters()["opcua_values"] == 0
    assert logins == [], "the password went to a server nobody trusts"
    assert runner._thread is not None and runner._thread.is_alive(), "the source keeps retrying"
    refused = refusals(caplog)
    assert len(refused) >= 3 and [r.levelno for r in refused].count(logging.ERROR) == 1, "one line per certificate"
    first = refused[0]
    assert first.levelno == logging.ERROR and first.endpoint == server.endpoint
    assert first.fingerprint == fingerprint(der(server.cert_file))
    message = first.getMessage()
    assert "refusing the server" in message and "is not trusted (BadCertificateUntrusted" in message
    assert "copy its certificate (or its CA) into trust_dir" in message


def test_a_certificate_added_to_the_trust_list_is_used_at_the_next_attempt(tmp_path, servers, start_source, logins):
    server = servers(tmp_path / "server")
    trust = tmp_path / "trusted"  # does not exist yet: nothing is trusted
    server.set_value(ASSET, "supply_air", 7.5, source_ts_ns=T0)
    rec = Recorder()
    runner = start_source(server, rec, trust_dir=trust)
    wait_until(lambda: runner.counters()["opcua_untrusted"] >= 1, 15, what="the server refused")
    assert logins == []
    trust.mkdir()
    shutil.copy(server.cert_file, trust / "plc.der")  # the operator vouches for it; no restart
    assert rec.wait_value(ASSET, "supply_air", 7.5, timeout=15)[2] == T0
    assert logins == ["edge"]


# -- trust on first use ------------------------------------------------------------------------------------------
def test_trust_on_first_use_pins_the_first_certificate_then_refuses_a_changed_one(
        tmp_path, servers, start_source, logins, caplog):
    port = free_port()
    first = servers(tmp_path / "first", port)
    trust = tmp_path / "trusted"
    first.set_value(ASSET, "supply_air", 1.0, source_ts_ns=T0)
    rec = Recorder()
    with caplog.at_level(logging.INFO, logger="edge.sources.opcua"):
        runner = start_source(first, rec, trust_dir=trust, trust_on_first_use=True)
        rec.wait_value(ASSET, "supply_air", 1.0)
        (pinned,) = trust.iterdir()
        assert pinned.read_bytes() == first.cert_file.read_bytes()
        assert runner.counters()["opcua_pinned"] == 1 and logins == ["edge"]
        pin_log = [r for r in caplog.records if getattr(r, "pinned", None) == str(pinned)]
        assert len(pin_log) == 1 and pin_log[0].fingerprint == fingerprint(der(first.cert_file))

        # The server is replaced by one with another certificate at the same address (an impostor, or a
        # reinstall nobody announced): the pin refuses it, the password stays with the source.
        first.close()
        impostor = servers(tmp_path / "impostor", port)
        impostor.set_value(ASSET, "supply_air", 666.0, source_ts_ns=T0 + 1)
        wait_until(lambda: runner.counters()["opcua_untrusted"] >= 2, 20, what="the changed certificate refused")
    assert [v for *_, v, _ in rec.of(ASSET, "supply_air")] == [1.0]
    assert logins == ["edge"], "only the first (pinned) server saw a login"
    assert [p.name for p in trust.iterdir()] == [pinned.name] and runner.counters()["opcua_pinned"] == 1
    refused = refusals(caplog)[0]
    assert refused.fingerprint == fingerprint(der(impostor.cert_file))
    assert f"differs from the certificate pinned on first use ({fingerprint(der(first.cert_file))})" \
        in refused.getMessage()


def test_trust_on_first_use_does_not_pin_when_the_trust_list_already_holds_a_certificate(
        tmp_path, servers, start_source, logins):
    server = servers(tmp_path / "server")
    other = tmp_path / "other"
    generate_certificate(other / "cert.der", other / "key.pem", APPLICATION_URI, server=True)
    trust = tmp_path / "trusted"
    trust.mkdir()
    shutil.copy(other / "cert.der", trust / "known.der")
    rec = Recorder()
    runner = start_source(server, rec, trust_dir=trust, trust_on_first_use=True)
    wait_until(lambda: runner.counters()["opcua_untrusted"] >= 2, 15, what="the unknown server refused")
    assert runner.counters()["opcua_pinned"] == 0 and logins == []
    assert [p.name for p in trust.iterdir()] == ["known.der"]


def test_an_expired_certificate_from_a_trusted_ca_is_refused(tmp_path, servers, start_source, logins, caplog):
    ca_dir, server_dir = ca_issued_server_cert(tmp_path / "pki", days_valid=(-30, -1))  # ended yesterday
    server = servers(server_dir)
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="edge.sources.opcua"):
        runner = start_source(server, rec, trust_dir=ca_dir)
        wait_until(lambda: runner.counters()["opcua_untrusted"] >= 1, 15, what="the expired certificate refused")
    assert logins == [] and rec.samples == []
    assert "is not trusted (BadCertificateTimeInvalid" in refusals(caplog)[0].getMessage()


def test_a_ca_issued_certificate_for_another_application_is_refused(tmp_path, servers, start_source, logins, caplog):
    """The CA vouches for a name, not for any server holding one of its certificates: the certificate's
    application URI must be the server's own."""
    ca_dir, server_dir = ca_issued_server_cert(tmp_path / "pki", uri="urn:assettwin:some-other-plc")
    server = servers(server_dir)
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="edge.sources.opcua"):
        runner = start_source(server, rec, trust_dir=ca_dir)
        wait_until(lambda: runner.counters()["opcua_untrusted"] >= 1, 15, what="the mismatched certificate refused")
    assert logins == [] and rec.samples == []
    assert "is not trusted (BadCertificateUriInvalid" in refusals(caplog)[0].getMessage()
