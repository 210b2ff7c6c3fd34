"""Generated traffic video with known ground truth, for tests, benchmarks and demos.

Real footage comes without exact ground truth; a drawn scene has it by construction.
Vehicles are flat coloured rectangles driving along two lanes in opposite directions
at constant speeds, so the moment each bottom-centre crosses any counting line, the
direction, the objects inside any region at any time and every speed are known in
closed form. The video is encoded with H.264 (libx264 through PyAV) and muxed into
MPEG-TS, the same path real cameras take (RTSP re-streams it unchanged), so the
analytics are tested through a real encoder, decoder and scaler rather than on
pristine arrays.

Colours double as classes for :mod:`its_runtime.kits.synth_detector`: cars are
red, trucks are blue, the road is grey.
"""

from __future__ import annotations

import io
import math
import pathlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import av
import av.video.stream
import numpy as np
import numpy.typing as npt
from PIL import Image

from its_runtime.config import CountingLine, Region
from its_runtime.dataplane.analytics import geometry

CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "car": (225, 45, 40),
    "truck": (40, 70, 225),
}
CLASS_SIZES: dict[str, tuple[float, float]] = {"car": (0.12, 0.12), "truck": (0.2, 0.16)}
ROAD = (70, 70, 70)
MARKING = (150, 150, 150)


@dataclass(frozen=True)
class Vehicle:
    class_name: str
    #: Normalised y of the vehicle's bottom edge (its lane).
    bottom: float
    #: Stream time when its leading edge enters the frame.
    enter_time: float
    #: Normalised widths per second; > 0 drives right, < 0 drives left.
    speed: float

    @property
    def size(self) -> tuple[float, float]:
        return CLASS_SIZES[self.class_name]

    def left(self, t: float) -> float:
        w = self.size[0]
        start = -w if self.speed > 0 else 1.0
        return start + self.speed * (t - self.enter_time)

    def box(self, t: float) -> tuple[float, float, float, float]:
        """Unclipped normalised box at time t."""
        w, h = self.size
        x1 = self.left(t)
        return (x1, self.bottom - h, x1 + w, self.bottom)


@dataclass(frozen=True)
class GroundTruthCrossing:
    vehicle: int
    class_name: str
    line: str
    direction: str
    time: float


@dataclass(frozen=True)
class Scene:
    width: int = 320
    height: int = 192
    fps: int = 30
    duration_s: float = 12.0
    vehicles: Sequence[Vehicle] = field(default_factory=tuple)

    @property
    def frame_count(self) -> int:
        return round(self.duration_s * self.fps)

    def visible_boxes(self, t: float) -> list[tuple[int, tuple[float, float, float, float]]]:
        """(vehicle index, box clipped to the frame) of vehicles at least partly visible."""
        out = []
        for i, v in enumerate(self.vehicles):
            x1, y1, x2, y2 = v.box(t)
            cx1, cx2 = max(0.0, x1), min(1.0, x2)
            if cx2 - cx1 > 0.0:
                out.append((i, (cx1, y1, cx2, y2)))
        return out

    def render(self, index: int) -> npt.NDArray[np.uint8]:
        t = index / self.fps
        img = np.empty((self.height, self.width, 3), dtype=np.uint8)
        img[:] = ROAD
        mid = int(0.6 * self.height)
        for x in range(0, self.width, 32):
            img[mid - 1 : mid + 1, x : x + 16] = MARKING
        for i, (x1, y1, x2, y2) in self.visible_boxes(t):
            colour = CLASS_COLOURS[self.vehicles[i].class_name]
            px1, px2 = round(x1 * self.width), round(x2 * self.width)
            py1, py2 = round(y1 * self.height), round(y2 * self.height)
            img[py1:py2, px1:px2] = colour
        return img

    def frames(self) -> Iterator[npt.NDArray[np.uint8]]:
        for i in range(self.frame_count):
            yield self.render(i)

    def crossings(self, line: CountingLine) -> list[GroundTruthCrossing]:
        """Every crossing of ``line`` by a vehicle's bottom-centre within the video."""
        start, end = (line.start.x, line.start.y), (line.end.x, line.end.y)
        out = []
        for i, v in enumerate(self.vehicles):
            w = v.size[0]
            y = v.bottom
            if start[1] == end[1]:
                continue  # a horizontal line is never crossed by horizontal motion
            u = (y - start[1]) / (end[1] - start[1])
            if not 0.0 <= u <= 1.0:
                continue
            x_line = start[0] + u * (end[0] - start[0])
            t = v.enter_time + (x_line - w / 2 - v.left(v.enter_time)) / v.speed
            if not 0.0 <= t < self.frame_count / self.fps:
                continue
            before = geometry.side(start, end, (x_line - math.copysign(0.01, v.speed), y))
            out.append(
                GroundTruthCrossing(i, v.class_name, line.name, "in" if before < 0 else "out", t)
            )
        return sorted(out, key=lambda c: c.time)

    def occupancy(self, region: Region, t: float) -> dict[str, int]:
        polygon = [(p.x, p.y) for p in region.polygon]
        out: dict[str, int] = {}
        for i, box in self.visible_boxes(t):
            if geometry.point_in_polygon(geometry.bottom_centre(box), polygon):
                name = self.vehicles[i].class_name
                out[name] = out.get(name, 0) + 1
        return out

    def speed_kmh(self, vehicle: int, meters_per_pixel: float) -> float:
        return abs(self.vehicles[vehicle].speed) * self.width * meters_per_pixel * 3.6


def two_lane_scene(
    duration_s: float = 12.0,
    *,
    every_s: float = 2.0,
    first_s: float = 0.2,
    width: int = 320,
    height: int = 192,
    fps: int = 30,
) -> Scene:
    """Cars and trucks alternating on two opposite lanes: right-bound on top, left below.

    A vehicle enters each lane every ``every_s`` seconds (the lanes offset by half of
    it), at speeds that vary slightly per vehicle, so ids, classes and directions all
    vary and no two vehicles overlap.
    """
    vehicles = []
    k = 0
    t = first_s
    while t < duration_s:
        for lane, offset in ((0, 0.0), (1, every_s / 2)):
            cls = "car" if (k + lane) % 3 else "truck"
            speed = 0.26 + 0.03 * ((k * 7 + lane * 3) % 4)
            if lane == 0:
                vehicles.append(Vehicle(cls, 0.45, t + offset, speed))
            else:
                vehicles.append(Vehicle(cls, 0.88, t + offset, -speed))
        k += 1
        t += every_s
    return Scene(width=width, height=height, fps=fps, duration_s=duration_s, vehicles=vehicles)


def encode_h264(
    scene: Scene,
    path: str | pathlib.Path,
    *,
    gop: int = 30,
    frames: Iterator[npt.NDArray[np.uint8]] | None = None,
) -> pathlib.Path:
    """Encode the scene as H.264 in MPEG-TS (no B-frames, a key frame every ``gop``)."""
    out = pathlib.Path(path)
    with av.open(str(out), mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=scene.fps)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width = scene.width
        stream.height = scene.height
        stream.pix_fmt = "yuv420p"
        stream.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "g": str(gop),
            "keyint_min": str(gop),
            "bf": "0",
            "crf": "20",
        }
        for image in frames if frames is not None else scene.frames():
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out


def jpeg(image: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """One frame as JPEG (an MJPEG camera's part)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
