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


class LatestPublisher:
    """Publishes one camera's latest view to L1 and (less often) to Redis."""

    def __init__(
        self,
        camera: str,
        cache: tiered.TieredCache,
        *,
        l1_interval_s: float,
        l2_interval_s: float,
    ) -> None:
        self.camera = camera
        self.key = latest_key(camera)
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
        body = json.dumps(view(), separators=(",", ":")).encode()
        self._l1_at = now
        self.cache.l1.set(self.key, body)
        if to_l2 and self.cache.l2 is not None:
            if self._l2_task is not None and not self._l2_task.done():
                return  # the previous publish is still in flight: newest wins next time
            self._l2_at = now
            self._l2_task = asyncio.get_running_loop().create_task(
                self.cache.set_many({self.key: body}), name=f"its-latest-{self.camera}"
            )

    async def close(self) -> None:
        """Wait for the publish in flight, if any (its failure is the cache's to count)."""
        if self._l2_task is not None:
            with contextlib.suppress(Exception):
                await self._l2_task
