"""Stopping a child process the same way everywhere in the harness: a signal, a wait, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen, timeout: float = 10, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` unless it has ended, wait ``timeout`` s, then SIGKILL; its return code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode
