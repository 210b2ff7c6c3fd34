"""``model.resize: letterbox`` on the camera path: frames padded where ``Fit`` says,
boxes mapped back onto the frame, counts as the ground truth has them.

The scene is 4:3 (320x240) and the model input 5:3 (160x96), so the letterboxed frame
is 128x96 with 16 grey columns on either side; a box left in input coordinates would be
off by up to 16 input pixels (40 source pixels), far beyond the tolerance here. (A
vertical line through the middle is the one line that padding on both sides leaves in
place, so the counts are checked on an off-centre line too.)
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from its_runtime.config import (
    BatchingConfig,
    CameraConfig,
    CountingLine,
    Point,
    ResizeMode,
    RuntimeConfig,
)
from its_runtime.dataplane.analysis_rows import frame_rows
from its_runtime.dataplane.analytics.analyzer import CROSSING, FrameAnalysis
from its_runtime.dataplane.camera import CameraPipeline, PipelineOptions
from its_runtime.kits import synth
from its_runtime.kits.synth_detector import ColourBoxDetector
from its_runtime.letterbox import PAD_VALUE, Fit
from its_runtime.serving.batching import DynamicBatcher
from tests.dataplane.ingest.support import read_all
from tests.dataplane.support import (
    INPUT_SHAPE,
    METERS_PER_PIXEL,
    MID_LINE,
    camera,
    runtime_config,
    serving,
)

FRAME = 1 / 30
WIDTH, HEIGHT = 320, 240
SIZE = (INPUT_SHAPE[2], INPUT_SHAPE[1])
FIT = Fit.compute(WIDTH, HEIGHT, *SIZE, ResizeMode.LETTERBOX)
#: Off-centre: left in input coordinates, it would sit 20 source pixels further left.
QUARTER_LINE = CountingLine(name="quarter", start=Point(x=0.25, y=1.0), end=Point(x=0.25, y=0.0))


@pytest.fixture(scope="module")
def scene() -> synth.Scene:
    return synth.two_lane_scene(8.0, width=WIDTH, height=HEIGHT)


@pytest.fixture(scope="module")
def video(scene: synth.Scene, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return synth.encode_h264(scene, tmp_path_factory.mktemp("letterbox") / "scene43.ts")


Box = tuple[float, float, float, float]


def letterbox_config(url: str, journal: pathlib.Path) -> RuntimeConfig:
    config = runtime_config([camera("cam-lb", url)], journal_dir=journal)
    model = config.model.model_copy(update={"resize": ResizeMode.LETTERBOX})
    return config.model_copy(update={"model": model})


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def box_errors_px(
    scene: synth.Scene, media_time: float, boxes: list[Box]
) -> list[npt.NDArray[np.float64]]:
    """Per box, |box - drawn vehicle| in source pixels (vehicles wholly in view)."""
    visible = scene.visible_boxes(media_time)
    out = []
    for box in boxes:
        best = max(visible, key=lambda v: iou(box, v[1]), default=None)
        assert best is not None, (media_time, box)
        assert iou(box, best[1]) > 0.5, (media_time, box)
        drawn = best[1]
        if drawn[0] <= 0.01 or drawn[2] >= 0.99:
            continue  # entering or leaving: the drawn box is clipped by the frame edge
        scale = np.array([scene.width, scene.height] * 2, dtype=np.float64)
        out.append(np.abs(np.asarray(box) - np.asarray(drawn)) * scale)
    return out


#: One input pixel is 1 / scale source pixels (2.5 here); the detector finds edges to
#: whole input pixels, and a moving vehicle's edges blur by another fraction of one.
TOLERANCE_PX = 1.5 * WIDTH / FIT.scaled_w


async def test_the_reader_letterboxes_frames_with_the_padding_where_fit_says(
    scene: synth.Scene, video: pathlib.Path
) -> None:
    assert (FIT.scaled_w, FIT.scaled_h, FIT.pad_x, FIT.pad_y) == (128, 96, 16, 0)
    frames, stats = await read_all(video.as_uri(), size=SIZE, resize=ResizeMode.LETTERBOX)
    assert len(frames) == scene.frame_count
    assert stats.snapshot()["decode"]["backend"] == "cpu"
    for frame in frames[::10]:
        assert frame.fit == FIT
        assert frame.device_image is None
        image = frame.image
        assert image.shape == (96, 160, 3)
        left, right = image[:, : FIT.pad_x], image[:, FIT.pad_x + FIT.scaled_w :]
        assert (left == PAD_VALUE).all()
        assert (right == PAD_VALUE).all()
        # Inside, the whole frame at its own aspect ratio: the drawn frame, scaled.
        inside = image[:, FIT.pad_x : FIT.pad_x + FIT.scaled_w].astype(np.float32)
        drawn = Image.fromarray(scene.render(round(frame.media_time * scene.fps)))
        drawn = drawn.resize((FIT.scaled_w, FIT.scaled_h), Image.Resampling.BILINEAR)
        assert float(np.abs(inside - np.asarray(drawn, dtype=np.float32)).mean()) < 4.0


async def test_stretch_frames_are_as_before(video: pathlib.Path) -> None:
    frames, _ = await read_all(video.as_uri(), size=SIZE)
    assert frames[0].fit is not None
    assert frames[0].fit.identity
    assert frames[0].image.shape == (96, 160, 3)
    assert not (frames[0].image[:, :16] == PAD_VALUE).all()


@pytest.mark.slow
async def test_a_letterboxed_camera_counts_the_ground_truth_and_boxes_land_on_the_vehicles(
    scene: synth.Scene, video: pathlib.Path
) -> None:
    batcher = DynamicBatcher(
        ColourBoxDetector(INPUT_SHAPE),
        BatchingConfig(max_batch_size=8, opt_batch_size=4, max_queue_delay_ms=2),
    )
    batcher.start()
    results: list[FrameAnalysis] = []
    cam = CameraConfig(
        name="gt",
        url=video.as_uri(),
        lines=[MID_LINE, QUARTER_LINE],
        meters_per_pixel=METERS_PER_PIXEL,
    )
    pipeline = CameraPipeline(
        cam,
        batcher,
        input_shape=INPUT_SHAPE,
        class_names=["background", "car", "truck"],
        options=PipelineOptions(realtime=False, lossless=True),
        listener=results.append,
        resize=ResizeMode.LETTERBOX,
    )
    try:
        pipeline.start()
        await pipeline.finished.wait()
        await pipeline.stop()
    finally:
        await batcher.close()
    assert len(results) == scene.frame_count
    for line in (MID_LINE, QUARTER_LINE):
        crossings = [
            e for r in results for e in r.events if e.kind == CROSSING and e.line == line.name
        ]
        truth = scene.crossings(line)
        assert len(truth) >= 5
        assert [(c.class_name, c.direction) for c in crossings] == [
            (t.class_name, t.direction) for t in truth
        ]
        for got, want in zip(crossings, truth, strict=True):
            assert abs(got.media_time - want.time) < 2 * FRAME, (line.name, got, want)
    # The boxes the rows store (the ``detections`` table) are on the drawn vehicles.
    errors = []
    for r in results:
        rows = frame_rows(r, r.wall_time, detections=True).detections
        assert len(rows) == len(r.tracks)
        errors += box_errors_px(scene, r.media_time, [(d.x1, d.y1, d.x2, d.y2) for d in rows])
    assert len(errors) > 300
    assert max(float(e.max()) for e in errors) <= TOLERANCE_PX


@pytest.mark.slow
async def test_latest_shows_letterboxed_tracks_in_frame_coordinates(
    scene: synth.Scene, video: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    results: list[FrameAnalysis] = []
    config = letterbox_config(video.as_uri(), tmp_path)
    options = PipelineOptions(realtime=False, lossless=True)
    async with serving(config, {}, options=options, listener=results.append) as (
        _,
        plane,
        client,
    ):
        await plane.pipelines["cam-lb"].finished.wait()
        async with client.get("/v1/cameras/cam-lb/latest") as resp:
            assert resp.status == 200
            latest = json.loads(await resp.read())
    assert latest["stream"]["frames_analysed"] == scene.frame_count
    # /latest is the last analysed frame: its tracks are the listener's last, mapped.
    last = results[-1]
    assert latest["frame_seq"] == last.seq
    assert [t["box"] for t in latest["tracks"]] == [t.to_json()["box"] for t in last.tracks]
    assert latest["tracks"], "the last frame shows vehicles"
    errors = box_errors_px(scene, last.media_time, [t.box for t in last.tracks])
    assert errors
    assert max(float(e.max()) for e in errors) <= TOLERANCE_PX
