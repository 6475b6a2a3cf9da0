"""Stopping a child process the same way everywhere: the rig's (``simulators/rig/procs.py``)."""

from simulators.rig.procs import stop_process

__all__ = ["stop_process"]
