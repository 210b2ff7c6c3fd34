"""The tracker a camera uses, chosen by name, behind one contract with stable ids.

Why an adapter: the analyzer's contract is :class:`~.tracker.TrackerStep` — confirmed
tracks (and, from our tracker, tentative ones whose crossings it holds back), each a
:class:`~.tracker.Track` with a stable id, a class voted over its life and a
bottom-centre history for speed. The ``trackers`` package (Apache-2.0; ByteTrack,
SORT, OC-SORT with Kalman motion, maintained and tested against the MOT benchmarks)
takes ``supervision`` detections and answers with tracker ids; ours (``iou``) answers
with its own tracks. Both are read as *raw* tracks here, and :class:`StableTracks`
turns them into the steps the analyzer takes, so line counting, regions and speed do
not know which tracker ran.

**Re-identification on re-appearance.** A detector that misses a vehicle for a few
frames right as it starts or stops (its box barely moves, then the motion model is
wrong) makes every tracker start a new track for the same vehicle. Line counting is
per track, so a vehicle lost on the line is never counted, or counted twice. When a
raw track is confirmed, it takes over the id of a confirmed track lost less than
``reidentify_s`` ago whose last or motion-predicted bottom-centre is within 0.75 box heights
(and whose size matches), instead of becoming a new object; the old raw track is
retired. ``benchmarks/accuracy.py`` measures each tracker with and without it.

The library is imported only when a library tracker is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from its_runtime.config import DEFAULT_TRACKER, TrackerKind
from its_runtime.dataplane.analytics import geometry
from its_runtime.dataplane.analytics.geometry import FloatArray
from its_runtime.dataplane.analytics.tracker import Track, Tracker, TrackerSettings, TrackerStep
from its_runtime.detections import Detections

__all__ = ["DEFAULT_TRACKER", "ObjectTracker", "StableTracks", "TrackerKind", "build"]

#: Re-identification gate: bottom-centre distance as a fraction of the box height,
#: and the largest height ratio between the lost box and the new one.
REID_DISTANCE = 0.75
REID_SIZE_RATIO = 1.5


class ObjectTracker(Protocol):
    def update(self, detections: Detections, t: float) -> TrackerStep: ...


def build(settings: TrackerSettings | None = None) -> ObjectTracker:
    """The tracker ``settings.kind`` names, with stable ids, from the same settings."""
    s = settings or TrackerSettings()
    source: _Source = _Ours(Tracker(s)) if s.kind == "iou" else _Library(s)
    return StableTracks(source, s)


@dataclass(frozen=True)
class RawTrack:
    raw_id: int
    box: FloatArray
    score: float
    class_id: int
    confirmed: bool


class _Source(Protocol):
    def update(self, detections: Detections, t: float) -> list[RawTrack]: ...


class StableTracks:
    """Raw tracks of any tracker -> the analyzer's steps, with re-identification."""

    def __init__(self, source: _Source, settings: TrackerSettings) -> None:
        self.settings = settings
        self._source = source
        self._by_raw: dict[int, Track] = {}
        self._retired: dict[int, float] = {}
        self._stable: dict[int, Track] = {}

    @property
    def tracks(self) -> list[Track]:
        return list(self._stable.values())

    def update(self, detections: Detections, t: float) -> TrackerStep:
        s = self.settings
        confirmed: list[Track] = []
        active: list[Track] = []
        tentative: list[Track] = []
        removed: list[Track] = []
        seen: set[int] = set()
        for raw in self._source.update(detections, t):
            if raw.raw_id in self._retired:
                continue
            track = self._by_raw.get(raw.raw_id)
            if track is not None and raw.confirmed and not track.confirmed:
                # Confirmed now: a lost track coming back, or a new object.
                old = self._reidentify(raw, t, seen)
                self._stable.pop(track.track_id, None)
                if old is not None:
                    removed.append(track)  # the tentative one: drop its held crossings
                    track = old
                else:
                    track.confirmed = True
                    confirmed.append(track)
                self._by_raw[raw.raw_id] = track
                self._stable[track.track_id] = track
            elif track is None:
                old = self._reidentify(raw, t, seen) if raw.confirmed else None
                if old is not None:
                    track = old
                else:
                    track = Track(raw.raw_id, raw.box.copy(), raw.score, t, t, hits=0)
                    track.confirmed = raw.confirmed
                    if raw.confirmed:
                        confirmed.append(track)
                self._by_raw[raw.raw_id] = track
                self._stable[track.track_id] = track
            _follow(track, raw, t, s.velocity_smoothing)
            seen.add(track.track_id)
            (active if track.confirmed else tentative).append(track)
        for track in list(self._stable.values()):
            limit = s.max_lost_s if track.confirmed else s.tentative_lost_s
            if t - track.last_time > limit:
                removed.append(track)
                del self._stable[track.track_id]
        self._by_raw = {
            r: tr for r, tr in self._by_raw.items() if self._stable.get(tr.track_id) is tr
        }
        # A raw tracker forgets a lost track within max_lost_s; so can we.
        horizon = t - 2.0 * max(s.max_lost_s, s.reidentify_s)
        self._retired = {r: when for r, when in self._retired.items() if when >= horizon}
        return TrackerStep(active=active, confirmed=confirmed, tentative=tentative, removed=removed)

    def _reidentify(self, raw: RawTrack, t: float, seen: set[int]) -> Track | None:
        """The lost confirmed track this newly confirmed one most likely is, if any."""
        s = self.settings
        if s.reidentify_s <= 0.0:
            return None
        x, y = geometry.bottom_centre(raw.box)
        h = float(raw.box[3] - raw.box[1])
        best: tuple[float, Track] | None = None
        for track in self._stable.values():
            dt = t - track.last_time
            if not track.confirmed or track.track_id in seen or dt <= 0 or dt > s.reidentify_s:
                continue
            old_h = float(track.box[3] - track.box[1])
            if h <= 0 or old_h <= 0 or max(h, old_h) / min(h, old_h) > REID_SIZE_RATIO:
                continue
            # Nearer of where it was last seen and where its motion puts it now: a
            # false positive that took over the track for its last frames skews both.
            lx, ly = geometry.bottom_centre(track.box)
            px, py = _predicted_bottom_centre(track, t)
            distance = min(math.hypot(px - x, py - y), math.hypot(lx - x, ly - y))
            if distance <= REID_DISTANCE * max(h, old_h) and (best is None or distance < best[0]):
                best = (distance, track)
        if best is None:
            return None
        for raw_id, tr in self._by_raw.items():
            if tr is best[1]:
                self._retired[raw_id] = t
        return best[1]


