"""``novelty``: the default detector — quiet on normal data, calibrated per point, counted in samples.

What a new point gets on a gateway and what ``twin detect run`` uses without a config. Five channels read
the same sample; each is expressed as a ratio ``r`` to its own firing point (1.0 = fire), and the largest
one is the sample's raw score:

* **record** — the value leaves the envelope of everything the point has shown (a slowly decaying max/min
  around a slow mean) by more than ``record_margin`` of the envelope's width: a level never seen.
* **residual** — the error of the point's best current forecaster, picked online by mean squared error
  among a slow mean, the last value, the same time of day (``day_slots`` per day) and the same hour of
  the week, divided by that forecaster's RMS error. The |z| is *calibrated* against the point's own
  history of |z| (a decayed histogram of ~``memory`` samples, smoothed towards a 1/z² tail for the
  first samples): ``p`` = how often the point was this surprising; ``r = -log10(p) / residual_p``.
  One threshold therefore means the same on every point, whatever its units, noise or tails.
* **shape** — the last four values as a box in a bounded memory of ``shapes`` boxes (fuzzy-ART): a
  window no learned box can take in without growing past ``vigilance`` of the value range is a new
  pattern; it fires at ``shape_fire`` times the vigilance. Learned boxes are never forgotten but the
  least used is replaced when memory is full.
* **regime** — Numenta's anomaly likelihood on the calibrated surprise: the mean of the last
  ``regime_window`` samples' ``-log10(p)`` against the long-run mean and spread of that mean; fires at
  ``regime_z`` standard deviations. Catches noise or spike-rate changes that no single sample shows.
* **stuck** — the value stops moving for ``stuck_factor`` times the longest run of equal values the
  point has shown, after having moved: a flat or quantised signal is learned as normal.

Events, not rows: a point fires (``flag``) when ``r >= 1`` and it has been quiet for ``cooldown``
samples, or when ``r`` escalates past ``escalate`` times the current event's onset ratio. Samples that
continue an anomaly carry their ratio capped just below 1, so the ensemble's score stays just under 0.5
and ``EventTracker`` (with ``release`` below 0.5) keeps the event open until the point calms down.

Everything is counted in samples, not seconds (a 100 ms point and a 5-minute point behave alike); the
time-of-day and week slots use the timestamps. The first ``warmup`` samples only learn. A level shift
becomes normal as the forecasters, the envelope and the shape memory take it in (tens to a few hundred
samples). NaN or bad quality: score 0, nothing learned. O(1) amortised work per sample: a full scan of
the shape memory only when the last matched box does not fit.
"""

from __future__ import annotations

import math

import numpy as np

from edge.detect.base import KernelDetector, per_point
from edge.kernels import kernel

#: Fixed sizes of the per-point state (part of the saved state's shape).
WIDTH = 4          # values in a shape window
SHAPES = 64        # boxes of shape memory per point
DAY_SLOTS = 48     # time-of-day slots (30 min)
WEEK_SLOTS = 168   # hour-of-week slots
BINS = 64          # calibration histogram: 6 bins per doubling of 1 + |z|
RING = 64          # longest regime window
FASTPATH = True
PRIOR = 300.0
WEEKLY = True

_DAY_NS = 86_400_000_000_000
_WEEK_NS = 7 * _DAY_NS
_MONDAY = 4 * _DAY_NS  # 1970-01-01 was a Thursday: shift so slot 0 starts on a Monday


