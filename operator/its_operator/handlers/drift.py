"""Does a live object still hold what the operator applied? Answered without writing.

Drift is judged only on the fields this operator manages. Other writers legitimately
add to its children: a mutating webhook or a ``MutatingAdmissionPolicy`` injects a
sidecar, a policy engine adds an env var, a mesh adds annotations. Treating every
extra list entry as drift made the operator re-apply on every reconcile and never
win (server-side apply keeps fields other managers own), which broke "zero writes
when nothing changed". So the desired object is walked together with the operator's
own server-side apply entry in ``metadata.managedFields`` (its ``fieldsV1`` tree):

* a desired field the operator no longer owns (someone removed it, or changed it and
  so took it over) is drift;
* an owned field whose live value differs is drift;
* anything else in the live object (foreign env vars, containers, volumes, labels) is
  not looked at. Associative lists (``k:{"name":...}`` entries: containers, env,
  volumes, ports, ownerReferences) are matched by key, not by position, so an entry
  inserted anywhere shifts nothing. Atomic subtrees (a leaf in ``fieldsV1``: ``args``,
  a label selector, a Role's rules, a CRD's untyped lists) belong to one manager as a
  whole and are compared exactly.

The API server adds defaults (``protocol: TCP``, ``terminationMessagePath``, ...) and
re-spells quantities ("1024Mi" -> "1Gi", "12500m" -> "12.5"), so values are compared
by containment, not equality. Empty values the server drops (``{}``, ``[]``, ``""``,
``None``) count as absent. A body without the operator's entry (a test double, or an
object someone else created) is compared by plain containment with exact lists, the
strict reading. Fields removed from the desired object are caught by the
desired-hash annotation, not here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from its_operator.api import quantities

#: A ``fieldsV1`` node: ``f:<field>``, ``k:<json key>``, ``v:<json value>``, ``.`` -> node.
Fields = Mapping[str, Any]
#: Identity fields server-side apply does not record in ``fieldsV1``.
_UNTRACKED = {"": frozenset({"apiVersion", "kind"}), ".metadata": frozenset({"name", "namespace"})}


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def owned_fields(body: Mapping[str, Any], manager: str) -> Fields | None:
    """The ``fieldsV1`` tree ``manager`` owns by server-side apply, or None if none."""
    for entry in body.get("metadata", {}).get("managedFields") or []:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
            and isinstance(entry.get("fieldsV1"), Mapping)
        ):
            fields: Fields = entry["fieldsV1"]
            return fields
    return None


def own_entries(body: Mapping[str, Any], manager: str) -> list[dict[str, Any]]:
    """``body``'s managedFields reduced to ``manager``'s apply entry (what drift needs)."""
    return [
        dict(entry)
        for entry in body.get("metadata", {}).get("managedFields") or []
        if entry.get("manager") == manager
        and entry.get("operation") == "Apply"
        and not entry.get("subresource")
    ]


def difference(live: Any, desired: Any, manager: str | None = None) -> str | None:
    """The path of the first desired value the live object lacks, or None if it holds all.

    With ``manager``, only the fields that manager owns in ``live``'s managedFields count
    (see the module docstring); without it, or when ``live`` has no entry for it, the
    comparison is plain containment with exact lists.
    """
    owned = owned_fields(live, manager) if manager and isinstance(live, Mapping) else None
    if owned is None:
        return _contained(live, desired, "")
    return _owned(live, desired, owned, "")


def _owned(live: Any, desired: Any, owned: Fields, path: str) -> str | None:
    if not owned or set(owned) == {"."}:
        return _contained(live, desired, path)  # an atomic subtree: one manager owns it all
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return path or "."
        untracked = _UNTRACKED.get(path, frozenset())
        for key, want in desired.items():
            if key in untracked or _empty(want):
                continue
            sub = f"{path}.{key}"
            node = owned.get(f"f:{key}")
            if key not in live or node is None:
                return sub
            found = _owned(live[key], want, node, sub)
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list):
            return path
        if any(k.startswith("k:") for k in owned):
            return _associative(live, desired, owned, path)
        if any(k.startswith("v:") for k in owned):
            return _set(live, desired, owned, path)
        return _contained(live, desired, path)
    return _contained(live, desired, path)


def _associative(live: list[Any], desired: list[Any], owned: Fields, path: str) -> str | None:
    """Each desired entry must be one the operator owns (by key) and hold its values."""
    keys = [(json.loads(k[2:]), node) for k, node in owned.items() if k.startswith("k:")]
    for i, want in enumerate(desired):
        sub = f"{path}[{i}]"
        if not isinstance(want, Mapping):
            return sub
        match = next((kv for kv in keys if _names(want, kv[0])), None)
        if match is None:
            return sub  # an entry the operator applied but no longer owns: removed
        key, node = match
        have = next(
            (
                e
                for e in live
                if isinstance(e, Mapping) and all(e.get(f) == v for f, v in key.items())
            ),
            None,
        )
        if have is None:
            return sub
        found = _owned(have, want, node, sub)
        if found is not None:
            return found
    return None


def _names(entry: Mapping[str, Any], key: Mapping[str, Any]) -> bool:
    """Whether ``key`` (from a ``k:`` entry) names ``entry``; key fields the server
    defaulted (a port's ``protocol``) may be absent from the desired entry."""
    present = [f for f in key if f in entry]
    return bool(present) and all(entry[f] == key[f] for f in present)


def _set(live: list[Any], desired: list[Any], owned: Fields, path: str) -> str | None:
    for i, want in enumerate(desired):
        if f"v:{json.dumps(want, separators=(',', ':'))}" not in owned or want not in live:
            return f"{path}[{i}]"
    return None


def _contained(live: Any, desired: Any, path: str) -> str | None:
    """Plain containment: maps may hold more, lists must match element by element."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return path or "."
        for key, want in desired.items():
            sub = f"{path}.{key}"
            if key not in live:
                if _empty(want):
                    continue
                return sub
            found = _contained(live[key], want, sub)
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return path
        for i, (have, want) in enumerate(zip(live, desired, strict=True)):
            found = _contained(have, want, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if live == desired and type(live) is not bool and type(desired) is not bool:
        return None
    if isinstance(live, bool) or isinstance(desired, bool):
        return None if live is desired else path
    if isinstance(live, str) and isinstance(desired, str) and quantities.same(live, desired):
        return None
    return path
