"""The default detector ``novelty``: its kernel against a plain-Python reference (hypothesis), state that
survives a restart bit for bit, and the behaviours the issue names on synthetic signals (flat line, square
wave, level shift, daily cycle, one signal at 5 min and at 100 ms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.detect import EventTracker, build_detectors
from edge.detect import novelty as nv
from edge.detect.novelty import Novelty
from edge.detect.registry import DEFAULT_DETECTORS

MIN5 = 300 * 10**9
MS100 = 10**8
T0 = 1_700_000_000 * 10**9  # a Tuesday


def _log2(x: float) -> float:
    """The kernel's log2 (exponent + polynomial), written out plainly."""
    m, e = math.frexp(x)
    u = 2.0 * m - 1.0
    return e - 1 + u + u * (1.0 - u) * (nv._L1 + u * (nv._L2 + u * (nv._L3 + u * (nv._L4 + u * nv._L5))))


class Reference:
    """One point of ``novelty``, sample by sample, with plain Python lists and floats (same arithmetic order)."""

    def __init__(self, **params) -> None:
        d = Novelty(1, **params)  # the class validates and derives the parameters
        self.p = dict(zip(nv.PARAMS, d.prm[0, :len(nv.PARAMS)].tolist(), strict=True))
        self.decay = float(d.prm[0, nv.P_DECAY])
        self.growth = float(d.prm[0, nv.P_GROWTH])
        self.count = 0
        self.day = [[0.0, 0.0, nv._NEVER, 0.0] for _ in range(nv.DAY_SLOTS)]
        self.week = [[0.0, 0.0, nv._NEVER, 0.0] for _ in range(nv.WEEK_SLOTS)]
        self.hist = [0.0] * nv.BINS
        self.ring = [0.0] * nv.RING
        self.seen: set[int] = set()

    def step(self, t: int, v: float, ok: bool = True) -> tuple[float, bool]:
        p = self.p
        if not ok or v != v:
            return 0.0, False
        c = self.count
        self.count += 1
        if c == 0:
            self.hi = self.lo = self.mid = self.sm = self.shi = self.slo = self.mu = self.prev = v
            self.rmin = self.rmax = v
            self.win = [v] * nv.WIDTH
            self.mse = [-1.0] * 4
            self.htot, self.hw, self.rsum, self.lmu, self.lvar = 0.0, 1.0, 0.0, 0.0, 0.0
            self.onset, self.nrate = 0.0, 0.0
            self.rpos = self.lcount = self.run = self.longest = self.moved = 0
            self.quiet = 1 << 40
            self.first_t = t
            return 0.0, False
        scoring = c >= p["warmup"]
        age = t - self.first_t
        armed = scoring and (c >= p["settle"] or age >= nv._DAY_NS)
        regime_armed = scoring and (c >= 2 * p["settle"] or age >= 2 * nv._DAY_NS)
        # record
        width = self.hi - self.lo
        if width <= 0.0:
            width = abs(self.mid) * 1e-3 + 1e-9
        excess = max(v - self.hi, self.lo - v)
        r_record = excess / width / p["record_margin"] if excess > 0.0 and armed else 0.0
        sm = self.sm + 0.05 * (v - self.sm)
        swidth = self.shi - self.slo
        if swidth <= 0.0:
            swidth = width
        excess = max(sm - self.shi, self.slo - sm)
        if excess > 0.0 and armed:
            r_record = max(r_record, excess / swidth / p["level_margin"])
        mid = self.mid + 0.01 * (v - self.mid)
        hi, lo = max(self.hi, v), min(self.lo, v)
        shi, slo = max(self.shi, sm), min(self.slo, sm)
        self.hi = mid + (hi - mid) * self.decay
        self.lo = mid + (lo - mid) * self.decay
        self.shi = mid + (shi - mid) * self.decay
        self.slo = mid + (slo - mid) * self.decay
        self.mid, self.sm = mid, sm
        # residual
        d_idx = t // nv._DAY_NS
        w_idx = (t + nv._MONDAY) // nv._WEEK_NS
        ds = (t - d_idx * nv._DAY_NS) * nv.DAY_SLOTS // nv._DAY_NS
        ws = (t + nv._MONDAY - w_idx * nv._WEEK_NS) * nv.WEEK_SLOTS // nv._WEEK_NS
        day, week = self.day[ds], self.week[ws]
        have = [True, True, day[3] >= 2.0, week[3] >= 3.0]
        errs = [v - self.mu, v - self.prev, v - day[0] if have[2] else 0.0, v - week[0] if have[3] else 0.0]
        best, bm = -1, 0.0
        for j in range(4):
            if self.mse[j] < 0.0 or not have[j]:
                continue
            mj = self.mse[j] * 3.0 if j == 3 else self.mse[j]
            if best < 0 or mj < bm:
                best, bm = j, mj
        z = 0.0 if best < 0 else abs(errs[best]) / (math.sqrt(self.mse[best]) + 1e-9 + 1e-6 * abs(self.mu))
        for j in range(4):
            if have[j]:
                e2 = errs[j] * errs[j]
                self.mse[j] = e2 if self.mse[j] < 0.0 else self.mse[j] + 0.01 * (e2 - self.mse[j])
        self.mu += max(1.0 / (c + 1.0), 0.005) * errs[0]
        self.prev = v
        for slot, index in ((day, d_idx), (week, w_idx)):
            slot[0] += max(1.0 / (slot[1] + 1.0), 0.2) * (v - slot[0])
            slot[1] += 1.0
            if slot[2] != index:
                slot[2] = index
                slot[3] += 1.0
        lp = 0.0
        if scoring:
            b = min(int(6.0 * _log2(1.0 + z)), nv.BINS - 1)
            w = self.hw
            p0 = 1.0 / (z * z) if z > 1.0 else 1.0
            prob = (self.hist[b] + nv.PRIOR * w * p0) / (self.htot + nv.PRIOR * w)
            lp = -nv._LOG10_2 * _log2(prob)
            for j in range(b + 1):
                self.hist[j] += w
            self.htot += w
            w *= self.growth
            if w > 1e150:
                self.hist = [h / w for h in self.hist]
                self.htot /= w
                w = 1.0
            self.hw = w
        r_residual = lp / p["residual_p"] if self.moved >= 3 else 0.0
        # regime
        r_regime = 0.0
        if scoring:
            nwin = int(p["regime_window"])
            capped = min(lp, 4.0)
            slot = self.rpos % nwin
            self.rsum += capped - self.ring[slot]
            self.ring[slot] = capped
            self.rpos += 1
            if self.rpos >= nwin:
                m = self.rsum / nwin
                if self.lcount > 5 * nwin and regime_armed:
                    r_regime = (m - self.lmu) / (math.sqrt(self.lvar) + 1e-3) / p["regime_z"]
                al = max(1.0 / (self.lcount + 1.0), 0.0003)
                dd = m - self.lmu
                self.lmu += al * dd
                self.lvar = (1.0 - al) * (self.lvar + al * dd * dd)
                self.lcount += 1
        # context
        last_v = self.win[-1]
        self.win = [*self.win[1:], v]
        r_context = 0.0
        if not scoring:
            self.rmin, self.rmax = min(self.rmin, v), max(self.rmax, v)
        if c + 1 >= nv.WIDTH:
            rng = self.rmax - self.rmin
            key = 0
            for wj in self.win:
                lv = min(max(int((wj - self.rmin) / rng * nv.LEVELS), 0), nv.LEVELS - 1) if rng > 0.0 else 0
                key = key * nv.LEVELS + lv
            novel = key not in self.seen
            self.seen.add(key)
            if scoring and novel:
                r_context = 1.0 / (p["context_fire"] * (1.0 + self.nrate * 100.0))
            self.nrate += 0.01 * ((1.0 if novel else 0.0) - self.nrate)
            if scoring:
                self.rmin, self.rmax = min(self.rmin, v), max(self.rmax, v)
        # stuck
        r_stuck = 0.0
        if v == last_v:
            self.run += 1
        else:
            self.longest = max(self.longest, self.run)
            self.run = 0
            self.moved += 1
        if scoring and self.moved >= 3:
            r_stuck = self.run / (p["stuck_factor"] * max(self.longest, 10))
        if not scoring:
            return 0.0, False
        r = max(r_record, r_residual, r_context, r_regime, r_stuck)
        q = self.quiet + 1
        if r >= 1.0:
            self.quiet = 0
            if q >= p["cooldown"] or r > self.onset * p["escalate"]:
                self.onset = r
                return r, True
            return nv._HELD, False
        self.quiet = q
        return r, False


