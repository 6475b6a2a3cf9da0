"""``novelty``: the default detector — quiet on normal data, calibrated per point, counted in samples.

What a new point gets on a gateway and what ``twin detect run`` uses without a config. Five channels read
each sample; each is a ratio ``r`` to its own firing point (1.0 = fire) and the largest is the sample's:

* **record** — the value, or its running mean (~20 samples), leaves the envelope of everything the point has
  shown by more than ``record_margin`` (``level_margin`` for the mean) of the envelope's width: a level never
  seen. The envelope relaxes towards the point's slow mean with a half-life of ``record_half_life`` samples.
* **residual** — the error of the point's best forecaster, picked online by mean squared error among a slow
  mean, the last value, the same time of day (48 slots) and the same hour of the week, divided by that
  forecaster's RMS error. The |z| is *calibrated* against the point's own history of |z| (a decayed
  histogram of ~``memory`` samples, smoothed towards Chebyshev's 1/z² bound while it is young): ``p`` is how
  often this point was this surprising, and ``r = -log10(p) / residual_p``. One threshold therefore means
  the same on every point, whatever its units, noise or tails.
* **context** — the last three values, each quantised to 8 levels of the range the point has shown, as one
  of 512 keys; a key never seen is a new pattern (CAD-style contextual novelty, a bitset per point). It fires
  at ``1 / context_fire`` and less while new keys are common (a point still exploring its range).
* **regime** — Numenta's anomaly likelihood on the calibrated surprise: the mean of the last
  ``regime_window`` samples' ``-log10(p)`` against the long-run mean and spread of that mean, firing at
  ``regime_z`` standard deviations. It catches a noise or spike-rate change no single sample shows.
* **stuck** — the value stays equal for ``stuck_factor`` times the longest run of equal values the point has
  shown (at least 10), after having moved: a flat or quantised signal is learned as normal.

Events, not rows: a point fires (``flag``) when ``r >= 1`` and it has been below 1 for ``cooldown``
samples, or when ``r`` escalates past ``escalate`` times the current event's onset ratio. Samples that
continue an anomaly carry a ratio just under 1 (the ensemble's score just under 0.5), so ``EventTracker``
with ``release`` under 0.5 keeps the event open until the point calms down.

Everything is counted in samples (a 100 ms point and a 5-minute point behave alike); only the day and week
slots read the timestamps. The first ``warmup`` samples only learn; records wait for a day or ``settle`` samples,
regimes for three days or twice ``settle``, whichever comes first (a daily cycle's first high is not an anomaly,
nor the day-slot forecaster taking over). A point that has never moved has no scale, so its first steps are not
residual anomalies. A level shift becomes normal as the forecasters, the envelope and the context memory take it
in (within ~1,000 samples in ``tests/test_detect_novelty.py``). NaN or bad quality: score 0, nothing learned.
Work per sample is O(1); state is ~8 KB per point (mostly the 168 week slots), saved and restored bit for bit.

Known trade-off: the record channel's margins were chosen on NAB, whose labellers call a new extreme an anomaly.
Stationary Gaussian noise keeps making new extremes (one in n samples), so on such a point the record channel
fires now and then, rarer as its history grows; an asset type whose points swing by design widens the margins.

Measured on NAB with NAB's scorer (``twin bench nab``), one parameter set, no look-ahead: see
``docs/benchmarks.md``.
"""

from __future__ import annotations

import math

import numpy as np

from edge.detect.base import Detector, as_tick, check_points, per_point, save_npz
from edge.kernels import kernel

WIDTH = 3          # values in a context
LEVELS = 8         # quantisation levels of a context value (LEVELS ** WIDTH keys)
DAY_SLOTS = 48     # time-of-day slots (30 min)
WEEK_SLOTS = 168   # hour-of-week slots
BINS = 64          # calibration histogram: 6 bins per doubling of 1 + |z|
RING = 64          # longest regime window
AGE = False
RS = 3
PRIOR = 300.0      # weight of the 1/z² prior in the calibration, in samples

