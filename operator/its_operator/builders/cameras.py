"""``status.cameras``, the replica floor and the hand-over Events: pure functions.

The runtime replicas never write who holds which camera: each computes it from the
live membership Leases (``its_runtime.dataplane.membership``) with the deterministic
assignment (``its_runtime.dataplane.assignment``). The operator computes the very same
map from the very same Leases, so status shows what the replicas do without a write
per camera. A Lease counts as live while ``renewTime + leaseDurationSeconds`` lies
ahead of the operator's clock (the replicas time it on their own monotonic clocks;
for status, the wall clock is close enough).

Bounded for any pipeline: the per-camera holder map only up to
``HOLDERS_MAX_CAMERAS`` cameras, the unassigned names only the first
``UNASSIGNED_NAMES_MAX``, the members only the first ``MEMBERS_MAX``; counts are
always exact. Events: a member whose Lease expired (killed, stalled, cut off) is a
``CameraFailover`` warning naming the cameras that moved; a member that joined or
released its Lease (scaling, a rollout) is a ``CamerasRebalanced`` note; the first
members of a pipeline (nothing to hand over) post none. The previous map is
recomputed from the previous status' members, so Events survive an operator restart.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from its_operator.api import resource
from its_operator.api import status as st
from its_operator.builders.findings import Problem, Transition
from its_runtime.dataplane import assignment, membership

#: Cameras listed by name in one Event message (the rest are counted).
EVENT_CAMERAS_MAX = 10


@dataclasses.dataclass(frozen=True)
class LiveView:
    """The pipeline's members as the Leases show them at one instant."""

    members: tuple[assignment.Member, ...] = ()
    #: Holders whose Lease exists but was not renewed in time.
    expired: frozenset[str] = frozenset()


def _renewed_at(spec: Mapping[str, Any]) -> datetime.datetime | None:
    stamp = spec.get("renewTime") or spec.get("acquireTime")
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def live_view(leases: Iterable[Mapping[str, Any]], now: datetime.datetime) -> LiveView:
    """Live members (by holder, with their declared capacity) and expired holders."""
    live: dict[str, assignment.Member] = {}
    stale: set[str] = set()
    for lease in leases:
        record = membership.record_from(lease)
        if not record.holder:
            continue
        spec = lease.get("spec") or {}
        renewed = _renewed_at(spec)
        duration = spec.get("leaseDurationSeconds")
        if (
            renewed is not None
            and isinstance(duration, int)
            and renewed + datetime.timedelta(seconds=duration) > now
        ):
            live[record.holder] = assignment.Member(record.holder, record.capacity)
        else:
            stale.add(record.holder)
    members = tuple(live[name] for name in sorted(live))
    return LiveView(members=members, expired=frozenset(stale - set(live)))


@functools.lru_cache(maxsize=256)
def _assign(
    cameras: tuple[str, ...], members: tuple[assignment.Member, ...]
) -> assignment.Assignment:
    return assignment.assign(cameras, members)


def build(p: resource.Pipeline, view: LiveView) -> dict[str, Any]:
    """``status.cameras`` for the pipeline and the live members."""
    names = tuple(c.name for c in p.spec.cameras)
    result = _assign(names, view.members)
    load = result.load()
    total, assigned = len(names), len(result.holders)
    out: dict[str, Any] = {
        "total": total,
        "assigned": assigned,
        "unassigned": len(result.unassigned),
        "summary": f"{assigned}/{total}",
        "replicasNeeded": p.spec.replica_floor,
    }
    if result.unassigned:
        out["unassignedNames"] = list(result.unassigned[: st.UNASSIGNED_NAMES_MAX])
    if view.members:
        out["members"] = [
            {"name": m.name, "capacity": m.capacity, "cameras": load.get(m.name, 0)}
            for m in view.members[: st.MEMBERS_MAX]
        ]
    if result.holders and total <= st.HOLDERS_MAX_CAMERAS:
        out["holders"] = dict(sorted(result.holders.items()))
    return out


def capacity_problem(p: resource.Pipeline) -> Problem | None:
    """InsufficientCapacity when fixed replicas cannot hold every camera.

    With autoscaling the floor is the HPA's minReplicas (``builders.hpa``) instead;
    zero replicas is a deliberate stop, not a shortage."""
    spec = p.spec
    if spec.autoscaling.enabled or spec.replicas == 0 or spec.replicas >= spec.replica_floor:
        return None
    per = spec.runtime.max_cameras_per_replica
    short = len(spec.cameras) - spec.replicas * per
    return Problem(
        "InsufficientCapacity",
        f"{len(spec.cameras)} cameras need {spec.replica_floor} replicas at "
        f"runtime.maxCamerasPerReplica {per}; runtime.replicas is {spec.replicas}, so "
        f"{short} cameras stay unassigned",
    )


def _members(cameras_status: Mapping[str, Any] | None) -> tuple[assignment.Member, ...]:
    found = (cameras_status or {}).get("members") or []
    return tuple(
        sorted(
            (assignment.Member(str(m["name"]), max(0, int(m.get("capacity", 0)))) for m in found),
            key=lambda m: m.name,
        )
    )


def _moves(cameras: Sequence[str], after: assignment.Assignment) -> str:
    shown = [f"{c} -> {after.holders.get(c, '(unassigned)')}" for c in cameras]
    text = ", ".join(shown[:EVENT_CAMERAS_MAX])
    if len(shown) > EVENT_CAMERAS_MAX:
        text += f" and {len(shown) - EVENT_CAMERAS_MAX} more"
    return f"{len(shown)} cameras moved" + (f": {text}" if text else "")


def transitions(
    previous: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    cameras: Sequence[str],
    expired: frozenset[str],
) -> list[Transition]:
    """Events for members that failed, left or joined since the previous status."""
    if previous is None:
        return []
    before_members, after_members = _members(previous), _members(new)
    before_names = {m.name for m in before_members}
    after_names = {m.name for m in after_members}
    if before_names == after_names or not before_names:
        return []  # no change, or the first members: an assignment, not a hand-over
    names = tuple(sorted(cameras))
    before = _assign(names, before_members)
    after = _assign(names, after_members)
    moved = assignment.moved(before, after)
    departed = before_names - after_names
    failed = departed & expired
    out: list[Transition] = []
    failed_moved = [c for c in moved if before.holders.get(c) in failed]
    if failed:
        out.append(
            Transition(
                "Warning",
                "CameraFailover",
                f"replica {', '.join(sorted(failed))} stopped renewing its Lease; "
                + _moves(failed_moved, after),
            )
        )
    left, joined = departed - failed, after_names - before_names
    if left or joined:
        parts = [f"joined: {', '.join(sorted(joined))}"] if joined else []
        parts += [f"left: {', '.join(sorted(left))}"] if left else []
        rest = [c for c in moved if c not in failed_moved]
        out.append(
            Transition("Normal", "CamerasRebalanced", "; ".join(parts) + "; " + _moves(rest, after))
        )
    return out
