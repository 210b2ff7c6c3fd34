"""The supervision comparison counts what it should, and the committed verdicts hold.

``benchmarks/accuracy.py`` compares our line/region counters with supervision's
``LineZone``/``PolygonZone`` on the same tracks; that comparison is only fair if the
adapter (pixels, class ids, which library side is our ``in``) is right, so on a perfect
detector the library's tuned variant must reproduce the closed-form truth. The defaults
the runtime ships (tracker and counter) must be the ones the committed results adopt.
"""

from __future__ import annotations

import json
import pathlib

from its_runtime.config import DEFAULT_TRACKER
from its_runtime.dataplane.analytics.tracker import TrackerSettings
from its_runtime.kits import detector_noise, traffic_replay, traffic_scenes, zone_counting

RESULTS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "accuracy.json"


def test_linezone_on_perfect_tracks_counts_the_truth_in_both_directions() -> None:
    scene = traffic_scenes.SCENES["free_flow"](0)
    run = traffic_replay.replay(
        scene, detector_noise.Noise(), 0, TrackerSettings(kind=DEFAULT_TRACKER), keep_frames=True
    )
    assert {d for _, d, _ in run.truth} == {"in", "out"}  # both directions are exercised
    tuned = next(v for v in zone_counting.VARIANTS if v.name == "linezone_bottom_centre_t3")
    counted = zone_counting.count(scene, run.frames, tuned).counted
    assert counted == run.truth


def test_polygonzone_occupancy_matches_ours_on_perfect_tracks() -> None:
    scene = traffic_scenes.SCENES["turning"](0)
    run = traffic_replay.replay(
        scene, detector_noise.Noise(), 0, TrackerSettings(kind=DEFAULT_TRACKER), keep_frames=True
    )
    z = zone_counting.count(scene, run.frames, zone_counting.VARIANTS[0])
    assert z.occupancy_true > 0
    assert abs(z.occupancy_error() - run.occupancy_error()) < 0.05


def test_the_shipped_defaults_are_the_ones_the_committed_benchmark_adopts() -> None:
    summary = json.loads(RESULTS.read_text())["summary"]
    assert summary["default_tracker"] == DEFAULT_TRACKER
    assert summary["adoption"]["adopt"] == DEFAULT_TRACKER
    assert summary["counting"]["adopt"] == "ours"  # the analyzer counts with ours
