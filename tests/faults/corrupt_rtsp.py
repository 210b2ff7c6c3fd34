"""Fault scenario: an RTSP camera's stream carries corrupt H.264 for a while, then is valid.

The video is generated at test time (:func:`its_runtime.kits.synth.encode_h264`, a key
frame every second) and then damaged by :func:`corrupt_ts`: from ``start_s`` for
``corrupt_s`` seconds of stream time, the H.264 data of every video TS packet is
replaced by random bytes. The MPEG-TS framing and each PES header (with its timestamp)
are kept, and so are the first bytes of each access unit (its delimiter and parameter
sets), so the server keeps streaming at the file's pace and the decoder gets slices of
garbage: what a camera with a failing encoder or a lossy link sends. The GStreamer RTSP
server (:class:`its_devenv.rtsp.RtspServer`) serves that file to a real runtime.

What must hold: the camera's analysis survives (no crash, no reconnect needed, the
corrupt segment counted in ``its_ingest_corrupt_segments_total`` and its frames skipped
until the next clean key frame), ``analysing`` is true again, and every crossing the
runtime analysed is stored exactly once (``lost``: analysed crossings missing from
PostgreSQL). ``recovery_s`` is the end of the corruption (in wall time, from the
stream's pace) until the first frame analysed after it.
"""

from __future__ import annotations

import asyncio
import pathlib
import random
import tempfile
import time

from its_devenv import ports, rtsp
from its_runtime.dataplane.analytics.analyzer import CROSSING, FrameAnalysis
from its_runtime.dataplane.camera import PipelineOptions
from its_runtime.kits import synth
from its_runtime.observability.metrics import REGISTRY
from tests.dataplane.support import camera, crossings_in_db, eventually, runtime_config, serving
from tests.faults.redis_down import private_redis
from tests.faults.scenarios import Outcome, private_postgres

TS_PACKET = 188
#: Bytes of each access unit left intact: delimiter, SPS and PPS (the slices follow).
KEEP_BYTES = 64
PTS_HZ = 90_000


