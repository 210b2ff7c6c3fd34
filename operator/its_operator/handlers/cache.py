"""What the operator knows about pipelines and their children, without asking the API.

The state comes from kopf indexes fed by the watch streams (server-side filtered by
the ``managed-by`` label). kopf holds every handler back until all indexes have
listed their resources once, so a reconcile never mistakes "not listed yet" for
"missing" and re-creates a child that exists: that is what makes a restart or a
resync write nothing.

One gap remains: right after the operator applies a child, the watch event for it
may not have arrived, and a reconcile triggered meanwhile would see the old object
and apply again. The apply response (the new object) is therefore kept for a short
while and preferred over an older indexed copy (resourceVersions compared as
numbers, which etcd-backed servers use); a watch DELETE drops it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from its_operator.handlers import drift, kube

Key = tuple[str, str]  # (namespace, pipeline name)
ChildKey = tuple[str, str, str]  # (kind, namespace, name)
#: kind -> name -> live child, for every kind the operator manages.
Children = Mapping[str, Mapping[str, dict[str, Any]]]

#: How long an apply response may stand in for the watched object.
FRESHNESS_S = 30.0


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """A body whose managedFields (the biggest part) keep only the operator's own apply
    entry: :mod:`drift` judges a child on the fields that entry says the operator owns."""
    out = dict(body)
    meta = dict(out.get("metadata", {}))
    own = drift.own_entries(body, kube.FIELD_MANAGER)
    if own:
        meta["managedFields"] = own
    else:
        meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def _rv(body: Mapping[str, Any]) -> int:
    value = str(body.get("metadata", {}).get("resourceVersion", ""))
    return int(value) if value.isdigit() else -1


class State:
    """Read access to the kopf indexes (one per kind), plus recent apply responses."""

    def __init__(self) -> None:
        self._indexes: Mapping[str, Any] | None = None
        self._recent: dict[ChildKey, tuple[float, dict[str, Any]]] = {}

    def bind(self, indexes: Mapping[str, Any]) -> None:
        """Keep kopf's live index objects (passed to every handler as kwargs)."""
        self._indexes = indexes

    @property
    def ready(self) -> bool:
        return self._indexes is not None

    def _store(self, index_id: str, key: Key) -> list[dict[str, Any]]:
        if self._indexes is None:
            raise RuntimeError("the kopf indexes are not bound yet")
        index = self._indexes[index_id]
        store = index.get(key)
        return list(store) if store is not None else []

    def pipeline(self, index_id: str, key: Key) -> dict[str, Any] | None:
        found = self._store(index_id, key)
        return found[0] if found else None

    def pipeline_keys(self, index_id: str) -> Iterator[Key]:
        if self._indexes is None:
            return iter(())
        return iter(list(self._indexes[index_id]))

    def children(self, index_id: str, kind: str, key: Key) -> dict[str, dict[str, Any]]:
        """Children of one kind for a pipeline, by name; fresher apply responses win."""
        out = {b["metadata"]["name"]: b for b in self._store(index_id, key)}
        now = time.monotonic()
        namespace = key[0]
        for (k, ns, name), (at, body) in list(self._recent.items()):
            if k != kind or ns != namespace:
                continue
            if now - at > FRESHNESS_S:
                del self._recent[(k, ns, name)]
                continue
            if body["metadata"].get("labels", {}).get("app.kubernetes.io/instance") != key[1]:
                continue
            indexed = out.get(name)
            if indexed is None or _rv(indexed) < _rv(body):
                out[name] = body
            else:
                del self._recent[(k, ns, name)]
        return out

    def remember(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        self._recent[(body["kind"], meta["namespace"], meta["name"])] = (
            time.monotonic(),
            slim(body),
        )

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._recent.pop((kind, namespace, name), None)
