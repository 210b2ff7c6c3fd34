"""Line crossing with direction, per counting line, from tracks' bottom-centre paths.

A crossing is a change of side of the line between two observations of a track whose
move between them passes through the drawn segment (not just its extension). Two
details make the count exact rather than noisy:

* **Hysteresis.** Positions within ``hysteresis`` of the line do not count as a side,
  so a box whose bottom edge jitters on the line does not count back and forth.
* **Interpolated time.** The event time is where the move meets the line, linearly
  between the two observations, so the time does not depend on which frames were
  dropped.

Direction: from the left-hand side to the right-hand side of start->end is ``in``
(see :mod:`its_runtime.dataplane.analytics.geometry` for the sign convention).

**Lanes and wrong way.** A line may be split into named lanes, each a stretch of the
segment (fractions from start to end); a crossing carries the lane it passed through,
found from the same intersection parameter that decides whether the move crossed the
segment at all, so lane counts always add up to the line's count. A lane (or the whole
line) may allow one direction; a crossing the other way is flagged ``wrong_way``.
"""

from __future__ import annotations

from dataclasses import dataclass

from its_runtime.config import CountingLine
from its_runtime.dataplane.analytics import geometry
from its_runtime.dataplane.analytics.geometry import Point

IN = "in"
OUT = "out"


@dataclass(frozen=True)
class LineCrossing:
    line: str
    direction: str
    track_id: int
    #: Interpolated stream time of the crossing.
    media_time: float
    #: Fraction (0..1) between the two observations where the crossing happened.
    fraction: float
    #: The lane crossed ('' for a line without lanes, or between lanes).
    lane: str = ""
    #: The crossing went against the lane's (or line's) allowed direction.
    wrong_way: bool = False


@dataclass
class _SideState:
    sign: int
    point: Point
    time: float


class LineCounter:
    """Detects crossings of one counting line by any number of tracks."""

    def __init__(self, line: CountingLine, *, hysteresis: float = 0.003) -> None:
        self.line = line
        self.start: Point = (line.start.x, line.start.y)
        self.end: Point = (line.end.x, line.end.y)
        self._hysteresis = hysteresis
        self._state: dict[int, _SideState] = {}
        #: A track's latest position when it lies inside the band (see ``settle``).
        self._in_band: dict[int, _SideState] = {}

    def observe(
        self, track_id: int, point: Point, t: float, *, band: float = 0.0
    ) -> LineCrossing | None:
        """Record a track's position; returns the crossing if this move made one.

        ``band`` widens the hysteresis for this observation (the analyzer passes a
        fraction of the box height: detector jitter scales with the box).
        """
        distance = geometry.side(self.start, self.end, point)
        if abs(distance) <= max(band, self._hysteresis):
            if distance != 0:
                self._in_band[track_id] = _SideState(1 if distance > 0 else -1, point, t)
            return None
        self._in_band.pop(track_id, None)
        return self._move(track_id, point, t, distance)

    def settle(self, track_id: int) -> LineCrossing | None:
        """The crossing of a track whose last position is past the line but still inside
        the band, at the end of its stream: no later frame can take it further."""
        last = self._in_band.pop(track_id, None)
        if last is None or abs(geometry.side(self.start, self.end, last.point)) <= self._hysteresis:
            return None
        return self._move(
            track_id, last.point, last.time, geometry.side(self.start, self.end, last.point)
        )

    def _move(self, track_id: int, point: Point, t: float, distance: float) -> LineCrossing | None:
        sign = 1 if distance > 0 else -1
        state = self._state.get(track_id)
        if state is None:
            self._state[track_id] = _SideState(sign, point, t)
            return None
        crossing: LineCrossing | None = None
        if sign != state.sign:
            u = geometry.segment_parameter(self.start, self.end, state.point, point)
            if u is not None and -1e-9 <= u <= 1.0 + 1e-9:
                before = abs(geometry.side(self.start, self.end, state.point))
                frac = before / (before + abs(distance))
                direction = IN if state.sign < 0 else OUT
                lane, allowed = self._lane_at(u)
                crossing = LineCrossing(
                    line=self.line.name,
                    direction=direction,
                    track_id=track_id,
                    media_time=state.time + (t - state.time) * frac,
                    fraction=frac,
                    lane=lane,
                    wrong_way=allowed is not None and direction != allowed,
                )
        self._state[track_id] = _SideState(sign, point, t)
        return crossing

    def _lane_at(self, u: float) -> tuple[str, str | None]:
        """The lane at fraction ``u`` along the line, and the direction allowed there."""
        for lane in self.line.lanes:
            if lane.start <= u <= lane.end:
                return lane.name, lane.allowed_direction or self.line.allowed_direction
        return "", self.line.allowed_direction

    def forget(self, track_id: int) -> None:
        self._state.pop(track_id, None)
        self._in_band.pop(track_id, None)
