"""The data plane of one runtime: its camera pipelines, cache, database, journal,
writer and query service, built from the runtime config; and their health.

Shape and reasons:

* **Wiring only.** What a camera does is :mod:`.camera`; how its latest view reaches
  the cache is :mod:`.publish`; rows, journal and writes are :mod:`.store`; the HTTP
  routes are :mod:`.queries`. This module builds them from
  :class:`~its_runtime.config.RuntimeConfig`, starts and stops them in order, and
  answers for their health.
* **Secrets from the environment.** The config names the environment variables that
  hold the PostgreSQL DSN and the Redis URL; an unset one disables that dependency
  (with a warning) instead of failing the start.
* **Optional dependencies.** Redis and PostgreSQL are reported as *degraded*, never
  unready: without Redis, L1 and the database answer; without PostgreSQL, rows spool
  to the journal. Nothing here may fail the start.
* **Mounted by main.** ``its_runtime.main.data_plane_extension`` mounts this on the
  serving application (routes, readiness checks, drain, lifecycle) and hands it the
  batcher as its :class:`~.camera.Detector`; the data plane never imports serving.
* **Cameras by ownership.** With ``scaleOut.enabled`` the replicas of a pipeline
  share its cameras through membership Leases (:mod:`.membership`, the protocol;
  :mod:`.coordinator`, its loop): this replica runs only the cameras the assignment
  gives it (:mod:`.ownership`), joins only once its engine is warm (a pod still
  building an engine would hold cameras it cannot analyse), and on drain stops its
  cameras *before* releasing its Lease. Without scale-out every camera runs here.
  The query API answers for every camera of the pipeline, wherever it runs.
* **Decode and fit from the config.** ``cameraDecode`` and ``model.resize`` go to every
  camera (``ingest/decode.py`` decides NVDEC or CPU per connection; :meth:`decode_state`
  shows the outcome in ``/ready``). ``device_frames`` (from main: the engine is on CUDA)
  says whether the detector takes CUDA frames; without it cameras decode on the CPU.
  The config's ``tracker`` (``spec.runtime.tracker``) is every camera's tracker, unless
  the options name one.
* **Observers handed down.** One :class:`~its_runtime.observability.dataplane_stats.
  DataPlaneObservers` (default: Prometheus) is given to every component it builds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pathlib
import socket
from collections.abc import Callable, Mapping
from typing import Any

from its_runtime import health, redaction
from its_runtime.config import POD_NAME_ENV, POD_NAMESPACE_ENV, CameraConfig, RuntimeConfig
from its_runtime.dataplane import camera, camera_urls, coordinator, membership, ownership, queries
from its_runtime.dataplane.analytics import analyzer
from its_runtime.dataplane.analytics.tracker import TrackerSettings
from its_runtime.dataplane.cache import l1, l2, tiered
from its_runtime.dataplane.ingest import decision
from its_runtime.dataplane.store import adoption, database, journal, writer
from its_runtime.observability import dataplane_stats, ownership_stats

log = logging.getLogger(__name__)


class DataPlane:
    """All cameras of one runtime, with their cache, database, journal and query API."""

    def __init__(
        self,
        config: RuntimeConfig,
        detector: camera.Detector,
        *,
        options: camera.PipelineOptions | None = None,
        env: Mapping[str, str] | None = None,
        listener: Callable[[analyzer.FrameAnalysis], None] | None = None,
        observers: dataplane_stats.DataPlaneObservers | None = None,
        lease_api: membership.LeaseApi | None = None,
        ownership_observer: ownership_stats.OwnershipObserver | None = None,
        device_frames: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.options = options or camera.PipelineOptions()
        if self.options.tracker is None:  # the config's tracker (spec.runtime.tracker)
            self.options = dataclasses.replace(
                self.options, tracker=TrackerSettings(kind=config.tracker)
            )
        observers = observers or dataplane_stats.PROMETHEUS
        self._camera_start: asyncio.Task[None] | None = None
        environ = os.environ if env is None else env
        #: This pod's name (downward API): its Lease holder and every row's replica.
        self.replica = environ.get(POD_NAME_ENV) or socket.gethostname()
        self.namespace = environ.get(POD_NAMESPACE_ENV) or "default"
        self.cache = tiered.TieredCache(
            l1.L1Cache(
                config.cache.l1_max_entries, config.cache.ttl_seconds, observer=observers.cache
            ),
            _redis(config, environ, observers.cache),
        )
        self.database: database.Database | None = None
        self.journal: journal.Journal | None = None
        self.writer: writer.RowWriter | None = None
        db = config.database
        dsn = environ.get(db.dsn_env) if db.dsn_env else None
        if db.dsn_env and not dsn:
            log.warning("database disabled: environment variable %s is not set", db.dsn_env)
        if dsn:
            redaction.remember(dsn)  # its password, wherever a driver error quotes it
            self.database = database.Database(dsn, db, observer=observers.store)
            # Each pod journals into its own directory under the journal root; where the
            # root is shared by the replicas, the journals of deleted pods are adopted
            # and replayed (store/adoption.py).
            self.journal = adoption.pod_journal(
                pathlib.Path(db.journal_dir), self.replica, db.journal_max_bytes
            )
            self.writer = writer.RowWriter(
                self.database,
                self.journal,
                db,
                orphans=adoption.Adoption.beside(self.journal),
                observer=observers.store,
            )
        shape = config.model.input_shape

        def make(
            cam: CameraConfig, on_first_frame: Callable[[str, float], None]
        ) -> camera.CameraPipeline:
            return camera.CameraPipeline(
                cam,
                detector,
                input_shape=(shape[0], shape[1], shape[2]),
                class_names=list(config.model.class_names),
                writer=self.writer,
                cache=self.cache,
                options=self.options,
                listener=listener,
                observers=observers,
                replica=self.replica,
                may_analyse=self._may_analyse,
                on_first_frame=on_first_frame,
                resize=config.model.resize,
                decode=config.camera_decode,
                device_frames=device_frames,
            )

        self.cameras = ownership.RunningCameras(
            camera_urls.resolve(config.cameras, environ),
            make,
            replica=self.replica,
            cache=self.cache,
            observer=ownership_observer,
        )
        self.coordinator: coordinator.Coordinator | None = None
        self.ownership_error: str | None = None
        if config.scale_out.enabled:
            self._join(lease_api, ownership_observer)
        self.queries = queries.CameraQueries(
            cameras=[c.name for c in config.cameras],
            cache=self.cache,
            database=self.database,
        )
        self._started = False

    @property
    def pipelines(self) -> dict[str, camera.CameraPipeline]:
        """The camera pipelines running in this replica now."""
        return self.cameras.pipelines

    def _join(
        self,
        lease_api: membership.LeaseApi | None,
        observer: ownership_stats.OwnershipObserver | None,
    ) -> None:
        try:
            self.coordinator = coordinator.for_pipeline(
                self.config.scale_out,
                [c.name for c in self.config.cameras],
                pod=self.replica,
                namespace=self.namespace,
                on_change=self.cameras.run,
                lease_api=lease_api,
                observer=observer,
            )
        except Exception as exc:
            # Analysing every camera here could double every count: analyse none, say why.
            self.ownership_error = f"no Kubernetes API for camera ownership: {exc}"[:300]
            log.error("scale-out: %s; this replica runs no camera", self.ownership_error)

    def _may_analyse(self, name: str) -> bool:
        return self.coordinator is None or self.coordinator.may_analyse(name)

    async def start(self, engine_warm: asyncio.Event | None = None) -> None:
        """Connect what can be connected (nothing here may fail the start), then run.

        Cameras start once ``engine_warm`` is set: a first engine build can take
        minutes, and frames read before the engine can run them would only be dropped
        (and a camera's first seconds lost).
        """
        if self.cache.l2 is not None:
            self.cache.l2.start()
        if self.database is not None and self.writer is not None:
            try:
                await asyncio.wait_for(
                    self.database.connect(), self.config.database.acquire_timeout_s
                )
            except Exception as exc:
                self.database.mark_down(exc)
                log.warning("database unavailable at start; journalling until it is back")
            self.writer.start()
        if engine_warm is not None and not engine_warm.is_set():
            self._camera_start = asyncio.create_task(
                self._start_cameras_when(engine_warm), name="its-cameras-start"
            )
        else:
            await self._start_cameras()
        self._started = True

    async def _start_cameras_when(self, engine_warm: asyncio.Event) -> None:
        await engine_warm.wait()
        await self._start_cameras()

    async def _start_cameras(self) -> None:
        if self.coordinator is not None:
            self.coordinator.start()  # cameras follow at its ticks
        elif not self.config.scale_out.enabled:
            await self.cameras.run(frozenset(self.cameras.configs))

    async def stop_cameras(self) -> None:
        """Stop every camera here; with scale-out, then release the Lease (drain)."""
        if self._camera_start is not None:
            self._camera_start.cancel()
        if self.coordinator is not None:
            await self.coordinator.stop()
        await self.cameras.stop()

    async def stop(self) -> None:
        await self.stop_cameras()
        if self.writer is not None:
            await self.writer.close()
        if self.database is not None:
            await self.database.close()
        if self.journal is not None:
            self.journal.close()
        if self.cache.l2 is not None:
            await self.cache.l2.close()

    # -- health ---------------------------------------------------------------------

    def redis_health(self) -> health.DependencyHealth:
        l2 = self.cache.l2
        if l2 is None:
            return health.DependencyHealth(True, "disabled")
        if l2.up:
            return health.DependencyHealth(True, "ok")
        return health.DependencyHealth(
            False, f"degraded, serving from L1 and the database: {l2.last_error}"
        )

    def database_health(self) -> health.DependencyHealth:
        if self.database is None or self.writer is None:
            return health.DependencyHealth(True, "disabled")
        return self.writer.health()  # ok, degraded (journalling) or failing: <cause>

    def cameras_health(self) -> health.DependencyHealth:
        return cameras_health(self)

    def decode_state(self) -> dict[str, Any]:  # /ready's camera_decode: decision.summary
        decisions = {n: p.stats.decode for n, p in self.pipelines.items()}
        return decision.summary(self.config.camera_decode, decisions)

    def ownership(self) -> dict[str, Any]:
        """``GET /v1/ownership``: which replica holds which camera, as this one sees it."""
        if self.coordinator is None:
            return {
                "replica": self.replica,
                "scaleOut": False if self.ownership_error is None else "error",
                "error": self.ownership_error,
                "running": sorted(self.pipelines),
            }
        view = self.coordinator.view()
        out = view.describe()
        out.update(
            replica=self.replica,
            scaleOut=True,
            total=len(self.cameras.configs),
            holders=view.holders if len(view.holders) <= 1000 else {},
            handoffs=list(self.cameras.handoffs),
        )
        return out

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "replica": self.replica,
            "cache": self.cache.details(),
            "database": None if self.database is None else self.database.details(),
            "writer": None if self.writer is None else self.writer.details(),
            "cameras": {n: p.stats.snapshot() for n, p in self.pipelines.items()},
        }
        out["ownership"] = self.ownership()
        return out


def _redis(
    config: RuntimeConfig, env: Mapping[str, str], observer: dataplane_stats.CacheObserver
) -> l2.RedisL2 | None:
    name = config.cache.redis_url_env
    if not name:
        return None
    url = env.get(name)
    if not url:
        log.warning("redis L2 disabled: environment variable %s is not set", name)
        return None
    redaction.remember(url)
    return l2.RedisL2.from_config(url, config.cache, observer=observer)


def cameras_health(plane: DataPlane) -> health.DependencyHealth:
    """/ready's ``cameras``: ownership, fencing, connection and analysis of each camera."""
    if plane.ownership_error is not None:
        return health.DependencyHealth(False, plane.ownership_error)
    here = f"{len(plane.pipelines)} of {len(plane.cameras.configs)} cameras run here"
    if plane.coordinator is not None:
        view = plane.coordinator.view()
        if view.fenced:
            return health.DependencyHealth(
                False, f"fenced: cannot renew the camera Lease ({view.last_error})"
            )
        if view.unassigned:
            here += f"; {len(view.unassigned)} unassigned (no replica has capacity)"
    down = [n for n, p in plane.pipelines.items() if not p.stats.connected]
    failing = {
        n: p.stats.last_analysis_error for n, p in plane.pipelines.items() if not p.stats.analysing
    }
    if failing:
        named = "; ".join(f"{n}: {e}" for n, e in sorted(failing.items()))
        return health.DependencyHealth(False, f"{here}; analysis failing: {named}")
    if not down:
        return health.DependencyHealth(True, f"{here}, all connected")
    return health.DependencyHealth(False, f"{here}; not connected: {', '.join(sorted(down))}")
