"""Cameras in the runtime config: where to read them, and their counting lines and regions.

Part of the config format both parts share (re-exported by :mod:`its_runtime.config`);
the CRD's ``spec.cameras`` schema is generated from these classes.
"""

from __future__ import annotations

from urllib.parse import urlparse

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from its_runtime import camera_url
from its_runtime.points import Coordinate, GroundPoint, Point
from its_runtime.traffic_config import (
    Calibration,
    CongestionThresholds,
    Direction,
    Lane,
    StoppedVehicles,
)
from its_runtime.wire import NAME_PATTERN, WireModel, cel

__all__ = [
    "CAMERA_SCHEMES",
    "Calibration",
    "CameraConfig",
    "CongestionThresholds",
    "Coordinate",
    "CountingLine",
    "GroundPoint",
    "Lane",
    "Point",
    "Region",
    "StoppedVehicles",
]

CAMERA_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")
_CAMERA_URL_CEL = (
    "!has(self.url) || self.url.startsWith('rtsp://') || self.url.startsWith('rtsps://') || "
    "self.url.startsWith('http://') || self.url.startsWith('https://') || "
    "self.url.startsWith('file://')"
)


class CountingLine(WireModel):
    name: str = Field(..., pattern=NAME_PATTERN, max_length=63, description="Line name.")
    start: Point = Field(..., description="First end of the line.")
    end: Point = Field(..., description="Second end. Crossing left-to-right of start->end is 'in'.")
    lanes: list[Lane] = Field(
        default_factory=list,
        max_length=8,
        description="Named lanes: segments of the line (fractions from start to end), "
        "each counted separately. Crossings outside every lane count with lane ''.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    allowed_direction: Direction | None = Field(
        None,
        description="The only direction traffic may cross this line (in or out); a "
        "crossing the other way is also a wrong_way event.",
    )


class Region(WireModel):
    name: str = Field(..., pattern=NAME_PATTERN, max_length=63, description="Region name.")
    polygon: list[Point] = Field(
        ..., min_length=3, max_length=64, description="Polygon vertices, in order."
    )
    stopped: StoppedVehicles = Field(
        default_factory=StoppedVehicles,
        description="Stopped vehicles and the queue in this region (needs calibration or "
        "metersPerPixel for ground speeds).",
    )


class CameraConfig(WireModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _CAMERA_URL_CEL,
                    "url scheme must be one of rtsp, rtsps, http, https, file",
                    ".url",
                ),
                cel(camera_url.ONE_SOURCE_CEL, camera_url.ONE_SOURCE_MESSAGE, ".url"),
                cel(camera_url.NO_PASSWORD_CEL, camera_url.NO_PASSWORD_MESSAGE, ".url"),
            ]
        }
    )

    name: str = Field(
        ..., pattern=NAME_PATTERN, max_length=63, description="Camera id (DNS label)."
    )
    url: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="Stream URL: rtsp://, http(s):// or file://, without a password "
        "(a URL with credentials goes in a Secret: urlSecretRef). Exactly one of url and "
        "urlSecretRef.",
    )
    url_secret_ref: camera_url.CameraSecretRef | None = Field(
        None,
        description="The Secret key holding the full stream URL, credentials included; "
        "the URL never appears in the CR, the ConfigMap, status, logs or API answers.",
    )
    #: Runtime file only (the operator renders urlSecretRef into it): the environment
    #: variable holding the URL. Not in the CRD.
    url_env: SkipJsonSchema[str | None] = Field(None, min_length=1, max_length=253)
    fps: float = Field(30.0, gt=0, le=240, description="Target frames per second to analyse.")
    lines: list[CountingLine] = Field(
        default_factory=list, max_length=32, description="Counting lines (with direction)."
    )
    regions: list[Region] = Field(
        default_factory=list, max_length=32, description="Regions whose occupancy is reported."
    )
    meters_per_pixel: float | None = Field(
        None, gt=0, description="Ground calibration for speed estimates (metres per pixel)."
    )
    calibration: Calibration | None = Field(
        None,
        description="Ground-plane calibration: 4 image points and the same 4 points on the "
        "road in metres. When set, speeds and queue lengths are measured through it "
        "(instead of metersPerPixel).",
    )
    congestion: CongestionThresholds = Field(
        default_factory=CongestionThresholds,
        description="Thresholds of the camera's congestion level (free, heavy, congested).",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = urlparse(v).scheme
        if scheme not in CAMERA_SCHEMES:
            raise ValueError(f"url scheme {scheme!r} is not one of {', '.join(CAMERA_SCHEMES)}")
        if camera_url.has_password(v):
            raise ValueError(camera_url.NO_PASSWORD_MESSAGE)
        return v

    @model_validator(mode="after")
    def _one_url_source(self) -> CameraConfig:
        sources = [s for s in (self.url, self.url_secret_ref, self.url_env) if s is not None]
        if len(sources) != 1:
            raise ValueError(camera_url.ONE_SOURCE_MESSAGE + " (a runtime file: or urlEnv)")
        return self