@kernel
def novelty_kernel(idx, t_ns, x, ok, out_score, out_flag, out_why,
                   warmup, record_margin, level_margin, record_half_life, residual_p, memory, vigilance, shape_fire,
                   regime_window, regime_z, stuck_factor, cooldown, escalate,
                   count, hi, lo, mid, sm, shi, slo, mu, prev, mse, dmu, dcnt, dlast, dseen, wmu, wcnt, wlast, wseen, hist, htot, hw,
                   ring, rsum, rpos, lmu, lvar, lcount, box_lo, box_hi, box_use, n_box, win, last_box,
                   rmin, rmax, quiet, onset_r, run, longest, moved):
    """One pass over a tick, in order, updating per-point state in place (a score-only call snapshots and
    restores it in the class). ``out_why`` gets a bit per channel that fired, in ``Novelty.CHANNELS`` order."""
    for i in range(idx.shape[0]):
        p = idx[i]
        v = x[i]
        out_score[i] = 0.0
        out_flag[i] = False
        out_why[i] = 0
        if not ok[i] or v != v:
            continue
        c = count[p]
        count[p] = c + 1
        if c == 0:
            hi[p] = v
            lo[p] = v
            mid[p] = v
            sm[p] = v
            shi[p] = v
            slo[p] = v
            mu[p] = v
            prev[p] = v
            rmin[p] = v
            rmax[p] = v
            for j in range(WIDTH):
                win[p, j] = v
            for k in range(4):
                mse[p, k] = -1.0
            hw[p] = 1.0
            quiet[p] = 1 << 40
            continue
        scoring = c >= warmup[p]
        # ---- record: outside the envelope of what the point has shown
        width = hi[p] - lo[p]
        if width <= 0.0:
            width = abs(mid[p]) * 1e-3 + 1e-9
        excess = v - hi[p]
        if lo[p] - v > excess:
            excess = lo[p] - v
        r_record = excess / width / record_margin[p] if excess > 0.0 else 0.0
        # the same on a short running mean: a level the point never held, though single values reached it
        sm[p] += 0.05 * (v - sm[p])
        swidth = shi[p] - slo[p]
        if swidth <= 0.0:
            swidth = width
        excess = sm[p] - shi[p]
        if slo[p] - sm[p] > excess:
            excess = slo[p] - sm[p]
        if excess > 0.0:
            r_level = excess / swidth / level_margin[p]
            if r_level > r_record:
                r_record = r_level
        mid[p] += 0.01 * (v - mid[p])
        if v > hi[p]:
            hi[p] = v
        if v < lo[p]:
            lo[p] = v
        dec = 1.0 - 0.6931471805599453 / record_half_life[p]
        hi[p] = mid[p] + (hi[p] - mid[p]) * dec
        lo[p] = mid[p] + (lo[p] - mid[p]) * dec
        if sm[p] > shi[p]:
            shi[p] = sm[p]
        if sm[p] < slo[p]:
            slo[p] = sm[p]
        shi[p] = mid[p] + (shi[p] - mid[p]) * dec
        slo[p] = mid[p] + (slo[p] - mid[p]) * dec
        # ---- residual: error of the best forecaster, calibrated against the point's own history
        t = t_ns[i]
        ds = ((t % _DAY_NS) + _DAY_NS) % _DAY_NS * DAY_SLOTS // _DAY_NS
        ws = (((t + _MONDAY) % _WEEK_NS) + _WEEK_NS) % _WEEK_NS * WEEK_SLOTS // _WEEK_NS
        e0 = v - mu[p]
        e1 = v - prev[p]
        day = t // _DAY_NS
        week = (t + _MONDAY) // _WEEK_NS
        have2 = dseen[p, ds] >= 2  # this time of day seen on two days
        have3 = wseen[p, ws] >= 3  # this hour of the week seen in two weeks
        e2 = v - dmu[p, ds] if have2 else 0.0
        e3 = v - wmu[p, ws] if have3 else 0.0
        best = -1
        bm = 0.0
        for k in range(4):
            m = mse[p, k]
            if m < 0.0 or (k == 2 and not have2) or (k == 3 and not have3):
                continue
            mk = m * 3.0 if k == 3 else m  # a week slot has few samples: ask it to be clearly better
            if best < 0 or mk < bm:
                best = k
                bm = mk
        z = 0.0
        if best >= 0:
            e = e0 if best == 0 else e1 if best == 1 else e2 if best == 2 else e3
            z = abs(e) / (math.sqrt(mse[p, best]) + 1e-9 + 1e-6 * abs(mu[p]))
        for k in range(4):
            if (k == 2 and not have2) or (k == 3 and not have3):
                continue
            ek = e0 if k == 0 else e1 if k == 1 else e2 if k == 2 else e3
            if mse[p, k] < 0.0:
                mse[p, k] = ek * ek
            else:
                mse[p, k] += 0.01 * (ek * ek - mse[p, k])
        a = 1.0 / (c + 1.0)
        if a < 0.005:
            a = 0.005
        mu[p] += a * e0
        prev[p] = v
        a = 1.0 / (dcnt[p, ds] + 1.0)
        if a < 0.2:
            a = 0.2
        dmu[p, ds] += a * (v - dmu[p, ds])
        dcnt[p, ds] += 1.0
        if dlast[p, ds] != day:
            dlast[p, ds] = day
            dseen[p, ds] += 1
        a = 1.0 / (wcnt[p, ws] + 1.0)
        if a < 0.2:
            a = 0.2
        wmu[p, ws] += a * (v - wmu[p, ws])
        wcnt[p, ws] += 1.0
        if wlast[p, ws] != week:
            wlast[p, ws] = week
            wseen[p, ws] += 1
        lp = 0.0
        if scoring:
            b = int(6.0 * math.log2(1.0 + z))
            if b >= BINS:
                b = BINS - 1
            # Fenwick tree over the bins: tail = total - sum of the bins below b
            below = 0.0
            j = b
            while j > 0:
                below += hist[p, j - 1]
                j -= j & (-j)
            w = hw[p]
            tail = htot[p] - below
            p0 = 1.0 / (z * z) if z > 1.0 else 1.0
            prob = (tail + w + PRIOR * w * p0) / (htot[p] + w + PRIOR * w)
            lp = -math.log10(prob)
            j = b + 1
            while j <= BINS:
                hist[p, j - 1] += w
                j += j & (-j)
            htot[p] += w
            w *= 1.0 + 1.0 / memory[p]
            if w > 1e150:
                for j in range(BINS):
                    hist[p, j] /= w
                htot[p] /= w
                w = 1.0
            hw[p] = w
        r_residual = lp / residual_p[p]
        # ---- regime: short mean of the calibrated surprise against its long-run distribution
        r_regime = 0.0
        if scoring:
            nwin = regime_window[p]
            capped = lp if lp < 4.0 else 4.0
            pos = rpos[p]
            slot = pos % nwin
            rsum[p] += capped - ring[p, slot]
            ring[p, slot] = capped
            rpos[p] = pos + 1
            if pos + 1 >= nwin:
                m = rsum[p] / nwin
                n_l = lcount[p]
                if n_l > 50:
                    r_regime = (m - lmu[p]) / (math.sqrt(lvar[p]) + 1e-3) / regime_z[p]
                al = 1.0 / (n_l + 1.0)
                if al < 0.0003:
                    al = 0.0003
                d = m - lmu[p]
                lmu[p] += al * d
                lvar[p] = (1.0 - al) * (lvar[p] + al * d * d)
                lcount[p] = n_l + 1
        # ---- shape: the last WIDTH values against the box memory
        for j in range(WIDTH - 1):
            win[p, j] = win[p, j + 1]
        win[p, WIDTH - 1] = v
        r_shape = 0.0
        if not scoring:
            if v < rmin[p]:
                rmin[p] = v
            if v > rmax[p]:
                rmax[p] = v
        if c + 1 >= WIDTH:
            rng = rmax[p] - rmin[p]
            if rng <= 0.0:
                rng = abs(rmax[p]) * 1e-3 + 1e-9
            lim = vigilance[p] * rng * WIDTH
            nb = n_box[p]
            best = -1
            bs = 0.0
            lb = last_box[p]
            if FASTPATH and 0 <= lb < nb:  # the box that took the previous window usually takes this one
                s = 0.0
                for j in range(WIDTH):
                    wj = win[p, j]
                    s += (box_hi[p, lb, j] if box_hi[p, lb, j] > wj else wj) - \
                         (box_lo[p, lb, j] if box_lo[p, lb, j] < wj else wj)
                if s <= lim:
                    best = lb
                    bs = s
            if best < 0:
                for q in range(nb):
                    s = 0.0
                    for j in range(WIDTH):
                        wj = win[p, j]
                        s += (box_hi[p, q, j] if box_hi[p, q, j] > wj else wj) - \
                             (box_lo[p, q, j] if box_lo[p, q, j] < wj else wj)
                    if best < 0 or s < bs:
                        best = q
                        bs = s
            if best >= 0 and bs <= lim:
                for j in range(WIDTH):
                    wj = win[p, j]
                    if wj < box_lo[p, best, j]:
                        box_lo[p, best, j] = wj
                    if wj > box_hi[p, best, j]:
                        box_hi[p, best, j] = wj
                box_use[p, best] += 1.0
                last_box[p] = best
            else:
                if scoring:
                    r_shape = 2.0 if best < 0 else bs / (lim * shape_fire[p])
                q = nb
                if nb < SHAPES:
                    n_box[p] = nb + 1
                else:
                    q = 0
                    for k in range(SHAPES):
                        if box_use[p, k] < box_use[p, q]:
                            q = k
                for j in range(WIDTH):
                    box_lo[p, q, j] = win[p, j]
                    box_hi[p, q, j] = win[p, j]
                box_use[p, q] = 1.0
                last_box[p] = q
            if scoring:
                for j in range(WIDTH):
                    if win[p, j] < rmin[p]:
                        rmin[p] = win[p, j]
                    if win[p, j] > rmax[p]:
                        rmax[p] = win[p, j]
        # ---- stuck: a run of equal values far longer than any the point has shown, after moving
        r_stuck = 0.0
        if v == win[p, WIDTH - 2]:
            run[p] += 1
        else:
            if run[p] > longest[p]:
                longest[p] = run[p]
            run[p] = 0
            moved[p] += 1
        if scoring and moved[p] >= 3:
            ref = longest[p] if longest[p] > 10 else 10
            r_stuck = run[p] / (stuck_factor[p] * ref)
        if not scoring:
            continue
        # ---- one score per sample, events with a cool-down
        r = r_record
        why = 1 if r_record >= 1.0 else 0
        if r_residual > r:
            r = r_residual
        if r_residual >= 1.0:
            why |= 2
        if r_shape > r:
            r = r_shape
        if r_shape >= 1.0:
            why |= 4
        if r_regime > r:
            r = r_regime
        if r_regime >= 1.0:
            why |= 8
        if r_stuck > r:
            r = r_stuck
        if r_stuck >= 1.0:
            why |= 16
        q = quiet[p] + 1  # samples since the last one at or above its firing point
        if r >= 1.0:
            if q >= cooldown[p] or r > onset_r[p] * escalate[p]:
                out_flag[i] = True
                out_why[i] = why
                onset_r[p] = r
                out_score[i] = r
            else:
                out_score[i] = 0.999
            quiet[p] = 0
        else:
            out_score[i] = r if q >= cooldown[p] else (r if r < 0.999 else 0.999)
            quiet[p] = q


