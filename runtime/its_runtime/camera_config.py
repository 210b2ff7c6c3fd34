"""Cameras in the runtime config: where to read them, and their counting lines and regions.

Part of the config format both parts share (re-exported by :mod:`its_runtime.config`);
the CRD's ``spec.cameras`` schema is generated from these classes.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import (
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from its_runtime.wire import NAME_PATTERN, WireModel, cel

CAMERA_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")
_CAMERA_URL_CEL = (
    "self.url.startsWith('rtsp://') || self.url.startsWith('rtsps://') || "
    "self.url.startsWith('http://') || self.url.startsWith('https://') || "
    "self.url.startsWith('file://')"
)


Coordinate = Annotated[float, Field(ge=0, le=1)]


class Point(WireModel):
    """A point in normalised image coordinates (0..1), independent of resolution.

    On the wire (CR, config file) a point is ``[x, y]``, not ``{x: .., y: ..}``: the YAML
    1.1 parser behind kubectl and kustomize reads an unquoted ``y`` key as the boolean
    true, which turns every hand-written point into an unknown field ``true``.
    In Python it is an object with ``.x`` and ``.y``.
    """

    x: Coordinate = Field(..., description="Horizontal position, 0 = left edge, 1 = right edge.")
    y: Coordinate = Field(..., description="Vertical position, 0 = top edge, 1 = bottom edge.")

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            if len(data) != 2:
                raise ValueError(f"a point is [x, y]; got {len(data)} numbers")
            return {"x": data[0], "y": data[1]}
        return data

    @model_serializer(mode="plain")
    def _to_pair(self) -> list[float]:
        return [self.x, self.y]

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "array",
            "description": "[x, y] in normalised image coordinates: 0..1 from the left and "
            "from the top edge.",
            "items": {"type": "number", "minimum": 0, "maximum": 1},
            "minItems": 2,
            "maxItems": 2,
        }


class CountingLine(WireModel):
    name: str = Field(..., pattern=NAME_PATTERN, max_length=63, description="Line name.")
    start: Point = Field(..., description="First end of the line.")
    end: Point = Field(..., description="Second end. Crossing left-to-right of start->end is 'in'.")


class Region(WireModel):
    name: str = Field(..., pattern=NAME_PATTERN, max_length=63, description="Region name.")
    polygon: list[Point] = Field(
        ..., min_length=3, max_length=64, description="Polygon vertices, in order."
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
            ]
        }
    )

    name: str = Field(
        ..., pattern=NAME_PATTERN, max_length=63, description="Camera id (DNS label)."
    )
    url: str = Field(
        ...,
        min_length=1,
        max_length=2048,
        description="Stream URL: rtsp://, http(s):// or file://.",
    )
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

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        scheme = urlparse(v).scheme
        if scheme not in CAMERA_SCHEMES:
            raise ValueError(f"url scheme {scheme!r} is not one of {', '.join(CAMERA_SCHEMES)}")
        return v
