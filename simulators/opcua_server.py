"""The OPC-UA server front of the simulators: a PLC-like asyncua server whose address space mirrors the catalogue.

Why: the edge's OPC-UA source has to be exercised against what a plant cabinet really does — security
modes, logins, source timestamps, Bad statuses, restarts that drop every session and briefly forget
nodes — and a live PLC offers none of that on demand.

Address space (namespace ``urn:assettwin:sim``, index 2 on this server)::

    Objects/
      <asset id>        Object  ns=2;s=<asset>
        <point>         Double  ns=2;s=<asset>.<point>   with EngineeringUnits (EUInformation, UNECE code)
                                                         and EURange (the point's physical range)

so a client may use the NodeId or the browse path ``/Objects/2:<asset>/2:<point>``.

``SimOpcUaServer`` runs in its own thread and asyncio loop so tests and the CLI drive it with plain calls::

    with SimOpcUaServer(4841, [("trailer-001", "refrigerated-trailer")]) as sim:
        sim.set_value("trailer-001", "supply_air", 4.25)
        sim.set_value("trailer-001", "door", 0.0, status="BadSensorFailure")
        sim.restart(absent_s=2)     # a restarted PLC that rebuilds its address space for 2 s
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from models.catalogue import PointSpec, get_type

log = logging.getLogger("simulators.opcua_server")

NAMESPACE_URI = "urn:assettwin:sim"
APPLICATION_URI = "urn:assettwin:sim:opcua-server"
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]
ValueFn = Callable[[str, str, float], float]
"""(asset, point, unix time in s) → value; the built-in generator is used when none is given."""

_POLICY = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
_POLICIES = {  # the other current policies (OPC 10000-7), as (policy, mode) -> what the server offers
    ("Aes128_Sha256_RsaOaep", "Sign"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ("Aes256_Sha256_RsaPss", "Sign"): ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"): ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}
# UNECE Recommendation 20 codes, which OPC-UA's EUInformation encodes (OPC 10000-8 §5.6.3).
_UNECE = {"degC": "CEL", "degF": "FAH", "K": "KEL", "A": "AMP", "V": "VLT", "W": "WTT", "kW": "KWT",
          "Hz": "HTZ", "bar": "BAR", "Pa": "PAL", "kPa": "KPA", "%": "P1", "rpm": "RPM", "mm/s": "C16",
          "m/s2": "MSK", "g": "GRM", "kg": "KGM", "l/min": "L2", "m3/h": "MQH"}
_UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"


def eu_information(unit: str) -> ua.EUInformation:
    """The OPC-UA EngineeringUnits value for a catalogue unit; UnitId -1 when it has no UNECE code."""
    code = _UNECE.get(unit)
    unit_id = -1
    if code:
        unit_id = 0
        for ch in code:
            unit_id = (unit_id << 8) | ord(ch)
    return ua.EUInformation(NamespaceUri=_UNECE_URI, UnitId=unit_id, DisplayName=ua.LocalizedText(unit),
                            Description=ua.LocalizedText(unit))


def generate_certificate(cert_file: Path, key_file: Path, application_uri: str, *, server: bool,
                         hostnames: Iterable[str] = ("localhost",), days: int = 365) -> None:
    """A self-signed OPC-UA application instance certificate (DER) and its RSA key (PEM).

    The URI SAN must equal the application's ApplicationUri: servers compare the two at CreateSession.
    """
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for h in (*hostnames, socket.gethostname()):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(key, application_uri.rsplit(":", 1)[-1], {}, names,
                                                         usage, days=days)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_file.write_bytes(cert_gen.dump_private_key_as_pem(key))


def status_code(status: str | int) -> int:
    """``"Good"``, ``"Bad"``, ``"BadSensorFailure"``, ``"UncertainLastUsableValue"``… or a raw code."""
    if isinstance(status, int):
        return status
    try:
        return int(getattr(ua.StatusCodes, status))
    except AttributeError:
        raise ValueError(f"unknown OPC-UA status {status!r} (use e.g. Good, Bad, BadSensorFailure)") from None


def _builtin_value(spec: PointSpec, point: str, t: float) -> float:
    """A slow sine inside the point's normal range: enough to see values move."""
    lo, hi = spec.normal_range or spec.physical_range or (0.0, 1.0)
    if spec.unit in ("bool", "code"):  # a switch or a mode: its first state
        return 0.0
    phase = (sum(map(ord, point)) % 360) * math.pi / 180
    return round((lo + hi) / 2 + (hi - lo) * 0.3 * math.sin(2 * math.pi * t / 60 + phase), 3)