class Novelty(KernelDetector):
    """The calibrated, scale-free default detector; see the module docstring. Score in ratio units (flag
    at 1, what ``score_scale`` says); ``why`` of the last tick names the channels that fired."""

    name = "novelty"
    CHANNELS = ("record", "residual", "shape", "regime", "stuck")
    params = ("warmup", "record_margin", "level_margin", "record_half_life", "residual_p", "memory", "vigilance",
              "shape_fire", "regime_window", "regime_z", "stuck_factor", "cooldown", "escalate")
    state_keys = ("count", "hi", "lo", "mid", "sm", "shi", "slo", "mu", "prev", "mse", "dmu", "dcnt", "dlast", "dseen", "wmu", "wcnt", "wlast", "wseen", "hist",
                  "htot", "hw", "ring", "rsum", "rpos", "lmu", "lvar", "lcount", "box_lo", "box_hi",
                  "box_use", "n_box", "win", "last_box", "rmin", "rmax", "quiet", "onset_r", "run",
                  "longest", "moved")

    def __init__(self, n_points: int, warmup=100, record_margin=0.01, level_margin=0.05,
                 record_half_life=100_000.0,
                 residual_p=3.0, memory=5000.0, vigilance=0.3, shape_fire=2.5, regime_window=30,
                 regime_z=4.0, stuck_factor=4.0, cooldown=50, escalate=1.5) -> None:
        super().__init__(n_points)
        self.warmup = per_point(warmup, n_points, np.int64)
        self.record_margin = per_point(record_margin, n_points, np.float64)
        self.level_margin = per_point(level_margin, n_points, np.float64)
        self.record_half_life = per_point(record_half_life, n_points, np.float64)
        self.residual_p = per_point(residual_p, n_points, np.float64)
        self.memory = per_point(memory, n_points, np.float64)
        self.vigilance = per_point(vigilance, n_points, np.float64)
        self.shape_fire = per_point(shape_fire, n_points, np.float64)
        self.regime_window = per_point(regime_window, n_points, np.int64)
        self.regime_z = per_point(regime_z, n_points, np.float64)
        self.stuck_factor = per_point(stuck_factor, n_points, np.float64)
        self.cooldown = per_point(cooldown, n_points, np.int64)
        self.escalate = per_point(escalate, n_points, np.float64)
        checks = {
            "warmup": self.warmup >= WIDTH, "record_margin": self.record_margin > 0,
            "level_margin": self.level_margin > 0,
            "record_half_life": self.record_half_life > 1, "residual_p": self.residual_p > 0,
            "memory": self.memory >= 10, "vigilance": self.vigilance > 0, "shape_fire": self.shape_fire >= 1,
            "regime_window": (self.regime_window >= 2) & (self.regime_window <= RING),
            "regime_z": self.regime_z > 0, "stuck_factor": self.stuck_factor > 1, "cooldown": self.cooldown >= 0,
            "escalate": self.escalate > 1,
        }
        bad = [name for name, good in checks.items() if not np.all(good)]
        if bad:
            raise ValueError(f"out of range: {', '.join(bad)} (warmup >= {WIDTH}, 2 <= regime_window <= {RING}, "
                             "stuck_factor > 1, escalate > 1, shape_fire >= 1, memory >= 10, the rest > 0)")
        n = n_points
        self.count = np.zeros(n, np.int64)
        for key in ("hi", "lo", "mid", "sm", "shi", "slo", "mu", "prev", "htot", "hw", "rsum", "lmu", "lvar", "rmin", "rmax",
                    "onset_r"):
            setattr(self, key, np.zeros(n))
        self.mse = np.zeros((n, 4))
        self.dmu = np.zeros((n, DAY_SLOTS))
        self.dcnt = np.zeros((n, DAY_SLOTS))
        self.dlast = np.full((n, DAY_SLOTS), np.iinfo(np.int64).min, np.int64)
        self.dseen = np.zeros((n, DAY_SLOTS), np.int64)
        self.wlast = np.full((n, WEEK_SLOTS), np.iinfo(np.int64).min, np.int64)
        self.wseen = np.zeros((n, WEEK_SLOTS), np.int64)
        self.wmu = np.zeros((n, WEEK_SLOTS))
        self.wcnt = np.zeros((n, WEEK_SLOTS))
        self.hist = np.zeros((n, BINS))
        self.ring = np.zeros((n, RING))
        self.rpos = np.zeros(n, np.int64)
        self.lcount = np.zeros(n, np.int64)
        self.box_lo = np.zeros((n, SHAPES, WIDTH))
        self.box_hi = np.zeros((n, SHAPES, WIDTH))
        self.box_use = np.zeros((n, SHAPES))
        self.n_box = np.zeros(n, np.int64)
        self.win = np.zeros((n, WIDTH))
        self.last_box = np.full(n, -1, np.int64)
        self.quiet = np.zeros(n, np.int64)
        self.run = np.zeros(n, np.int64)
        self.longest = np.zeros(n, np.int64)
        self.moved = np.zeros(n, np.int64)
        self._why = np.zeros(0, np.int64)

    def _kernel(self, idx, t_ns, x, ok, learn, out_score, out_flag) -> None:
        n = idx.shape[0]
        if self._why.shape[0] < n:
            self._why = np.zeros(max(n, 2 * self._why.shape[0]), np.int64)
        if not learn:  # score only: run as update would, then put the state back
            saved = {key: getattr(self, key).copy() for key in self.state_keys}
        novelty_kernel(idx, t_ns, x, ok, out_score, out_flag, self._why[:n],
                       self.warmup, self.record_margin, self.level_margin, self.record_half_life, self.residual_p, self.memory,
                       self.vigilance, self.shape_fire, self.regime_window, self.regime_z, self.stuck_factor,
                       self.cooldown, self.escalate,
                       self.count, self.hi, self.lo, self.mid, self.sm, self.shi, self.slo, self.mu, self.prev, self.mse, self.dmu, self.dcnt,
                       self.dlast, self.dseen, self.wmu, self.wcnt, self.wlast, self.wseen, self.hist, self.htot, self.hw, self.ring, self.rsum, self.rpos,
                       self.lmu, self.lvar, self.lcount, self.box_lo, self.box_hi, self.box_use, self.n_box,
                       self.win, self.last_box, self.rmin, self.rmax, self.quiet, self.onset_r, self.run,
                       self.longest, self.moved)
        if not learn:
            for key, arr in saved.items():
                setattr(self, key, arr)

    def why(self, n: int) -> list[tuple[str, ...]]:
        """For the last tick's first ``n`` samples: the channels that fired (empty where none did)."""
        return [tuple(name for k, name in enumerate(self.CHANNELS) if bits >> k & 1) for bits in self._why[:n]]