def _predicted_bottom_centre(track: Track, t: float) -> tuple[float, float]:
    """Where the track's bottom-centre is now, from its motion over the last 0.5 s
    (a window, not the last step: per-frame velocity is mostly box jitter)."""
    hist = track.history
    t1, x1, y1 = hist[-1]
    t0, x0, y0 = hist[0]
    for sample in reversed(hist):
        t0, x0, y0 = sample
        if t1 - t0 >= 0.5:
            break
    if t1 - t0 <= 0:
        return (x1, y1)
    dt = t - t1
    return (x1 + (x1 - x0) / (t1 - t0) * dt, y1 + (y1 - y0) / (t1 - t0) * dt)


def _follow(track: Track, raw: RawTrack, t: float, smoothing: float) -> None:
    dt = t - track.last_time
    if dt > 0 and track.hits > 0:
        instant = (raw.box - track.box) / dt
        track.velocity = smoothing * instant + (1 - smoothing) * track.velocity
    track.box = raw.box.copy()
    track.score = raw.score
    track.last_time = t
    track.hits += 1
    track.vote(raw.class_id, raw.score)
    track.history.append((t, *geometry.bottom_centre(raw.box)))


class _Ours:
    """Our IoU tracker's matched tracks this frame, confirmed and tentative."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def update(self, detections: Detections, t: float) -> list[RawTrack]:
        step = self.tracker.update(detections, t)
        return [
            RawTrack(tr.track_id, tr.box, tr.score, tr.class_id, tr.confirmed)
            for tr in step.active + step.tentative
        ]


class _Library:
    """A ``trackers`` tracker (bytetrack, sort, ocsort); it reports confirmed tracks only."""

    def __init__(self, settings: TrackerSettings) -> None:
        self.settings = settings
        self._impl = _library_tracker(settings)

    def update(self, detections: Detections, t: float) -> list[RawTrack]:
        import supervision as sv  # the library's own input type

        keep = detections.scores >= self.settings.low_score
        inputs = sv.Detections(
            xyxy=detections.boxes[keep].astype(np.float32),
            confidence=detections.scores[keep].astype(np.float32),
            class_id=detections.classes[keep].astype(int),
        )
        out = self._impl.update(inputs, timestamp=t)
        if out.tracker_id is None:
            return []
        ids = np.asarray(out.tracker_id, dtype=int)
        conf = out.confidence if out.confidence is not None else np.ones(len(ids))
        cls = out.class_id if out.class_id is not None else np.zeros(len(ids), dtype=int)
        return [
            RawTrack(
                int(ids[i]),
                np.asarray(out.xyxy[i], dtype=np.float64),
                float(conf[i]),
                int(cls[i]),
                True,
            )
            for i in np.flatnonzero(ids >= 0)
        ]


def _library_tracker(s: TrackerSettings) -> Any:
    import trackers

    # The library counts its lost buffer in 30 FPS frames and, given timestamps,
    # measures it in seconds: max_lost_s maps onto it exactly.
    buffer = max(1, round(s.max_lost_s * 30.0))
    if s.kind == "bytetrack":
        return trackers.ByteTrackTracker(
            lost_track_buffer=buffer,
            track_activation_threshold=s.new_track_score,
            minimum_consecutive_frames=s.min_hits,
            minimum_iou_threshold=s.match_iou,
            high_conf_det_threshold=s.high_score,
        )
    if s.kind == "sort":
        return trackers.SORTTracker(
            lost_track_buffer=buffer,
            track_activation_threshold=s.new_track_score,
            minimum_consecutive_frames=s.min_hits,
            minimum_iou_threshold=s.match_iou,
        )
    if s.kind == "ocsort":
        return trackers.OCSORTTracker(
            lost_track_buffer=buffer,
            minimum_consecutive_frames=s.min_hits,
            minimum_iou_threshold=s.match_iou,
            high_conf_det_threshold=s.high_score,
        )
    raise ValueError(f"unknown tracker {s.kind!r}")
