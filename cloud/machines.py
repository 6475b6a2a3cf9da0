"""Rotating machines in the registry: each one's profile (ISO 20816 class, bearing, speed) that its zone rule
judges it by, the zone trend with its predicted dates, and the raw-waveform snapshots its gateway uploads.

A snapshot arrives on the cloud link (``twin/v1/{tenant}/{gateway}/snapshots``) as ``models.waveform`` bytes; it is
checked whole (a malformed or oversized one is counted and dead-lettered, never stored half) and kept as received:
zlib-compressed frames are the cheapest form to keep and decode again when someone looks at it. Its spectrum and
envelope spectrum are computed on request, from the stored blocks, by ``spectra``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from sqlalchemy import select

from cloud.registry import DeadLetter, MachineProfileRecord, Registry, WaveformSnapshot
from cloud.rules import maintenance
from models import topics
from models.machine import MachineProfile
from models.waveform import FrameError, decode_snapshot

log = logging.getLogger("cloud.machines")

MAX_SNAPSHOT_BYTES = 16 << 20
"""Largest snapshot payload kept (40 blocks of 4 channels at 25.6 kHz, compressed); larger is dead-lettered."""
SPECTRUM_BINS = 2048
"""A spectrum is returned as at most this many bins (each the largest of the bins it covers: peaks survive)."""


def profile(registry: Registry, tenant: str, asset: str) -> tuple[MachineProfile, bool]:
    """(the machine's profile, whether one is stored); the default profile when none is."""
    with registry.session() as s:
        rec = s.get(MachineProfileRecord, (tenant, asset))
        return (MachineProfile(), False) if rec is None else (MachineProfile.model_validate(rec.profile), True)


def put_profile(registry: Registry, tenant: str, asset: str, new: MachineProfile, actor: str, reason: str = "") -> None:
    with registry.session() as s:
        rec = s.get(MachineProfileRecord, (tenant, asset))
        before = None if rec is None else rec.profile
        data = new.model_dump(mode="json")
        if rec is None:
            s.add(MachineProfileRecord(tenant=tenant, asset=asset, profile=data, updated_ns=time.time_ns(),
                                       updated_by=actor))
        else:
            rec.profile, rec.updated_ns, rec.updated_by = data, time.time_ns(), actor
        registry.audit(s, tenant, actor, "machine.profile.put", f"asset:{asset}", reason=reason,
                       before=before, after=data)


def severity_of(p: MachineProfile) -> maintenance.SeverityClass:
    return maintenance.SeverityClass(group=p.iso_group, foundation=p.foundation)


def zone_trend(store, registry: Registry, tenant: str, asset: str, *, n_boot: int = 500) -> dict[str, Any] | None:
    """The machine's zone now and the predicted dates (with their interval) of crossing into C and into D, from
    its velocity trend over the last 30 days, judged by its own class; None without a velocity reading."""
    prof, _ = profile(registry, tenant, asset)
    sev = severity_of(prof)
    latest = store.latest(tenant, asset).get(maintenance.POINT)
    if latest is None:
        return None
    last_ns, last_v = int(latest[0]), latest[1]
    out: dict[str, Any] = {"asset": asset, "now_ns": last_ns, "group": sev.group, "foundation": sev.foundation,
                           "zone_limits_mm_s": dict(zip(("A/B", "B/C", "C/D"), sev.limits, strict=True)),
                           "last_value_mm_s": last_v, "zone_c": None, "zone_d": None, "fit": None}
    t_ns, v = maintenance.velocity_history(store, tenant, asset, last_ns - 30 * 86_400 * 10**9, last_ns + 1)
    found = None if len(v) < 10 else maintenance.maintenance_alert(
        asset, t_ns, v, sev, now_ns=last_ns, window_days=30.0, horizon_days=math.inf, n_boot=n_boot)
    if found is None:  # too few readings for a trend: the zone of the last one
        ok = last_v is not None and math.isfinite(last_v)
        out |= {"zone": sev.zone(max(last_v, 0.0)) if ok else None, "level_mm_s": last_v if ok else None}
        return out
    ev = found["evidence"]
    keep = ("at_ns", "at", "lead_days", "interval_ns", "interval", "p_never", "level_mm_s")
    out |= {"zone": ev["zone"], "level_mm_s": ev["level_mm_s"], "health_index": ev["health_index"],
            "zone_c": {k: ev["zone_c"][k] for k in keep}, "zone_d": {k: ev["zone_d"][k] for k in keep},
            "confidence": ev["confidence"], "points": ev["points"]["n"],
            "fit": {k: ev["fit"][k] for k in ("model", "b_per_day", "offset")}}
    return out


# --- snapshots ------------------------------------------------------------------------------------------


class SnapshotSink:
    """The cloud link's handler for uploaded snapshots: checks, stores, counts."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.counters = {"snapshots_stored": 0, "snapshots_rejected": 0}

    def __call__(self, topic: str, payload: bytes) -> None:
        try:
            parts = topics.parse(topic)
            if len(payload) > MAX_SNAPSHOT_BYTES:
                raise FrameError(f"{len(payload)} bytes: larger than {MAX_SNAPSHOT_BYTES}")
            header, frames = decode_snapshot(payload)
            asset = str(header.get("asset") or "")
            if not frames or not asset or any(f.asset != asset for f in frames):
                raise FrameError("a snapshot needs frames, all of the asset its header names")
        except (ValueError, FrameError) as exc:
            self.counters["snapshots_rejected"] += 1
            log.warning("snapshot on %s rejected: %s", topic, exc)
            tenant = topic.split("/")[2][:64] if topic.count("/") >= 4 else None
            with self.registry.session() as s:
                s.add(DeadLetter(received_ns=time.time_ns(), tenant=tenant, topic=topic, reason=str(exc)[:2000],
                                 payload=payload[:65536]))
            return
        with self.registry.session() as s:
            s.add(WaveformSnapshot(
                tenant=parts.tenant, asset=asset[:128], gateway=parts.gateway,
                event_id=str(header.get("event_id", ""))[:300], reason=str(header.get("reason", ""))[:2000],
                t0_ns=frames[0].t0_ns, t1_ns=frames[-1].t0_ns + frames[-1].duration_ns, received_ns=time.time_ns(),
                sample_rate_hz=frames[0].sample_rate_hz, channels=frames[0].channels, blocks=len(frames),
                data=payload))
        self.counters["snapshots_stored"] += 1
        log.info("snapshot of %s from %s stored: %d blocks", asset, parts.gateway, len(frames))


def list_snapshots(registry: Registry, tenant: str, asset: str, limit: int = 50) -> list[dict[str, Any]]:
    with registry.session() as s:
        rows = s.scalars(select(WaveformSnapshot).where(WaveformSnapshot.tenant == tenant,
                                                        WaveformSnapshot.asset == asset)
                         .order_by(WaveformSnapshot.t0_ns.desc()).limit(limit)).all()
        return [_meta(r) for r in rows]


def _meta(r: WaveformSnapshot) -> dict[str, Any]:
    return {"id": r.id, "asset": r.asset, "gateway": r.gateway, "event_id": r.event_id, "reason": r.reason,
            "t0_ns": r.t0_ns, "t1_ns": r.t1_ns, "received_ns": r.received_ns, "sample_rate_hz": r.sample_rate_hz,
            "channels": r.channels, "blocks": r.blocks, "bytes": len(r.data)}


def snapshot_spectra(registry: Registry, tenant: str, asset: str, snapshot_id: int, *, block: int = -1,
                     channel: int = 0) -> dict[str, Any] | None:
    """The snapshot's metadata with the spectrum and the envelope spectrum of one block's channel, and the
    machine's defect lines at the block's speed; None if there is no such snapshot."""
    with registry.session() as s:
        r = s.get(WaveformSnapshot, snapshot_id)
        if r is None or r.tenant != tenant or r.asset != asset:
            return None
        meta, data = _meta(r), r.data
    _, frames = decode_snapshot(data)
    if not -len(frames) <= block < len(frames):
        raise IndexError(f"block {block}: the snapshot has {len(frames)}")
    f = frames[block]
    if not 0 <= channel < f.channels:
        raise IndexError(f"channel {channel}: the block has {f.channels}")
    prof, _ = profile(registry, tenant, asset)
    shaft_hz = (f.rpm or prof.shaft_rpm) / 60.0
    return {**meta, "block": block % len(frames), "channel": channel, "block_t0_ns": f.t0_ns, "shaft_hz": shaft_hz,
            **spectra(f.data[channel].astype(np.float64), f.sample_rate_hz), "lines_hz": defect_lines(prof, shaft_hz)}


def defect_lines(p: MachineProfile, shaft_hz: float) -> dict[str, float]:
    """BPFO, BPFI, BSF, FTF (Hz) of the profile's bearing at ``shaft_hz``."""
    b = p.bearing
    k = b.ball_diameter_mm / b.pitch_diameter_mm * math.cos(math.radians(b.contact_angle_deg))
    return {"bpfo": b.n_balls * shaft_hz / 2 * (1 - k), "bpfi": b.n_balls * shaft_hz / 2 * (1 + k),
            "bsf": shaft_hz / (2 * k) * (1 - k * k) * math.cos(math.radians(b.contact_angle_deg)),
            "ftf": shaft_hz / 2 * (1 - k)}


def _pooled(f_hz: np.ndarray, mag: np.ndarray, f_max: float) -> dict[str, list[float]]:
    keep = f_hz <= f_max
    f_hz, mag = f_hz[keep], mag[keep]
    step = max(1, math.ceil(len(mag) / SPECTRUM_BINS))
    n = len(mag) // step * step
    return {"f_hz": f_hz[:n:step].round(3).tolist(), "mag": mag[:n].reshape(-1, step).max(axis=1).tolist()}


def spectra(x: np.ndarray, fs: float, env_max_hz: float = 1000.0) -> dict[str, Any]:
    """Amplitude spectrum (m/s², Hann) to Nyquist, and the envelope spectrum to ``env_max_hz``: the squared envelope
    of the band where the signal's spectral kurtosis is largest (Randall & Antoni's fast choice, on eighths of the
    band above 1 kHz), mean removed, Hann-windowed. The band used is returned with it."""
    n = len(x)
    w = np.hanning(n)
    spec = np.fft.rfft((x - x.mean()) * w)
    f = np.fft.rfftfreq(n, 1 / fs)
    amp = 2 * np.abs(spec) / w.sum()
    width = fs / 16
    best, band = -math.inf, (1000.0, 1000.0 + width)
    full = np.fft.fft(x - x.mean())
    ff = np.fft.fftfreq(n, 1 / fs)
    for lo in np.arange(1000.0, 0.45 * fs - width, width / 2):
        z = np.fft.ifft(np.where((ff >= lo) & (ff < lo + width), 2 * full, 0))
        p = np.abs(z) ** 2
        sk = float(np.mean(p**2) / np.mean(p) ** 2 - 2) if p.mean() > 0 else -math.inf
        if sk > best:
            best, band = sk, (float(lo), float(lo + width))
    z = np.fft.ifft(np.where((ff >= band[0]) & (ff < band[1]), 2 * full, 0))
    env = np.abs(z) ** 2
    env_spec = 2 * np.abs(np.fft.rfft((env - env.mean()) * w)) / w.sum()
    return {"spectrum": _pooled(f, amp, fs / 2), "envelope": {**_pooled(f, env_spec, env_max_hz), "band_hz": band,
                                                              "spectral_kurtosis": best}}
