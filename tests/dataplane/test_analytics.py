"""Tracking and counting hold to the exact ground truth of a generated traffic video.

The video is really encoded (H.264), decoded by PyAV, scaled, run through the
hand-weighted torch detector behind the real dynamic batcher, then tracked: nothing
on the way knows the ground truth.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from its_runtime.config import CountingLine, Point
from its_runtime.dataplane.analytics.analyzer import CROSSING, OBJECT, FrameAnalysis
from its_runtime.dataplane.analytics.lines import LineCounter
from its_runtime.dataplane.analytics.tracker import Tracker
from its_runtime.dataplane.camera import CameraPipeline, PipelineOptions
from its_runtime.detections import Detections
from its_runtime.kits import synth
from its_runtime.serving.batching import DynamicBatcher
from tests.dataplane.support import INPUT_SHAPE, METERS_PER_PIXEL, MID_LINE, RIGHT_HALF, camera

FRAME = 1 / 30


async def analyse_file(video: pathlib.Path, batcher: DynamicBatcher) -> list[FrameAnalysis]:
    results: list[FrameAnalysis] = []
    pipeline = CameraPipeline(
        camera("gt", video.as_uri()),
        batcher,
        input_shape=INPUT_SHAPE,
        class_names=["background", "car", "truck"],
        options=PipelineOptions(realtime=False, lossless=True),
        listener=results.append,
    )
    pipeline.start()
    await pipeline.finished.wait()
    await pipeline.stop()
    assert pipeline.stats.frames_analysed == len(results)
    assert pipeline.stats.dropped_total == 0
    return results


@pytest.mark.slow
async def test_line_crossings_match_the_ground_truth_in_count_direction_class_and_time(
    scene: synth.Scene, scene_video: pathlib.Path, batcher: DynamicBatcher
) -> None:
    results = await analyse_file(scene_video, batcher)
    assert len(results) == scene.frame_count
    crossings = [e for r in results for e in r.events if e.kind == CROSSING]
    truth = scene.crossings(MID_LINE)
    assert len(truth) >= 10
    assert [(c.class_name, c.direction) for c in crossings] == [
        (t.class_name, t.direction) for t in truth
    ]
    for got, want in zip(crossings, truth, strict=True):
        assert abs(got.media_time - want.time) < 2 * FRAME, (got, want)
    # Every vehicle that appeared is one object, of the right class.
    objects = [e for r in results for e in r.events if e.kind == OBJECT]
    shown = [v for v in scene.vehicles if v.enter_time < scene.duration_s - 0.2]
    assert sorted(e.class_name for e in objects) == sorted(v.class_name for v in shown)


@pytest.mark.slow
async def test_speed_estimates_match_the_calibrated_ground_truth(
    scene: synth.Scene, scene_video: pathlib.Path, batcher: DynamicBatcher
) -> None:
    results = await analyse_file(scene_video, batcher)
    crossings = [e for r in results for e in r.events if e.kind == CROSSING]
    truth = scene.crossings(MID_LINE)
    for got, want in zip(crossings, truth, strict=True):
        expected = scene.speed_kmh(want.vehicle, METERS_PER_PIXEL)
        assert got.speed_kmh is not None
        assert abs(got.speed_kmh - expected) / expected < 0.05, (got, expected)


@pytest.mark.slow
async def test_region_occupancy_matches_the_ground_truth_away_from_edges_of_change(
    scene: synth.Scene, scene_video: pathlib.Path, batcher: DynamicBatcher
) -> None:
    results = await analyse_file(scene_video, batcher)
    truth = [scene.occupancy(RIGHT_HALF, i / scene.fps) for i in range(scene.frame_count)]
    # Around a change (a vehicle entering or leaving the region or the frame, and the
    # min-hits delay of a new track) a frame or few may differ; nowhere else.
    settled = [
        i
        for i in range(4, scene.frame_count - 4)
        if all(truth[j] == truth[i] for j in range(i - 4, i + 3))
    ]
    assert len(settled) > scene.frame_count // 2
    wrong = [i for i in settled if results[i].occupancy[RIGHT_HALF.name] != truth[i]]
    assert wrong == []
    assert max(sum(t.values()) for t in truth) >= 2  # the scene does fill the region


def boxes(*rows: tuple[float, float, float, float]) -> Detections:
    return Detections(
        boxes=np.asarray(rows, dtype=np.float32).reshape(-1, 4),
        scores=np.full(len(rows), 0.9, dtype=np.float32),
        classes=np.ones(len(rows), dtype=np.int64),
    )


def test_tracks_keep_their_identity_across_dropped_frames_and_crossing_paths() -> None:
    tracker = Tracker()
    ids: set[tuple[int, ...]] = set()
    # Two vehicles driving towards each other in adjacent lanes; only every 6th frame
    # (0.2 s) is analysed, as when inference falls far behind.
    for k in range(30):
        t = k * 0.2
        a = 0.05 + 0.15 * t
        b = 0.85 - 0.15 * t
        step = tracker.update(boxes((a, 0.3, a + 0.1, 0.4), (b, 0.42, b + 0.1, 0.52)), t)
        if k >= 3:
            assert len(step.active) == 2
            by_lane = sorted(step.active, key=lambda tr: tr.box[1])
            ids.add(tuple(tr.track_id for tr in by_lane))
    assert ids == {(1, 2)}


def test_box_jitter_on_the_line_counts_one_crossing() -> None:
    counter = LineCounter(MID_LINE)
    xs = [0.40, 0.45, 0.499, 0.501, 0.499, 0.502, 0.498, 0.53, 0.56, 0.6]
    events = [counter.observe(1, (x, 0.5), i * FRAME) for i, x in enumerate(xs)]
    crossings = [e for e in events if e is not None]
    assert [(c.direction, c.track_id) for c in crossings] == [("in", 1)]


def test_a_move_past_the_end_of_the_drawn_line_is_not_a_crossing() -> None:
    short = CountingLine(name="short", start=Point(x=0.5, y=1.0), end=Point(x=0.5, y=0.6))
    counter = LineCounter(short)
    assert counter.observe(1, (0.4, 0.3), 0.0) is None
    assert counter.observe(1, (0.6, 0.3), 0.1) is None  # above the line's top end
    assert counter.observe(2, (0.6, 0.8), 0.0) is None
    crossing = counter.observe(2, (0.4, 0.8), 0.1)
    assert crossing is not None
    assert crossing.direction == "out"
    assert abs(crossing.media_time - 0.05) < 1e-9


def test_a_crossing_in_the_last_frames_of_a_finite_stream_is_counted_at_its_end() -> None:
    # The 44 s scene's last vehicle crosses the line 0.09 s before the stream ends: still
    # inside the hysteresis band, so only the end-of-stream settlement can count it.
    from its_runtime.dataplane.analytics.analyzer import CameraAnalyzer

    scene = synth.two_lane_scene(44.0)
    truth = scene.crossings(MID_LINE)
    assert max(c.time for c in truth) > 44.0 - 0.2
    an = CameraAnalyzer(camera("c", "file:///x"), list(synth.CLASS_SIZES))
    counted: list[tuple[str, str, float]] = []
    for i in range(scene.frame_count):
        t = i / scene.fps
        seen = scene.visible_boxes(t)
        det = Detections(
            boxes=np.array([b for _, b in seen], dtype=np.float32).reshape(-1, 4),
            scores=np.full(len(seen), 0.9, dtype=np.float32),
            classes=np.array(
                [list(synth.CLASS_SIZES).index(scene.vehicles[k].class_name) for k, _ in seen],
                dtype=np.int64,
            ),
        )
        result = an.process(
            det, seq=i, media_time=t, wall_time=1e6 + t, width_px=320, height_px=192
        )
        counted += [
            (e.direction, e.class_name, e.media_time) for e in result.events if e.kind == CROSSING
        ]
    end = an.finish(seq=scene.frame_count, media_time=44.0, wall_time=1e6 + 44.0)
    settled = [(e.direction, e.class_name, e.media_time) for e in end.events if e.kind == CROSSING]
    assert len(settled) == 1
    assert abs(settled[0][2] - max(c.time for c in truth)) < 0.05
    got = sorted((d, c) for d, c, _ in counted + settled)
    assert got == sorted((c.direction, c.class_name) for c in truth)
    assert an.finish(seq=scene.frame_count, media_time=44.0, wall_time=1e6 + 44.0).events == []
