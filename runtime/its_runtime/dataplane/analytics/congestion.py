"""A camera's congestion level (free, heavy, congested) from vehicles and ground speed.

The level is judged on averages over the last ``windowSeconds`` of stream time (the
number of tracked vehicles per frame, and their mean ground speed), not on one frame,
so a single frame with a missed detection or a car braking does not flip it:

* ``congested``: on average ``congestedVehicles`` or more, or at least ``minVehicles``
  moving slower than ``congestedSpeedKmh`` on average;
* ``heavy``: ``heavyVehicles`` or more, or at least ``minVehicles`` slower than
  ``heavySpeedKmh``;
* ``free`` otherwise (also with no speed known: an uncalibrated camera is judged on
  vehicles alone).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

from its_runtime.traffic_config import CongestionThresholds

FREE = "free"
HEAVY = "heavy"
CONGESTED = "congested"
#: Levels in order; a level's index is its value in the metric and the stored samples.
LEVELS = (FREE, HEAVY, CONGESTED)


@dataclass(frozen=True)
class CongestionState:
    level: str
    vehicles: float
    mean_speed_kmh: float | None

    @property
    def value(self) -> int:
        return LEVELS.index(self.level)

    def to_json(self) -> dict[str, object]:
        return {
            "level": self.level,
            "value": self.value,
            "vehicles": round(self.vehicles, 2),
            "mean_speed_kmh": None
            if self.mean_speed_kmh is None
            else round(self.mean_speed_kmh, 2),
        }


class CongestionMeter:
    def __init__(self, thresholds: CongestionThresholds) -> None:
        self.thresholds = thresholds
        self._samples: collections.deque[tuple[float, int, float | None]] = collections.deque()

    def observe(self, t: float, speeds: Sequence[float | None]) -> CongestionState:
        """Add a frame (one speed per tracked vehicle, None if unknown); the level now."""
        known = [s for s in speeds if s is not None]
        self._samples.append((t, len(speeds), sum(known) / len(known) if known else None))
        while self._samples and t - self._samples[0][0] > self.thresholds.window_seconds:
            self._samples.popleft()
        vehicles = sum(n for _, n, _ in self._samples) / len(self._samples)
        means = [m for _, _, m in self._samples if m is not None]
        mean_speed = sum(means) / len(means) if means else None
        return CongestionState(self._level(vehicles, mean_speed), vehicles, mean_speed)

    def _level(self, vehicles: float, mean_speed: float | None) -> str:
        c = self.thresholds
        slow_enough = mean_speed is not None and vehicles >= c.min_vehicles
        if vehicles >= c.congested_vehicles or (
            slow_enough and mean_speed is not None and mean_speed < c.congested_speed_kmh
        ):
            return CONGESTED
        if vehicles >= c.heavy_vehicles or (
            slow_enough and mean_speed is not None and mean_speed < c.heavy_speed_kmh
        ):
            return HEAVY
        return FREE
