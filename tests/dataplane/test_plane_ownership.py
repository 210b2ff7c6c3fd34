"""The data plane under scale-out, in one process: two DataPlanes share a pipeline's
cameras through a Lease API kept in memory (the protocol is tested against the real
API server in test_membership.py; this is about the wiring): each runs only its
cameras, drains by stopping them before releasing its Lease, and a plane that cannot
reach any Kubernetes API runs no camera instead of all of them."""

from __future__ import annotations

import asyncio
import itertools
import pathlib
from typing import Any

from its_runtime import config as rc
from its_runtime.dataplane import camera, membership, plane
from its_runtime.serving.batching import DynamicBatcher
from tests.dataplane import support


class MemoryLeases:
    """membership.LeaseApi with optimistic concurrency, in memory."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self._rv = itertools.count(1)
        self.log: list[tuple[str, str]] = []

    def _store(self, body: dict[str, Any]) -> membership.LeaseRecord:
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(next(self._rv))}}
        self.items[body["metadata"]["name"]] = body
        return membership.record_from(body)

    def list(self, namespace: str, pipeline: str) -> list[membership.LeaseRecord]:
        return [
            membership.record_from(b)
            for b in self.items.values()
            if b["metadata"]["labels"][membership.PIPELINE_LABEL] == pipeline
        ]

    def create(self, namespace: str, body: dict[str, Any]) -> membership.LeaseRecord:
        self.log.append(("create", body["metadata"]["name"]))
        return self._store(body)

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> membership.LeaseRecord:
        current = self.items.get(name)
        if current is None or current["metadata"]["resourceVersion"] != body["metadata"].get(
            "resourceVersion"
        ):
            raise membership.LeaseConflictError(name)
        return self._store(body)

    def delete(self, namespace: str, name: str, resource_version: str | None) -> None:
        self.log.append(("delete", name))
        self.items.pop(name, None)


def scaled_config(video: pathlib.Path, tmp: pathlib.Path) -> rc.RuntimeConfig:
    cfg = support.runtime_config(
        [support.camera(f"cam-{i}", video.as_uri()) for i in range(4)], journal_dir=tmp
    )
    return cfg.model_copy(
        update={
            "scale_out": rc.ScaleOutConfig(
                enabled=True, pipeline="ring", lease_duration_seconds=4, renew_period_seconds=1
            )
        }
    )


async def test_two_planes_split_the_cameras_and_drain_before_releasing(
    scene_video: pathlib.Path, tmp_path: pathlib.Path, batcher: DynamicBatcher
) -> None:
    api = MemoryLeases()
    cfg = scaled_config(scene_video, tmp_path)
    detector = batcher
    options = camera.PipelineOptions(realtime=True)
    a, b = (
        plane.DataPlane(cfg, detector, env={"POD_NAME": n}, lease_api=api, options=options)
        for n in ("pod-a", "pod-b")
    )
    await a.start()
    await b.start()
    try:

        def split() -> bool:
            mine_a, mine_b = set(a.pipelines), set(b.pipelines)
            return len(mine_a | mine_b) == 4 and not mine_a & mine_b and len(mine_a) == 2

        assert await support.eventually(split, 15), (a.ownership(), b.ownership())
        view = a.ownership()
        assert view["replica"] == "pod-a"
        assert sorted(view["members"]) == ["pod-a", "pod-b"]
        assert set(view["holders"].values()) == {"pod-a", "pod-b"}
        assert await support.eventually(
            lambda: all(p.stats.frames_analysed > 0 for p in a.pipelines.values()), 15
        )
        held_by_a = set(a.pipelines)
        # Drain: a's cameras stop, then its Lease goes; b takes them at its next tick.
        await a.stop_cameras()
        assert a.pipelines == {}
        assert ("delete", "ring-pod-a") in api.log
        assert await support.eventually(lambda: held_by_a <= set(b.pipelines), 5)
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_without_a_kubernetes_api_a_scaled_out_plane_runs_no_camera(
    scene_video: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: Any, batcher: DynamicBatcher
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cfg = scaled_config(scene_video, tmp_path)
    p = plane.DataPlane(cfg, batcher, env={"POD_NAME": "lonely"})
    await p.start()
    try:
        await asyncio.sleep(0.5)
        assert p.pipelines == {}
        health = p.cameras_health()
        assert not health.healthy
        assert "no Kubernetes API" in health.detail
    finally:
        await p.stop()
