"""Protocol sources: one module per protocol, each one class with ``start(sink)`` and ``stop()``.

The sink is the only thing a source knows about the rest of the agent: it is called with
(asset, point, t_ns, value, quality) for every reading and must be cheap.
"""

from __future__ import annotations

from typing import Protocol

from models.waveform import Frame


class Sink(Protocol):
    """``value`` is a float for numeric points, a str for text points (ids, state names), and a
    ``models.waveform.Frame`` for a block of raw samples (an accelerometer's), which the agent turns into features."""

    def __call__(self, asset: str, point: str, t_ns: int, value: float | str | Frame, quality: int) -> None: ...


class Source(Protocol):
    name: str

    def start(self, sink: Sink) -> None: ...

    def stop(self) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def mark(self) -> int:
        """A position in what the source has handed to the sink so far (taken before a tick)."""
        ...

    def commit(self, mark: int) -> None:
        """Everything up to ``mark`` is durable in the outbox: the source may acknowledge it upstream."""
        ...
