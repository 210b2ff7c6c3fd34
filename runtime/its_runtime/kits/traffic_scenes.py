"""Traffic scenes with known tracks and closed-form truth, for accuracy checks.

The colour-box scenes of :mod:`its_runtime.kits.synth` are detected perfectly in every
frame, so they cannot show where counting goes wrong with a real detector. Here no
pixels are drawn at all: each vehicle is a piecewise-linear path of its bottom-centre
(stops are two waypoints at one place), the true boxes follow from it, and
:class:`~its_runtime.kits.detector_noise.Noise` turns the true boxes of each frame into
what a real detector reports (missed, hidden, jittered, false positives, straddling
scores, dropped frames), seeded and repeatable.

Truth is computed from the paths in closed form (crossings of each counting line by the
bottom-centre, in which direction, per class), independently of the counting code
under test. ``benchmarks/accuracy.py`` sweeps the noise knobs over all scenes;
``tests/dataplane/test_accuracy.py`` runs a few seeds at the goal noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from its_runtime.config import CameraConfig, CountingLine, Point, Region

CLASS_NAMES = ("car", "truck")
CAR, TRUCK = 0, 1
#: (width, height), normalised. A truck is tall and wide: it hides a car beside it.
SIZES: dict[int, tuple[float, float]] = {CAR: (0.06, 0.08), TRUCK: (0.16, 0.22)}
#: A vehicle less visible than this (the rest hidden by nearer boxes) is not detected.
MIN_VISIBLE = 0.5
#: The counting line most scenes use: across the road, vehicles driving down are "in".
ACROSS = CountingLine(name="across", start=Point(x=0.0, y=0.6), end=Point(x=1.0, y=0.6))

Waypoint = tuple[float, float, float]  # (t, x, y) of the bottom-centre
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Vehicle:
    vehicle_id: int
    class_id: int
    path: tuple[Waypoint, ...]

    @property
    def start(self) -> float:
        return self.path[0][0]

    @property
    def end(self) -> float:
        return self.path[-1][0]

    def position(self, t: float) -> tuple[float, float] | None:
        if t < self.start or t > self.end:
            return None
        for (t0, x0, y0), (t1, x1, y1) in zip(self.path, self.path[1:], strict=False):
            if t0 <= t <= t1:
                f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)
        return (self.path[-1][1], self.path[-1][2])

    def box(self, t: float) -> Box | None:
        p = self.position(t)
        if p is None:
            return None
        w, h = SIZES[self.class_id]
        return (p[0] - w / 2, p[1] - h, p[0] + w / 2, p[1])


@dataclass(frozen=True)
class Scene:
    name: str
    vehicles: tuple[Vehicle, ...]
    lines: tuple[CountingLine, ...]
    regions: tuple[Region, ...] = ()
    duration_s: float = 60.0
    fps: float = 15.0

    def camera(self) -> CameraConfig:
        return CameraConfig(
            name=self.name.replace("_", "-"),
            url="file:///dev/null",
            fps=self.fps,
            lines=list(self.lines),
            regions=list(self.regions),
        )

    def times(self) -> list[float]:
        return [i / self.fps for i in range(int(self.duration_s * self.fps))]

    def truth_boxes(self, t: float) -> list[tuple[int, int, Box]]:
        """(vehicle id, class id, box) of every vehicle present at ``t``."""
        out: list[tuple[int, int, Box]] = []
        for v in self.vehicles:
            b = v.box(t)
            if b is not None:
                out.append((v.vehicle_id, v.class_id, b))
        return out


CountKey = tuple[str, str, str]  # (line, direction, class name)


def true_counts(scene: Scene) -> dict[CountKey, int]:
    """Crossings of each line by each path, from the waypoints (no sampling, no tracker).

    A stretch of path with no move (a stop) is skipped, so a vehicle that halts exactly
    on the line and drives on crosses once.
    """
    counts: dict[CountKey, int] = {}
    for line in scene.lines:
        a, b = (line.start.x, line.start.y), (line.end.x, line.end.y)
        for v in scene.vehicles:
            pts = [(x, y) for _, x, y in v.path]
            sides = [_side(a, b, p) for p in pts]
            last = 0.0
            last_p = pts[0]
            for p, s in zip(pts, sides, strict=True):
                if s == 0.0:
                    continue
                if last != 0.0 and (s > 0) != (last > 0) and _within(a, b, last_p, p):
                    key = (line.name, "in" if last < 0 else "out", CLASS_NAMES[v.class_id])
                    counts[key] = counts.get(key, 0) + 1
                last, last_p = s, p
    return counts


def true_occupancy(scene: Scene, t: float, inside: Callable[[str, float, float], bool]) -> int:
    """Vehicles whose bottom-centre is inside any region at ``t`` (``inside(name, x, y)``)."""
    n = 0
    for v in scene.vehicles:
        p = v.position(t)
        if p is not None:
            n += sum(1 for r in scene.regions if inside(r.name, p[0], p[1]))
    return n


def _side(a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _within(
    a: tuple[float, float], b: tuple[float, float], p0: tuple[float, float], p1: tuple[float, float]
) -> bool:
    """Whether the move p0->p1 meets the drawn segment a-b (not only its extension)."""
    return (_side(p0, p1, a) > 0) != (_side(p0, p1, b) > 0)


# -- scenes -----------------------------------------------------------------------------

TOP, BOTTOM = 0.12, 1.0
DOWN_LANES = (0.38, 0.46)
UP_LANES = (0.56, 0.64)


def _straight(x: float, y0: float, y1: float, t0: float, speed: float) -> tuple[Waypoint, ...]:
    return ((t0, x, y0), (t0 + abs(y1 - y0) / speed, x, y1))


def _stream(
    rng: np.random.Generator, lanes: tuple[float, ...], down: bool, duration: float, gap: float
) -> list[tuple[int, tuple[Waypoint, ...]]]:
    out: list[tuple[int, tuple[Waypoint, ...]]] = []
    y0, y1 = (TOP, BOTTOM) if down else (BOTTOM, TOP)
    for lane in lanes:
        t = float(rng.uniform(0.0, gap))
        lane_speed = float(rng.uniform(0.12, 0.22))
        while t < duration - 8.0:
            cls = TRUCK if rng.random() < 0.15 else CAR
            # Speeds vary by 5 % within a lane, too little to drive through the car ahead.
            speed = lane_speed * float(rng.uniform(0.95, 1.05))
            out.append((cls, _straight(lane, y0, y1, t, speed)))
            t += gap * float(rng.uniform(0.7, 1.5)) + 1.0 / speed * SIZES[cls][1] * 2
    return out


def _scene(
    name: str,
    paths: list[tuple[int, tuple[Waypoint, ...]]],
    lines: tuple[CountingLine, ...],
    regions: tuple[Region, ...] = (),
) -> Scene:
    vehicles = tuple(Vehicle(i + 1, cls, path) for i, (cls, path) in enumerate(paths))
    return Scene(name=name, vehicles=vehicles, lines=lines, regions=regions)


def free_flow(seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    paths = _stream(rng, DOWN_LANES, True, 60.0, 3.0) + _stream(rng, UP_LANES, False, 60.0, 3.0)
    return _scene("free_flow", paths, lines=(ACROSS,))


def queue(seed: int) -> Scene:
    """A red light at the counting line: a dense queue builds and leaves, three cycles.

    The head of each queue stops with its bottom edge exactly on the line: jitter
    puts it on both sides for the whole red phase (the double-count trap).
    """
    rng = np.random.default_rng(seed)
    paths: list[tuple[int, tuple[Waypoint, ...]]] = []
    stop_y, cycle, red = 0.6, 20.0, 12.0
    for lane in DOWN_LANES:
        for c in range(3):
            green = c * cycle + red
            y_stop = stop_y
            for k in range(5):
                cls = TRUCK if k == 3 and lane == DOWN_LANES[1] else CAR
                arrive = c * cycle + 1.5 * k + float(rng.uniform(0.0, 0.8))
                speed = 0.18
                t_stop = min(arrive + (y_stop - TOP) / speed, green + 0.8 * k - 0.1)
                depart = green + 0.8 * k
                path = (
                    (arrive, lane, TOP),
                    (t_stop, lane, y_stop),
                    (depart, lane, y_stop),
                    (depart + (BOTTOM - y_stop) / speed, lane, BOTTOM),
                )
                paths.append((cls, path))
                y_stop -= SIZES[cls][1] + 0.006
    return _scene("queue", paths, lines=(ACROSS,))


def occlusion(seed: int) -> Scene:
    """Trucks overtake cars in the next lane and hide them while they cross the line."""
    rng = np.random.default_rng(seed)
    paths: list[tuple[int, tuple[Waypoint, ...]]] = []
    for k in range(8):
        t0 = 6.0 * k + float(rng.uniform(0.0, 1.0))
        car_speed = float(rng.uniform(0.11, 0.13))
        paths.append((CAR, _straight(0.40, TOP, BOTTOM, t0, car_speed)))
        # The truck starts behind and passes the car around the line.
        truck_speed = car_speed + 0.08
        meet = (0.55 - TOP) / car_speed
        truck_t0 = t0 + meet - (0.55 - TOP) / truck_speed
        paths.append((TRUCK, _straight(0.50, TOP, BOTTOM, truck_t0, truck_speed)))
    return _scene("occlusion", paths, lines=(ACROSS,))


def stop_and_go(seed: int) -> Scene:
    """Slow traffic that halts and moves on again, some halts on or beside the line.

    The cars of a lane share one stop pattern, one headway apart (longer than a halt),
    so none drives through the car ahead of it.
    """
    rng = np.random.default_rng(seed)
    paths: list[tuple[int, tuple[Waypoint, ...]]] = []
    speed = 0.15
    for lane in DOWN_LANES:
        stops = [(0.35, float(rng.uniform(1.0, 3.0)))]
        stops.append((float(rng.choice([0.58, 0.6, 0.62])), float(rng.uniform(1.0, 3.0))))
        stops.append((0.8, float(rng.uniform(1.0, 3.0))))
        headway = max(d for _, d in stops) + 1.0
        t = float(rng.uniform(0.0, 1.0))
        for _ in range(10):
            pts: list[Waypoint] = [(t, lane, TOP)]
            y, now = TOP, t
            for y_stop, halt in stops:
                now += (y_stop - y) / speed
                pts.append((now, lane, y_stop))
                now += halt
                pts.append((now, lane, y_stop))
                y = y_stop
            pts.append((now + (BOTTOM - y) / speed, lane, BOTTOM))
            paths.append((CAR, tuple(pts)))
            t += headway * float(rng.uniform(1.0, 1.3))
    return _scene("stop_and_go", paths, lines=(ACROSS,))


def lane_change(seed: int) -> Scene:
    """Vehicles change lanes while they cross the line, and a short line covers one lane."""
    rng = np.random.default_rng(seed)
    paths: list[tuple[int, tuple[Waypoint, ...]]] = []
    t = 0.0
    while t < 50.0:
        a, b = DOWN_LANES if rng.random() < 0.5 else DOWN_LANES[::-1]
        speed = 0.17 * float(rng.uniform(0.97, 1.03))
        t1 = t + (0.5 - TOP) / speed
        t2 = t1 + 0.25 / speed
        end = t2 + (BOTTOM - 0.75) / speed
        pts = ((t, a, TOP), (t1, a, 0.5), (t2, b, 0.75), (end, b, BOTTOM))
        paths.append((TRUCK if rng.random() < 0.15 else CAR, pts))
        t += float(rng.uniform(1.5, 3.0))
    lane_line = CountingLine(name="left-lane", start=Point(x=0.30, y=0.6), end=Point(x=0.42, y=0.6))
    return _scene("lane_change", paths, lines=(ACROSS, lane_line))


def turning(seed: int) -> Scene:
    """A junction: vehicles come up the road and turn right, or go on straight.

    Two regions (the approach and the exit arm) and a line across the exit arm.
    """
    rng = np.random.default_rng(seed)
    paths: list[tuple[int, tuple[Waypoint, ...]]] = []
    t = 0.0
    while t < 50.0:
        speed = 0.15 * float(rng.uniform(0.95, 1.05))
        x = UP_LANES[0]
        t1 = t + (BOTTOM - 0.45) / speed
        pts: tuple[Waypoint, ...]
        if rng.random() < 0.6:  # turn right, leave through the right edge
            t2 = t1 + 0.25 / speed
            pts = ((t, x, BOTTOM), (t1, x, 0.45), (t2, 0.78, 0.38), (t2 + 0.2 / speed, 0.98, 0.38))
        else:
            pts = ((t, x, BOTTOM), (t1, x, 0.45), (t1 + 0.3 / speed, x, 0.15))
        paths.append((CAR if rng.random() < 0.85 else TRUCK, pts))
        t += float(rng.uniform(2.0, 3.5))
    exit_line = CountingLine(name="exit", start=Point(x=0.85, y=0.25), end=Point(x=0.85, y=0.5))
    regions = (
        Region(name="approach", polygon=[Point(x=x, y=y) for x, y in _rect(0.5, 0.6, 0.7, 1.0)]),
        Region(name="exit-arm", polygon=[Point(x=x, y=y) for x, y in _rect(0.7, 0.3, 1.0, 0.45)]),
    )
    return _scene("turning", paths, lines=(ACROSS, exit_line), regions=regions)


def wrong_way(seed: int) -> Scene:
    """Downhill traffic with, now and then, a driver coming up the down lanes."""
    rng = np.random.default_rng(seed)
    paths = _stream(rng, DOWN_LANES[:1], True, 60.0, 3.0)
    for k in range(5):
        t0 = 4.0 + 10.0 * k + float(rng.uniform(0.0, 2.0))
        paths.append((CAR, _straight(DOWN_LANES[1], BOTTOM, TOP, t0, 0.15)))
    return _scene("wrong_way", paths, lines=(ACROSS,))


def _rect(x1: float, y1: float, x2: float, y2: float) -> list[tuple[float, float]]:
    return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]


SCENES: dict[str, Callable[[int], Scene]] = {
    "free_flow": free_flow,
    "queue": queue,
    "occlusion": occlusion,
    "stop_and_go": stop_and_go,
    "lane_change": lane_change,
    "turning": turning,
    "wrong_way": wrong_way,
}


def relative_error(counted: int, true: int) -> float:
    """|counted - true| / true; a count where none was true is an error of 1 per count."""
    if true == 0:
        return float(counted)
    return abs(counted - true) / true