def _pes_pts(payload: bytes) -> tuple[float, int] | None:
    """(PTS in seconds, ES data offset) of a video PES header at the payload's start."""
    if len(payload) < 14 or payload[:3] != b"\0\0\1" or not 0xE0 <= payload[3] <= 0xEF:
        return None
    if not payload[7] & 0x80:
        return None
    p = payload[9:14]
    pts = ((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1
    return pts / PTS_HZ, 9 + payload[8]


def corrupt_ts(data: bytes, start_s: float, corrupt_s: float, *, seed: int = 11) -> bytes:
    """The MPEG-TS ``data`` with its H.264 garbled from ``start_s`` for ``corrupt_s``
    (seconds from the first video timestamp); raises if nothing was garbled."""
    rng = random.Random(seed)
    out = bytearray(data)
    video_pid: int | None = None
    first: float | None = None
    current: float | None = None  # stream time of the access unit being read
    garbled = 0
    for at in range(0, len(out) - TS_PACKET + 1, TS_PACKET):
        if out[at] != 0x47:
            raise ValueError(f"not MPEG-TS: no sync byte at {at}")
        pusi = bool(out[at + 1] & 0x40)
        pid = (out[at + 1] & 0x1F) << 8 | out[at + 2]
        control = (out[at + 3] >> 4) & 3
        if not control & 1:
            continue  # adaptation field only
        begin = at + 4 + (1 + out[at + 4] if control & 2 else 0)
        end = at + TS_PACKET
        es = begin
        if pusi:
            header = _pes_pts(bytes(out[begin:end]))
            if header is None:
                continue  # PAT, PMT or another stream
            video_pid = pid
            pts, offset = header
            first = pts if first is None else first
            current = pts - first
            es = min(end, begin + offset + KEEP_BYTES)
        elif pid != video_pid:
            continue
        if current is not None and start_s <= current < start_s + corrupt_s:
            out[es:end] = rng.randbytes(end - es)
            garbled += 1
    if not garbled:
        raise ValueError("no video packet in the window to corrupt")
    return bytes(out)


async def corrupt_rtsp(corrupt_s: float, *, start_s: float = 3.5, after_s: float = 3.0) -> Outcome:
    reason = rtsp.unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    scene = synth.two_lane_scene(start_s + corrupt_s + after_s + 4.0)
    metric_before = _corrupt_segments_metric()
    with (
        tempfile.TemporaryDirectory(prefix="its-faults-") as tmp,
        private_postgres() as pg,
        private_redis() as redis,
    ):
        clean = await asyncio.to_thread(synth.encode_h264, scene, pathlib.Path(tmp) / "clean.ts")
        video = pathlib.Path(tmp) / "corrupt.ts"
        video.write_bytes(corrupt_ts(clean.read_bytes(), start_s, corrupt_s))
        server = rtsp.RtspServer(video, ports.free_port())
        server.start()
        try:
            config = runtime_config([camera("cam-1", server.url)], journal_dir=pathlib.Path(tmp))
            env = {"ITS_DATABASE_DSN": pg.dsn, "ITS_REDIS_URL": redis.url}
            options = PipelineOptions(reconnect_initial_s=0.3, reconnect_max_s=1.0)
            seen: list[tuple[float, FrameAnalysis]] = []  # (wall clock, analysis)

            def listener(analysis: FrameAnalysis) -> None:
                seen.append((time.time(), analysis))

            async with serving(config, env, options=options, listener=listener) as (
                _,
                plane,
                _client,
            ):
                stats = plane.pipelines["cam-1"].stats
                assert await eventually(lambda: bool(seen), 30), "no frame was analysed"
                first = seen[0][1]  # the file's first frame: the server plays from it
                ends_media = first.media_time + start_s + corrupt_s
                assert await eventually(
                    lambda: seen[-1][1].media_time >= ends_media, start_s + corrupt_s + 20
                ), f"no frame analysed after the corruption: {stats.snapshot()}"
                # The server sends at the file's pace, so the stream's clock maps onto the
                # wall clock; the quickest clean frame before the damage gives the offset.
                offset = min(
                    w - a.media_time for w, a in seen if a.media_time < ends_media - corrupt_s
                )
                ends_wall = ends_media + offset
                resumed = next(w for w, a in seen if a.media_time >= ends_media)
                recovery_s = resumed - ends_wall
                await asyncio.sleep(after_s)
                pipeline_alive = not plane.pipelines["cam-1"].finished.is_set()
                analysing = stats.analysing
                assert plane.writer is not None
                await plane.writer.flush()
                assert await plane.writer.wait_drained(10)
                analysed = [a for _, a in list(seen)]
                truth = sum(1 for a in analysed for e in a.events if e.kind == CROSSING)
                stored = await crossings_in_db(pg.dsn)
                ingest = stats.snapshot()
        finally:
            server.stop()
    keys = {r["event_key"] for r in stored}
    window = (first.media_time + start_s + 0.1, ends_media)
    return Outcome(
        name="corrupt_rtsp_segments",
        lost=max(0, truth - len(keys)),
        duplicated=len(stored) - len(keys),
        recovery_s=round(recovery_s, 3),
        details={
            "corrupt_s": corrupt_s,
            "corrupt_segments": ingest["corrupt_segments"],
            "corrupt_frames_skipped": ingest["corrupt_frames_skipped"],
            "corrupt_segments_metric": _corrupt_segments_metric() - metric_before,
            "frames_analysed_in_corruption": sum(
                1 for a in analysed if window[0] <= a.media_time < window[1]
            ),
            "frames_analysed": len(analysed),
            "crossings_analysed": truth,
            "reconnects": ingest["reconnects"],
            "analysing": analysing,
            "analysis_errors": ingest["analysis_errors"],
            "pipeline_alive": pipeline_alive,
            "last_error": ingest["last_error"],
        },
    )


def _corrupt_segments_metric() -> float:
    labels = {"camera": "cam-1"}
    return REGISTRY.get_sample_value("its_ingest_corrupt_segments_total", labels) or 0.0


if __name__ == "__main__":
    print(asyncio.run(corrupt_rtsp(2.0)).line())
