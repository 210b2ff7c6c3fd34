"""The base class of every CR model: camelCase on the wire, unknown keys rejected.

It mirrors the runtime config's base (``its_runtime.config``) so that runtime models
embedded in the spec (``model``, ``cameras``, ``slo``) and operator-only models read
alike in a CR. Frozen, because parsed specs are compared and hashed, never mutated.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry; ``message`` names the offending field."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


class CrModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
