"""The machine simulator's accelerometer front: multi-channel acceleration blocks of a ``simulators.machine.Machine``
published as binary waveform frames (``models.waveform``) on MQTT, or as an array variable of the simulated OPC-UA
server, the way a DAQ beside the machine would.

Channels are measuring positions on the two bearing housings (drive end horizontal / vertical, non-drive end
horizontal / vertical): each sees the machine's vibration through its own transfer gain and adds its own sensor
noise, so they agree on the defect lines and differ in level, as real positions do.

>>> from simulators.machine import Machine, MachineParams
>>> f = machine_frame(Machine("pump-1", MachineParams(), seed=3), 10**18, 86_400.0, channels=4)
>>> (f.asset, f.data.shape, f.t0_ns - 10**18, round(f.rpm))
('pump-1', (4, 25600), 86400000000000, 1768)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import paho.mqtt.client as mqtt
from asyncua import ua

from models.waveform import Frame, encode
from simulators.devices import parse_broker_url
from simulators.machine import G, Machine
from simulators.opcua_server import SimOpcUaServer

CHANNEL_GAINS = (1.0, 0.8, 0.6, 0.45)
"""Transfer gain from the defect to each position (DE-H, DE-V, NDE-H, NDE-V): nearer the bearing, larger."""
SENSOR_NOISE_G = 0.005
"""Each accelerometer's own noise, g RMS (a 100 mV/g ICP sensor's, over 10 kHz)."""
TOPIC_TEMPLATE = "sim/{asset}/waveform"


def machine_frame(machine: Machine, t0_ns: int, t_s: float, channels: int = 4) -> Frame:
    """The block starting ``t_s`` into the machine's life, stamped ``t0_ns + t_s``, in m/s², with its speed."""
    if not 1 <= channels <= len(CHANNEL_GAINS):
        raise ValueError(f"channels {channels}: 1..{len(CHANNEL_GAINS)} measuring positions")
    base = machine.block(t_s) * G
    rng = np.random.default_rng(np.random.SeedSequence(machine.seed, spawn_key=(3, round(t_s * 1000))))
    gains = np.asarray(CHANNEL_GAINS[:channels])[:, None]
    data = gains * base + rng.standard_normal((channels, len(base))) * (SENSOR_NOISE_G * G)
    return Frame(machine.asset_id, machine.params.sample_rate_hz, t0_ns + round(t_s * 1e9),
                 data.astype(np.float32), float(machine.shaft_hz(t_s)) * 60.0)


def publish_frames(broker_url: str, frames: Iterable[Frame], *, topic_template: str = TOPIC_TEMPLATE, qos: int = 1,
                   window: int = 8, timeout_s: float = 60.0) -> int:
    """Publish frames in order (at most ``window`` unacknowledged: each is ~400 kB); returns how many, once the
    broker has acknowledged them all."""
    host, port, user, password = parse_broker_url(broker_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"daq-{uuid.uuid4().hex[:12]}")
    if user is not None:
        client.username_pw_set(user, password)
    client.max_inflight_messages_set(window)
    try:
        client.connect(host, port)
    except OSError as exc:
        raise ConnectionError(f"cannot reach MQTT broker {broker_url}: {exc}") from None
    client.loop_start()
    sent: list[mqtt.MQTTMessageInfo] = []
    try:
        for f in frames:
            sent.append(client.publish(topic_template.format(asset=f.asset), encode(f), qos=qos))
            if len(sent) > window:
                sent[-window - 1].wait_for_publish(timeout_s)
        for m in sent:
            m.wait_for_publish(timeout_s)
            if not m.is_published():
                raise TimeoutError(f"{broker_url}: a frame was not acknowledged within {timeout_s} s")
    finally:
        client.disconnect()
        client.loop_stop()
    return len(sent)


def publish_frame_opcua(server: SimOpcUaServer, frame: Frame, point: str = "waveform") -> str:
    """Write ``frame`` to the array variable ``{asset}.{point}`` of a running simulated OPC-UA server (Float[],
    channel-major, SourceTimestamp the block's first sample; created on first use), as a DAQ front that serves its
    blocks over OPC-UA does. Returns the variable's NodeId string, for a gateway's ``nodes[].node``."""
    ns = server._ns
    node_id = ua.NodeId(f"{frame.asset}.{point}", ns)
    values = np.ascontiguousarray(frame.data, np.float32).ravel().tolist()
    src = datetime.fromtimestamp(frame.t0_ns // 1_000_000_000, UTC).replace(microsecond=(frame.t0_ns // 1000) % 10**6)

    async def write() -> None:  # on the server's loop, like every access to its address space
        srv = server._server
        assert srv is not None
        try:
            await srv.get_node(node_id).read_browse_name()
        except ua.UaStatusCodeError:
            obj = srv.get_node(ua.NodeId(frame.asset, ns))
            await obj.add_variable(node_id, ua.QualifiedName(point, ns), ua.Variant(values, ua.VariantType.Float))
        dv = ua.DataValue(Value=ua.Variant(values, ua.VariantType.Float), SourceTimestamp=src,
                          ServerTimestamp=datetime.now(UTC))
        await srv.write_attribute_value(node_id, dv)

    server._call(write())
    return node_id.to_string()
