"""Which addresses a webhook may reach. A webhook URL is chosen by a tenant's admin, so it is hostile input aimed at
our own network: every address its host resolves to is checked (loopback, private, link-local, multicast,
unspecified, reserved and cloud-metadata addresses are refused unless ``TWIN_WEBHOOK_ALLOW`` admits them), at
registration and again at every delivery, and the checked :class:`Target` carries the very addresses to connect
to, so a rebinding resolver gets no second lookup. URLs in logs and answers are redacted here too."""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "169.254.170.2",    # AWS ECS task metadata
    "fd00:ec2::254",    # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",      # Oracle Cloud (Python counts it as global)
    "168.63.129.16",    # Azure WireServer: a public address that answers only inside Azure
))
"""Refused even when a host-name entry of the allow-list admits the host: only a network entry that
contains one of these admits it."""

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class WebhookRefused(ValueError):
    """A webhook URL, or one of the addresses it resolves to, that the policy refuses; the message says why
    without the URL's credentials."""


class WebhookUnresolved(WebhookRefused):
    """The host does not resolve (now): refused at registration, retried later at delivery."""


def forbidden_reason(addr: IpAddress) -> str | None:
    """Why ``addr`` is no place to send a webhook, or None for a public address. An IPv6 address that
    embeds an IPv4 one (mapped, 6to4, NAT64) is judged by the IPv4 address it leads to."""
    if addr in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(addr, ipaddress.IPv6Address):
        inner = addr.ipv4_mapped or addr.sixtofour
        if inner is None and any(addr in n for n in _NAT64):
            inner = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if inner is not None:
            return forbidden_reason(inner)
    for reason, flag in (("a loopback", addr.is_loopback), ("a link-local", addr.is_link_local),
                         ("a multicast", addr.is_multicast), ("an unspecified", addr.is_unspecified),
                         ("a reserved", addr.is_reserved), ("a private", addr.is_private)):
        if flag:
            return f"{reason} address"
    if not addr.is_global:
        return "not a globally routable address"
    return None


def parse_allow(entries: Iterable[str]) -> tuple[tuple[IpNetwork, ...], frozenset[str]]:
    """``TWIN_WEBHOOK_ALLOW`` entries: networks (``10.1.0.0/16``, ``127.0.0.1``) or exact host names
    (``hooks.plant.internal``). Raises ValueError naming a bad entry."""
    nets: list[IpNetwork] = []
    hosts: set[str] = set()
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*", entry):
            raise ValueError(f"TWIN_WEBHOOK_ALLOW: {raw!r} is neither a network (10.0.0.0/8, 127.0.0.1) "
                             "nor a host name")
        hosts.add(entry)
    return tuple(nets), frozenset(hosts)


_TOKENISH = re.compile(r"[A-Za-z0-9_\-]{16,}")


def redact(url: str) -> str:
    """``url`` fit for a log or an API answer: no userinfo, query values masked, no fragment, and long
    token-like path segments (Slack's and Discord's hook URLs keep their secret there) masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    segments = ["***" if _TOKENISH.fullmatch(seg) and re.search(r"[0-9A-Z]", seg) else seg
                for seg in parts.path.split("/")]
    query = "&".join(f"{kv.partition('=')[0]}=***" for kv in parts.query.split("&") if kv)
    return f"{parts.scheme}://{netloc}{'/'.join(segments)}" + (f"?{query}" if query else "")


def scrub(text: str, url: str) -> str:
    """An error message with whatever secret of ``url`` it might quote (password, query values) masked."""
    try:
        parts = urlsplit(url)
        secret_bits = [parts.password or "", parts.username or ""]
    except ValueError:
        return text
    secret_bits += [kv.partition("=")[2] for kv in parts.query.split("&")]
    for bit in sorted({b for b in secret_bits if len(b) >= 3} | {unquote(b) for b in secret_bits if len(b) >= 3},
                      key=len, reverse=True):
        text = text.replace(bit, "***")
    return text.replace(url, redact(url))


@dataclass(frozen=True)
class Target:
    """A checked webhook destination: where to connect (``addresses``, each one checked) and what to say
    there (``host_header``, ``sni`` for TLS, the credentials from the URL's userinfo)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    host_header: str
    addresses: tuple[str, ...]
    authorization: str | None

    def url_for(self, address: str) -> httpx.URL:
        return httpx.URL(scheme=self.scheme, host=address, port=self.port, raw_path=self.path.encode("ascii"))


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


class AddressPolicy:
    """Which destinations webhooks may reach: public addresses, plus what the allow-list admits."""

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver = resolve) -> None:
        self.networks, self.hosts = parse_allow(allow)
        self.resolver = resolver

    def admits(self, host: str, addr: IpAddress) -> str | None:
        """None when ``addr`` (one of ``host``'s addresses) may be reached, else why not."""
        if any(addr.version == n.version and addr in n for n in self.networks):
            return None
        reason = forbidden_reason(addr)
        if reason is None or (host in self.hosts and addr not in METADATA_ADDRESSES):
            return None
        return reason

    def check(self, url: str) -> Target:
        """Parse ``url``, resolve its host and check every address; raises WebhookRefused saying why."""
        try:
            u = httpx.URL(url)
            scheme, host, port = u.scheme, u.raw_host.decode("ascii").lower().rstrip("."), u.port
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
            raise WebhookRefused(f"not a URL ({type(exc).__name__})") from None
        if scheme not in ("http", "https"):
            raise WebhookRefused(f"scheme {scheme!r}: only http and https")
        if not host:
            raise WebhookRefused("no host")
        port = port or (443 if scheme == "https" else 80)
        try:
            literal: IpAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        try:
            addresses = [str(literal)] if literal is not None else self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise WebhookUnresolved(f"host {host} does not resolve ({first_line(exc)})") from None
        if not addresses:
            raise WebhookUnresolved(f"host {host} does not resolve")
        for a in addresses:
            reason = self.admits(host, ipaddress.ip_address(a))
            if reason is not None:
                shown = host if literal is not None else f"{host} resolves to {a}, which"
                raise WebhookRefused(f"{shown} is {reason}; TWIN_WEBHOOK_ALLOW can admit it")
        auth = None
        if u.userinfo:
            auth = "Basic " + base64.b64encode(unquote(u.userinfo.decode("ascii")).encode()).decode()
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if u.port is None else f"{bracketed}:{port}"
        path = u.raw_path.decode("ascii") or "/"
        return Target(url, scheme, host, port, path, host_header, tuple(addresses), auth)


def first_line(exc: BaseException) -> str:
    """An exception's first line, cut short: what a log line or a stored error keeps of it."""
    return (str(exc).splitlines() or [""])[0][:300]
