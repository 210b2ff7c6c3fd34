"""Hypothesis strategies written from the CRD's own openAPIV3Schema, and mutations.

``from_schema`` walks a schema node (types, enums, bounds, lengths, patterns,
required and optional properties, int-or-string, preserve-unknown-fields) and builds
a strategy for values that the structural schema admits; CEL rules are not
interpreted, so some generated specs are still rejected by them, which is the point:
the property test asks the API server. ``mutate`` then breaks one field of a spec
the way a careless user or a hostile client would: a wrong type, a number past its
bound, an empty or oversized string, an unknown enum value, a required field taken
away, an unknown field added. Written here (not with hypothesis-jsonschema, MPL) and
kept small: arrays hold at most ``MAX_ITEMS`` entries so a dry-run stays cheap.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from its_operator.api import crdgen

MAX_ITEMS = 3
#: Strings longer than the schema's bound, or this long where none is given.
OVERSIZED = 70_000


def spec_schema() -> dict[str, Any]:
    """The ``spec`` node of the generated AnalyticsPipeline CRD."""
    import yaml

    doc = yaml.safe_load((crdgen.CRD_DIR / "its.ai_analyticspipelines.yaml").read_text())
    root = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec: dict[str, Any] = root["properties"]["spec"]
    return spec


def _number(node: dict[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    lo = node.get("minimum")
    hi = node.get("maximum")
    if integer:
        lo_i = None if lo is None else int(lo) + (1 if node.get("exclusiveMinimum") else 0)
        hi_i = None if hi is None else int(hi) - (1 if node.get("exclusiveMaximum") else 0)
        lo_i = -(2**31) if lo_i is None else lo_i
        hi_i = 2**31 if hi_i is None else hi_i
        return st.integers(min_value=lo_i, max_value=hi_i)
    return st.floats(
        min_value=lo,
        max_value=hi,
        exclude_min=bool(node.get("exclusiveMinimum")),
        exclude_max=bool(node.get("exclusiveMaximum")),
        allow_nan=False,
        allow_infinity=False,
        width=32,
    ).map(lambda f: round(f, 4) if f else f)


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    lo = int(node.get("minLength", 0))
    hi = int(node.get("maxLength", max(lo, 40)))
    pattern = node.get("pattern")
    if pattern:
        return st.from_regex(pattern, fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
    return st.text(st.characters(codec="utf-8"), min_size=lo, max_size=min(hi, 40))


def from_schema(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the structural schema ``node`` admits (CEL rules not applied)."""
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 10), st.integers(0, 100).map(lambda i: f"{i}%"))
    kind = node.get("type")
    base: st.SearchStrategy[Any]
    if kind == "object" or "properties" in node:
        props = node.get("properties", {})
        required = set(node.get("required", ()))
        if not props:
            values = node.get("additionalProperties")
            if isinstance(values, dict):
                base = st.dictionaries(
                    st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
                    from_schema(values),
                    max_size=MAX_ITEMS,
                )
            else:
                base = st.just({})
        else:
            base = st.fixed_dictionaries(
                {k: from_schema(v) for k, v in props.items() if k in required},
                optional={k: from_schema(v) for k, v in props.items() if k not in required},
            )
    elif kind == "array":
        lo = int(node.get("minItems", 0))
        hi = min(int(node.get("maxItems", MAX_ITEMS)), max(lo, MAX_ITEMS))
        items = from_schema(node.get("items", {}))
        keys = node.get("x-kubernetes-list-map-keys")
        if keys:
            base = st.lists(items, min_size=lo, max_size=hi, unique_by=lambda d: d.get(keys[0]))
        elif node.get("x-kubernetes-list-type") == "set":
            base = st.lists(items, min_size=lo, max_size=hi, unique=True)
        else:
            base = st.lists(items, min_size=lo, max_size=hi)
    elif kind == "integer":
        base = _number(node, integer=True)
    elif kind == "number":
        base = _number(node, integer=False)
    elif kind == "boolean":
        base = st.booleans()
    elif kind == "string":
        base = _string(node)
    else:
        base = st.just({})
    if node.get("nullable"):
        return st.one_of(st.none(), base)
    return base


def _paths(value: Any, schema: dict[str, Any], path: tuple[Any, ...] = ()) -> list[Any]:
    """(path, schema node) of every field present in ``value``."""
    out: list[Any] = [(path, schema)]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            child = props.get(k) or (extra if isinstance(extra, dict) else {})
            out += _paths(v, child, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, schema.get("items", {}), (*path, i))
    return out


def _broken(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value this field's schema (or the operator) should not take."""
    options: list[st.SearchStrategy[Any]] = [
        st.sampled_from([None, "", "x" * 300, [], {}, True, 1.5, -1, 0, 2**63]),
        st.just({"unknownField": 1}),
        st.text(max_size=20),
    ]
    if "minimum" in node:
        options.append(st.sampled_from([node["minimum"] - 1, node["minimum"]]))
    if "maximum" in node:
        options.append(st.sampled_from([node["maximum"] + 1, node["maximum"] * 1000]))
    if "maxLength" in node:
        options.append(st.just("a" * (int(node["maxLength"]) + 1)))
    if "enum" in node:
        options.append(st.sampled_from([f"{node['enum'][0]}X", str(node["enum"][0]).upper()]))
    if "maxItems" in node:
        options.append(st.just([{}] * (int(node["maxItems"]) + 1)))
    options.append(st.just("a" * OVERSIZED))
    return st.one_of(options)


@st.composite
def mutated(draw: st.DrawFn, spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with one field broken (type, bound, length, enum, presence, unknown key)."""
    out = copy.deepcopy(spec)
    paths = _paths(out, schema)
    path, node = draw(st.sampled_from(paths))
    if not path:
        how = draw(st.sampled_from(["unknown", "drop-required"]))
    else:
        how = draw(st.sampled_from(["replace", "replace", "replace", "drop", "unknown"]))
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    target = out if not path else parent[path[-1]]
    if how == "unknown" and isinstance(target, dict):
        target[draw(st.sampled_from(["gpus", "Model", "x-extra", "spec"]))] = 1
    elif how == "drop-required":
        required = [k for k in schema.get("required", ()) if k in out]
        if required:
            del out[draw(st.sampled_from(required))]
    elif how == "drop" and path:
        del parent[path[-1]]
    elif path:
        parent[path[-1]] = draw(_broken(node))
    return out
