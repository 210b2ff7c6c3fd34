"""JPEG scenes with known boxes, and an in-process app around the colour-box detector.

A scene is a grey frame with saturated red (car) and blue (truck) rectangles at
random, known places, encoded as a real JPEG (4:4:4, so the colour edges sit where
they were drawn). ``app_client`` serves :class:`ColourBoxDetector` (a real torch
network that finds such rectangles) through the real HTTP application.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from its_runtime.config import RuntimeConfig
from its_runtime.kits import synth_detector
from its_runtime.letterbox import Fit
from its_runtime.serving import app as app_mod
from its_runtime.serving import batching

RED = (220, 30, 30)
BLUE = (30, 30, 220)
GREY = (128, 128, 128)
#: Class id the detector gives each colour.
CLASS_OF = {RED: synth_detector.CAR, BLUE: synth_detector.TRUCK}

Client = TestClient[web.Request, web.Application]


def rectangles(width: int, height: int, seed: int) -> list[tuple[tuple[int, int, int, int], Any]]:
    """A red and a blue rectangle, ``(x1, y1, x2, y2)`` in pixels (x2, y2 exclusive),
    in the left and right halves so they never touch."""
    rng = np.random.default_rng(seed)
    out = []
    for half, colour in ((0, RED), (1, BLUE)):
        w = int(rng.integers(width // 10, width // 4))
        h = int(rng.integers(height // 8, height // 3))
        x1 = int(rng.integers(half * width // 2 + 8, (half + 1) * width // 2 - w - 8))
        y1 = int(rng.integers(8, height - h - 8))
        out.append(((x1, y1, x1 + w, y1 + h), colour))
    return out


def scene_jpeg(
    width: int, height: int, rects: Sequence[tuple[tuple[int, int, int, int], Any]]
) -> bytes:
    img = Image.new("RGB", (width, height), GREY)
    draw = ImageDraw.Draw(img)
    for (x1, y1, x2, y2), colour in rects:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour)  # PIL's corners are inclusive
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, subsampling=0)
    return buf.getvalue()


def box_errors(
    detections: list[dict[str, Any]],
    rects: Sequence[tuple[tuple[int, int, int, int], Any]],
    width: int,
    height: int,
) -> list[float]:
    """Per drawn rectangle, the largest edge error (source pixels) of the detection of
    its class that fits it best."""
    errors = []
    for box, colour in rects:
        found = [d for d in detections if d["class_id"] == CLASS_OF[colour]]
        assert found, f"no detection of class {CLASS_OF[colour]} in {detections}"
        scale = np.array([width, height, width, height], np.float64)
        errors.append(
            min(float(np.abs(np.array(d["box"]) * scale - np.array(box)).max()) for d in found)
        )
    return errors


def tolerance(w: int, h: int, input_size: int, resize: str) -> float:
    """One input pixel in source pixels: the detector's own resolution."""
    fit = Fit.compute(w, h, input_size, input_size, resize)
    return max(1.0, w / fit.scaled_w, h / fit.scaled_h)


def _crossing(profile: npt.NDArray[np.float64], rising: bool) -> float:
    """Where ``profile`` (coverage, 0..1, per pixel) crosses 0.5, in continuous pixel
    coordinates (pixel i spans [i, i + 1)), interpolated between pixel centres."""
    above = np.flatnonzero(profile >= 0.5)
    if rising:
        i = int(above[0])
        a, b = float(profile[i - 1]), float(profile[i])
        return (i - 0.5) + (0.5 - a) / (b - a)
    j = int(above[-1])
    a, b = float(profile[j]), float(profile[j + 1])
    return (j + 0.5) + (a - 0.5) / (a - b)


def rectangle_edges(x: torch.Tensor, colour: tuple[int, int, int]) -> list[float]:
    """The rectangle of ``colour`` in a (3, H, W) input, to sub-pixel precision:
    ``[x1, y1, x2, y2]`` in input pixels."""
    sign = 1.0 if colour == RED else -1.0
    diff = (sign * (x[0] - x[2])).cpu().numpy().astype(np.float64)
    inside = diff > 0.5 * diff.max()
    ys, xs = np.nonzero(inside)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    peak = float(np.median(diff[inside]))
    row, col = diff[cy] / peak, diff[:, cx] / peak
    return [
        _crossing(row, rising=True),
        _crossing(col, rising=True),
        _crossing(row, rising=False),
        _crossing(col, rising=False),
    ]


def edges_in_source(
    x: torch.Tensor, fit: Fit, colour: tuple[int, int, int]
) -> npt.NDArray[np.float64]:
    """The rectangle's edges, mapped back through ``fit``: source pixels."""
    dst = np.array([fit.dst_w, fit.dst_h, fit.dst_w, fit.dst_h], np.float64)
    on_input = (np.array([rectangle_edges(x, colour)], np.float64) / dst).astype(np.float32)
    src = np.array([fit.src_w, fit.src_h, fit.src_w, fit.src_h], np.float64)
    back: npt.NDArray[np.float64] = fit.boxes_to_source(on_input)[0].astype(np.float64) * src
    return back


class CudaColourBox:
    """The colour-box detector as an executor on a CUDA device (frames may arrive there)."""

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        self.inner = synth_detector.ColourBoxDetector(input_shape)
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.input_shape = input_shape
        self.max_batch_size = self.inner.max_batch_size
        self.pipeline_depth = 1
        self.frame_devices: list[str] = []

    def stage(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        self.frame_devices += [f.device.type for f in frames]
        return torch.stack([f.to(self.device) for f in frames])

    def run_batch(self, batch: torch.Tensor) -> Any:
        return self.inner.run_batch(batch.cpu())


@contextlib.asynccontextmanager
async def app_client(
    input_size: int,
    *,
    resize: str = "letterbox",
    jpeg_decode: str = "auto",
    executor: batching.BatchExecutor | None = None,
) -> AsyncIterator[tuple[Client, web.Application]]:
    """The real application around the colour-box detector (``input_size`` square)."""
    shape = (3, input_size, input_size)
    config = RuntimeConfig.model_validate(
        {
            "model": {
                "path": "unused.pt2",
                "inputShape": list(shape),
                "resize": resize,
                "classNames": list(synth_detector.CLASS_NAMES),
            },
            "server": {"jpegDecode": jpeg_decode},
        }
    )
    if executor is None:
        executor = synth_detector.ColourBoxDetector(shape)
    application = app_mod.create_app(config, executor, decode_workers=2)
    async with TestClient(TestServer(application)) as client:
        for _ in range(500):
            if (await client.get("/ready")).status == 200:
                break
            await asyncio.sleep(0.02)
        yield client, application


async def metric(client: Client, name: str, **labels: str) -> float | None:
    """A sample of ``GET /metrics``, or None when that series is absent."""
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None