_DAY_NS = 86_400_000_000_000
_WEEK_NS = 7 * _DAY_NS
_MONDAY = 4 * _DAY_NS  # 1970-01-01 was a Thursday: shift so that week slot 0 starts on a Monday
_HELD = 0.999          # the ratio a sample continuing an event carries
_LOG10_2 = 0.30102999566398120
_NEVER = -4.0e18        # a day or week index no timestamp has
# log2(1 + u) = u + u (1 - u) P(u) on [0, 1), P fitted by least squares (max error 3.3e-6)
_L1, _L2, _L3, _L4, _L5 = 0.44250168, -0.27516645, 0.18057648, -0.09425584, 0.02512557

# Parameters, one row per point (``prm``): the constructor's keywords, and two derived from them.
PARAMS = ("warmup", "settle", "record_margin", "level_margin", "record_half_life", "residual_p", "memory",
          "context_fire", "regime_window", "regime_z", "stuck_factor", "cooldown", "escalate")
(P_WARMUP, P_SETTLE, P_RECORD_MARGIN, P_LEVEL_MARGIN, P_HALF_LIFE, P_RESIDUAL_P, P_MEMORY, P_CONTEXT_FIRE,
 P_REGIME_WINDOW, P_REGIME_Z, P_STUCK_FACTOR, P_COOLDOWN, P_ESCALATE, P_DECAY, P_GROWTH) = range(15)
N_PRM = 15
# Float state per point (``f``): one point's scalars share three cache lines.
(_HI, _LO, _MID, _SM, _SHI, _SLO, _MU, _PREV, _MSE) = range(9)
(_HTOT, _HW, _RSUM, _LMU, _LVAR, _RMIN, _RMAX, _ONSET, _NRATE, _WIN) = range(12, 22)
N_F = _WIN + WIDTH
# Integer state per point (``k``).
(_COUNT, _FIRST_T, _RPOS, _LCOUNT, _QUIET, _RUN, _LONGEST, _MOVED) = range(8)
N_K = 8
# Per slot of day and of week: running mean, samples, last day/week index, days/weeks seen.
(_MEAN, _N, _LAST, _SEEN) = range(4)


