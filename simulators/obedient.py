"""Simulated reefers that obey: a setpoint or a defrost sent by the platform changes what they then report.

Why: the actuator loop (cloud → gateway → device → reading back) is only closed when the device does something
physical with a command. ``ReeferPlant`` is the smallest plant that does: supply air approaches the setpoint
first-order (time constant ``tau_s``), and a defrost warms it towards ``defrost_c`` for ``defrost_s``. Its run
``mode`` (the codes of ``simulators.trailer.MODES``) is continuous (1: it holds the setpoint) or start-stop (0: the
compressor stops below setpoint - ``band_c`` and the air drifts towards ``ambient_c`` until setpoint + ``band_c``).
Two fronts put it on the wire the way real units are read:

- ``MqttReefer``: takes ``{"v": <setpoint>}`` on ``sim/{asset}/set/setpoint``, ``{"v": <mode>}`` on
  ``sim/{asset}/set/mode`` and ``{"start": …}`` on ``sim/{asset}/cmd/defrost`` (the refrigerated-trailer type's
  declared writes), reports ``setpoint``, ``mode`` and ``supply_air`` on ``sim/{asset}/{point}`` every
  ``period_s``; every write it received is in ``writes``.
- ``follow_setpoint``: drives ``supply_air`` of an asset on a ``SimOpcUaServer`` from the ``setpoint`` and ``mode``
  nodes that clients write (the server's own write log is ``SimOpcUaServer.writes``).

>>> plant = ReeferPlant(setpoint_c=4.0, supply_air_c=4.0, tau_s=10.0)
>>> plant.setpoint_c = -18.0
>>> round(plant.step(10.0), 2)  # one time constant: 63 % of the way
-9.91
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt


@dataclass
class ReeferPlant:
    setpoint_c: float
    supply_air_c: float
    tau_s: float = 5.0
    defrost_c: float = 10.0
    defrost_s: float = 0.0
    mode: int = 1
    band_c: float = 1.0
    ambient_c: float = 25.0
    compressor_on: bool = True
    _defrost_until: float = 0.0

    def start_defrost(self, now: float | None = None) -> None:
        self._defrost_until = (time.monotonic() if now is None else now) + self.defrost_s

    def step(self, dt_s: float, now: float | None = None) -> float:
        """Advance ``dt_s`` seconds; the new supply air temperature."""
        if self.mode == 1:
            self.compressor_on = True
        elif self.supply_air_c <= self.setpoint_c - self.band_c:
            self.compressor_on = False
        elif self.supply_air_c >= self.setpoint_c + self.band_c:
            self.compressor_on = True
        # Start-stop cools past the setpoint (towards the band's far side) and then coasts: it cycles.
        cooling = self.setpoint_c if self.mode == 1 else self.setpoint_c - 2 * self.band_c
        target = cooling if self.compressor_on else self.ambient_c
        if (time.monotonic() if now is None else now) < self._defrost_until:
            target = self.defrost_c
        self.supply_air_c += (target - self.supply_air_c) * (1.0 - math.exp(-dt_s / self.tau_s))
        return self.supply_air_c


class MqttReefer:
    """A reefer on MQTT that obeys its declared writes and reports what it does (see the module docstring)."""

    def __init__(self, url: str, asset: str, plant: ReeferPlant, period_s: float = 0.5) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.asset, self.plant, self.period_s = asset, plant, period_s
        self.writes: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self._client.on_connect = lambda c, *_: c.subscribe([(f"sim/{asset}/set/#", 1), (f"sim/{asset}/cmd/#", 1)])
        self._client.on_message = self._on_message
        self._client.connect(host, int(port))
        self._client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reefer-{asset}", daemon=True)
        self._thread.start()

    def _report(self) -> None:
        for point, value in (("setpoint", self.plant.setpoint_c), ("mode", self.plant.mode),
                             ("supply_air", self.plant.supply_air_c)):
            self._client.publish(f"sim/{self.asset}/{point}", json.dumps({"v": round(value, 3)}), qos=1)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.period_s):
            now = time.monotonic()
            with self._lock:
                self.plant.step(now - last, now)
                self._report()
            last = now

    def _on_message(self, client, userdata, msg) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return  # a real unit ignores what it cannot parse
        self.writes.append({"topic": msg.topic, **body})
        with self._lock:
            if msg.topic.endswith("/set/setpoint") and isinstance(body.get("v"), int | float):
                self.plant.setpoint_c = float(body["v"])
                self._report()  # a unit acknowledges a new setpoint at once
            elif msg.topic.endswith("/set/mode") and body.get("v") in (0, 1):
                self.plant.mode = int(body["v"])
                self._report()
            elif msg.topic.endswith("/cmd/defrost") and body.get("start"):
                self.plant.start_defrost()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.disconnect()
        self._client.loop_stop()


def follow_setpoint(sim: Any, asset: str, plant: ReeferPlant, period_s: float = 0.5) -> threading.Event:
    """Run ``plant`` against a ``SimOpcUaServer``: its setpoint is read from the ``setpoint`` node (what clients
    wrote), its supply air written to ``supply_air``. Set the returned event to stop."""
    stop = threading.Event()

    def run() -> None:
        last = time.monotonic()
        while not stop.wait(period_s):
            now = time.monotonic()
            try:
                value = sim.value(asset, "setpoint")
                if isinstance(value, int | float):
                    plant.setpoint_c = float(value)
                mode = sim.value(asset, "mode")
                if mode in (0, 1):
                    plant.mode = int(mode)
                sim.set_value(asset, "supply_air", round(plant.step(now - last, now), 3))
            except Exception:  # the server restarting or stopped: try again next period
                pass
            last = now

    threading.Thread(target=run, name=f"opcua-plant-{asset}", daemon=True).start()
    return stop
