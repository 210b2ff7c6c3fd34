"""Which operator replica acts: kopf peering, mirrored for the operator's own queue.

kopf's peering pauses its watch streams when a live peer has a higher (or the same)
priority, but the work queue and its timers are the operator's own, so they need the
same answer. This gate reads the same peering object (``KopfPeering`` or
``ClusterKopfPeering``, GET only, every ``poll`` seconds) and applies kopf's rule:
paused while any other live peer has a priority >= ours. It opens and closes the
queue and calls back on each change (the queue is emptied on pause; everything is
re-queued on resume, as kopf also re-lists).

Priority defaults to the start time in milliseconds, so the newest replica acts: a
restarted or rolled-out operator takes over at once, and the older one resumes when
the newer one exits (immediately on a clean exit, which removes its record; after
its record's lifetime if it was killed).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from its_operator.handlers import metrics

logger = logging.getLogger(__name__)

PEERING_API_VERSION = "kopf.dev/v1"


class Reader(Protocol):
    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None: ...


def default_priority() -> int:
    return int(time.time() * 1000)


def _parse_time(value: str) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def blocking_peers(
    status: Mapping[str, Any], *, identity: str, priority: int, now: datetime.datetime
) -> list[str]:
    """Live peers (other than us) whose priority makes kopf pause us."""
    out = []
    for peer_id, info in status.items():
        if peer_id == identity or not isinstance(info, Mapping):
            continue
        lastseen = info.get("lastseen")
        lifetime = int(info.get("lifetime", 60))
        if lastseen is None:
            continue
        alive = _parse_time(str(lastseen)) + datetime.timedelta(seconds=lifetime) > now
        if alive and int(info.get("priority", 0)) >= priority:
            out.append(str(peer_id))
    return sorted(out)


class PeeringGate:
    def __init__(
        self,
        reader: Reader | None,
        *,
        identity: str,
        priority: int,
        peering_name: str,
        namespaces: list[str] | None,
        poll: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        """``reader`` None means standalone (always open); ``namespaces`` None: cluster-wide."""
        self._reader = reader
        self.identity = identity
        self.priority = priority
        self._name = peering_name
        self._namespaces = namespaces
        self._poll = poll
        self._on_change = on_change
        self._open = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait_open(self) -> None:
        await self._open.wait()

    def _set(self, open_: bool) -> None:
        if open_ == self._open.is_set():
            return
        if open_:
            self._open.set()
            logger.info("this replica (%s) acts", self.identity)
        else:
            self._open.clear()
        metrics.ACTIVE.set(1 if open_ else 0)
        if self._on_change is not None:
            self._on_change(open_)

    async def _blocking(self) -> list[str]:
        assert self._reader is not None
        now = datetime.datetime.now(datetime.UTC)
        found: list[str] = []
        targets: list[tuple[str, str | None]] = (
            [("ClusterKopfPeering", None)]
            if self._namespaces is None
            else [("KopfPeering", ns) for ns in self._namespaces]
        )
        for kind, ns in targets:
            body = await self._reader.get(PEERING_API_VERSION, kind, ns, self._name)
            if body is None:
                continue
            found += blocking_peers(
                body.get("status") or {}, identity=self.identity, priority=self.priority, now=now
            )
        return found

    async def run(self) -> None:
        if self._reader is None:
            self._set(True)
            return
        while True:
            try:
                blockers = await self._blocking()
            except Exception as exc:  # keep the last decision through API hiccups
                logger.warning("peering check failed: %s", exc)
            else:
                if blockers and self.is_open:
                    logger.info("pausing in favour of %s", ", ".join(blockers))
                self._set(not blockers)
            await asyncio.sleep(self._poll)