@kernel
def novelty_kernel(idx, t_ns, x, ok, prm, f, k, day, week, hist, ring, seen, out_score, out_flag, out_why):
    """One pass over a tick, in order, updating per-point state in place (a score-only call snapshots and
    restores it in the class). ``out_why`` gets a bit per channel that fired, in ``Novelty.CHANNELS`` order."""
    memo_t = np.int64(-1) << np.int64(62)
    d_idx = np.int64(0)
    w_idx = np.int64(0)
    ds = np.int64(0)
    ws = np.int64(0)
    for i in range(idx.shape[0]):
        p = idx[i]
        v = x[i]
        out_score[i] = 0.0
        out_flag[i] = False
        out_why[i] = 0
        if not ok[i] or v != v:
            continue
        ti = t_ns[i]
        c = k[p, _COUNT]
        k[p, _COUNT] = c + 1
        if c == 0:
            for j in (_HI, _LO, _MID, _SM, _SHI, _SLO, _MU, _PREV, _RMIN, _RMAX):
                f[p, j] = v
            for j in range(WIDTH):
                f[p, _WIN + j] = v
            for j in range(4):
                f[p, _MSE + j] = -1.0
            f[p, _HW] = 1.0
            k[p, _QUIET] = 1 << 40
            k[p, _FIRST_T] = ti
            continue
        scoring = c >= prm[p, P_WARMUP]
        settled = c >= prm[p, P_SETTLE]
        age = ti - k[p, _FIRST_T]
        # records need the point's range, regimes its rhythm: armed after a day or `settle` samples (three
        # days or twice that for a regime), whichever comes first: a daily cycle's first high is no anomaly,
        # nor the switch to the time-of-day forecaster once its slots have been seen on two days
        armed = scoring and (settled or age >= _DAY_NS)
        regime_armed = scoring and (c >= 2 * prm[p, P_SETTLE] or age >= 3 * _DAY_NS)

        # ---- record: outside the envelope of what the point has shown, for the value and its running mean
        hi = f[p, _HI]
        lo = f[p, _LO]
        mid = f[p, _MID]
        width = hi - lo
        if width <= 0.0:
            width = abs(mid) * 1e-3 + 1e-9
        excess = v - hi
        if lo - v > excess:
            excess = lo - v
        r_record = excess / width / prm[p, P_RECORD_MARGIN] if excess > 0.0 and armed else 0.0
        sm = f[p, _SM] + 0.05 * (v - f[p, _SM])
        shi = f[p, _SHI]
        slo = f[p, _SLO]
        swidth = shi - slo
        if swidth <= 0.0:
            swidth = width
        excess = sm - shi
        if slo - sm > excess:
            excess = slo - sm
        if excess > 0.0 and armed:
            r_level = excess / swidth / prm[p, P_LEVEL_MARGIN]
            if r_level > r_record:
                r_record = r_level
        mid += 0.01 * (v - mid)
        if v > hi:
            hi = v
        if v < lo:
            lo = v
        if sm > shi:
            shi = sm
        if sm < slo:
            slo = sm
        dec = prm[p, P_DECAY]
        f[p, _HI] = mid + (hi - mid) * dec
        f[p, _LO] = mid + (lo - mid) * dec
        f[p, _SHI] = mid + (shi - mid) * dec
        f[p, _SLO] = mid + (slo - mid) * dec
        f[p, _MID] = mid
        f[p, _SM] = sm

        # ---- residual: the error of the best forecaster, calibrated against the point's own history
        if ti != memo_t:  # polled points share a timestamp: the slot arithmetic (integer divisions) once
            memo_t = ti
            d_idx = ti // _DAY_NS
            w_idx = (ti + _MONDAY) // _WEEK_NS
            ds = (ti - d_idx * _DAY_NS) * DAY_SLOTS // _DAY_NS
            ws = (ti + _MONDAY - w_idx * _WEEK_NS) * WEEK_SLOTS // _WEEK_NS
        mu = f[p, _MU]
        e0 = v - mu
        e1 = v - f[p, _PREV]
        have2 = day[p, ds, _SEEN] >= 2.0  # this time of day seen on two days
        have3 = week[p, ws, _SEEN] >= 3.0  # this hour of the week seen in three weeks
        e2 = v - day[p, ds, _MEAN] if have2 else 0.0
        e3 = v - week[p, ws, _MEAN] if have3 else 0.0
        best = -1
        bm = 0.0
        for j in range(4):
            m = f[p, _MSE + j]
            if m < 0.0 or (j == 2 and not have2) or (j == 3 and not have3):
                continue
            mj = m * 3.0 if j == 3 else m  # a week slot has few samples: it must be clearly better
            if best < 0 or mj < bm:
                best = j
                bm = mj
        z = 0.0
        if best >= 0:
            e = e0 if best == 0 else e1 if best == 1 else e2 if best == 2 else e3
            z = abs(e) / (math.sqrt(f[p, _MSE + best]) + 1e-9 + 1e-6 * abs(mu))
        for j in range(4):
            if (j == 2 and not have2) or (j == 3 and not have3):
                continue
            ej = e0 if j == 0 else e1 if j == 1 else e2 if j == 2 else e3
            if f[p, _MSE + j] < 0.0:
                f[p, _MSE + j] = ej * ej
            else:
                f[p, _MSE + j] += 0.01 * (ej * ej - f[p, _MSE + j])
        a = 1.0 / (c + 1.0)
        if a < 0.005:
            a = 0.005
        f[p, _MU] = mu + a * e0
        f[p, _PREV] = v
        a = 1.0 / (day[p, ds, _N] + 1.0)
        if a < 0.2:
            a = 0.2
        day[p, ds, _MEAN] += a * (v - day[p, ds, _MEAN])
        day[p, ds, _N] += 1.0
        if day[p, ds, _LAST] != d_idx:
            day[p, ds, _LAST] = d_idx
            day[p, ds, _SEEN] += 1.0
        a = 1.0 / (week[p, ws, _N] + 1.0)
        if a < 0.2:
            a = 0.2
        week[p, ws, _MEAN] += a * (v - week[p, ws, _MEAN])
        week[p, ws, _N] += 1.0
        if week[p, ws, _LAST] != w_idx:
            week[p, ws, _LAST] = w_idx
            week[p, ws, _SEEN] += 1.0
        lp = 0.0
        if scoring:
            # bin = floor(6 log2(1 + z)), log2 from the float's exponent and a polynomial (error < 4e-6;
            # libm's log2 and log10 were a third of the cost of a sample)
            fm, fe = math.frexp(1.0 + z)
            u = 2.0 * fm - 1.0
            b = int(6.0 * (fe - 1 + u + u * (1.0 - u) * (_L1 + u * (_L2 + u * (_L3 + u * (_L4 + u * _L5))))))
            if b >= BINS:
                b = BINS - 1
            # hist[b] holds the weight of past samples in bin b or above: the tail is one read and the update
            # adds to bins 0..b (few: most samples sit in the low bins), contiguous in memory
            w = f[p, _HW]
            p0 = 1.0 / (z * z) if z > 1.0 else 1.0  # the prior: Chebyshev's bound
            prob = (hist[p, b] + PRIOR * w * p0) / (f[p, _HTOT] + PRIOR * w)
            fm, fe = math.frexp(prob)
            u = 2.0 * fm - 1.0
            lp = -_LOG10_2 * (fe - 1 + u + u * (1.0 - u) * (_L1 + u * (_L2 + u * (_L3 + u * (_L4 + u * _L5)))))
            for j in range(b + 1):
                hist[p, j] += w
            f[p, _HTOT] += w
            w *= prm[p, P_GROWTH]
            if w > 1e150:
                for j in range(BINS):
                    hist[p, j] /= w
                f[p, _HTOT] /= w
                w = 1.0
            f[p, _HW] = w
        # a point that has never moved has no scale yet: its first steps are news, not anomalies
        r_residual = lp / prm[p, P_RESIDUAL_P] if k[p, _MOVED] >= 3 else 0.0

        # ---- regime: the short mean of the calibrated surprise against its long-run distribution
        r_regime = 0.0
        if scoring:
            nwin = np.int64(prm[p, P_REGIME_WINDOW])
            capped = lp if lp < 4.0 else 4.0
            pos = k[p, _RPOS]
            slot = pos % nwin
            f[p, _RSUM] += capped - ring[p, slot]
            ring[p, slot] = capped
            k[p, _RPOS] = pos + 1
            if pos + 1 >= nwin:
                m = f[p, _RSUM] / nwin
                n_l = k[p, _LCOUNT]
                lmu = f[p, _LMU]
                lvar = f[p, _LVAR]
                # the long run counts overlapping windows: ask for five windows' worth before judging
                if n_l > 5 * nwin and regime_armed:
                    r_regime = (m - lmu) / (math.sqrt(lvar) + 1e-3) / prm[p, P_REGIME_Z]
                al = 1.0 / (n_l + 1.0)
                if al < 0.0003:
                    al = 0.0003
                d = m - lmu
                f[p, _LMU] = lmu + al * d
                f[p, _LVAR] = (1.0 - al) * (lvar + al * d * d)
                k[p, _LCOUNT] = n_l + 1

        # ---- context: the last WIDTH values, each quantised to one of LEVELS levels of the range the point
        # has shown, as one key; a key never seen is a new pattern. Its ratio falls while new keys are
        # common (the point still explores its range), so only a new pattern of a settled point fires.
        last_v = f[p, _WIN + WIDTH - 1]
        for j in range(WIDTH - 1):
            f[p, _WIN + j] = f[p, _WIN + j + 1]
        f[p, _WIN + WIDTH - 1] = v
        r_context = 0.0
        rmin = f[p, _RMIN]
        rmax = f[p, _RMAX]
        if not scoring:
            if v < rmin:
                rmin = v
            if v > rmax:
                rmax = v
        if c + 1 >= WIDTH:
            rng = rmax - rmin
            key = 0
            for j in range(WIDTH):
                lv = 0
                if rng > 0.0:
                    lv = int((f[p, _WIN + j] - rmin) / rng * LEVELS)
                    if lv < 0:
                        lv = 0
                    elif lv >= LEVELS:
                        lv = LEVELS - 1
                key = key * LEVELS + lv
            word = key >> 6
            bit = np.uint64(1) << np.uint64(key & 63)
            novel = (seen[p, word] & bit) == 0
            if novel:
                seen[p, word] |= bit
            nr = f[p, _NRATE]
            if scoring and novel:
                r_context = 1.0 / (prm[p, P_CONTEXT_FIRE] * (1.0 + nr * 100.0))
            f[p, _NRATE] = nr + 0.01 * ((1.0 if novel else 0.0) - nr)
            if scoring:
                if v < rmin:
                    rmin = v
                if v > rmax:
                    rmax = v
        f[p, _RMIN] = rmin
        f[p, _RMAX] = rmax

        # ---- stuck: a run of equal values far longer than any the point has shown, after having moved
        r_stuck = 0.0
        if v == last_v:
            k[p, _RUN] += 1
        else:
            if k[p, _RUN] > k[p, _LONGEST]:
                k[p, _LONGEST] = k[p, _RUN]
            k[p, _RUN] = 0
            k[p, _MOVED] += 1
        if scoring and k[p, _MOVED] >= 3:
            ref = k[p, _LONGEST] if k[p, _LONGEST] > 10 else 10
            r_stuck = k[p, _RUN] / (prm[p, P_STUCK_FACTOR] * ref)
        if not scoring:
            continue

        # ---- one score per sample; events with a cool-down
        r = r_record
        why = 1 if r_record >= 1.0 else 0
        if r_residual > r:
            r = r_residual
        if r_residual >= 1.0:
            why |= 2
        if r_context > r:
            r = r_context
        if r_context >= 1.0:
            why |= 4
        if r_regime > r:
            r = r_regime
        if r_regime >= 1.0:
            why |= 8
        if r_stuck > r:
            r = r_stuck
        if r_stuck >= 1.0:
            why |= 16
        q = k[p, _QUIET] + 1  # samples since the last one at or above its firing point
        if r >= 1.0:
            if q >= prm[p, P_COOLDOWN] or r > f[p, _ONSET] * prm[p, P_ESCALATE]:
                out_flag[i] = True
                out_why[i] = why
                f[p, _ONSET] = r
                out_score[i] = r
            else:
                out_score[i] = _HELD
            k[p, _QUIET] = 0
        else:
            out_score[i] = r
            k[p, _QUIET] = q


