"""A camera's latest view in the cache: the key it lives under, and its throttled publish.

Shape and reasons:

* **One key, one spelling.** :func:`latest_key` is the only place ``latest:{camera}``
  is written down. The publisher writes under it and the query API
  (:mod:`its_runtime.dataplane.queries`) reads under it, so the two cannot drift
  apart (a typo there would turn every ``/latest`` into a database query, silently).
* **Throttled, newest wins.** A camera analyses many frames a second; nobody reads
  its view that often. The view goes to L1 at most every ``l1_interval_s`` (cheap, in
  process) and to Redis at most every ``l2_interval_s``, in the background: a publish
  still in flight is never queued behind, the next one simply carries newer data.
* **Lazy.** The view is a callable, encoded only when a publish is due, so the
  frames in between cost no JSON encoding.
* **Never blocks analysis.** Redis writes run as a task; a degraded L2 is the
  cache's business (counted there), not the pipeline's.
* **A hand-off marker.** With every Redis publish goes ``handoff:{camera}``: which
  replica analysed the camera last, and when (wall time), kept far longer than the
  view. A replica that takes the camera over reads it to measure the gap in analysis
  (``its_camera_handoff_gap_seconds``), even after a ``kill -9`` of the last holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from its_runtime.dataplane.cache import tiered


def latest_key(camera: str) -> str:
    """The cache key of a camera's latest view (``/v1/cameras/{camera}/latest``)."""
    return f"latest:{camera}"


def handoff_key(camera: str) -> str:
    """The cache key of a camera's hand-off marker: ``{"replica", "at"}``."""
    return f"handoff:{camera}"


#: How long a hand-off marker outlives its last publish (longer gaps are not hand-offs).
MARKER_TTL_S = 600.0


def read_marker(body: bytes | None) -> tuple[str, float] | None:
    """(replica, wall time of its last analysed frame) from a marker, or None."""
    if body is None:
        return None
    try:
        data = json.loads(body)
        return str(data["replica"]), float(data["at"])
    except (ValueError, KeyError, TypeError):
        return None


class LatestPublisher:
    """Publishes one camera's latest view to L1 and (less often) to Redis."""

    def __init__(
        self,
        camera: str,
        cache: tiered.TieredCache,
        *,
        l1_interval_s: float,
        l2_interval_s: float,
        replica: str = "",
    ) -> None:
        self.camera = camera
        self.key = latest_key(camera)
        self.marker_key = handoff_key(camera)
        self.replica = replica
        self.cache = cache
        self.l1_interval_s = l1_interval_s
        self.l2_interval_s = l2_interval_s
        self._l1_at = 0.0
        self._l2_at = 0.0
        self._l2_task: asyncio.Task[None] | None = None

    def publish(self, view: Callable[[], Mapping[str, Any]], *, force: bool) -> None:
        """Publish ``view()`` if a level is due (``force``: both levels, now)."""
        now = time.monotonic()
        to_l1 = force or now - self._l1_at >= self.l1_interval_s
        to_l2 = force or now - self._l2_at >= self.l2_interval_s
        if not to_l1 and not to_l2:
            return
        data = view()
        body = json.dumps(data, separators=(",", ":")).encode()
        self._l1_at = now
        self.cache.l1.set(self.key, body)
        if to_l2 and self.cache.l2 is not None:
            if self._l2_task is not None and not self._l2_task.done():
                return  # the previous publish is still in flight: newest wins next time
            self._l2_at = now
            items = {self.key: body}
            if data.get("updated_at") is not None:
                marker = {"replica": self.replica, "at": data["updated_at"]}
                items[self.marker_key] = json.dumps(marker).encode()
            self._l2_task = asyncio.get_running_loop().create_task(
                self.cache.set_many(items, ttls={self.marker_key: MARKER_TTL_S}),
                name=f"its-latest-{self.camera}",
            )

    async def close(self) -> None:
        """Wait for the publish in flight, if any (its failure is the cache's to count)."""
        if self._l2_task is not None:
            with contextlib.suppress(Exception):
                await self._l2_task
