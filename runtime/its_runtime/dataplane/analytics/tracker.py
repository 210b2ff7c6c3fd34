"""Multi-object tracking per camera, ByteTrack-style, on IoU with motion prediction.

Why this shape:

* **Two-stage association (ByteTrack).** Confident detections are matched first;
  left-over tracks then get a second chance against low-score detections, which are
  usually the same vehicle partly occluded or blurred. Low-score detections never
  start tracks, so noise does not become objects.
* **Constant-velocity prediction.** Matching uses each track's box moved by its
  velocity to the new frame's time. Frames are dropped on purpose when inference
  falls behind (newest wins), so gaps of several frames are normal; prediction keeps
  IoU high across them.
* **Time, not frame counts.** Track loss and velocities are measured on the stream
  clock, so behaviour does not change with the camera's frame rate or with drops.
* **Tentative tracks.** A track is confirmed after ``min_hits`` matches; only
  confirmed tracks are reported, which filters one-frame false positives.
* **Greedy matching** by descending IoU: with the handful of objects a traffic camera
  sees per frame it matches the Hungarian result in practice and needs no SciPy.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from its_runtime.config import DEFAULT_TRACKER, TrackerKind
from its_runtime.dataplane.analytics import geometry
from its_runtime.dataplane.analytics.geometry import FloatArray
from its_runtime.detections import Detections


@dataclass
class Track:
    track_id: int
    box: FloatArray
    score: float
    first_time: float
    last_time: float
    hits: int = 1
    confirmed: bool = False
    velocity: FloatArray = field(default_factory=lambda: np.zeros(4, dtype=np.float64))
    class_votes: dict[int, float] = field(default_factory=dict)
    #: (media time, bottom-centre x, bottom-centre y), newest last.
    history: collections.deque[tuple[float, float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=256)
    )

    @property
    def class_id(self) -> int:
        """The class with the most score-weighted votes over the track's life."""
        return max(self.class_votes.items(), key=lambda kv: kv[1])[0] if self.class_votes else 0

    def predicted(self, t: float) -> FloatArray:
        out: FloatArray = self.box + self.velocity * max(0.0, t - self.last_time)
        return out

    def vote(self, class_id: int, score: float) -> None:
        self.class_votes[class_id] = self.class_votes.get(class_id, 0.0) + score


@dataclass(frozen=True)
class TrackerStep:
    #: Confirmed tracks matched on this frame.
    active: list[Track]
    #: Tracks confirmed on this frame (new objects).
    confirmed: list[Track]
    #: Tentative tracks matched on this frame (not yet reported as objects).
    tentative: list[Track]
    #: Tracks given up on this frame (lost longer than ``max_lost_s``).
    removed: list[Track]


@dataclass(frozen=True)
class TrackerSettings:
    #: Which tracker (see ``tracking.build``); the other fields configure all of them.
    kind: TrackerKind = DEFAULT_TRACKER
    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.4
    min_hits: int = 3
    max_lost_s: float = 1.0
    tentative_lost_s: float = 0.3
    velocity_smoothing: float = 0.5
    #: A newly confirmed track takes over a confirmed one lost less than this long ago
    #: at its predicted place (``tracking.StableTracks``); 0 turns that off.
    reidentify_s: float = 1.0


class Tracker:
    """Tracks objects of one camera; ``update`` once per analysed frame, in time order."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self._tracks: list[Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)

    def update(self, detections: Detections, t: float) -> TrackerStep:
        s = self.settings
        boxes = detections.boxes.astype(np.float64)
        scores = detections.scores.astype(np.float64)
        classes = detections.classes
        high = np.flatnonzero(scores >= s.high_score)
        low = np.flatnonzero((scores >= s.low_score) & (scores < s.high_score))

        matched: dict[int, int] = {}  # track index -> detection index
        pool = list(range(len(self._tracks)))
        predicted = (
            np.stack([tr.predicted(t) for tr in self._tracks]) if self._tracks else np.zeros((0, 4))
        )
        first = _greedy(predicted[pool], boxes[high], s.match_iou)
        for ti, di in first:
            matched[pool[ti]] = int(high[di])
        rest = [i for i in pool if i not in matched and self._tracks[i].confirmed]
        second = _greedy(predicted[rest], boxes[low], s.low_match_iou)
        for ti, di in second:
            matched[rest[ti]] = int(low[di])

        step_confirmed: list[Track] = []
        for ti, di in matched.items():
            track = self._tracks[ti]
            self._apply(track, boxes[di], float(scores[di]), int(classes[di]), t)
            if not track.confirmed and track.hits >= s.min_hits:
                track.confirmed = True
                step_confirmed.append(track)

        used = set(matched.values())
        for di in (int(i) for i in high):
            if di in used or scores[di] < s.new_track_score:
                continue
            track = Track(
                track_id=self._next_id,
                box=boxes[di].copy(),
                score=float(scores[di]),
                first_time=t,
                last_time=t,
            )
            self._next_id += 1
            track.vote(int(classes[di]), float(scores[di]))
            track.history.append((t, *geometry.bottom_centre(track.box)))
            if s.min_hits <= 1:
                track.confirmed = True
                step_confirmed.append(track)
            self._tracks.append(track)

        removed: list[Track] = []
        kept: list[Track] = []
        for track in self._tracks:
            limit = s.max_lost_s if track.confirmed else s.tentative_lost_s
            if t - track.last_time > limit:
                removed.append(track)
            else:
                kept.append(track)
        self._tracks = kept
        updated = [tr for tr in kept if tr.last_time == t]
        return TrackerStep(
            active=[tr for tr in updated if tr.confirmed],
            confirmed=step_confirmed,
            tentative=[tr for tr in updated if not tr.confirmed],
            removed=removed,
        )

    def _apply(self, track: Track, box: FloatArray, score: float, cls: int, t: float) -> None:
        dt = t - track.last_time
        if dt > 0:
            instant = (box - track.box) / dt
            a = self.settings.velocity_smoothing
            track.velocity = instant if track.hits == 1 else a * instant + (1 - a) * track.velocity
        track.box = box.copy()
        track.score = score
        track.last_time = t
        track.hits += 1
        track.vote(cls, score)
        track.history.append((t, *geometry.bottom_centre(box)))


def _greedy(tracks: FloatArray, dets: FloatArray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (track row, detection row) by descending IoU, each used once, IoU >= threshold."""
    iou = geometry.iou_matrix(tracks, dets)
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    out: list[tuple[int, int]] = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        out.append((r, c))
    return out
