"""Builds configured paho clients: TLS, credentials and protocol version in one place, for the
uplink and the MQTT source alike."""

from __future__ import annotations

import ssl
import uuid
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from edge.config import MqttLink


def host_port(url: str) -> tuple[str, int, bool]:
    parsed = urlparse(url)
    tls = parsed.scheme == "mqtts"
    return parsed.hostname or "127.0.0.1", parsed.port or (8883 if tls else 1883), tls


def make_client(link: MqttLink, default_id: str) -> mqtt.Client:
    v5 = link.mqtt_version == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=link.client_id or f"{default_id}-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        **({} if v5 else {"clean_session": True}),
    )
    if link.username:
        client.username_pw_set(link.username, link.password)
    _, _, tls = host_port(link.url)
    if tls:
        client.tls_set(
            ca_certs=str(link.ca_file) if link.ca_file else None,
            certfile=str(link.cert_file) if link.cert_file else None,
            keyfile=str(link.key_file) if link.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect_async(client: mqtt.Client, link: MqttLink) -> None:
    """Connect in the background: paho's loop retries with backoff until the broker is there."""
    host, port, _ = host_port(link.url)
    client.connect_async(host, port, keepalive=link.keepalive_s)
    client.loop_start()
