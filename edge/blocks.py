"""The block stage: accelerometer blocks in, the asset's vibration feature points out, and a short ring of raw
blocks to upload around an anomaly.

A source hands a ``models.waveform.Frame`` to the agent's sink, which only queues it (``put``: the source's network
thread never computes). Each tick the agent drains the queue (``drain``) before it swaps the sample buffer, so a
block's features join the same tick as the scalar samples that arrived with it and are committed to the outbox
before the source acknowledges the block. Blocks of the same shape and rate are stacked into one
(channels, samples) batch and go through ``edge.vibration.VibrationFeatures`` in one call, each channel at its own
shaft speed (the frame's, else the asset's nominal one from ``assets[].machine``).

Per frame, each feature point is the largest over the frame's channels: ISO 20816 judges a machine by its worst
measuring position, and a bearing defect shows first on the channel nearest it. Points the asset's type does not
list are not produced, so the stage works for any type that names some of ``POINTS``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.config import GatewayConfig, OpcUaNode
from edge.vibration import FEATURES, BearingGeometry, VibrationFeatures
from models.machine import MachineProfile
from models.waveform import Frame, encode_snapshot
from models.wire import Quality

log = logging.getLogger("edge.blocks")

G = 9.80665
POINTS: dict[str, tuple[str, float]] = {
    "vib_velocity_rms": ("velocity_rms_mm_s", 1.0),
    "vib_accel_rms": ("accel_rms", 1.0 / G),  # the type's unit is g; blocks are m/s²
    "vib_accel_peak": ("accel_peak", 1.0 / G),
    "vib_crest_factor": ("crest_factor", 1.0),
    "vib_kurtosis": ("kurtosis", 1.0),
    "vib_env_bpfo": ("env_bpfo", 1.0),
    "vib_env_bpfi": ("env_bpfi", 1.0),
    "vib_env_bsf": ("env_bsf", 1.0),
    "vib_env_ftf": ("env_ftf", 1.0),
}
"""Asset point → (``edge.vibration.FEATURES`` column, scale)."""
MAX_PENDING = 256
"""Blocks queued between two ticks at most (a 4-channel 25.6 kHz block is 400 kB): beyond, the oldest is dropped
and counted, as a DAQ that outruns its gateway must not exhaust its memory."""


def machine_profiles(cfg: GatewayConfig) -> dict[str, MachineProfile]:
    """The assets whose type has vibration feature points, with their bearing and speed (default if unset)."""
    return {a.id: a.machine or MachineProfile() for a in cfg.assets
            if a.machine is not None or any(p in a.asset_type.points for p in POINTS)}


def array_frame(node: OpcUaNode, t_ns: int, raw: list) -> Frame | None:
    """A block from an OPC-UA array variable configured as a waveform (channel-major values, as many per channel,
    all finite); None when the node is not one or the array does not fit it."""
    spec = node.waveform
    if spec is None or not raw or len(raw) % spec.channels:
        return None
    try:
        data = np.asarray(raw, np.float32).reshape(spec.channels, -1)
    except (TypeError, ValueError):
        return None
    return Frame(node.asset, spec.sample_rate_hz, t_ns, data) if np.isfinite(data).all() else None


class BlockStage:
    """Frames → feature samples for the assets of one configuration; ``ring_blocks`` raw blocks kept per asset."""

    def __init__(self, assets: dict[str, MachineProfile], index: dict[tuple[str, str], int], *,
                 ring_blocks: int = 4, gateway: str = "", publish: Callable[[bytes], object] | None = None) -> None:
        self.assets = assets
        self.gateway = gateway
        self.publish = publish
        self._uploaded: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.index = index
        self.ring_blocks = ring_blocks
        self._pending: collections.deque[Frame] = collections.deque()
        self._lock = threading.Lock()
        self._rings: dict[str, collections.deque[Frame]] = {}
        self._extractors: dict[tuple[float, tuple], VibrationFeatures] = {}
        self._cols = {p: (FEATURES.index(f), k) for p, (f, k) in POINTS.items()}
        self.counts = {"blocks_in": 0, "blocks_dropped": 0, "blocks_unmapped": 0, "block_samples": 0,
                       "block_cpu_ns": 0, "snapshots": 0}

    def put(self, frame: Frame) -> None:
        """From a source's thread: queue only."""
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.counts["blocks_dropped"] += 1
            self._pending.append(frame)

    def _extractor(self, fs: float, bearing: BearingGeometry) -> VibrationFeatures:
        key = (fs, tuple(bearing))
        if key not in self._extractors:
            self._extractors[key] = VibrationFeatures(fs, bearing)
        return self._extractors[key]

    def drain(self, append: Callable[[int, int, float, int], None]) -> int:
        """Features of every queued frame, appended as (point index, t_ns, value, quality); returns frames done."""
        with self._lock:
            frames, self._pending = list(self._pending), collections.deque()
        if not frames:
            return 0
        t0 = time.process_time_ns()
        groups: dict[tuple, list[Frame]] = {}
        for f in frames:
            profile = self.assets.get(f.asset)
            if profile is None:
                self.counts["blocks_unmapped"] += 1
                continue
            b = profile.bearing
            geom = BearingGeometry(b.n_balls, b.ball_diameter_mm, b.pitch_diameter_mm, b.contact_angle_deg)
            groups.setdefault((f.sample_rate_hz, f.samples, geom), []).append(f)
            ring = self._rings.get(f.asset)
            if ring is None:
                ring = self._rings[f.asset] = collections.deque(maxlen=self.ring_blocks)
            ring.append(f)
        done = 0
        for (fs, _, geom), group in groups.items():
            x = np.concatenate([f.data for f in group], axis=0)
            shaft = np.concatenate([np.full(f.channels, (f.rpm or self.assets[f.asset].shaft_rpm) / 60.0)
                                    for f in group])
            feats = self._extractor(fs, geom).compute(x, shaft)
            row = 0
            for f in group:
                worst = feats[row:row + f.channels].max(axis=0)
                row += f.channels
                for point, (col, scale) in self._cols.items():
                    i = self.index.get((f.asset, point))
                    if i is not None:
                        append(i, f.t0_ns, float(worst[col] * scale), Quality.GOOD)
                self.counts["block_samples"] += f.channels * f.samples
                done += 1
        self.counts["blocks_in"] += done
        self.counts["block_cpu_ns"] += time.process_time_ns() - t0
        return done

    def has_ring(self, asset: str) -> bool:
        return bool(self._rings.get(asset))

    def snapshot(self, asset: str, header: dict) -> bytes | None:
        """The asset's ring of recent raw blocks, compressed (``models.waveform.encode_snapshot``); None if empty."""
        ring = self._rings.get(asset)
        if not ring:
            return None
        frames = list(ring)
        return encode_snapshot({**header, "asset": asset, "t0_ns": frames[0].t0_ns,
                                "t1_ns": frames[-1].t0_ns + frames[-1].duration_ns}, frames)

    def upload(self, asset: str, event_id: str, reason: str) -> bool:
        """The asset's ring, compressed, to the cloud (``publish``): once per event, as events are reported when
        they open and again when they close. Not kept in the outbox: a snapshot is evidence to look at, not data the
        cloud must not miss, and 400 kB a block would crowd the outbox out."""
        if self.publish is None or event_id in self._uploaded or not self.has_ring(asset):
            return False
        self._uploaded[event_id] = None
        if len(self._uploaded) > 1000:
            self._uploaded.popitem(last=False)
        payload = self.snapshot(asset, {"gateway": self.gateway, "event_id": event_id, "reason": reason,
                                        "taken_ns": time.time_ns()})
        if payload is None:
            return False
        self.publish(payload)
        self.counts["snapshots"] += 1
        log.info("waveform snapshot of %s uploaded (%d bytes): %s", asset, len(payload), reason)
        return True

    def request(self, asset: str) -> str:
        """A ``snapshot`` command (from the actuators' thread): upload the ring now; LookupError says why not."""
        if not self.has_ring(asset):
            raise LookupError(f"no raw waveform block of {asset} has arrived since the gateway started")
        self.upload(asset, f"{self.gateway}:{asset}:request:{time.time_ns()}", "requested")
        return "snapshot uploaded"
