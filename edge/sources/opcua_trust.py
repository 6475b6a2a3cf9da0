"""Who an OPC-UA server is: the check the OPC-UA source (``opcua.py``) hands asyncua, so that a server is only used
once its certificate is trusted — pinned (``server_cert_file``), in the trust list ``trust_dir`` (the certificate
itself, or a CA that issued it, checked by asyncua's ``TrustStore``), or pinned on first use into an empty
``trust_dir`` when ``trust_on_first_use`` says so. Refusals name the certificate's SHA-256 fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("edge.sources.opcua")


class UntrustedServer(ConnectionError):
    """The server's certificate is not in the trust list nor issued by a CA in it: the server is refused."""

    def __init__(self, message: str, fingerprint: str) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as colon-separated hex, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


_TRUST_FILE = re.compile(r".*\.(der|pem)$", re.IGNORECASE)  # the files TrustStore reads
_TOFU_PREFIX = "pinned-on-first-use-"


class ServerTrust:
    """Decides whether a server certificate is trusted; asyncua calls it (``Client.certificate_validator``) at
    CreateSession, once the server has signed with the certificate's key and before credentials are sent.

    Trusted: a certificate byte-for-byte in ``trust_dir`` (a pin: the operator vouched for it, CA flag or not),
    or one that chains to a CA there and passes asyncua's ``CertificateValidator`` (within its validity period,
    the application URI in the certificate is the server's). With ``tofu`` and a ``trust_dir`` holding no
    certificate, the first certificate seen is written there and trusted.
    """

    def __init__(self, trust_dir: Path, tofu: bool, source: str, endpoint: str, on_pin: Callable[[], None]) -> None:
        self.trust_dir, self.tofu, self.source, self.endpoint = Path(trust_dir), tofu, source, endpoint
        self._on_pin = on_pin

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        thumb = fingerprint(cert)
        trusted = self._trusted_files()
        der = cert.public_bytes(serialization.Encoding.DER)
        if not trusted:
            if self.tofu:
                self._pin(cert, thumb)
                return
            raise UntrustedServer(f"server certificate {thumb} ({_subject(cert)}) is not trusted: trust_dir "
                                  f"{self.trust_dir} holds no certificate; put the server's certificate (or its CA) "
                                  "there, or set trust_on_first_use", thumb)
        if any(c.public_bytes(serialization.Encoding.DER) == der for _, c in trusted):
            return
        store = TrustStore([self.trust_dir], [])
        await store.load()
        validator = CertificateValidator(
            CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI
            | CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.PEER_SERVER, store)
        try:
            await validator.validate(cert, app)
        except ServiceError as exc:
            why = ua.StatusCode(exc.code).name
            pins = [fingerprint(c) for p, c in trusted if p.name.startswith(_TOFU_PREFIX)]
            hint = (f"it differs from the certificate pinned on first use ({', '.join(pins)}): if the server's "
                    "certificate was replaced on purpose, delete the pin from trust_dir" if pins else
                    "if this is the right server, copy its certificate (or its CA) into trust_dir")
            raise UntrustedServer(f"server certificate {thumb} ({_subject(cert)}) is not trusted ({why}, trust_dir "
                                  f"{self.trust_dir}): {hint}", thumb) from None

    def _trusted_files(self) -> list[tuple[Path, x509.Certificate]]:
        if not self.trust_dir.is_dir():
            return []
        out = []
        for path in sorted(self.trust_dir.iterdir()):
            if path.is_file() and _TRUST_FILE.match(path.name):
                data = path.read_bytes()
                try:
                    cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
                            else x509.load_der_x509_certificate(data))
                except ValueError:
                    raise ConnectionError(f"trust_dir: {path} is not a certificate (DER or PEM)") from None
                out.append((path, cert))
        return out

    def _pin(self, cert: x509.Certificate, thumb: str) -> None:
        """Write the certificate into the trust list (atomically, durably): from now on it is the only one."""
        self.trust_dir.mkdir(parents=True, exist_ok=True)
        path = self.trust_dir / f"{_TOFU_PREFIX}{thumb.replace(':', '').lower()[:16]}.der"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.DER))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.trust_dir, os.O_RDONLY)  # the rename itself must survive a power cut, too
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._on_pin()
        log.warning("opcua source %s (%s): trusted on first use: pinned server certificate %s (%s) into %s; "
                    "from now on a server showing another certificate is refused", self.source, self.endpoint,
                    thumb, _subject(cert), path,
                    extra={"endpoint": self.endpoint, "fingerprint": thumb, "pinned": str(path)})


def certificate_uri(cert: x509.Certificate) -> str | None:
    """The application URI in a certificate's SAN, which servers compare with the session's."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