def run_kernel(t, x, ok=None, n_points=1, idx=None, tick=997, **params):
    d = Novelty(n_points, **params)
    idx = np.zeros(len(x), np.int64) if idx is None else idx
    ok = np.ones(len(x), bool) if ok is None else ok
    scores, flags = [], []
    for lo in range(0, len(x), tick):
        s, f = d.update(idx[lo:lo + tick], t[lo:lo + tick], x[lo:lo + tick], ok[lo:lo + tick])
        scores.append(s)
        flags.append(f)
    return np.concatenate(scores), np.concatenate(flags), d


def bounded(rng, n: int, sd: float) -> np.ndarray:
    """Noise of standard deviation ``sd`` on a bounded support. Gaussian noise keeps making new extremes (one
    in n samples), and a new extreme is news to the record channel: the scenarios below are about other things."""
    return rng.uniform(-sd * 3**0.5, sd * 3**0.5, n)


def signal(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = {
        "walk": np.cumsum(rng.normal(size=n)),
        "noise": rng.normal(size=n),
        "quantised": np.round(rng.normal(size=n) * 2) / 2,
        "spiky": rng.standard_t(2, size=n),
    }[kind]
    return base


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["walk", "noise", "quantised", "spiky"]), seed=st.integers(0, 10**6),
       step=st.sampled_from([MS100, MIN5, 3600 * 10**9]), n=st.integers(150, 2500),
       spikes=st.lists(st.tuples(st.integers(0, 2499), st.floats(-50, 50)), max_size=4),
       gaps=st.lists(st.integers(0, 2499), max_size=5), tick=st.integers(1, 700))
