"""The InfluxDB v2 write front, now in the rig (``simulators/rig/influx_front.py``) that ``twin bench`` uses too."""

from simulators.rig.influx_front import InfluxV2WriteFront, InfluxV2WriteFrontProcess, main

__all__ = ["InfluxV2WriteFront", "InfluxV2WriteFrontProcess", "main"]