class Novelty(Detector):
    """The calibrated, scale-free default detector (see the module docstring). Scores are ratios (flag at 1);
    ``why`` names the channels behind the last tick's flags."""

    name = "novelty"
    CHANNELS = ("record", "residual", "context", "regime", "stuck")
    STATE = ("prm", "f", "k", "day", "week", "hist", "ring", "seen")

    def __init__(self, n_points: int, warmup=100, settle=300, record_margin=0.01, level_margin=0.05,
                 record_half_life=100_000.0, residual_p=4.0, memory=5000.0, context_fire=1.0, regime_window=30,
                 regime_z=4.0, stuck_factor=4.0, cooldown=60, escalate=2.5) -> None:
        super().__init__(n_points)
        values = dict(warmup=warmup, settle=settle, record_margin=record_margin, level_margin=level_margin,
                      record_half_life=record_half_life, residual_p=residual_p, memory=memory,
                      context_fire=context_fire, regime_window=regime_window, regime_z=regime_z,
                      stuck_factor=stuck_factor, cooldown=cooldown, escalate=escalate)
        cols = {name: per_point(value, n_points, np.float64) for name, value in values.items()}
        checks = {
            "warmup": cols["warmup"] >= WIDTH, "settle": cols["settle"] >= 0,
            "regime_window": (cols["regime_window"] >= 2) & (cols["regime_window"] <= RING),
            "record_half_life": cols["record_half_life"] > 1, "memory": cols["memory"] >= 10,
            "stuck_factor": cols["stuck_factor"] > 1, "escalate": cols["escalate"] > 1,
            "context_fire": cols["context_fire"] > 0, "cooldown": cols["cooldown"] >= 0,
            **{name: cols[name] > 0 for name in ("record_margin", "level_margin", "residual_p", "regime_z")},
        }
        bad = [name for name, good in checks.items() if not np.all(good & np.isfinite(cols[name]))]
        if bad:
            raise ValueError(f"out of range: {', '.join(bad)} (warmup >= {WIDTH}, 2 <= regime_window <= {RING}, "
                             "record_half_life > 1, memory >= 10, stuck_factor > 1, escalate > 1, settle and "
                             "cooldown >= 0, the rest > 0, all finite)")
        self.prm = np.zeros((n_points, N_PRM))
        for j, name in enumerate(PARAMS):
            self.prm[:, j] = cols[name]
        self.prm[:, P_REGIME_WINDOW] = np.floor(self.prm[:, P_REGIME_WINDOW])
        self.prm[:, P_DECAY] = 1.0 - math.log(2.0) / self.prm[:, P_HALF_LIFE]
        self.prm[:, P_GROWTH] = 1.0 + 1.0 / self.prm[:, P_MEMORY]
        self._empty_state(n_points)
        self._why = np.zeros(0, np.int64)

    def _empty_state(self, n: int) -> None:
        self.f = np.zeros((n, N_F))
        self.k = np.zeros((n, N_K), np.int64)
        self.day = np.zeros((n, DAY_SLOTS, 4))
        self.day[:, :, _LAST] = _NEVER
        self.week = np.zeros((n, WEEK_SLOTS, 4))
        self.week[:, :, _LAST] = _NEVER
        self.hist = np.zeros((n, BINS))
        self.ring = np.zeros((n, RING))
        self.seen = np.zeros((n, (LEVELS ** WIDTH + 63) // 64), np.uint64)

    def _run(self, idx, t_ns, x, ok, learn: bool):
        idx, t_ns, x, ok = as_tick(idx, t_ns, x, ok)
        check_points(idx, self.n_points)
        n = idx.shape[0]
        score = np.empty(n)
        flag = np.empty(n, np.bool_)
        self.run_into(idx, t_ns, x, ok, learn, score, flag)
        return score, flag

    def run_into(self, idx, t_ns, x, ok, learn, out_score, out_flag) -> None:
        n = idx.shape[0]
        if self._why.shape[0] < n:
            self._why = np.zeros(max(n, 2 * self._why.shape[0]), np.int64)
        saved = None if learn else {key: getattr(self, key).copy() for key in self.STATE}
        novelty_kernel(idx, t_ns, x, ok, self.prm, self.f, self.k, self.day, self.week, self.hist, self.ring,
                       self.seen, out_score, out_flag, self._why[:n])
        if saved is not None:  # score only: the tick ran as an update would; put the state back
            for key, arr in saved.items():
                setattr(self, key, arr)

    def update(self, idx, t_ns, x, ok):
        return self._run(idx, t_ns, x, ok, True)

    def score(self, idx, t_ns, x, ok):
        return self._run(idx, t_ns, x, ok, False)

    def learn(self, idx, t_ns, x, ok) -> None:
        self._run(idx, t_ns, x, ok, True)

    def why_bits(self, n: int) -> np.ndarray:
        """For the last tick's first ``n`` samples: a bit per channel that fired (``CHANNELS`` order), a copy."""
        return self._why[:n].copy()

    def why(self, n: int) -> list[tuple[str, ...]]:
        """For the last tick's first ``n`` samples: the channels that fired (empty where none did)."""
        return [tuple(name for j, name in enumerate(self.CHANNELS) if bits >> j & 1) for bits in self._why[:n]]

    def state(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in self.STATE}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        arrays = {key: np.ascontiguousarray(np.asarray(state[key])).copy() for key in self.STATE}
        n = arrays["prm"].shape[0]
        if arrays["prm"].shape != (n, N_PRM) or arrays["seen"].dtype != np.uint64 or any(
                arrays[key].shape[0] != n for key in self.STATE):
            raise ValueError("saved novelty state does not match this version's layout")
        for key, arr in arrays.items():
            setattr(self, key, arr)
        self.n_points = n

    def resize(self, n_points: int) -> None:
        """New points start cold with the constructor's defaults."""
        if n_points <= self.n_points:
            return
        old = self.state()
        fresh = Novelty(n_points - self.n_points)
        for key in self.STATE:
            setattr(self, key, np.concatenate([old[key], getattr(fresh, key)]))
        self.n_points = n_points

    def save(self, path) -> None:
        save_npz(path, self.state())
