"""The ``twin`` command: one entry point for gateway, cloud, simulators, detectors and benchmarks."""
