"""The wire conventions of every model the project puts on the wire: camelCase keys,
unknown keys rejected, frozen values, and CEL rules that name the field at fault.

The runtime config (:mod:`its_runtime.config`) and the operator's CR types both build on
:class:`WireModel` and :func:`cel`, so a file and a CR read alike.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One CEL ``x-kubernetes-validations`` entry; ``message`` names the offending field."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


class WireModel(BaseModel):
    """camelCase on the wire, unknown keys rejected (a typo must not pass silently),
    frozen (parsed configs and specs are compared and hashed, never mutated). The
    operator's CR models use this base too, so both read alike."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )
