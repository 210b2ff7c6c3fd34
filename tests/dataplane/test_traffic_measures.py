"""Traffic measures against the truth of vehicles driven in metres through a known calibration.

Each test drives vehicles on a ground plane (:mod:`tests.dataplane.traffic_scene`),
films them through the inverse of the camera's calibration, and holds the analyzer's
speeds, lane counts, wrong-way events, queues, stopped vehicles, turning movements and
congestion level to what the vehicles really did.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from pydantic import ValidationError

from its_runtime.config import CameraConfig
from its_runtime.dataplane.analytics import events
from its_runtime.dataplane.analytics.analyzer import FrameAnalysis
from tests.dataplane import traffic_scene as ts
from tests.dataplane.traffic_scene import Vehicle


def camera(**fields: Any) -> CameraConfig:
    return CameraConfig.model_validate(
        {"name": "cam", "url": "rtsp://x/1", "calibration": ts.CALIBRATION, **fields}
    )


def speeds_by_track(results: list[FrameAnalysis]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in results:
        for t in r.tracks:
            if t.speed_kmh is not None:
                out.setdefault(t.track_id, []).append(t.speed_kmh)
    return out


# 1 -- calibration and speed ---------------------------------------------------------------


def test_homography_maps_the_calibration_points_and_back() -> None:
    for (ix, iy), (gx, gy) in zip(ts.IMAGE_POINTS, ts.GROUND_POINTS, strict=True):
        x, y = ts.HOMOGRAPHY.to_ground((ix, iy))
        assert (x, y) == pytest.approx((gx, gy), abs=1e-9)
    assert ts.HOMOGRAPHY.to_image(ts.HOMOGRAPHY.to_ground((0.5, 0.6))) == pytest.approx((0.5, 0.6))


@pytest.mark.parametrize("speed_kmh", [20.0, 50.0, 90.0])
def test_speed_from_the_calibrated_ground_track_is_within_5_percent(speed_kmh: float) -> None:
    v = speed_kmh / 3.6
    # Two vehicles: one receding (far, small boxes), one approaching in the other lane.
    cars = [
        Vehicle((2.5, 1.0), [((0.0, v), 58.0 / v)]),
        Vehicle((7.5, 59.0), [((0.0, -v), 58.0 / v)], appear_s=0.5),
    ]
    exact = speeds_by_track(ts.run(camera(), cars, 60.0 / v + 1.0))
    assert len(exact) == 2
    for samples in exact.values():
        assert len(samples) > 10
        worst = max(abs(s - speed_kmh) / speed_kmh for s in samples)
        assert worst <= 0.05, (speed_kmh, worst)
    # Boxes jittered by 1 % of their width (far away that is metres on the ground).
    noisy = speeds_by_track(ts.run(camera(), cars, 60.0 / v + 1.0, jitter=0.01, seed=7))
    assert len(noisy) == 2
    for samples in noisy.values():
        errors = sorted(abs(s - speed_kmh) / speed_kmh for s in samples)
        assert abs(statistics.median(samples) - speed_kmh) / speed_kmh <= 0.05
        assert errors[int(0.95 * len(errors))] <= 0.05, errors[-5:]


def test_meters_per_pixel_still_gives_speeds_without_a_calibration() -> None:
    cam = CameraConfig.model_validate({"name": "cam", "url": "rtsp://x/1", "metersPerPixel": 0.05})
    results = ts.run(cam, [Vehicle((5.0, 1.0), [((0.0, 10.0), 5.0)])], 5.0)
    assert speeds_by_track(results), "no speed estimate with metersPerPixel"


@pytest.mark.parametrize(
    ("image", "needle"),
    [
        ([[0.1, 0.1], [0.1, 0.1], [0.5, 0.9], [0.9, 0.2]], "4 distinct points"),
        ([[0.1, 0.1], [0.5, 0.5], [0.9, 0.9], [0.9, 0.2]], "no three points may lie on one line"),
    ],
)
def test_a_degenerate_calibration_is_rejected(image: list[list[float]], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        camera(calibration={"imagePoints": image, "groundPoints": ts.GROUND_POINTS})


# 2 -- lanes and wrong way -----------------------------------------------------------------


def ground_line(name: str, y: float, **fields: Any) -> dict[str, Any]:
    start = ts.HOMOGRAPHY.to_image((0.0, y))
    end = ts.HOMOGRAPHY.to_image((10.0, y))
    return {"name": name, "start": list(start), "end": list(end), **fields}


def receding(x: float, at: float) -> Vehicle:
    return Vehicle((x, 1.0), [((0.0, 15.0), 58.0 / 15.0)], appear_s=at)


def approaching(x: float, at: float) -> Vehicle:
    return Vehicle((x, 59.0), [((0.0, -15.0), 58.0 / 15.0)], appear_s=at)


def test_lanes_are_counted_separately_and_wrong_way_crossings_are_events() -> None:
    # Receding traffic crosses start->end from right to left ('out'), approaching 'in'.
    lanes = [
        {"name": "outbound", "start": 0.0, "end": 0.5, "allowedDirection": "out"},
        {"name": "inbound", "start": 0.5, "end": 1.0, "allowedDirection": "in"},
    ]
    cam = camera(
        lines=[
            ground_line("stop", 30.0, lanes=lanes),
            ground_line("exit", 40.0, allowedDirection="out"),
        ]
    )
    cars = [receding(2.5, at) for at in (0.0, 4.5, 9.0)]
    cars += [approaching(7.5, at) for at in (1.0, 5.5)]
    cars.append(receding(7.5, 10.5))  # the wrong-way driver, in the inbound lane
    analyzer, results = ts.analyse(cam, cars, 15.0)
    found = [e for r in results for e in r.events]
    crossings: dict[tuple[str, str, str], int] = {}
    for e in found:
        if e.kind == events.CROSSING:
            key = (e.line, e.lane, e.direction)
            crossings[key] = crossings.get(key, 0) + 1
    assert crossings == {
        ("stop", "outbound", "out"): 3,
        ("stop", "inbound", "in"): 2,
        ("stop", "inbound", "out"): 1,
        ("exit", "", "out"): 4,
        ("exit", "", "in"): 2,
    }
    wrong = sorted((e.line, e.lane, e.direction) for e in found if e.kind == events.WRONG_WAY)
    assert wrong == [("exit", "", "in"), ("exit", "", "in"), ("stop", "inbound", "out")]
    # The live counts (/latest) carry the lane too.
    live = {
        (r["kind"], r["line"], r.get("lane", ""), r["direction"]): r["count"]
        for r in analyzer.counts.to_json()["totals"]
    }
    assert live[("crossing", "stop", "inbound", "in")] == 2
    assert live[("wrong_way", "stop", "inbound", "out")] == 1


def test_a_lane_must_start_before_it_ends() -> None:
    with pytest.raises(ValidationError, match="start must be before its end"):
        camera(lines=[ground_line("l", 30.0, lanes=[{"name": "a", "start": 0.6, "end": 0.2}])])


# 3 -- stopped vehicles and queues ---------------------------------------------------------


def ground_polygon(
    name: str, x0: float, y0: float, x1: float, y1: float, **f: Any
) -> dict[str, Any]:
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    return {"name": name, "polygon": [list(ts.HOMOGRAPHY.to_image(c)) for c in corners], **f}


def queue_scene() -> list[Vehicle]:
    """Three cars queue at a stop line (ground y 5, 12, 19) for 25 s, then drive off in
    order; one car drives past in the other lane; one pauses 1 s, too short to queue."""
    v = 10.0
    cars = [
        Vehicle((2.5, 59.0), [((0, -v), (59 - stop) / v), ((0, 0), 25.0), ((0, -v), 3.0)], at)
        for stop, at in ((5.0, 0.0), (12.0, 1.0), (19.0, 2.0))
    ]
    cars.append(Vehicle((7.5, 59.0), [((0, -v), 6.0)], appear_s=8.0))
    cars.append(
        Vehicle((7.5, 59.0), [((0, -v), 4.0), ((0, 0), 1.0), ((0, -v), 2.0)], appear_s=16.0)
    )
    return cars


STOPPED = {"speedKmh": 5.0, "queueDwellSeconds": 2.0, "eventSeconds": 20.0}


def test_queue_length_and_stopped_vehicle_events_follow_the_stopped_cars() -> None:
    cam = camera(regions=[ground_polygon("approach", 0, 0, 10, 25, stopped=STOPPED)])
    results = ts.run(cam, queue_scene(), 40.0)

    def queue_at(t: float) -> dict[str, Any]:
        r = min(results, key=lambda r: abs(r.media_time - t))
        assert r.traffic is not None
        return dict(r.traffic.to_json()["queues"]["approach"])

    # All three have stopped by 6.0 s; the speed window (1 s) and the 2 s dwell follow.
    early = queue_at(10.0)
    assert early["vehicles"] == 3
    assert abs(early["length_m"] - 14.0) / 14.0 <= 0.05, early
    assert queue_at(20.0)["vehicles"] == 3  # the passing car and the pause do not join
    assert max(len(r.traffic.queues[0].stopped) for r in results if r.traffic) == 3
    assert queue_at(39.0) == {"vehicles": 0, "length_m": 0.0, "stopped": []}
    incidents = [e for r in results for e in r.events if e.kind == events.STOPPED_VEHICLE]
    assert len(incidents) == 3
    assert len({e.track_id for e in incidents}) == 3
    for e, stopped_at in zip(
        sorted(incidents, key=lambda e: e.media_time), (5.4, 5.7, 6.0), strict=True
    ):
        assert e.region == "approach"
        assert stopped_at + 20.0 <= e.media_time <= stopped_at + 20.0 + 1.5, e
    samples = [e for r in results for e in r.events if e.kind == events.QUEUE]
    assert len(samples) == 40  # one per second of stream
    assert max(e.value or 0 for e in samples) == 3


def test_stop_dwell_must_be_positive_and_the_event_no_earlier_than_the_queue() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        camera(regions=[ground_polygon("r", 0, 0, 10, 25, stopped={"queueDwellSeconds": 0})])
    with pytest.raises(ValidationError, match="eventSeconds must not be less"):
        camera(
            regions=[
                ground_polygon(
                    "r", 0, 0, 10, 25, stopped={"queueDwellSeconds": 10, "eventSeconds": 5}
                )
            ]
        )


# 4 -- origin-destination ------------------------------------------------------------------


def test_turning_movements_are_counted_by_entry_and_exit_region() -> None:
    cam = camera(
        regions=[
            ground_polygon("south", 0, 0, 10, 12),
            ground_polygon("north", 0, 48, 10, 60),
            ground_polygon("east", 7, 25, 10, 35),
        ]
    )
    v = 12.0
    cars = [receding(2.5, at) for at in (0.0, 6.0, 12.0)]  # south -> north
    cars += [approaching(7.5, at) for at in (2.0, 9.0)]  # north -> south
    # Drives north, then turns east at y = 30 and leaves the picture through "east".
    cars.append(Vehicle((2.5, 1.0), [((0, v), 29.0 / v), ((v, 0), 10.0 / v)], appear_s=16.0))
    # Appears mid-road and only ever reaches "north": no movement this camera can name.
    cars.append(Vehicle((2.5, 30.0), [((0, v), 30.0 / v)], appear_s=20.0))
    results = ts.run(cam, cars, 26.0)
    moves: dict[tuple[str, str], int] = {}
    for e in (e for r in results for e in r.events if e.kind == events.OD):
        moves[(e.region, e.destination)] = moves.get((e.region, e.destination), 0) + 1
    assert moves == {("south", "north"): 3, ("north", "south"): 2, ("south", "east"): 1}


# 5 -- congestion --------------------------------------------------------------------------


def level_at_end(cars: list[Vehicle], seconds: float) -> str:
    results = ts.run(camera(), cars, seconds)
    assert results[-1].traffic is not None
    return results[-1].traffic.congestion.level


def test_congestion_level_follows_vehicles_and_their_ground_speed() -> None:
    fast = [receding(x, at) for x in (2.5, 7.5) for at in (0.0, 1.5, 3.0)]  # 54 km/h
    assert level_at_end(fast, 4.0) == "free"
    slow = [
        Vehicle((x, 1.0 + 6 * k), [((0.0, 5.5), 20.0)]) for x in (2.5, 7.5) for k in range(3)
    ]  # 6 vehicles at ~20 km/h
    assert level_at_end(slow, 8.0) == "heavy"
    assert level_at_end(queue_scene()[:3], 20.0) == "congested"  # three stopped cars
    # One car waiting alone is not congestion.
    assert level_at_end(queue_scene()[:1], 20.0) == "free"


def test_congestion_is_exported_as_a_metric() -> None:
    from its_runtime.observability import dataplane_stats, metrics

    results = ts.run(camera(), queue_scene()[:3], 20.0)
    assert results[-1].traffic is not None
    results[-1].traffic.report("cam-congestion", dataplane_stats.PrometheusAnalytics())
    sample = metrics.REGISTRY.get_sample_value(
        "its_analytics_congestion_level", {"camera": "cam-congestion"}
    )
    assert sample == 2.0
    latest = results[-1].traffic.to_json()
    assert latest["congestion"]["level"] == "congested"
