"""Per-camera ingestion statistics, kept twice: as numbers and as observer reports.

The numbers feed ``/latest`` and readiness details (a human asks "is camera 3 live,
and how far behind is it?"); the reports go to an
:class:`~its_runtime.observability.dataplane_stats.IngestObserver` (by default the
Prometheus one, for dashboards and alerts). Updating both from one place keeps them
from disagreeing. Error texts are redacted on the way in (:mod:`its_runtime.redaction`):
FFmpeg's name the URL they failed on, credentials included. Counters are touched from
the decode thread and from the event loop, hence the lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from its_runtime import redaction
from its_runtime.dataplane.ingest.decision import DecodeDecision
from its_runtime.observability import dataplane_stats


class RateMeter:
    """Events per second over the last completed window (default one second)."""

    def __init__(self, window_s: float = 1.0) -> None:
        self._window = window_s
        self._start: float | None = None
        self._count = 0
        self.rate = 0.0

    def tick(self, now: float) -> bool:
        """Count one event; True when a window closed and ``rate`` was updated."""
        if self._start is None:
            self._start = now
        self._count += 1
        elapsed = now - self._start
        if elapsed >= self._window:
            self.rate = self._count / elapsed
            self._start = now
            self._count = 0
            return True
        return False


class CameraStats:
    """What ingestion and analysis of one camera did so far."""

    def __init__(self, camera: str, observer: dataplane_stats.IngestObserver | None = None) -> None:
        self.camera = camera
        self._observer = observer or dataplane_stats.PROMETHEUS.ingest
        self._lock = threading.Lock()
        self.frames_decoded = 0
        self.frames_analysed = 0
        self.dropped: dict[str, int] = {}
        self.corrupt_segments = 0
        self.corrupt_frames_skipped = 0
        self.connections = 0
        self.reconnects = 0
        self.connected = False
        self.last_error: str | None = None
        self.last_lag_s: float | None = None
        self.last_frame_at: float | None = None
        #: False while the camera's analysis backs off after a frame whose analysis raised.
        self.analysing = True
        self.analysis_errors = 0
        self.last_analysis_error: str | None = None
        #: How the current (or last) connection decodes; None before the first one.
        self.decode: DecodeDecision | None = None
        self._decode_rate = RateMeter()
        self._analysed_rate = RateMeter()
        self._observer.stream_connected(camera, False)

    @property
    def decode_fps(self) -> float:
        return self._decode_rate.rate

    @property
    def analysed_fps(self) -> float:
        return self._analysed_rate.rate

    @property
    def dropped_total(self) -> int:
        with self._lock:
            return sum(self.dropped.values())

    def on_connected(self) -> None:
        with self._lock:
            self.connections += 1
            if self.connections > 1:
                self.reconnects += 1
                self._observer.stream_reconnected(self.camera)
            self.connected = True
        self._observer.stream_connected(self.camera, True)

    def on_disconnected(self, error: str | None) -> None:
        with self._lock:
            self.connected = False
            if error is not None:
                self.last_error = redaction.redact(error)
        self._observer.stream_connected(self.camera, False)

    def on_decode(self, decision: DecodeDecision) -> bool:
        """A connection's decode path was chosen (or revised); True when it changed."""
        with self._lock:
            changed = decision != self.decode
            self.decode = decision
        if changed:
            self._observer.decode_chosen(self.camera, decision.requested, decision.backend)
        return changed

    def on_open_failed(self, error: str) -> None:
        with self._lock:
            self.last_error = redaction.redact(error)

    def on_decoded(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_decoded += 1
            self.last_frame_at = time.time()
            closed = self._decode_rate.tick(now)
        self._observer.frame_decoded(self.camera)
        if closed:
            self._observer.frame_rate(self.camera, "decoded", self._decode_rate.rate)

    def on_dropped(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        self._observer.frames_dropped(self.camera, reason, n)

    def on_corrupt_segment(self) -> None:
        with self._lock:
            self.corrupt_segments += 1
        self._observer.corrupt_segment(self.camera)

    def on_corrupt_skipped(self, n: int = 1) -> None:
        with self._lock:
            self.corrupt_frames_skipped += n
        self._observer.corrupt_frames_skipped(self.camera, n)

    def on_analysed(self, lag_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_analysed += 1
            self.last_lag_s = lag_s
            closed = self._analysed_rate.tick(now)
        self._observer.frame_analysed(self.camera, lag_s)
        if closed:
            self._observer.frame_rate(self.camera, "analysed", self._analysed_rate.rate)

    def on_analysis_failed(self, reason: str, error: str) -> None:
        with self._lock:
            self.analysing = False
            self.analysis_errors += 1
            self.last_analysis_error = redaction.redact(error)
        self._observer.camera_error(self.camera, reason)

    def on_analysis_resumed(self) -> None:
        with self._lock:
            self.analysing = True

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "connected": self.connected,
                "frames_decoded": self.frames_decoded,
                "frames_analysed": self.frames_analysed,
                "frames_dropped": dict(self.dropped),
                "corrupt_segments": self.corrupt_segments,
                "corrupt_frames_skipped": self.corrupt_frames_skipped,
                "reconnects": self.reconnects,
                "decode_fps": round(self._decode_rate.rate, 2),
                "analysed_fps": round(self._analysed_rate.rate, 2),
                "lag_s": None if self.last_lag_s is None else round(self.last_lag_s, 4),
                "last_frame_at": self.last_frame_at,
                "last_error": self.last_error,
                "analysing": self.analysing,
                "analysis_errors": self.analysis_errors,
                "last_analysis_error": self.last_analysis_error,
                "decode": None if self.decode is None else self.decode.to_json(),
            }
