"""The entry queue: per-priority FIFOs of frames waiting for a batch.

Higher ``priority`` is served first, FIFO within a priority. A frame whose caller gave
up (deadline, disconnect) is only marked :attr:`State.GONE` and skipped when it reaches
the head, so giving up is O(1) and never scans the deques; ``size`` counts only frames
still queued. Deadlines are enforced by :meth:`EntryQueue.expire`, which the scheduler
calls before each batch decision.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum

import torch

from its_runtime.detections import Detections


class State(enum.Enum):
    QUEUED = 1
    RUNNING = 2
    GONE = 3  # answered, failed, cancelled or timed out


@dataclasses.dataclass(eq=False)
class Entry:
    """One submitted frame and the future its caller awaits."""

    item: torch.Tensor
    future: asyncio.Future[Detections]
    enqueued: float
    started: float
    deadline: float | None
    priority: int
    state: State = State.QUEUED


class EntryQueue:
    """Per-priority FIFO deques; cancelled entries are skipped lazily."""

    def __init__(self) -> None:
        self._levels: dict[int, collections.deque[Entry]] = {}
        self.size = 0

    def push(self, entry: Entry) -> None:
        self._levels.setdefault(entry.priority, collections.deque()).append(entry)
        self.size += 1

    def forget(self, entry: Entry) -> bool:
        """Mark a queued entry gone (its caller gave up); True if it was still queued."""
        if entry.state is not State.QUEUED:
            return False
        entry.state = State.GONE
        self.size -= 1
        return True

    def _heads(self) -> list[tuple[int, collections.deque[Entry]]]:
        out = []
        for prio in sorted(self._levels, reverse=True):
            dq = self._levels[prio]
            while dq and dq[0].state is not State.QUEUED:
                dq.popleft()
            if dq:
                out.append((prio, dq))
            else:
                del self._levels[prio]
        return out

    def oldest_enqueued(self) -> float | None:
        heads = self._heads()
        return min(dq[0].enqueued for _, dq in heads) if heads else None

    def pop(self, n: int) -> list[Entry]:
        taken: list[Entry] = []
        for _, dq in self._heads():
            while dq and len(taken) < n:
                entry = dq.popleft()
                if entry.state is State.QUEUED:
                    taken.append(entry)
            if len(taken) == n:
                break
        self.size -= len(taken)
        return taken

    def expire(self, now: float) -> list[Entry]:
        """Remove and return queued entries whose deadline has passed."""
        expired: list[Entry] = []
        for prio in list(self._levels):
            dq = self._levels[prio]
            if any(e.deadline is not None and e.deadline <= now for e in dq):
                keep: collections.deque[Entry] = collections.deque()
                for e in dq:
                    if e.state is State.QUEUED and e.deadline is not None and e.deadline <= now:
                        expired.append(e)
                    else:
                        keep.append(e)
                self._levels[prio] = keep
        self.size -= len(expired)
        return expired

    def drain_all(self) -> list[Entry]:
        rest = [e for dq in self._levels.values() for e in dq if e.state is State.QUEUED]
        self._levels.clear()
        self.size = 0
        return rest
