"""A frame whose analysis raises is counted, shown and backed off; the camera goes on.

Before supervision one exception in analysis ended the camera's loop for good while its
stream still read connected.
"""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from its_runtime.config import BatchingConfig, CameraConfig
from its_runtime.dataplane.analytics.analyzer import FrameAnalysis
from its_runtime.dataplane.camera import CameraPipeline, PipelineOptions
from its_runtime.kits import synth
from its_runtime.kits.synth_detector import ColourBoxDetector
from its_runtime.observability import dataplane_metrics
from its_runtime.serving.batching import DynamicBatcher
from tests.dataplane.support import INPUT_SHAPE, MID_LINE

FAIL_ON = (5, 6, 7)


@pytest.fixture(scope="module")
def scene() -> synth.Scene:
    return synth.two_lane_scene(3.0)


@pytest.fixture(scope="module")
def video(scene: synth.Scene, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return synth.encode_h264(scene, tmp_path_factory.mktemp("supervision") / "scene.ts")


async def test_a_failing_analysis_backs_off_shows_why_and_resumes(
    scene: synth.Scene, video: pathlib.Path
) -> None:
    results: list[FrameAnalysis] = []

    def listener(result: FrameAnalysis) -> None:
        if result.seq in FAIL_ON:
            raise RuntimeError(f"analysis blew up on frame {result.seq}")
        results.append(result)

    batcher = DynamicBatcher(
        ColourBoxDetector(INPUT_SHAPE),
        BatchingConfig(max_batch_size=4, opt_batch_size=2, max_queue_delay_ms=1),
    )
    batcher.start()
    cam = CameraConfig(name="supervised", url=video.as_uri(), lines=[MID_LINE])
    pipeline = CameraPipeline(
        cam,
        batcher,
        input_shape=INPUT_SHAPE,
        class_names=["background", "car", "truck"],
        options=PipelineOptions(realtime=False, lossless=True),
        listener=listener,
    )
    errors = dataplane_metrics.CAMERA_ERRORS.labels("supervised", "RuntimeError")
    before = errors._value.get()
    seen_failing: list[dict[str, object]] = []

    async def watch() -> None:
        while not pipeline.finished.is_set():
            stream = pipeline.latest()["stream"]
            if stream["analysing"] is False:
                seen_failing.append(stream)
            await asyncio.sleep(0.02)

    try:
        pipeline.start()
        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(pipeline.finished.wait(), 60)
        await watcher
        await pipeline.stop()
    finally:
        await batcher.close()

    # Every frame but the three that raised was analysed: the camera did not stop.
    assert len(results) == scene.frame_count - len(FAIL_ON)
    assert results[-1].seq == scene.frame_count
    stream = pipeline.latest()["stream"]
    assert stream["analysing"] is True
    assert stream["analysis_errors"] == 3
    assert stream["last_analysis_error"] == "RuntimeError: analysis blew up on frame 7"
    assert errors._value.get() - before == 3
    # While it backed off, the camera said so, with the cause.
    assert seen_failing
    assert str(seen_failing[0]["last_analysis_error"]).startswith("RuntimeError: analysis blew")
