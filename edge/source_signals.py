"""What a source knows beyond a sample's value and three-class quality: the device's full status code for a
sample (OPC-UA's 32-bit StatusCode), and the alarms a device raises itself (OPC-UA conditions). Kept out of the
agent's hot path: plain Good values never come here, and alarms are rare.
"""

from __future__ import annotations

import threading
import time

from models.wire import AlarmEvent


class StatusCodes:
    """Full status codes waiting for their samples' batch; called from the sources' threads as
    ``on_status(asset, point, t_ns, code)``, before or after the sample itself."""

    def __init__(self, index: dict[tuple[str, str], int]) -> None:
        self.index = index
        self._pending: dict[tuple[int, int], tuple[int, float]] = {}  # (point, t_ns) -> (code, when)
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def __call__(self, asset: str, point: str, t_ns: int, code: int) -> None:
        i = self.index.get((asset, point))
        if i is not None:
            with self._lock:
                self._pending[(i, t_ns)] = (code, time.monotonic())

    def attach(self, points: list[int], series: list[dict]) -> None:
        """``status`` on the series whose samples carry a code (0 for the others); a code whose sample is not in
        this batch (it is in the next tick's buffer) waits for it, up to 5 s."""
        with self._lock:
            pending, self._pending = self._pending, {}
        by_point: dict[int, dict[int, int]] = {}
        for (i, t), (code, _) in pending.items():
            by_point.setdefault(i, {})[t] = code
        for i, s in zip(points, series, strict=True):
            codes = by_point.get(i)
            if codes:
                st = [codes.pop(t, 0) for t in s["t_ns"]]
                if any(st):
                    s["status"] = st
        old = time.monotonic() - 5
        left = {(i, t): pending[(i, t)] for i, codes in by_point.items() for t in codes if pending[(i, t)][1] > old}
        if left:
            with self._lock:
                self._pending.update(left)


def alarm_event(tenant: str, gateway: str, a) -> AlarmEvent:
    """A device's own alarm (``edge.sources.opcua_alarms.SourceAlarm``) as the alarm path's message: opened when
    it goes active and sent again with its end when it clears, under the same event id."""
    return AlarmEvent(tenant=tenant, gateway=gateway, event_id=f"{gateway}:{a.asset}:{a.rule}:{a.start_ns}",
                      asset=a.asset, rule=a.rule, severity=a.severity, start_ns=a.start_ns, end_ns=a.end_ns,
                      evidence=a.evidence)
