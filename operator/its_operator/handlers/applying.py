"""Making the live children match the desired ones: apply what differs, prune the rest.

Every write goes through server-side apply with one field manager, so "apply" is
idempotent and a child is only sent when it is missing, its desired-hash annotation
differs (the spec changed) or a field the operator owns was changed or removed by
someone else (:mod:`drift` reads the operator's own managedFields entry: fields that
webhooks, policies or other managers add are theirs and never trigger an apply).
Writes go out in two parallel waves, config, claim, Service, ServiceAccount and Role
first so the workload's pods (and the RoleBinding) find them, which costs two round
trips instead of one per child. Each apply response is remembered in the cache
(:meth:`cache.State.remember`) so a reconcile that runs before the watch event
arrives does not apply again.

A refused apply is not raised here: it becomes a ``<Kind>ApplyFailed`` problem so
the status can say which child and why, and the reconciler raises after the status
is written. A 404 for an optional kind (:data:`discovery.OPTIONAL_KINDS`) means its
CRD went away; it is reported back, not as a problem.

Pruning deletes only children this pipeline *controls* (an ownerReference with
``controller: true``): a retained engine-cache PVC carries none and is never deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from its_operator.api import resource
from its_operator.builders import children as children_builder
from its_operator.builders import meta
from its_operator.builders import status as status_builder
from its_operator.handlers import cache, discovery, drift, kube

logger = logging.getLogger(__name__)

#: Kinds applied before the workload, so its pods find their config, claim and account
#: (and before the RoleBinding, which RBAC checks against its Role's rules).
FIRST_WAVE = frozenset({"ConfigMap", "PersistentVolumeClaim", "Service", "ServiceAccount", "Role"})


@dataclasses.dataclass
class Applied:
    """What the apply waves did: ``Kind/name`` written, problems, optional kinds not served."""

    applied: list[str] = dataclasses.field(default_factory=list)
    problems: list[status_builder.Problem] = dataclasses.field(default_factory=list)
    unserved: set[str] = dataclasses.field(default_factory=set)


async def apply_waves(
    client: kube.Kube,
    state: cache.State,
    p: resource.Pipeline,
    desired: list[meta.Manifest],
    live: cache.Children,
) -> Applied:
    result = Applied()

    async def apply(manifest: meta.Manifest) -> None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        reason = why_apply(live.get(kind, {}).get(name), manifest)
        if reason is None:
            return
        logger.info("applying %s %s/%s (%s)", kind, p.namespace, name, reason)
        try:
            applied = await client.apply(manifest)
        except kube.ApiError as exc:
            if exc.status == 404 and kind in discovery.OPTIONAL_KINDS:
                result.unserved.add(kind)
                return
            result.problems.append(
                status_builder.Problem(f"{kind}ApplyFailed", f"{kind} {name}: {exc.message}")
            )
            return
        state.remember(applied)
        result.applied.append(f"{kind}/{name}")

    first = [m for m in desired if m["kind"] in FIRST_WAVE]
    await asyncio.gather(*(apply(m) for m in first))
    await asyncio.gather(*(apply(m) for m in desired if m["kind"] not in FIRST_WAVE))
    return result


async def prune(
    client: kube.Kube,
    state: cache.State,
    p: resource.Pipeline,
    desired: list[meta.Manifest],
    live: cache.Children,
) -> list[str]:
    """Delete the controlled children ``desired`` no longer has; return ``Kind/name``s."""
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    deleted: list[str] = []
    for api_version, kind in children_builder.KINDS:
        for name, body in live.get(kind, {}).items():
            if (kind, name) in wanted or not _controlled_by(body, p.uid):
                continue
            logger.info("deleting %s %s/%s (no longer wanted)", kind, p.namespace, name)
            await client.delete(api_version, kind, p.namespace, name)
            state.forget(kind, p.namespace, name)
            deleted.append(f"{kind}/{name}")
    return deleted


def why_apply(current: Mapping[str, Any] | None, desired: meta.Manifest) -> str | None:
    """Why ``desired`` must be applied over ``current``, or None when it need not."""
    if current is None:
        return "missing"
    annotations = current.get("metadata", {}).get("annotations") or {}
    if annotations.get(meta.DESIRED_HASH) != desired["metadata"]["annotations"][meta.DESIRED_HASH]:
        return "spec changed"
    where = drift.difference(current, desired, kube.FIELD_MANAGER)
    if where is not None:
        return f"drift at {where}"
    return None


def _controlled_by(body: Mapping[str, Any], uid: str) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in body.get("metadata", {}).get("ownerReferences", []) or []
    )
