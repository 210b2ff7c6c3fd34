"""Drives a pod's :class:`~its_runtime.dataplane.membership.Membership` on the event
loop and tells the data plane which cameras to run.

Every renew period it runs one tick in a worker thread (the ``kubernetes`` client is
blocking), then calls ``on_change`` with the cameras this pod should run whenever that
set changes. Stopping is never delayed: a camera that leaves the set, or every camera
when the pod is fenced (no successful tick for ``fence_s``), stops before the next
tick. Camera loops also ask :meth:`Coordinator.may_analyse` for every frame, so even a
process resumed from SIGSTOP analyses nothing before its first successful renew.

On shutdown :meth:`stop` waits for ``on_change(frozenset())`` to return (the cameras
have stopped) and only then deletes the Lease, so survivors that see it gone may start
those cameras at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from its_runtime.config import ScaleOutConfig
from its_runtime.dataplane import assignment, membership
from its_runtime.observability import ownership_stats

log = logging.getLogger(__name__)

#: Awaited with the cameras to run now; must return once removed cameras have stopped.
OnChange = Callable[[frozenset[str]], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class OwnershipView:
    """What ``/ready`` and status show: members, holders, unassigned and pending."""

    pod: str
    members: tuple[str, ...]
    running: frozenset[str]
    pending: frozenset[str]
    holders: dict[str, str]
    unassigned: tuple[str, ...]
    fenced: bool
    last_error: str | None

    def describe(self) -> dict[str, object]:
        return {
            "pod": self.pod,
            "members": list(self.members),
            "running": sorted(self.running),
            "pending": sorted(self.pending),
            "unassigned": list(self.unassigned),
            "fenced": self.fenced,
            "lastError": self.last_error,
        }


class Coordinator:
    def __init__(
        self,
        member: membership.Membership,
        on_change: OnChange,
        *,
        observer: ownership_stats.OwnershipObserver | None = None,
    ) -> None:
        self.member = member
        self.on_change = on_change
        self._observer = observer or ownership_stats.PROMETHEUS
        self._running: frozenset[str] = frozenset()
        self._decision: membership.Decision | None = None
        self._last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    def may_analyse(self, camera: str) -> bool:
        """Checked per frame: this pod holds ``camera`` and is not fenced.

        Both sets must hold it: ``self._running`` (what the loop applied: a camera
        gained is refused until its pipeline is started) and the membership's own
        (what the last tick decided, set in the tick's thread before the renew lifts
        the fence). Without the second, a pod resumed after SIGSTOP analysed frames
        for the moment between its first renew and the loop applying that tick's
        decision, while a survivor held the camera. The fence is read first: once it
        reads lifted, the tick's decision is already in place."""
        if self.member.fenced():
            return False
        return camera in self.member.running and camera in self._running

    def view(self) -> OwnershipView:
        d = self._decision
        empty = assignment.Assignment(holders={}, unassigned=())
        a = d.view if d is not None else empty
        fenced = self.member.fenced()
        return OwnershipView(
            pod=self.member.pod,
            members=d.members if d is not None else (),
            # What may be analysed now: a fenced pod's pipelines refuse every frame.
            running=frozenset() if fenced else self._running,
            pending=d.pending if d is not None else frozenset(),
            holders=dict(a.holders),
            unassigned=a.unassigned,
            fenced=fenced,
            last_error=self._last_error,
        )

    async def _apply(self, run: frozenset[str]) -> None:
        if run != self._running:
            # The per-frame check follows the new set at once: a camera that moved away
            # analyses no further frame while its pipeline stops, and a gained one's
            # first frame is not refused.
            self._running = run
            await self.on_change(run)

    def _report(self) -> None:
        v = self.view()
        self._observer.cameras(
            running=len(v.running),
            pending=len(v.pending),
            unassigned=len(v.unassigned),
            total=len(self.member.cameras),
        )
        self._observer.members(len(v.members), fenced=v.fenced)

    async def tick_once(self) -> None:
        try:
            decision = await asyncio.to_thread(self.member.tick)
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("camera ownership: tick failed: %s", self._last_error)
            self._observer.tick_failed()
            if self.member.fenced():
                await self._apply(frozenset())
            self._report()
            return
        self._last_error = None
        self._decision = decision
        await self._apply(decision.run)
        self._report()
        await self._collect_expired()

    async def _collect_expired(self) -> None:
        for rec in self.member.expired_leases():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self.member.api.delete, self.member.namespace, rec.name, rec.resource_version
                )

    async def run(self) -> None:
        period = self.member.timing.renew_period_s
        while not self._stopped.is_set():
            started = time.monotonic()
            await self.tick_once()
            # Fence on time even when a tick hangs past the period.
            delay = max(0.0, period - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="ownership")

    async def stop(self) -> None:
        """Stop every camera, then release the Lease."""
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._apply(frozenset())
        try:
            await asyncio.to_thread(self.member.leave)
        except Exception as exc:
            log.warning("camera ownership: releasing the Lease failed (it will expire): %s", exc)


def for_pipeline(
    config: ScaleOutConfig,
    cameras: Sequence[str],
    *,
    pod: str,
    namespace: str,
    on_change: OnChange,
    lease_api: membership.LeaseApi | None = None,
    observer: ownership_stats.OwnershipObserver | None = None,
) -> Coordinator:
    """The coordinator of pod ``pod`` for the runtime config's ``scaleOut``; the Lease
    API is the Kubernetes one (in-cluster or ``KUBECONFIG``) unless one is given.
    Raises when no Kubernetes API can be configured."""
    if lease_api is None:
        from its_runtime.dataplane import leases

        lease_api = leases.KubernetesLeaseApi.from_environment()
    member = membership.Membership(
        lease_api,
        namespace=namespace,
        pipeline=config.pipeline or "its",
        pod=pod,
        capacity=config.max_cameras_per_replica,
        cameras=cameras,
        timing=membership.Timing(
            lease_duration_s=float(config.lease_duration_seconds),
            renew_period_s=float(config.renew_period_seconds),
        ),
    )
    return Coordinator(member, on_change, observer=observer)
