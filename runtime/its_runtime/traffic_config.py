"""The traffic-measure settings of a camera: calibration, lanes, stopped vehicles, congestion.

Part of the config format both parts share (used by :mod:`its_runtime.camera_config`);
the CRD's schema is generated from these classes, and every cross-field rule is written
twice on purpose: as CEL (so ``kubectl apply`` rejects a bad spec, naming the field)
and as a pydantic validator (so a config file is held to the same rule). The CEL is
generated from the same index lists the validators loop over, so the two cannot
disagree on which points they compare.

A calibration is what traffic engineers measure: four points marked on the image and
the same four points surveyed on the road, in metres. No three of either set may lie
on one line, or the homography between them is degenerate.
"""

from __future__ import annotations

import itertools
from typing import Literal, Self

from pydantic import ConfigDict, Field, model_validator

from its_runtime.points import GroundPoint, Point
from its_runtime.wire import NAME_PATTERN, WireModel, cel

Direction = Literal["in", "out"]

_PAIRS = list(itertools.combinations(range(4), 2))
_TRIPLES = list(itertools.combinations(range(4), 3))
#: Twice the triangle area below which three points count as on one line.
IMAGE_COLLINEAR_EPS = 1e-6  # normalised units squared
GROUND_COLLINEAR_EPS = 1e-3  # square metres


def _cel_cross(field: str, i: int, j: int, k: int) -> str:
    p = f"self.{field}"
    return (
        f"(({p}[{j}][0] - {p}[{i}][0]) * ({p}[{k}][1] - {p}[{i}][1]) - "
        f"({p}[{j}][1] - {p}[{i}][1]) * ({p}[{k}][0] - {p}[{i}][0]))"
    )


def _cel_distinct(field: str) -> str:
    p = f"self.{field}"
    return " && ".join(
        f"({p}[{i}][0] != {p}[{j}][0] || {p}[{i}][1] != {p}[{j}][1])" for i, j in _PAIRS
    )


def _cel_not_collinear(field: str, eps: float) -> str:
    return " && ".join(
        f"({_cel_cross(field, *t)} > {eps} || {_cel_cross(field, *t)} < -{eps})" for t in _TRIPLES
    )


def _cross(a: Point | GroundPoint, b: Point | GroundPoint, c: Point | GroundPoint) -> float:
    return (b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x)


def _check_points(name: str, points: list[Point] | list[GroundPoint], eps: float) -> None:
    for i, j in _PAIRS:
        if (points[i].x, points[i].y) == (points[j].x, points[j].y):
            raise ValueError(f"calibration.{name} must be 4 distinct points")
    for i, j, k in _TRIPLES:
        if abs(_cross(points[i], points[j], points[k])) <= eps:
            raise ValueError(f"calibration.{name}: no three points may lie on one line")


class Calibration(WireModel):
    model_config = ConfigDict(
        json_schema_extra={
            "description": "Ground-plane calibration: 4 image points and the same 4 points "
            "on the road in metres (a homography). Speeds and queue lengths are measured "
            "on the ground through it.",
            "x-kubernetes-validations": [
                cel(
                    _cel_distinct("imagePoints"),
                    "calibration.imagePoints must be 4 distinct points",
                    ".imagePoints",
                ),
                cel(
                    _cel_not_collinear("imagePoints", IMAGE_COLLINEAR_EPS),
                    "calibration.imagePoints: no three points may lie on one line",
                    ".imagePoints",
                ),
                cel(
                    _cel_distinct("groundPoints"),
                    "calibration.groundPoints must be 4 distinct points",
                    ".groundPoints",
                ),
                cel(
                    _cel_not_collinear("groundPoints", GROUND_COLLINEAR_EPS),
                    "calibration.groundPoints: no three points may lie on one line",
                    ".groundPoints",
                ),
            ],
        }
    )

    image_points: list[Point] = Field(
        ...,
        min_length=4,
        max_length=4,
        description="4 points on the image ([x, y], normalised 0..1), e.g. lane-marking "
        "corners; no three on one line.",
    )
    ground_points: list[GroundPoint] = Field(
        ...,
        min_length=4,
        max_length=4,
        description="The same 4 points on the road, in metres ([x, y], same order as "
        "imagePoints); no three on one line.",
    )

    @model_validator(mode="after")
    def _general_position(self) -> Self:
        _check_points("imagePoints", self.image_points, IMAGE_COLLINEAR_EPS)
        _check_points("groundPoints", self.ground_points, GROUND_COLLINEAR_EPS)
        return self


