"""The cloud's broker connections (ingest workers, the API's link) get their address, credentials and TLS
here, so both speak to a TLS broker the same way: ``mqtts://`` turns TLS on with the server's certificate
and host name verified, and a client certificate when one is configured (the shipped Mosquitto takes its
CN, ``cloud``, as the identity its ACL grants the cloud role to)."""

from __future__ import annotations

import ssl
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from cloud.settings import CloudSettings


def broker_address(settings: CloudSettings) -> tuple[str, int]:
    u = urlparse(settings.mqtt_url)
    return u.hostname or "127.0.0.1", u.port or (8883 if u.scheme == "mqtts" else 1883)


def configure(client: mqtt.Client, settings: CloudSettings) -> None:
    """Credentials and, for mqtts://, TLS (never with verification off: a man in the middle would read and
    forge every gateway's traffic)."""
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    if urlparse(settings.mqtt_url).scheme == "mqtts":
        client.tls_set(ca_certs=settings.mqtt_ca_file, certfile=settings.mqtt_cert_file,
                       keyfile=settings.mqtt_key_file, cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
