"""The platform's own processes for end-to-end and failure tests: the rig's (``simulators/rig/processes.py``),
which ``twin bench`` starts too."""

from simulators.rig.processes import CloudProcess, EdgeProcess, TwinProcess, gateway_config, wait_until

__all__ = ["CloudProcess", "EdgeProcess", "TwinProcess", "gateway_config", "wait_until"]
