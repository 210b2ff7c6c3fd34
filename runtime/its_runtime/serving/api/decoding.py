"""Request payloads to :class:`~its_runtime.serving.preprocess.Decoded` frames, off the loop.

A payload is an image (JPEG/PNG bytes, raw or base64 in JSON), a ``.npy`` body or a
JSON nested list. Decoding runs in the decode pool, never on the event loop. With
nvJPEG active (:mod:`its_runtime.serving.jpeg`) a request's JPEGs go to the GPU in one
batched call and whatever it does not take is decoded on the CPU, frame by frame in
parallel; without it every frame is one CPU job. Errors name the frame's field:
undecodable images are 400, arrays of the wrong shape 422.

Every frame comes with its :class:`~its_runtime.letterbox.Fit`; :func:`to_source`
maps the frame's detections back to the image the client sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from its_runtime import problems
from its_runtime.detections import Detections
from its_runtime.letterbox import Fit
from its_runtime.observability import metrics
from its_runtime.serving.api.services import Services
from its_runtime.serving.frames import FrameDecoder
from its_runtime.serving.preprocess import Decoded

_NPY_MAGIC = b"\x93NUMPY"
_NPY_TYPES = {"application/x-npy", "application/npy", "application/x-numpy"}


@dataclasses.dataclass(frozen=True)
class Payload:
    """Undecoded frame content: ``kind`` is image, npy or array (a JSON list)."""

    kind: str
    data: Any


def binary_payload(content_type: str, body: bytes) -> Payload:
    if content_type in _NPY_TYPES or body.startswith(_NPY_MAGIC):
        return Payload("npy", body)
    if content_type.startswith("image/") or content_type in (
        "application/octet-stream",
        "",
    ):
        return Payload("image", body)
    raise problems.unsupported_media(
        f"Content-Type {content_type!r} is not supported; use image/jpeg, image/png, "
        "application/x-npy or application/json"
    )


def json_payload(frame: Mapping[str, Any], where: str) -> Payload:
    has_image, has_array = "image" in frame, "array" in frame
    if has_image == has_array:
        raise problems.bad_request(f"{where}give exactly one of 'image' (base64) or 'array'")
    if has_image:
        raw = frame["image"]
        if not isinstance(raw, str):
            raise problems.bad_request(f"{where}image must be a base64 string")
        try:
            return Payload("image", base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError):
            raise problems.bad_request(f"{where}image is not valid base64") from None
    if not isinstance(frame["array"], list):
        raise problems.bad_shape(f"{where}array must be a nested list of numbers")
    return Payload("array", frame["array"])


def to_source(det: Detections, fit: Fit) -> Detections:
    """``det`` of a frame fitted by ``fit``, with boxes normalised to the sent image."""
    if fit.identity or len(det) == 0:
        return det
    return dataclasses.replace(det, boxes=fit.boxes_to_source(det.boxes))


async def decode_all(
    services: Services, decoder: FrameDecoder, payloads: Sequence[Payload], wheres: Sequence[str]
) -> list[Decoded]:
    """Every payload decoded (see the module docstring); the first bad one raises."""
    loop = asyncio.get_running_loop()
    done: list[Decoded | None] = [None] * len(payloads)
    images = [i for i, p in enumerate(payloads) if p.kind == "image"]
    # Several images and nvJPEG active: one batched call (a single image, or a frame
    # it leaves, is one job of its own below).
    gpu_tried = len(images) > 1 and decoder.gpu_active
    if gpu_tried:
        start = time.monotonic()
        datas = [payloads[i].data for i in images]
        batch = await loop.run_in_executor(services.decode_pool, decoder.decode_on_gpu, datas)
        for i, frame in zip(images, batch, strict=True):
            done[i] = frame
        on_gpu = sum(f is not None for f in batch)
        for _ in range(on_gpu):
            metrics.DECODE_TIME.labels("image").observe((time.monotonic() - start) / on_gpu)
    rest = [i for i, frame in enumerate(done) if frame is None]
    decoded = await asyncio.gather(
        *(_decode(services, decoder, payloads[i], wheres[i], gpu_tried) for i in rest)
    )
    for i, frame in zip(rest, decoded, strict=True):
        done[i] = frame
    return [f for f in done if f is not None]


async def _decode(
    services: Services, decoder: FrameDecoder, payload: Payload, where: str, gpu_tried: bool
) -> Decoded:
    loop = asyncio.get_running_loop()
    call: Callable[[], Decoded] = lambda: _decode_one(decoder, payload, where, gpu_tried)  # noqa: E731
    return await loop.run_in_executor(services.decode_pool, call)


def _decode_one(decoder: FrameDecoder, payload: Payload, where: str, gpu_tried: bool) -> Decoded:
    """Decode one payload into the model input. Runs in the decode pool."""
    start = time.monotonic()
    if payload.kind == "image":
        try:
            if gpu_tried:
                frame = decoder.decode_on_cpu(payload.data)
            else:
                frame = decoder.decode(payload.data)
        except ValueError as exc:
            raise problems.bad_image(f"{where}image could not be decoded: {exc}") from None
    else:
        if payload.kind == "npy":
            arr = _load_npy(payload.data, where)
        else:
            arr = _json_array(payload.data, where)
        try:
            frame = decoder.array(arr)
        except ValueError as exc:
            raise problems.bad_shape(f"{where}array: {exc}") from None
    metrics.DECODE_TIME.labels(payload.kind).observe(time.monotonic() - start)
    return frame


def _load_npy(data: bytes, where: str) -> np.ndarray[Any, Any]:
    """A ``.npy`` body as an array, its header checked against the body first.

    ``np.load`` allocates what the header declares before reading: a 100-byte body
    declaring 7 TiB is a MemoryError, one declaring gigabytes reserves them. A body
    carrying less data than its header declares is refused before any allocation.
    """
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        declared = math.prod(shape) * dtype.itemsize
        carried = len(data) - stream.tell()
        if declared > carried:
            raise ValueError(f"its header declares {declared} bytes, the body carries {carried}")
        arr: np.ndarray[Any, Any] = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, MemoryError) as exc:
        raise problems.bad_request(
            f"{where}body is not a valid .npy array: {str(exc)[:200]}"
        ) from None
    return arr


def _json_array(data: Any, where: str) -> np.ndarray[Any, Any]:
    """A JSON nested list: integers 0..255 become uint8 pixels, anything else float32."""
    try:
        arr = np.asarray(data)
    except ValueError as exc:
        raise problems.bad_shape(f"{where}array is not rectangular: {exc}") from None
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise problems.bad_shape(f"{where}array: integer pixels must be in 0..255")
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    raise problems.bad_shape(f"{where}array must hold numbers, got {arr.dtype}")


def split_npy(decoder: FrameDecoder, body: bytes, max_frames: int) -> list[Decoded]:
    """An (N, C, H, W) ``.npy`` body as N frames. Runs in the decode pool."""
    arr = _load_npy(body, "")
    if arr.ndim != 4:
        raise problems.bad_shape(
            f"array: the batch form needs an (N, C, H, W) array, got shape {list(arr.shape)}"
        )
    check_count(int(arr.shape[0]), max_frames)
    start = time.monotonic()
    out = []
    for i in range(arr.shape[0]):
        try:
            out.append(decoder.array(arr[i]))
        except ValueError as exc:
            raise problems.bad_shape(f"array[{i}]: {exc}") from None
    metrics.DECODE_TIME.labels("npy").observe(time.monotonic() - start)
    return out


def check_count(n: int, max_frames: int) -> None:
    if n > max_frames:
        raise problems.bad_shape(f"frames: at most {max_frames} frames per request, got {n}")
