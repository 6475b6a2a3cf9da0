"""Builds configured paho clients: TLS, credentials and protocol version in one place, for the
uplink and the MQTT source alike."""

from __future__ import annotations

import random
import ssl
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttLink


def host_port(url: str) -> tuple[str, int, bool]:
    parsed = urlparse(url)
    tls = parsed.scheme == "mqtts"
    return parsed.hostname or "127.0.0.1", parsed.port or (8883 if tls else 1883), tls


SESSION_EXPIRY_S = 7 * 24 * 3600


def make_client(link: MqttLink, default_id: str, *, persistent: bool = False, manual_ack: bool = False) -> mqtt.Client:
    """``persistent``: keep the session while we are away (pass the same to ``connect_async``), so QoS 1
    messages published meanwhile are delivered after a restart. Client ids are stable for that reason."""
    v5 = link.mqtt_version == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=link.client_id or default_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        manual_ack=manual_ack,
        **({} if v5 else {"clean_session": not persistent}),
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
    # paho doubles the delay from min to max without jitter; a random base per client spreads a fleet's
    # retries after a broker restart instead of having every gateway knock at the same seconds.
    client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=random.uniform(20.0, 40.0))
    return client


def connect_async(client: mqtt.Client, link: MqttLink, *, persistent: bool = False) -> None:
    """Connect in the background: paho's loop retries with backoff until the broker is there."""
    host, port, _ = host_port(link.url)
    kwargs: dict = {}
    if link.mqtt_version == "5" and persistent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        kwargs = {"clean_start": False, "properties": props}
    client.connect_async(host, port, keepalive=link.keepalive_s, **kwargs)
    client.loop_start()
