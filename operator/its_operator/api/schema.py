"""Pydantic JSON Schema -> Kubernetes structural OpenAPI v3 schema.

Pydantic emits JSON Schema 2020-12; a CRD needs the structural OpenAPI v3 subset:
every ``$ref`` inlined, ``nullable: true`` instead of ``anyOf [..., {type: null}]``,
boolean ``exclusiveMinimum``, no ``title``, no ``additionalProperties: false``
(pruning already drops unknown fields), ``x-kubernetes-preserve-unknown-fields``
where a free-form object is meant, and ``x-kubernetes-int-or-string`` for
``int | str``. Defaults come from the models too, including ``default_factory``
ones (a nested model's default is the model's full dump: the API server checks an
object default against CEL rules before it applies nested defaults).

The conversion is strict: a construct it does not know raises, so a model change
that Kubernetes would reject fails here (and in the unit test), not on a cluster.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

Schema = dict[str, Any]

#: Keys a structural schema may carry (those Kubernetes' OpenAPI v3 subset knows).
_ALLOWED = {
    "type",
    "format",
    "description",
    "default",
    "enum",
    "maximum",
    "minimum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "maxProperties",
    "minProperties",
    "multipleOf",
    "required",
    "items",
    "properties",
    "additionalProperties",
    "anyOf",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
}
_DROPPED = {"title", "examples", "$schema"}


class _CrdJsonSchema(GenerateJsonSchema):
    """Emit defaults of ``default_factory`` fields; never emit ``default: null``."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" in schema and not schema.get("default_factory_takes_data"):
            value = schema["default_factory"]()  # type: ignore[call-arg]
        else:
            value = schema.get("default", NoDefault)
        if value is None:
            return NoDefault
        if isinstance(value, BaseModel):
            # Kubernetes checks a default against the CEL rules as is, before nested
            # defaulting, so an object default must be complete.
            return value.model_dump(mode="json", by_alias=True, exclude_none=True)
        return value


def json_schema(model: type[BaseModel]) -> Schema:
    """The model's JSON Schema as pydantic writes it (camelCase, input mode)."""
    return model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_CrdJsonSchema
    )


def structural(model: type[BaseModel]) -> Schema:
    """The model as a structural schema, ready for ``openAPIV3Schema`` of a CRD."""
    raw = json_schema(model)
    defs: dict[str, Schema] = raw.pop("$defs", {})
    return _convert(raw, defs, path="")


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline ``$ref`` and single-entry ``allOf``; siblings override the target."""
    node = dict(node)
    while True:
        if "$ref" in node:
            ref = node.pop("$ref")
            name = ref.rsplit("/", 1)[-1]
            if name not in defs:
                raise ValueError(f"unresolvable $ref {ref}")
            target = copy.deepcopy(defs[name])
            target.update(node)
            node = target
            continue
        if "allOf" in node:
            parts = node.pop("allOf")
            if len(parts) != 1:
                raise ValueError("allOf with several schemas is not structural")
            inner = dict(parts[0])
            inner.update(node)
            node = inner
            continue
        return node


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _resolve(node, defs)
    out: Schema = {}
    if "anyOf" in node:
        branches = [_resolve(b, defs) for b in node.pop("anyOf")]
        non_null = [b for b in branches if b.get("type") != "null"]
        nullable = len(non_null) != len(branches)
        if len(non_null) == 1:
            merged = dict(non_null[0])
            merged.update({k: v for k, v in node.items() if k != "anyOf"})
            node = merged
            if nullable:
                node["nullable"] = True
        elif sorted(b.get("type", "") for b in non_null) == ["integer", "string"]:
            string = next(b for b in non_null if b.get("type") == "string")
            node = {k: v for k, v in node.items() if k != "anyOf"}
            for key in ("pattern", "maxLength", "minLength"):
                if key in string:
                    node[key] = string[key]
            node["x-kubernetes-int-or-string"] = True
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            if nullable:
                node["nullable"] = True
        else:
            raise ValueError(f"{path or '<root>'}: anyOf of {non_null} is not structural")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out["properties"] = {
                name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()
            }
        elif key == "items":
            out["items"] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is False:
                continue
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = _convert(value, defs, f"{path}{{}}")
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key in _ALLOWED:
            out[key] = value
        else:
            raise ValueError(f"{path or '<root>'}: {key!r} has no structural equivalent")
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        raise ValueError(f"{path or '<root>'}: a structural schema needs a type")
    return out