def test_kernel_matches_the_plain_reference(kind, seed, step, n, spikes, gaps, tick):
    x = signal(kind, n, seed)
    for i, a in spikes:
        if i < n:
            x[i] += a
    ok = np.ones(n, bool)
    for i in gaps:
        if i < n:
            ok[i] = False
    t = T0 + np.arange(n, dtype=np.int64) * step
    params = {"warmup": 20, "settle": 60, "cooldown": 7, "regime_window": 10}
    scores, flags, _ = run_kernel(t, x, ok, tick=tick, **params)
    ref = Reference(**params)
    expect = [ref.step(int(t[i]), float(x[i]), bool(ok[i])) for i in range(n)]
    assert flags.tolist() == [f for _, f in expect]
    np.testing.assert_allclose(scores, [s for s, _ in expect], rtol=1e-12, atol=1e-12)


def test_interleaved_points_are_independent():
    n = 1500
    rng = np.random.default_rng(3)
    xs = [np.cumsum(rng.normal(size=n)), rng.normal(size=n) * 5 + 100]
    xs[1][1200] += 80
    t = T0 + np.arange(n, dtype=np.int64) * MIN5
    idx = np.tile([0, 1], n)
    x = np.stack(xs, 1).ravel()
    tt = np.repeat(t, 2)
    scores, flags, _ = run_kernel(tt, x, n_points=2, idx=idx, tick=333)
    for p in (0, 1):
        alone, alone_flags, _ = run_kernel(t, xs[p], tick=333)
        assert flags[idx == p].tolist() == alone_flags.tolist()
        np.testing.assert_array_equal(scores[idx == p], alone)
    assert 1200 in np.flatnonzero(flags[idx == 1])


def test_state_survives_a_restart_bit_for_bit(tmp_path):
    n = 4000
    x = signal("spiky", n, 5)
    x[3000:] += 40  # a level shift after the restart
    t = T0 + np.arange(n, dtype=np.int64) * MIN5
    whole = run_kernel(t, x, tick=500)[2]
    first = build_detectors([[{"kind": "novelty"}]])
    first.update(np.zeros(2000, np.int64), t[:2000], x[:2000])
    first.save(tmp_path / "state.npz")
    second = build_detectors([[{"kind": "novelty"}]])
    second.load(tmp_path / "state.npz")
    s, _ = second.update(np.zeros(n - 2000, np.int64), t[2000:], x[2000:])
    s_whole, _ = build_detectors([[{"kind": "novelty"}]]).update(np.zeros(n, np.int64), t, x)
    np.testing.assert_array_equal(s, s_whole[2000:])
    restored = second.detectors[0].state()
    for key, arr in whole.state().items():
        np.testing.assert_array_equal(restored[key], arr, err_msg=key)
        assert restored[key].dtype == arr.dtype


def test_a_flat_line_is_normal():
    n = 5000
    t = T0 + np.arange(n, dtype=np.int64) * MIN5
    _, flags, _ = run_kernel(t, np.full(n, 3.25))
    assert flags.sum() == 0


def test_a_square_wave_is_normal():
    n = 14 * 288  # two weeks at 5 min: high 8 h a day
    t = T0 + np.arange(n, dtype=np.int64) * MIN5
    hour = (t // 3_600_000_000_000) % 24
    x = np.where((hour >= 9) & (hour < 17), 80.0, 20.0)
    _, flags, _ = run_kernel(t, x)
    assert flags.sum() == 0


def test_a_daily_cycle_is_learned_and_a_value_off_its_time_is_not():
    n = 14 * 288
    rng = np.random.default_rng(7)
    t = T0 + np.arange(n, dtype=np.int64) * MIN5
    phase = 2 * np.pi * (t % 86_400_000_000_000) / 86_400_000_000_000
    x = 50 + 20 * np.sin(phase) + bounded(rng, n, 0.5)
    _, flags, _ = run_kernel(t, x)
    assert flags.sum() == 0
    night = 10 * 288 + int(288 * 0.75)  # 18:00, where the cycle is at its low
    y = x.copy()
    y[night:night + 6] = 69.0  # half an hour at the daily high, at the wrong time of day
    _, flags, _ = run_kernel(t, y)
    assert np.flatnonzero(flags).tolist() and night <= np.flatnonzero(flags)[0] <= night + 5
    assert flags[:night].sum() == 0


def test_a_level_shift_fires_once_then_becomes_normal():
    n = 6000
    rng = np.random.default_rng(11)
    t = T0 + np.arange(n, dtype=np.int64) * MIN5
    x = 10.0 + bounded(rng, n, 1.0)
    x[3000:] += 15.0
    scores, flags, _ = run_kernel(t, x)
    fired = np.flatnonzero(flags)
    assert fired.tolist() and fired[0] == 3000
    # the forecasters take the new level in within a few hundred samples; the regime channel's long run
    # (about 3,000 samples) may call the end of that adaptation a change once or twice, then it is quiet
    assert fired.max() < 4000, f"the new level is still news after {fired.max() - 3000} samples"
    assert (scores[4000:] < 1.0).all()


def test_the_same_signal_at_5_minutes_and_at_100_ms_flags_the_same_samples():
    n = 5000
    rng = np.random.default_rng(13)
    x = 5 * np.sin(np.arange(n) / 300) + bounded(rng, n, 1.0)
    x[2500] += 25.0
    x[4000:] -= 20.0
    slow = run_kernel(T0 + np.arange(n, dtype=np.int64) * MIN5, x)[1]
    fast = run_kernel(T0 + np.arange(n, dtype=np.int64) * MS100, x)[1]
    settled = 2 * 300  # both have judged by then on samples alone (a day is 288 samples at 5 min)
    assert np.flatnonzero(slow[settled:]).tolist() == np.flatnonzero(fast[settled:]).tolist()
    assert {2500 - settled, 4000 - settled} <= set(np.flatnonzero(fast[settled:]).tolist())


def test_a_sensor_that_stops_moving_after_moving_is_stuck_and_says_so():
    n = 3000
    rng = np.random.default_rng(17)
    x = np.round(5 + np.sin(np.arange(n) / 40) + bounded(rng, n, 0.05), 2)  # a slow cycle, quantised
    x[2000:] = x[1999]
    t = T0 + np.arange(n, dtype=np.int64) * MIN5
    d = Novelty(1)
    _, flags = d.update(np.zeros(n, np.int64), t, x, np.ones(n, bool))
    runs = np.diff(np.flatnonzero(np.diff(np.r_[np.nan, x[:2000], np.nan]) != 0)) - 1  # repeats per run
    ref = max(int(runs.max()), 10)
    first = int(np.flatnonzero(flags[2000:])[0]) + 2000
    assert first == 1999 + 4 * ref  # x[2000] repeats x[1999]: the run is 4 x the longest seen there
    assert d.why(n)[first] == ("stuck",)


def test_the_default_and_its_events_hold_until_the_anomaly_ends():
    assert DEFAULT_DETECTORS == [{"kind": "novelty"}]
    n = 3000
    rng = np.random.default_rng(19)
    t = T0 + np.arange(n, dtype=np.int64) * MIN5
    x = np.sin(np.arange(n) / 50) + bounded(rng, n, 0.05)
    x[2000:2040] += 5.0  # a 40-sample excursion
    ens = build_detectors([[dict(s) for s in DEFAULT_DETECTORS]])
    tracker = EventTracker(1, ens.names, release=0.4995)
    score, mask = ens.update(np.zeros(n, np.int64), t, x)
    events = tracker.update(np.zeros(n, np.int64), t, x, np.ones(n, bool), score, mask)
    assert [(e.start_ns, e.end_ns is not None, e.n_samples) for e in events] == [(int(t[2000]), True, 1)]
    held = np.flatnonzero((score[2001:] >= 0.4995) & (mask[2001:] == 0)) + 2001
    # the event lasts while the excursion is still news (its samples held just under 0.5), not its whole length
    assert held.tolist() == list(range(2001, held[-1] + 1)) and events[0].end_ns == int(t[held[-1]])
    assert events[0].peak_value == x[2000] and events[0].detectors == ("novelty",)


@pytest.mark.parametrize("bad", [{"warmup": 2}, {"regime_window": 65}, {"escalate": 1.0}, {"memory": float("nan")},
                                 {"stuck_factor": 1}, {"residual_p": 0}])
def test_out_of_range_parameters_are_refused_by_name(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        Novelty(1, **bad)