class _PasswordUsers(UserManager):
    """Username/password logins; anything else is refused (BadUserAccessDenied)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        expected = self._users.get(username or "")
        if expected is None or not hmac.compare_digest(expected.encode(), (password or "").encode()):
            log.info("opcua sim: login refused for user %r", username)
            return None
        return User(role=UserRole.User, name=username)


class SimOpcUaServer:
    """An asyncua server for ``assets`` = [(asset id, asset type id)], driven from any thread.

    ``security``: one mode or several offered side by side, Sign/SignAndEncrypt with ``policy``
    (Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss);
    the certificate is ``cert_file``/``key_file`` or generated into ``cert_dir`` (a temp dir by default).
    ``users``: {name: password}; when given, anonymous sessions are refused. ``rate_hz`` > 0 updates
    every point that often from ``values`` (or a built-in slow sine), stamped with the current time.
    """

    def __init__(self, port: int = 4840, assets: Sequence[tuple[str, str]] = (("trailer-001", "refrigerated-trailer"),),
                 *, host: str = "127.0.0.1", security: SecurityMode | Sequence[SecurityMode] = "None",
                 users: Mapping[str, str] | None = None, cert_file: Path | None = None, key_file: Path | None = None,
                 cert_dir: Path | None = None, rate_hz: float = 0.0, values: ValueFn | None = None,
                 policy: str = "Basic256Sha256") -> None:
        self.host, self.port = host, port
        self.assets = [(a, t, get_type(t)) for a, t in assets]
        self.modes: list[SecurityMode] = [security] if isinstance(security, str) else list(security)
        for m in self.modes:
            if m not in _POLICY:
                raise ValueError(f"security {m!r}: use None, Sign or SignAndEncrypt")
        if policy != "Basic256Sha256" and any((policy, m) not in _POLICIES for m in self.modes if m != "None"):
            raise ValueError(f"policy {policy!r}: use Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss")
        self.policy = policy
        self.users = dict(users or {})
        self.rate_hz = rate_hz
        self.values = values
        self.cert_file, self.key_file = cert_file, key_file
        self._temp_dir: Path | None = None
        if self.cert_file is None and any(m != "None" for m in self.modes):
            if cert_dir is None:
                self._temp_dir = Path(tempfile.mkdtemp(prefix="assettwin-opcua-sim-"))
            d = cert_dir or self._temp_dir
            assert d is not None
            self.cert_file, self.key_file = d / "server_cert.der", d / "server_key.pem"
            if not self.cert_file.exists():
                generate_certificate(self.cert_file, self.key_file, APPLICATION_URI, server=True,
                                     hostnames=("localhost", "127.0.0.1", host))
        # Last value per point, kept across restarts like a PLC's retained memory.
        self._last: dict[tuple[str, str], ua.DataValue] = {}
        self._server: Server | None = None
        self._ns = 2
        self._present = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.nodes_present = threading.Event()
        """Set while the asset nodes exist (cleared by ``restart(absent_s>0)`` until they are back)."""
        self.writes: list[tuple[str, object, str]] = []
        """Every Write a client sent, in order: (NodeId string, value, the status the server answered)."""

    # -- addresses -------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    def node_id(self, asset: str, point: str) -> str:
        return f"ns={self._ns};s={asset}.{point}"

    def browse_path(self, asset: str, point: str) -> str:
        return f"/Objects/{self._ns}:{asset}/{self._ns}:{point}"

    # -- control, from any thread --------------------------------------------------------------------------

    def start(self) -> None:
        """Build the address space and listen; returns once clients can connect."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name=f"opcua-sim-{self.port}",
                                            daemon=True)
            self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self.stop()  # e.g. the port is taken: leave no loop thread behind
            raise

    def stop(self) -> None:
        """Stop serving (every session drops) and end the loop thread."""
        loop = self._loop
        if loop is None:
            return
        self._call(self._stop())
        self._call(self._cancel_leftovers())
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._loop = self._thread = None

    def close(self) -> None:
        """Stop, and delete the certificate this object generated into a temp dir (if it did)."""
        self.stop()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def restart(self, absent_s: float = 0.0, down_s: float = 0.0) -> None:
        """A fresh server process on the same port: sessions and subscriptions are gone, values retained.

        ``down_s``: extra time between stop and start (rebuilding the server takes ~2 s anyway). ``absent_s``:
        after the start the asset nodes are missing for that long (clients get BadNodeIdUnknown), then
        appear. Returns once the new server listens.
        """
        self._call(self._restart(absent_s, down_s))

    def restore_nodes(self) -> None:
        """End a ``restart(absent_s=…)`` window now: the asset nodes appear, with their retained values."""
        self._call(self._restore_nodes())

    def value(self, asset: str, point: str) -> object:
        """The node's current value, as a client would read it."""
        server = self._server
        assert server is not None

        async def read() -> object:  # on the server's loop, like every other access to its address space
            return server.read_attribute_value(ua.NodeId(f"{asset}.{point}", self._ns)).Value.Value

        return self._call(read())

    def set_value(self, asset: str, point: str, value: float | None, status: str | int = "Good",
                  source_ts_ns: int | None = None) -> None:
        """Write a point with a status and a source timestamp (now when not given)."""
        self._call(self._write(asset, point, value, status_code(status), source_ts_ns))

    def __enter__(self) -> SimOpcUaServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, coro: Any, timeout: float = 60) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("SimOpcUaServer is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- the server, on its loop ------------------------------------------------------------------------------

    async def _build(self) -> Server:
        server = Server(user_manager=_PasswordUsers(self.users) if self.users else None)
        await server.init()
        server.disable_clock()  # its 1 s tick would delay every stop by up to a second
        server.set_endpoint(self.endpoint)
        server.set_server_name("assettwin simulated PLC")
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy([_POLICIES.get((self.policy, m), _POLICY[m]) for m in self.modes])
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if self.cert_file is not None and self.key_file is not None:
            await server.load_certificate(str(self.cert_file))
            await server.load_private_key(str(self.key_file))
        self._ns = await server.register_namespace(NAMESPACE_URI)
        server.subscribe_server_callback(CallbackType.PostWrite, self._log_writes)
        return server

    def _log_writes(self, event: Any, _dispatcher: Any) -> None:
        """The write log: what clients asked of the PLC and what it answered (tests prove nothing else came)."""
        if not event.is_external:
            return  # the simulator building its own address space
        for wv, status in zip(event.request_params.NodesToWrite, event.response_params, strict=False):
            if wv.AttributeId != ua.AttributeIds.Value:
                continue
            value = wv.Value.Value.Value if wv.Value is not None and wv.Value.Value is not None else None
            self.writes.append((wv.NodeId.to_string(), value, status.name))

    async def _add_assets(self, server: Server) -> None:
        ns, objects = self._ns, server.nodes.objects
        for asset, _type_id, atype in self.assets:
            obj = await objects.add_object(ua.NodeId(asset, ns), ua.QualifiedName(asset, ns))
            for point, spec in atype.points.items():
                dv = self._last.get((asset, point))
                initial = dv.Value.Value if dv is not None and dv.Value is not None else None
                if initial is None:
                    initial = _builtin_value(spec, point, time.time())
                var = await obj.add_variable(ua.NodeId(f"{asset}.{point}", ns), ua.QualifiedName(point, ns),
                                             ua.Variant(float(initial), ua.VariantType.Double))
                # Standard property names live in namespace 0 (OPC 10000-8), so generic clients find them.
                await var.add_property(ua.NodeId(f"{asset}.{point}.EngineeringUnits", ns),
                                       ua.QualifiedName("EngineeringUnits", 0), ua.Variant(eu_information(spec.unit)),
                                       datatype=ua.NodeId(ua.ObjectIds.EUInformation))
                if spec.physical_range:
                    lo, hi = spec.physical_range
                    await var.add_property(ua.NodeId(f"{asset}.{point}.EURange", ns),
                                           ua.QualifiedName("EURange", 0), ua.Variant(ua.Range(Low=lo, High=hi)),
                                           datatype=ua.NodeId(ua.ObjectIds.Range))
                await var.set_writable()
                if dv is not None:
                    await server.write_attribute_value(var.nodeid, dv)
        self._present = True
        self.nodes_present.set()

    async def _start(self) -> None:
        if self._server is not None:
            return
        server = await self._build()
        await self._add_assets(server)
        await server.start()
        self._server = server
        if self.rate_hz > 0:
            self._spawn(self._generate())
        log.info("opcua sim: serving %d assets on %s (security %s, %s)", len(self.assets), self.endpoint,
                 "/".join(self.modes), "users " + ",".join(self.users) if self.users else "anonymous")

    async def _stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        server, self._server = self._server, None
        self._present = False
        self.nodes_present.clear()
        if server is not None:
            await server.stop()
            # asyncua keeps sessions with subscriptions alive for a reconnect (Part 4 §6.7); a restarted PLC
            # process keeps nothing, and their timers would outlive this loop.
            for session in list(server.iserver._external_sessions.values()):
                await session.close_session(True)

    async def _cancel_leftovers(self) -> None:
        """asyncua's own background tasks (session timers...) end with the loop, not pending forever."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _restart(self, absent_s: float, down_s: float) -> None:
        await self._stop()
        if down_s > 0:
            await asyncio.sleep(down_s)
        # Built only now, like a restarting process: asyncua's ~2 s of address-space loading blocks this loop,
        # and an old server that stopped answering meanwhile would look like a network fault to its clients.
        new = await self._build()
        if absent_s <= 0:
            await self._add_assets(new)
        await new.start()
        self._server = new
        if absent_s > 0:
            self._spawn(self._add_assets_later(absent_s))
        if self.rate_hz > 0:
            self._spawn(self._generate())
        log.info("opcua sim: restarted on %s%s", self.endpoint,
                 f", nodes absent for {absent_s:g} s" if absent_s else "")

    async def _add_assets_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._restore_nodes()

    async def _restore_nodes(self) -> None:
        if self._server is not None and not self._present:
            await self._add_assets(self._server)
            log.info("opcua sim: asset nodes are back on %s", self.endpoint)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, asset: str, point: str, value: float | None, code: int, source_ts_ns: int | None) -> None:
        if not any(a == asset and point in t.points for a, _, t in self.assets):
            raise KeyError(f"no point {asset}/{point} on this server")
        now = datetime.now(UTC)
        src = now
        if source_ts_ns is not None:  # integer arithmetic: exact to the µs (datetime's resolution)
            src = datetime.fromtimestamp(source_ts_ns // 1_000_000_000, UTC).replace(
                microsecond=(source_ts_ns // 1000) % 1_000_000)
        variant = ua.Variant() if value is None else ua.Variant(float(value), ua.VariantType.Double)
        dv = ua.DataValue(Value=variant, StatusCode=ua.StatusCode(code), SourceTimestamp=src, ServerTimestamp=now)
        self._last[(asset, point)] = dv
        if self._server is not None and self._present:
            await self._server.write_attribute_value(ua.NodeId(f"{asset}.{point}", self._ns), dv)

    async def _generate(self) -> None:
        period = 1.0 / self.rate_hz
        fn = self.values
        while True:
            t = time.time()
            if self._present:
                for asset, _, atype in self.assets:
                    for point, spec in atype.points.items():
                        v = fn(asset, point, t) if fn is not None else _builtin_value(spec, point, t)
                        await self._write(asset, point, v, ua.StatusCodes.Good, None)
            await asyncio.sleep(max(0.0, period - (time.time() - t)))


def _parse_assets(text: str) -> list[tuple[str, str]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        asset, _, type_id = item.partition("=")
        type_id = type_id or "refrigerated-trailer"
        try:
            get_type(type_id)
        except KeyError as exc:
            raise typer.BadParameter(exc.args[0], param_hint="--assets") from None
        out.append((asset, type_id))
    if not out:
        raise typer.BadParameter("give at least one asset", param_hint="--assets")
    return out


def opcua_server_command(
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 4840,
    host: Annotated[str, typer.Option(help="address to bind and advertise")] = "127.0.0.1",
    assets: Annotated[str, typer.Option(help="asset[=type],… e.g. trailer-001,trailer-002=refrigerated-trailer "
                                             "(type defaults to refrigerated-trailer)")] = "trailer-001",
    security: Annotated[list[str] | None, typer.Option(help="None, Sign or SignAndEncrypt (Basic256Sha256); "
                                                           "repeat to offer several")] = None,
    user: Annotated[list[str] | None, typer.Option(help="name:password allowed to log in; repeat for more. "
                                                       "None given = anonymous access")] = None,
    rate: Annotated[float, typer.Option(min=0, help="updates per second of every point (0 = static)")] = 1.0,
    cert_dir: Annotated[Path | None, typer.Option(help="where the server certificate is kept or generated")] = None,
) -> None:
    """Serve simulated assets over OPC-UA until Ctrl-C: one object per asset, one variable per point."""
    modes = security or ["None"]
    for m in modes:
        if m not in _POLICY:
            raise typer.BadParameter(f"{m!r}: use None, Sign or SignAndEncrypt", param_hint="--security")
    users = {}
    for u in user or []:
        name, sep, password = u.partition(":")
        if not sep or not name:
            raise typer.BadParameter(f"{u!r}: expected name:password", param_hint="--user")
        users[name] = password
    sim = SimOpcUaServer(port, _parse_assets(assets), host=host, security=modes,  # type: ignore[arg-type]
                         users=users, cert_dir=cert_dir, rate_hz=rate)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    sim.start()
    typer.echo(f"serving on {sim.endpoint} (security {'/'.join(modes)}); nodes:", err=True)
    for asset, _, atype in sim.assets:
        for point in atype.points:
            typer.echo(f"  {sim.node_id(asset, point)}  {sim.browse_path(asset, point)}", err=True)
    if sim.cert_file:
        typer.echo(f"server certificate: {sim.cert_file}", err=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
