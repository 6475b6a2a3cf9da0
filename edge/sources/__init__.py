"""Protocol sources: one module per protocol, each one class with ``start(sink)`` and ``stop()``.

The sink is the only thing a source knows about the rest of the agent: it is called with
(asset, point, t_ns, value, quality) for every reading and must be cheap.
"""

from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    """``value`` is a float for numeric points and a str for text points (ids, state names)."""

    def __call__(self, asset: str, point: str, t_ns: int, value: float | str, quality: int) -> None: ...


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