class Lane(WireModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.start < self.end", "lane start must be before its end", ".start"),
            ]
        }
    )

    name: str = Field(..., pattern=NAME_PATTERN, max_length=63, description="Lane name.")
    start: float = Field(
        ...,
        ge=0,
        le=1,
        description="Where the lane begins along its line: 0 = the line's start, 1 = its end.",
    )
    end: float = Field(..., ge=0, le=1, description="Where the lane ends along its line (0..1).")
    allowed_direction: Direction | None = Field(
        None,
        description="The only direction traffic may cross this lane (in or out); a crossing "
        "the other way is a wrong_way event. Overrides the line's allowedDirection.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start >= self.end:
            raise ValueError(f"lane {self.name!r}: start must be before its end")
        return self


class StoppedVehicles(WireModel):
    model_config = ConfigDict(
        json_schema_extra={
            "description": "When a vehicle in the region counts as stopped: queued after "
            "queueDwellSeconds below speedKmh, a stopped_vehicle event after eventSeconds.",
            "x-kubernetes-validations": [
                cel(
                    "self.eventSeconds >= self.queueDwellSeconds",
                    "stopped.eventSeconds must not be less than stopped.queueDwellSeconds",
                    ".eventSeconds",
                ),
            ],
        }
    )

    speed_kmh: float = Field(
        5.0, gt=0, le=50, description="Ground speed (km/h) below which a vehicle is stopped."
    )
    queue_dwell_seconds: float = Field(
        3.0,
        gt=0,
        le=3600,
        description="Seconds below speedKmh before a vehicle joins the region's queue.",
    )
    event_seconds: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Seconds below speedKmh before a stopped_vehicle event (an incident).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.event_seconds < self.queue_dwell_seconds:
            raise ValueError("stopped.eventSeconds must not be less than stopped.queueDwellSeconds")
        return self


class CongestionThresholds(WireModel):
    model_config = ConfigDict(
        json_schema_extra={
            "description": "Congestion level (free, heavy, congested) from the camera's "
            "tracked vehicles and their mean ground speed, averaged over windowSeconds.",
            "x-kubernetes-validations": [
                cel(
                    "self.congestedSpeedKmh < self.heavySpeedKmh",
                    "congestion.congestedSpeedKmh must be below congestion.heavySpeedKmh",
                    ".congestedSpeedKmh",
                ),
                cel(
                    "self.heavyVehicles < self.congestedVehicles",
                    "congestion.heavyVehicles must be below congestion.congestedVehicles",
                    ".heavyVehicles",
                ),
            ],
        }
    )

    heavy_speed_kmh: float = Field(
        30.0, gt=0, le=300, description="Mean speed (km/h) below which traffic is heavy."
    )
    congested_speed_kmh: float = Field(
        10.0, gt=0, le=300, description="Mean speed (km/h) below which traffic is congested."
    )
    min_vehicles: int = Field(
        3,
        ge=1,
        le=1000,
        description="Vehicles needed (on average) before speed decides the level, so one "
        "car waiting at a red light is not congestion.",
    )
    heavy_vehicles: int = Field(
        10, ge=1, le=1000, description="Tracked vehicles from which traffic is heavy."
    )
    congested_vehicles: int = Field(
        20, ge=1, le=1000, description="Tracked vehicles from which traffic is congested."
    )
    window_seconds: float = Field(
        10.0, gt=0, le=600, description="Seconds the vehicles and speeds are averaged over."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.congested_speed_kmh >= self.heavy_speed_kmh:
            raise ValueError("congestion.congestedSpeedKmh must be below congestion.heavySpeedKmh")
        if self.heavy_vehicles >= self.congested_vehicles:
            raise ValueError("congestion.heavyVehicles must be below congestion.congestedVehicles")
        return self
