"""Alarm profiles: per product class, which temperatures count as out of range and for how long.

A profile is data, not code, because the limits come from regulators and logger vendors (WHO, USP,
FDA, FSANZ) and a quality team must be able to read, diff and sign them. The shipped ones live in
``cloud/rules/profiles/*.yaml``; see ``/work/shared/domain/cold_chain.md`` for their sources.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
SEVERITIES: tuple[str, ...] = ("notification", "low", "medium", "high", "critical")
"""Controlant's four levels plus ``critical`` (the platform's alert scale); ``notification`` never fails."""

_NS = 1_000_000_000
_UNIT_S = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


def parse_duration_s(value: Any) -> float:
    """``45s``, ``30m``, ``1h``, ``10h``, ``2d``, compounds like ``800h50m``, or plain seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use e.g. 45s, 30m, 1h, 10h, 2d)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip() and _DURATION.sub("", value).strip() == "":
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(value))
    else:
        raise ValueError(f"{value!r} is not a duration (use e.g. 45s, 30m, 1h, 10h, 2d)")
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration_s` for display: 36000 -> ``10h``, 5400 -> ``1h30m``; days
    only from 48 h on, because limits are quoted as "24 h" (USP) and "30 days"."""
    if seconds == 0:
        return "0s"
    rest, parts = seconds, []
    for unit, size in _UNIT_S.items():
        if unit == "d" and seconds < 2 * size:
            continue
        n = int(rest // size) if unit != "s" else rest
        if n:
            parts.append(f"{n:g}{unit}")
            rest -= n * size
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration_s)]
"""Seconds, written in YAML as ``45s``/``30m``/``1h``/``2d`` (or a number of seconds)."""


class Boundary(BaseModel):
    """One alarm: out of range is ``≥ above`` and/or ``≤ below`` (``>``/``<`` with ``inclusive: false``).

    With both limits the readable sense applies: ``above: 5, below: 60`` is the band between them (the
    food danger zone); ``above: 8, below: 2`` is outside 2..8 (a dual boundary). ``after`` is the time
    out of range that fires the alarm; ``after: 0s`` fires as each excursion starts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    above: float | None = None
    below: float | None = None
    inclusive: bool = True
    after: Duration
    mode: Literal["single", "cumulative"]
    severity: Literal["notification", "low", "medium", "high", "critical"]
    disposition: str | None = Field(None, description="what to do with the product once this fired")
    source: str | None = None

    @model_validator(mode="after")
    def _limits(self) -> Boundary:
        if self.above is None and self.below is None:
            raise ValueError("give 'above', 'below' or both")
        if self.above is not None and self.below is not None and self.above == self.below:
            raise ValueError("'above' and 'below' are equal: the boundary would be a single temperature")
        return self

    @property
    def after_ns(self) -> int:
        return round(self.after * _NS)

    @property
    def band(self) -> bool:
        """Both limits with above < below: out of range is between them."""
        return self.above is not None and self.below is not None and self.above < self.below

    def out_of_range(self, temps_c: Any) -> Any:
        """Boolean mask (numpy or scalar) of readings outside this boundary's allowed range."""
        hi = lo = None
        if self.above is not None:
            hi = temps_c >= self.above if self.inclusive else temps_c > self.above
        if self.below is not None:
            lo = temps_c <= self.below if self.inclusive else temps_c < self.below
        if hi is None:
            return lo
        if lo is None:
            return hi
        return (hi & lo) if self.band else (hi | lo)

    def condition(self) -> str:
        """Human form, e.g. ``≥ 30.0 °C`` or ``> 5.0 °C and < 60.0 °C``."""
        ge, le = ("≥", "≤") if self.inclusive else (">", "<")
        parts = []
        if self.above is not None:
            parts.append(f"{ge} {self.above:.1f} °C")
        if self.below is not None:
            parts.append(f"{le} {self.below:.1f} °C")
        return (" and " if self.band else " or ").join(parts)


class MktSpec(BaseModel):
    """How MKT is judged for this product: over a rolling ``window``, against ``limit`` (both optional:
    whether MKT applies at all, e.g. to frozen product, is a per-product decision)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration | None = None
    limit: float | None = None
    delta_h_kj_mol: float = Field(83.144, gt=0)

    @model_validator(mode="after")
    def _window(self) -> MktSpec:
        if self.window is not None and self.window <= 0:
            raise ValueError("window: must be longer than 0s")
        return self


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    boundaries: list[Boundary] = Field(default_factory=list)
    mkt: MktSpec | None = None
    disposition: str | None = Field(None, description="what to do with the product when nothing fired")
    approvals: list[Literal["qa", "qp"]] = Field(
        default_factory=lambda: ["qa"], min_length=1, max_length=4,
        description="who signs a release of a quarantined lot, in order: qa, then qp (the qualified person)")

    @model_validator(mode="after")
    def _unique(self) -> Profile:
        names = [b.name for b in self.boundaries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"boundary names must be unique: {', '.join(dupes)}")
        return self

    @property
    def delta_h_kj_mol(self) -> float:
        return self.mkt.delta_h_kj_mol if self.mkt else 83.144


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "profile"


def parse_profile(data: Any, origin: str = "profile") -> Profile:
    """Validate a profile mapping; errors name ``origin`` and the field (``boundaries[1].after``)."""
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{origin}: {_where(err['loc'])}: {msg}")
        raise ProfileError("\n".join(lines)) from None


def shipped_profiles() -> dict[str, Path]:
    """The profiles that come with the platform: name -> file."""
    return {p.stem: p for p in sorted(PROFILE_DIR.glob("*.yaml"))}


def load_profile(ref: str | Path) -> Profile:
    """A profile from a YAML file, or a shipped profile by name (``who-type-1``)."""
    path = Path(ref)
    if not path.exists():
        shipped = shipped_profiles()
        if str(ref) not in shipped:
            raise ProfileError(f"{ref}: no such file, and not a shipped profile ({', '.join(shipped)})")
        path = shipped[str(ref)]
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read: {exc}") from None
    return parse_profile(data, str(path))
