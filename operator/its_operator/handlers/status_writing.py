"""Writing a pipeline's status: only when it differs, and cosmetic changes throttled.

The status is computed by ``builders.status`` (pure) and written here with a status
server-side apply, under two rules that keep a quiet cluster write-free:

* equal as stored means no write (the API server may drop empty strings and default
  fields, so the comparison ignores those, in both directions);
* a change that flips no condition (pod counts, messages, a Ready=False reason) is
  "cosmetic": written at most every ``STATUS_COSMETIC_INTERVAL_S``, and while a
  rollout is in progress at most every ``STATUS_ROLLOUT_INTERVAL_S``; the flip that
  ends the rollout is written at once and carries the latest counts. A rollout
  updates the Deployment's status many times; each update must not become a write.

A deferred change is not lost: the writer says when to come back. Each condition
flip that was written is also posted as a Kubernetes Event, best effort.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

from its_operator.builders import status as status_builder
from its_operator.handlers import cache, drift, kube

logger = logging.getLogger(__name__)

#: See the module docstring: intervals for status changes that flip no condition.
STATUS_COSMETIC_INTERVAL_S = 5.0
STATUS_ROLLOUT_INTERVAL_S = 60.0
EVENT_COMPONENT = "its-operator"


@dataclasses.dataclass(frozen=True)
class Written:
    """What one status write did; ``retry_in`` is set when a cosmetic change waits."""

    written: bool = False
    events: list[str] = dataclasses.field(default_factory=list)
    retry_in: float | None = None


class StatusWriter:
    """Status writes, with the time of the last one per pipeline (for the throttle)."""

    def __init__(self, client: kube.Kube) -> None:
        self.kube = client
        self._written: dict[cache.Key, float] = {}

    def forget(self, key: cache.Key) -> None:
        self._written.pop(key, None)

    async def write(
        self, key: cache.Key, body: Mapping[str, Any], obs: status_builder.Observation
    ) -> Written:
        """Apply the new status if it differs and is not a throttled cosmetic change."""
        previous = body.get("status") or {}
        # Off the event loop: a camera hand-over Event recomputes two assignments.
        new, transitions = await asyncio.to_thread(status_builder.compute, obs, previous, _now())
        meta_ = body["metadata"]
        if _same_status(previous, new):
            return Written()
        if previous and _signature(previous) == _signature(new):
            rolling = any(
                c["type"] == "Progressing" and c["status"] == "True" for c in new["conditions"]
            )
            interval = STATUS_ROLLOUT_INTERVAL_S if rolling else STATUS_COSMETIC_INTERVAL_S
            since = time.monotonic() - self._written.get(key, -1e9)
            if since < interval:
                return Written(retry_in=interval - since)
        await self.kube.apply_status(meta_["namespace"], meta_["name"], new)
        self._written[key] = time.monotonic()
        events: list[str] = []
        for t in transitions:
            try:
                await self.kube.event(
                    body, type=t.type, reason=t.reason, message=t.message, component=EVENT_COMPONENT
                )
            except kube.ApiError as exc:  # an Event is a courtesy; the status already says it
                logger.warning("could not post Event %s for %s: %s", t.reason, key, exc.message)
                continue
            events.append(t.reason)
        return Written(written=True, events=events)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signature(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a status change worth writing at once: a new generation, a condition
    flip, a new Degraded reason, a Ready reason while Ready is True, or a change of
    the camera assignment (members joined or left, cameras assigned)."""
    conditions = status.get("conditions", []) or []
    return (
        status.get("observedGeneration"),
        tuple((c.get("type"), c.get("status")) for c in conditions),
        tuple(
            c.get("reason")
            for c in conditions
            if c.get("status") == "True" and c.get("type") in ("Degraded", "Ready")
        ),
        (status.get("monitoring") or {}).get("serviceMonitor"),
        # Cameras moving between replicas: shown (and their Events posted) at once.
        (status.get("cameras") or {}).get("summary"),
        tuple(m.get("name") for m in (status.get("cameras") or {}).get("members") or []),
    )


def _same_status(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Equal as stored: the API server may drop empty strings and default fields."""
    return drift.difference(previous, new) is None and drift.difference(new, previous) is None
