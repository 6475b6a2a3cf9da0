"""The wire format of raw accelerometer blocks, shared by whoever publishes them (a DAQ, the machine simulator)
and the edge agent that turns them into features; also the unit of the raw-waveform snapshots a gateway uploads.

One frame is one block of several channels sampled together, little-endian, header then samples::

    offset size  field
    0      4     magic b"AWF1"
    4      1     version (1)
    5      1     flags (0; reserved)
    6      2     channels (uint16, 1..64)
    8      4     samples per channel (uint32, 1..1_048_576)
    12     8     sample rate, Hz (float64, > 0)
    20     8     t0: first sample's time, ns since the Unix epoch (int64)
    28     4     shaft speed, rpm (float32; 0: unknown, the receiver uses the asset's nominal speed)
    32     1     asset id length L (uint8, 0: the receiver takes the asset from the topic)
    33     L     asset id, UTF-8
    33+L   4·C·N samples, float32, channel-major (all of channel 0, then channel 1, ...), m/s²

A 4-channel, 25.6 kHz, 1 s frame is 409,633 bytes: float32 keeps 24 bits, far below an accelerometer's noise,
at half the bytes of float64. ``decode`` checks every length against the header before touching the samples,
so a truncated or hostile payload is a ``FrameError`` naming what is wrong, never an exception from numpy.

>>> import numpy as np
>>> f = Frame("pump-1", 25600.0, 10**18, np.zeros((2, 256), np.float32), rpm=1785.0)
>>> g = decode(encode(f))
>>> (g.asset, g.channels, g.samples, g.sample_rate_hz, g.t0_ns, g.rpm, g.duration_ns)
('pump-1', 2, 256, 25600.0, 1000000000000000000, 1785.0, 10000000)
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"AWF1"
VERSION = 1
_HEAD = struct.Struct("<4sBBHIdqfB")  # magic, version, flags, channels, samples, rate, t0, rpm, asset length
MAX_CHANNELS = 64
MAX_SAMPLES = 1 << 20
SNAPSHOT_MAGIC = b"AWS1"
_SNAP_HEAD = struct.Struct("<4sI")  # magic, length of the JSON header that follows


class FrameError(ValueError):
    """A payload that is not a frame of this format; the message says which field is wrong."""


@dataclass(frozen=True)
class Frame:
    """One block: ``data`` is (channels, samples) float32, m/s²."""

    asset: str
    sample_rate_hz: float
    t0_ns: int
    data: np.ndarray
    rpm: float = 0.0

    @property
    def channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def duration_ns(self) -> int:
        return round(self.samples / self.sample_rate_hz * 1e9)


def encode(frame: Frame) -> bytes:
    data = np.ascontiguousarray(np.atleast_2d(frame.data), dtype="<f4")
    asset = frame.asset.encode()
    ch, n = data.shape
    if not 1 <= ch <= MAX_CHANNELS or not 1 <= n <= MAX_SAMPLES:
        raise FrameError(f"frame of {ch} x {n}: 1..{MAX_CHANNELS} channels of 1..{MAX_SAMPLES} samples")
    if len(asset) > 255:
        raise FrameError(f"asset id of {len(asset)} bytes: at most 255")
    head = _HEAD.pack(MAGIC, VERSION, 0, ch, n, float(frame.sample_rate_hz), int(frame.t0_ns), float(frame.rpm),
                      len(asset))
    return head + asset + data.tobytes()


def decode(payload: bytes, asset: str | None = None) -> Frame:
    """The frame in ``payload``; ``asset`` (from the topic) is used when the header names none."""
    if len(payload) < _HEAD.size:
        raise FrameError(f"{len(payload)} bytes: shorter than the {_HEAD.size}-byte header")
    magic, version, _flags, ch, n, rate, t0, rpm, alen = _HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise FrameError(f"magic {magic!r}: not a waveform frame (expected {MAGIC!r})")
    if version != VERSION:
        raise FrameError(f"version {version}: this reader knows version {VERSION}")
    if not 1 <= ch <= MAX_CHANNELS or not 1 <= n <= MAX_SAMPLES:
        raise FrameError(f"{ch} channels x {n} samples: expected 1..{MAX_CHANNELS} x 1..{MAX_SAMPLES}")
    if not (np.isfinite(rate) and 0 < rate <= 10e6):
        raise FrameError(f"sample rate {rate!r} Hz: expected 0 < rate <= 10 MHz")
    if not (np.isfinite(rpm) and 0 <= rpm <= 1e6):
        raise FrameError(f"shaft speed {rpm!r} rpm: expected 0 (unknown) up to 1e6")
    start = _HEAD.size + alen
    if len(payload) != start + 4 * ch * n:
        raise FrameError(f"{len(payload)} bytes: the header announces {start + 4 * ch * n}")
    try:
        name = payload[_HEAD.size:start].decode() if alen else (asset or "")
    except UnicodeDecodeError:
        raise FrameError("asset id is not UTF-8") from None
    if not name:
        raise FrameError("no asset: neither the header nor the topic names one")
    data = np.frombuffer(payload, "<f4", ch * n, start).reshape(ch, n)
    if not np.isfinite(data).all():
        raise FrameError("samples hold NaN or infinity")
    return Frame(name, float(rate), int(t0), data, float(rpm))


def encode_snapshot(header: dict, frames: list[Frame]) -> bytes:
    """A snapshot: b"AWS1", the JSON header's length, the header (asset, event, reason, ...), then the frames,
    each prefixed by its length, zlib-compressed together (level 6: ~8 % smaller than raw on a noisy block, more
    on a quiet one; the bytes that matter are the uplink's)."""
    head = json.dumps({**header, "frames": len(frames)}).encode()
    body = b"".join(struct.pack("<I", len(b)) + b for b in map(encode, frames))
    return _SNAP_HEAD.pack(SNAPSHOT_MAGIC, len(head)) + head + zlib.compress(body, 6)


def decode_snapshot(payload: bytes, max_bytes: int = 64 << 20) -> tuple[dict, list[Frame]]:
    """(header, frames); FrameError for anything malformed, including a body that inflates past ``max_bytes``."""
    if len(payload) < _SNAP_HEAD.size:
        raise FrameError("snapshot shorter than its header")
    magic, hlen = _SNAP_HEAD.unpack_from(payload)
    if magic != SNAPSHOT_MAGIC:
        raise FrameError(f"magic {magic!r}: not a waveform snapshot (expected {SNAPSHOT_MAGIC!r})")
    end = _SNAP_HEAD.size + hlen
    try:
        header = json.loads(payload[_SNAP_HEAD.size:end])
    except ValueError:
        raise FrameError("snapshot header is not JSON") from None
    if not isinstance(header, dict):
        raise FrameError("snapshot header is not a JSON object")
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(payload[end:], max_bytes)
    except zlib.error as exc:
        raise FrameError(f"snapshot body: {exc}") from None
    if inflater.unconsumed_tail:
        raise FrameError(f"snapshot body inflates past {max_bytes} bytes")
    frames, pos = [], 0
    while pos < len(body):
        if pos + 4 > len(body):
            raise FrameError("snapshot body: truncated frame length")
        (size,) = struct.unpack_from("<I", body, pos)
        frames.append(decode(body[pos + 4:pos + 4 + size], header.get("asset")))
        pos += 4 + size
    return header, frames
