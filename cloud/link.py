"""The cloud's own MQTT connection (API process): publishes desired configurations (retained) and
alert notifications, and listens for what gateways report (applied configuration, live telemetry for
WebSocket clients). Ingest has its own connection; this one never acknowledges data for storage."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt

from cloud import mqttconn
from cloud.settings import CloudSettings

log = logging.getLogger("cloud.link")

Handler = Callable[[str, bytes], None]


class CloudLink:
    def __init__(self, settings: CloudSettings, subscriptions: dict[str, Handler] | None = None) -> None:
        self.settings = settings
        self._subs = dict(subscriptions or {})
        v5 = settings.mqtt_version == "5"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"api-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        mqttconn.configure(self.client, settings)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()

    def start(self) -> None:
        self.client.connect_async(*mqttconn.broker_address(self.settings), keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.error("cloud link: broker refused connection: %s", reason_code)
            return
        if self._subs:
            client.subscribe([(f, 1) for f in self._subs])
        self.connected.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        for flt, handler in self._subs.items():
            if mqtt.topic_matches_sub(flt, msg.topic):
                try:
                    handler(msg.topic, msg.payload)
                except Exception:  # one bad message must not stop the link
                    log.exception("cloud link: handler for %s failed on %s", flt, msg.topic)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS
