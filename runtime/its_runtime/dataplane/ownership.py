"""The camera pipelines this replica runs now, started and stopped as ownership says.

:class:`RunningCameras` is what the :class:`~.coordinator.Coordinator` calls with the
set of cameras this pod should run (``run``); without scale-out the data plane calls
it once with every camera. Shape and reasons:

* **Stop before start.** Cameras leaving the set stop (their last rows handed to the
  writer, their last view published) before any gained camera starts, and the
  coordinator waits for that before it counts them as stopped.
* **A fresh pipeline per start.** A camera that comes back gets a new
  :class:`~.camera.CameraPipeline`: tracks and interval counts of an earlier stint
  would be stale (another replica counted in between).
* **Stale views are forgotten.** A stopped camera's latest view is removed from L1, so
  this replica's ``/latest`` answers for it from Redis or the database (what its new
  holder publishes), not from its own last memory.
* **Hand-off gaps are measured.** Before starting a gained camera it reads the
  camera's hand-off marker (:func:`~.publish.handoff_key`: which replica analysed it
  last, and when); the first frame analysed here closes the gap, reported as
  ``its_camera_handoff_gap_seconds`` and frames lost (gap times the camera's fps),
  and kept in :attr:`RunningCameras.handoffs` for ``/ready``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Sequence
from typing import Any

from its_runtime.config import CameraConfig
from its_runtime.dataplane import camera, publish
from its_runtime.dataplane.cache import tiered
from its_runtime.dataplane.cache.l2 import L2UnavailableError
from its_runtime.observability import ownership_stats

log = logging.getLogger(__name__)

#: Builds a camera's pipeline; ``on_first_frame(camera, wall_time)`` must be wired.
PipelineFactory = Callable[[CameraConfig, Callable[[str, float], None]], camera.CameraPipeline]


class RunningCameras:
    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        make: PipelineFactory,
        *,
        replica: str,
        cache: tiered.TieredCache,
        observer: ownership_stats.OwnershipObserver | None = None,
    ) -> None:
        self.configs = {c.name: c for c in cameras}
        self._make = make
        self.replica = replica
        self.cache = cache
        self._observer = observer or ownership_stats.PROMETHEUS
        self.pipelines: dict[str, camera.CameraPipeline] = {}
        #: camera -> (previous replica, wall time of its last analysed frame)
        self._previous: dict[str, tuple[str, float]] = {}
        self.handoffs: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self._lock = asyncio.Lock()

    async def run(self, names: frozenset[str]) -> None:
        """Run exactly ``names`` (unknown names are ignored): stop first, then start."""
        async with self._lock:
            gone = [n for n in self.pipelines if n not in names]
            if gone:
                await asyncio.gather(*(self.pipelines[n].stop() for n in gone))
                for n in gone:
                    del self.pipelines[n]
                    self._previous.pop(n, None)
                    self.cache.l1.delete(publish.latest_key(n))
                log.info("cameras stopped here: %s", ", ".join(sorted(gone)))
            gained = sorted(n for n in names if n in self.configs and n not in self.pipelines)
            if not gained:
                return
            self._previous.update(await self._markers(gained))
            for n in gained:
                pipeline = self._make(self.configs[n], self._first_frame)
                pipeline.start()
                self.pipelines[n] = pipeline
            log.info("cameras started here: %s", ", ".join(gained))

    async def stop(self) -> None:
        await self.run(frozenset())

    async def _markers(self, names: Sequence[str]) -> dict[str, tuple[str, float]]:
        if self.cache.l2 is None:
            return {}
        try:
            found = await self.cache.l2.get_many([publish.handoff_key(n) for n in names])
        except L2UnavailableError:
            return {}  # gaps go unmeasured while Redis is down; analysis goes on
        out: dict[str, tuple[str, float]] = {}
        for name, (body, _) in zip(names, found, strict=True):
            marker = publish.read_marker(body)
            if marker is not None:
                out[name] = marker
        return out

    def _first_frame(self, name: str, wall_time: float) -> None:
        previous = self._previous.pop(name, None)
        if previous is None:
            return
        replica, last = previous
        gap = max(0.0, wall_time - last)
        if gap > publish.MARKER_TTL_S:
            return
        fps = self.configs[name].fps if name in self.configs else 0.0
        lost = round(gap * fps)
        self._observer.handoff(name, gap, lost)
        self.handoffs.append(
            {
                "camera": name,
                "from": replica,
                "to": self.replica,
                "gap_s": round(gap, 3),
                "frames_lost": lost,
                "at": wall_time,
            }
        )
        log.info("camera %s taken over from %s after a %.2f s gap", name, replica, gap)
