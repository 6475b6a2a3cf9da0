"""What a rotating machine is, for its vibration to be judged: the ISO 20816-3 class it is judged by, the rolling
bearing whose defect lines the edge looks for, and the speed it runs at. Shared: the registry stores one per
machine (``PUT /api/v1/assets/{asset}/machine``), a gateway's ``assets[].machine`` gives the edge the same.

>>> MachineProfile().model_dump()["bearing"]
{'n_balls': 8, 'ball_diameter_mm': 10.0, 'pitch_diameter_mm': 50.0, 'contact_angle_deg': 0.0}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Bearing(BaseModel):
    """A rolling-element bearing's geometry (the defect frequencies follow from it and the shaft speed)."""

    model_config = ConfigDict(extra="forbid")
    n_balls: int = Field(8, ge=3, le=100)
    ball_diameter_mm: float = Field(10.0, gt=0, le=1000)
    pitch_diameter_mm: float = Field(50.0, gt=0, le=5000)
    contact_angle_deg: float = Field(0.0, ge=0, lt=90)

    @model_validator(mode="after")
    def _ball_inside_pitch(self) -> Bearing:
        if self.ball_diameter_mm >= self.pitch_diameter_mm:
            raise ValueError(f"ball_diameter_mm {self.ball_diameter_mm} must be below pitch_diameter_mm "
                             f"{self.pitch_diameter_mm}")
        return self


class MachineProfile(BaseModel):
    """ISO 20816-3 group (1: > 300 kW or shaft height >= 315 mm; 2: 15-300 kW) and foundation ("rigid" when its
    lowest natural frequency is 25 % or more above the main excitation), the bearing, the nominal shaft speed.
    The defaults are group 2, rigid, the 8-ball bearing of the domain notes at 1800 rpm."""

    model_config = ConfigDict(extra="forbid")
    iso_group: Literal[1, 2] = 2
    foundation: Literal["rigid", "flexible"] = "rigid"
    bearing: Bearing = Field(default_factory=Bearing)
    shaft_rpm: float = Field(1800.0, gt=0, le=100_000, description="nominal speed, used when a block carries none")
