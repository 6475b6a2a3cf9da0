"""Simulated sensors that drive the platform over the wire only (MQTT), with physics, faults and truth.

- ``trailer``: refrigerated-trailer physics, sensor imperfections and injected faults (numpy, seeded).
- ``devices``: the MQTT device front that publishes readings as sensors would.
- ``scenario``: YAML scenarios (fleet, faults, timing) → published data plus ``ground_truth.json``.
- ``replay``: any CSV replayed as a live device.
- ``cli``: the ``twin sim`` commands.

Imports only ``models`` of ours: a simulator must never reach into the edge or the cloud.
"""
