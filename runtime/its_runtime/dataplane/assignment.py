"""Which runtime replica analyses which camera: rendezvous hashing with quotas.

Every replica computes the assignment by itself from the same two inputs (the
pipeline's camera names and the live members with their declared capacity), so the
assignment needs no coordinator and no writes per camera: API writes for ownership
grow with pods, not with cameras (issue 10). This module is the pure part of that
design; membership (Leases) and the hand-off rules live beside it.

The rules, and why:

* **Quotas first.** Cameras are shared out as evenly as capacities allow ("water
  filling"): with equal capacities every member gets ``floor(n/m)`` or ``ceil(n/m)``,
  so the load stays balanced (max - min <= 1). No member ever gets more than its
  declared capacity; cameras beyond the total capacity are *unassigned*, and which
  ones is deterministic (those whose best scores are lowest).
* **Rendezvous order inside the quotas.** Each (camera, member) pair has a score from
  a stable hash (weighted by capacity, as in weighted rendezvous hashing); pairs are
  taken best first, a camera going to the best-scoring member that still has room.
  A camera therefore stays where it is unless the quotas force it away, which keeps
  the number of cameras that move on a scale event at the minimum in the cases that
  matter (1 -> 3 moves exactly the cameras the new members must take; 3 -> 1 moves
  only the cameras of the members that left).
* **Ties broken by name**, so every replica, in any process, computes the same answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Member:
    """A live runtime replica: its pod name and how many cameras it can take."""

    name: str
    capacity: int

    def __post_init__(self) -> None:
        if self.capacity < 0:
            raise ValueError(f"member {self.name!r}: capacity must be >= 0")


@dataclasses.dataclass(frozen=True)
class Assignment:
    """The result: holder per assigned camera, and the cameras that fit nowhere."""

    holders: Mapping[str, str]
    unassigned: tuple[str, ...]

    def cameras_of(self, member: str) -> list[str]:
        return sorted(c for c, m in self.holders.items() if m == member)

    def load(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.holders.values():
            counts[m] = counts.get(m, 0) + 1
        return counts


def _unit_hash(camera: str, member: str) -> float:
    """A stable value in (0, 1) for the pair, the same in every process."""
    digest = hashlib.blake2b(f"{camera}\x00{member}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


def score(camera: str, member: Member) -> float:
    """Weighted rendezvous score: higher wins; weight is the member's capacity."""
    if member.capacity == 0:
        return -math.inf
    return -member.capacity / math.log(_unit_hash(camera, member.name))


def quotas(n: int, members: Sequence[Member]) -> dict[str, int]:
    """How many cameras each member takes: as even as capacities allow, in total
    ``min(n, sum of capacities)``; the remainder goes to members in name order."""
    quota = {m.name: 0 for m in members}
    cap = {m.name: m.capacity for m in members}
    remaining = min(n, sum(cap.values()))
    while remaining > 0:
        open_ = sorted(name for name in quota if quota[name] < cap[name])
        share = remaining // len(open_)
        if share == 0:
            for name in open_[:remaining]:
                quota[name] += 1
            break
        for name in open_:
            give = min(share, cap[name] - quota[name])
            quota[name] += give
            remaining -= give
    return quota


def assign(cameras: Iterable[str], members: Sequence[Member]) -> Assignment:
    """The assignment every replica computes for the same cameras and members."""
    names = sorted(set(cameras))
    if len({m.name for m in members}) != len(members):
        raise ValueError("member names must be unique")
    room = quotas(len(names), members)
    pairs = sorted(
        ((score(c, m), c, m.name) for c in names for m in members if room[m.name] > 0),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    holders: dict[str, str] = {}
    for _, camera, member in pairs:
        if camera in holders or room[member] == 0:
            continue
        holders[camera] = member
        room[member] -= 1
    unassigned = tuple(c for c in names if c not in holders)
    return Assignment(holders=holders, unassigned=unassigned)


def moved(before: Assignment, after: Assignment) -> list[str]:
    """Cameras whose holder changed (a camera newly assigned or unassigned counts)."""
    cams = set(before.holders) | set(after.holders)
    return sorted(c for c in cams if before.holders.get(c) != after.holders.get(c))


def minimum_moves(before: Assignment, after_quotas: Mapping[str, int]) -> int:
    """The fewest cameras that must change holder to reach ``after_quotas`` from
    ``before``. Cameras on members that left and each remaining member's excess over
    its new quota must leave (``must_leave``); at most the rest stay, so at least
    ``assigned_after - staying`` cameras get a new holder, and every camera that must
    leave changes holder (placed elsewhere or unassigned)."""
    load = before.load()
    must_leave = sum(
        count if name not in after_quotas else max(0, count - after_quotas[name])
        for name, count in load.items()
    )
    staying = len(before.holders) - must_leave
    return max(sum(after_quotas.values()) - staying, must_leave)
