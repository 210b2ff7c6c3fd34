"""Points on the wire: image points (normalised 0..1) and ground points (metres).

Both are ``[x, y]`` pairs on the wire (CR, config file), not ``{x: .., y: ..}`` maps: the
YAML 1.1 parser behind kubectl and kustomize reads an unquoted ``y`` key as the boolean
true, which turns every hand-written point into an unknown field ``true``. In Python
each is an object with ``.x`` and ``.y``. They live in their own module so the camera
config and the traffic-measure config (:mod:`its_runtime.traffic_config`) can both use
them without importing each other.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, GetJsonSchemaHandler, model_serializer, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from its_runtime.wire import WireModel

Coordinate = Annotated[float, Field(ge=0, le=1)]
#: Ground coordinates are bounded only to keep CEL's cost estimate and typos in check.
GROUND_LIMIT_M = 100_000.0
Metres = Annotated[float, Field(ge=-GROUND_LIMIT_M, le=GROUND_LIMIT_M)]


class _Pair(WireModel):
    x: float
    y: float

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


class Point(_Pair):
    """A point in normalised image coordinates (0..1), independent of resolution."""

    x: Coordinate = Field(..., description="Horizontal position, 0 = left edge, 1 = right edge.")
    y: Coordinate = Field(..., description="Vertical position, 0 = top edge, 1 = bottom edge.")

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


class GroundPoint(_Pair):
    """A point on the road plane in metres, in any fixed local frame (a survey, a map)."""

    x: Metres = Field(..., description="Ground x in metres.")
    y: Metres = Field(..., description="Ground y in metres.")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "array",
            "description": "[x, y] on the ground plane in metres (any fixed local frame).",
            "items": {"type": "number", "minimum": -GROUND_LIMIT_M, "maximum": GROUND_LIMIT_M},
            "minItems": 2,
            "maxItems": 2,
        }
