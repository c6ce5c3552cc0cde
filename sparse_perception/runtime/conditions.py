"""Driving conditions shared by the data generator, the zoo and the sparsity policy.

A condition is an (illumination, weather) pair plus continuous values. Its *key*
(``"day_clear"``, ``"night_fog"``, ...) names it in sidecar files, the engine manifest's
per-condition mAP and the policy's observation. Codes match the constants of
``sparse_perception_msgs/DrivingCondition``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ILLUMINATIONS: tuple[str, ...] = ("day", "dusk", "night")
WEATHERS: tuple[str, ...] = ("clear", "rain", "fog")
CONDITION_KEYS: tuple[str, ...] = tuple(f"{i}_{w}" for i in ILLUMINATIONS for w in WEATHERS)


@dataclass(frozen=True)
class Condition:
    """One driving condition.

    :param illumination: ``"day"``, ``"dusk"`` or ``"night"``.
    :param weather: ``"clear"``, ``"rain"`` or ``"fog"``.
    :param visibility_m: meteorological visibility in metres, negative if unknown.
    :param ambient_light: brightness in [0, 1], negative if unknown.
    :param ego_speed_mps: ego speed in m/s, negative if unknown.
    :param scene_density: number of visible road users, negative if unknown.

    A non-finite value (NaN, +-inf, e.g. from a hostile ``DrivingCondition`` message) is unknown
    (stored as -1.0): a policy must never see it.
    """

    illumination: str = "day"
    weather: str = "clear"
    visibility_m: float = -1.0
    ambient_light: float = -1.0
    ego_speed_mps: float = -1.0
    scene_density: float = -1.0

    def __post_init__(self) -> None:
        if self.illumination not in ILLUMINATIONS:
            raise ValueError(f"illumination must be one of {ILLUMINATIONS}, got {self.illumination!r}")
        if self.weather not in WEATHERS:
            raise ValueError(f"weather must be one of {WEATHERS}, got {self.weather!r}")
        for name in ("visibility_m", "ambient_light", "ego_speed_mps", "scene_density"):
            if not math.isfinite(float(getattr(self, name))):
                object.__setattr__(self, name, -1.0)  # frozen dataclass: normalise once, here

    @property
    def key(self) -> str:
        """Name such as ``"night_fog"``."""
        return f"{self.illumination}_{self.weather}"

    @property
    def illumination_code(self) -> int:
        """``DrivingCondition.ILLUMINATION_*`` value."""
        return ILLUMINATIONS.index(self.illumination)

    @property
    def weather_code(self) -> int:
        """``DrivingCondition.WEATHER_*`` value."""
        return WEATHERS.index(self.weather)

    @classmethod
    def from_codes(cls, illumination: int, weather: int, **values: float) -> "Condition":
        """Build from the message's integer codes; unknown codes raise ``ValueError``."""
        if not 0 <= illumination < len(ILLUMINATIONS):
            raise ValueError(f"unknown illumination code {illumination}")
        if not 0 <= weather < len(WEATHERS):
            raise ValueError(f"unknown weather code {weather}")
        return cls(ILLUMINATIONS[illumination], WEATHERS[weather], **{k: float(v) for k, v in values.items()})

    @classmethod
    def from_key(cls, key: str, **values: float) -> "Condition":
        """Build from a key such as ``"dusk_rain"``."""
        illumination, _, weather = key.partition("_")
        return cls(illumination, weather, **values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the sidecar format)."""
        return {"key": self.key, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Condition":
        """Inverse of :meth:`to_dict` (the ``key`` entry is ignored)."""
        fields = {k: data[k] for k in ("illumination", "weather", "visibility_m", "ambient_light",
                                         "ego_speed_mps", "scene_density") if k in data}
        return cls(**fields)


def read_condition(path: str | Path) -> Condition:
    """Read a per-frame condition sidecar (JSON written by :meth:`Condition.to_dict`).

    :raises ValueError: when the file is not valid JSON or holds unknown values; the
        message names the file.
    """
    path = Path(path)
    try:
        return Condition.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad condition sidecar: {exc}") from exc
