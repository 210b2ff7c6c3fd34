"""``POST /v1/detect`` and ``POST /v1/detect/batch``: frames in, detections out.

A frame arrives as image bytes (JPEG/PNG; ``image/*`` or sniffed from
``application/octet-stream``), as a raw array (a ``.npy`` body), or inside JSON
(``{"image": base64}`` or ``{"array": nested lists}``). Camera id, timestamp, deadline
and priority come from JSON fields, else query parameters, else ``X-Camera-Id``,
``X-Timestamp``, ``X-Deadline-Ms`` and ``X-Priority`` headers, so a camera gateway can
POST raw JPEG bytes without wrapping them.

Decoding runs in a thread pool, never on the event loop: on a small machine it is a
large share of each frame's cost, and PIL and numpy release the GIL while they work.
Everything a client can get wrong is answered before the frame is queued: a body over
the limit is 413 (from ``Content-Length`` before it is read), bytes that do not decode
are 400, an array of the wrong shape is 422; each message names the field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime
import io
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from aiohttp import web

from its_runtime import problems
from its_runtime.observability import metrics
from its_runtime.serving import batching
from its_runtime.serving.api import errors
from its_runtime.serving.api.services import SERVICES, Services

_CAMERA_ID = re.compile(r"^[A-Za-z0-9]([-_.A-Za-z0-9]{0,126}[A-Za-z0-9])?$")
_NPY_MAGIC = b"\x93NUMPY"
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_NPY_TYPES = {"application/x-npy", "application/npy", "application/x-numpy"}
#: Most frames one batch request may carry.
MAX_BATCH_FRAMES = 256


@dataclasses.dataclass(frozen=True)
class FrameMeta:
    camera_id: str | None
    timestamp: float
    deadline_ms: float | None
    priority: int


@dataclasses.dataclass(frozen=True)
class Payload:
    """Undecoded frame content: ``kind`` is image, npy or array (a JSON list)."""

    kind: str
    data: Any


def _pick(field: str, header: str, body: Mapping[str, Any], request: web.Request) -> Any:
    if field in body:
        return body[field]
    if field in request.query:
        return request.query[field]
    return request.headers.get(header)


def _parse_meta(
    request: web.Request, body: Mapping[str, Any], where: str = "", *, fallback: FrameMeta | None
) -> FrameMeta:
    """Read and validate camera id, timestamp, deadline and priority."""
    if fallback is not None:
        raw_cam = body.get("camera_id", fallback.camera_id)
        raw_ts = body.get("timestamp", fallback.timestamp)
        raw_deadline: Any = fallback.deadline_ms
        raw_prio: Any = fallback.priority
    else:
        raw_cam = _pick("camera_id", "X-Camera-Id", body, request)
        raw_ts = _pick("timestamp", "X-Timestamp", body, request)
        raw_deadline = _pick("deadline_ms", "X-Deadline-Ms", body, request)
        raw_prio = _pick("priority", "X-Priority", body, request)
    camera_id = None
    if raw_cam is not None:
        if not isinstance(raw_cam, str) or not _CAMERA_ID.match(raw_cam):
            raise problems.bad_request(
                f"{where}camera_id must be 1-128 letters, digits, '-', '_' or '.', "
                f"got {str(raw_cam)[:64]!r}"
            )
        camera_id = raw_cam
    return FrameMeta(
        camera_id=camera_id,
        timestamp=_parse_timestamp(raw_ts, where),
        deadline_ms=_parse_number(raw_deadline, f"{where}deadline_ms", positive=True),
        priority=int(_parse_number(raw_prio, f"{where}priority", integer=True) or 0),
    )


def _parse_timestamp(raw: Any, where: str) -> float:
    if raw is None:
        return time.time()
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            pass
        try:
            parsed = datetime.datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.UTC)
            return parsed.timestamp()
    raise problems.bad_request(
        f"{where}timestamp must be Unix seconds or an ISO 8601 time, got {str(raw)[:64]!r}"
    )


def _parse_number(
    raw: Any, field: str, *, positive: bool = False, integer: bool = False
) -> float | None:
    if raw is None:
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = int(raw) if integer else float(raw)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise problems.bad_request(f"{field} must be {kind}, got {str(raw)[:64]!r}") from None
    if positive and not value > 0:
        raise problems.bad_request(f"{field} must be positive, got {value}")
    if not np.isfinite(value):
        raise problems.bad_request(f"{field} must be finite")
    return float(value)


async def _read_body(request: web.Request, services: Services) -> bytes:
    limit = services.config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise problems.too_large(
            f"request body is {request.content_length} bytes; the limit is {limit} bytes"
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise problems.too_large(f"request body exceeds the limit of {limit} bytes") from None
    if not body:
        raise problems.bad_request("request body is empty; send an image, a .npy array or JSON")
    return body


def _binary_payload(content_type: str, body: bytes) -> Payload:
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


def _json_payload(frame: Mapping[str, Any], where: str) -> Payload:
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


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise problems.bad_request(f"body is not valid JSON: {exc}") from None


def _to_tensor(services: Services, payload: Payload, where: str) -> torch.Tensor:
    """Decode one payload into the model input. Runs in the decode pool."""
    shape = services.batcher.input_shape
    start = time.monotonic()
    pre = services.preprocessor
    if payload.kind == "image":
        try:
            tensor = pre.decode_image(payload.data, shape)
        except ValueError as exc:
            raise problems.bad_image(f"{where}image could not be decoded: {exc}") from None
    else:
        if payload.kind == "npy":
            try:
                arr = np.load(io.BytesIO(payload.data), allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise problems.bad_request(
                    f"{where}body is not a valid .npy array: {exc}"
                ) from None
        else:
            arr = _json_array(payload.data, where)
        try:
            tensor = pre.array_to_input(arr, shape)
        except ValueError as exc:
            raise problems.bad_shape(f"{where}array: {exc}") from None
    metrics.DECODE_TIME.labels(payload.kind).observe(time.monotonic() - start)
    return tensor


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


async def _decode(services: Services, payload: Payload, where: str = "") -> torch.Tensor:
    loop = asyncio.get_running_loop()
    call: Callable[[], torch.Tensor] = lambda: _to_tensor(services, payload, where)  # noqa: E731
    return await loop.run_in_executor(services.decode_pool, call)


def _frame_result(services: Services, meta: FrameMeta, det: Any) -> dict[str, Any]:
    return {
        "camera_id": meta.camera_id,
        "timestamp": meta.timestamp,
        "count": len(det),
        "detections": det.to_json(services.config.model.class_names),
    }


async def _infer(services: Services, tensor: torch.Tensor, meta: FrameMeta, started: float) -> Any:
    deadline = started + meta.deadline_ms / 1000.0 if meta.deadline_ms is not None else None
    try:
        return await services.batcher.submit(
            tensor, deadline=deadline, priority=meta.priority, started=started
        )
    except batching.BatcherError as exc:
        raise errors.from_batcher(exc) from None
    except ValueError as exc:
        raise problems.bad_shape(str(exc)) from None


def _refuse_if_draining(services: Services) -> None:
    if services.readiness.draining or services.batcher.closing:
        raise problems.draining()


async def detect(request: web.Request) -> web.Response:
    """One frame: image bytes, a .npy array, or JSON with ``image``/``array``."""
    started = time.monotonic()
    services = request.app[SERVICES]
    _refuse_if_draining(services)
    body = await _read_body(request, services)
    if request.content_type == "application/json":
        doc = _parse_json(body)
        if not isinstance(doc, dict):
            raise problems.bad_request("JSON body must be an object with 'image' or 'array'")
        meta = _parse_meta(request, doc, fallback=None)
        payload = _json_payload(doc, "")
    else:
        meta = _parse_meta(request, {}, fallback=None)
        payload = _binary_payload(request.content_type, body)
    tensor = await _decode(services, payload)
    det = await _infer(services, tensor, meta, started)
    out = _frame_result(services, meta, det)
    out["latency_ms"] = round((time.monotonic() - started) * 1000.0, 3)
    return web.json_response(out)


async def detect_batch(request: web.Request) -> web.Response:
    """Several frames in one request: JSON ``{"frames": [...]}`` or an (N, C, H, W) .npy.

    Input errors fail the whole request, naming the frame (``frames[2].image``); a full
    queue fails it at once (429) before any frame is queued; deadlines are per frame, so
    the answer lists a result or an error for each frame, in order.
    """
    started = time.monotonic()
    services = request.app[SERVICES]
    _refuse_if_draining(services)
    body = await _read_body(request, services)
    metas: list[FrameMeta]
    tensors: list[torch.Tensor]
    if request.content_type == "application/json":
        doc = _parse_json(body)
        frames = doc.get("frames") if isinstance(doc, dict) else None
        if not isinstance(frames, list) or not frames:
            raise problems.bad_request("JSON body must be an object with a non-empty 'frames' list")
        _check_count(len(frames))
        shared = _parse_meta(request, doc, fallback=None)
        metas, payloads = [], []
        for i, frame in enumerate(frames):
            where = f"frames[{i}]."
            if not isinstance(frame, dict):
                raise problems.bad_request(f"frames[{i}] must be an object")
            metas.append(_parse_meta(request, frame, where, fallback=shared))
            payloads.append(_json_payload(frame, where))
        tensors = list(
            await asyncio.gather(
                *(_decode(services, p, f"frames[{i}].") for i, p in enumerate(payloads))
            )
        )
    else:
        payload = _binary_payload(request.content_type, body)
        if payload.kind != "npy":
            raise problems.unsupported_media(
                "the batch form takes application/json frames or one (N, C, H, W) .npy array"
            )
        shared = _parse_meta(request, {}, fallback=None)
        tensors = await asyncio.get_running_loop().run_in_executor(
            services.decode_pool, _split_npy, services, body
        )
        metas = [shared] * len(tensors)
    if services.batcher.free_slots < len(tensors):
        metrics.ERRORS.labels("queue_full").inc()
        raise problems.ApiError(
            429,
            "queue_full",
            f"queue has room for {services.batcher.free_slots} frames, not {len(tensors)}; "
            "retry later",
        )
    outcomes = await asyncio.gather(
        *(_infer(services, t, m, started) for t, m in zip(tensors, metas, strict=True)),
        return_exceptions=True,
    )
    results: list[dict[str, Any]] = []
    for meta, outcome in zip(metas, outcomes, strict=True):
        if isinstance(outcome, problems.ApiError):
            results.append(
                {"camera_id": meta.camera_id, "timestamp": meta.timestamp, **outcome.body()}
            )
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append(_frame_result(services, meta, outcome))
    return web.json_response(
        {"results": results, "latency_ms": round((time.monotonic() - started) * 1000.0, 3)}
    )


def _check_count(n: int) -> None:
    if n > MAX_BATCH_FRAMES:
        raise problems.bad_shape(f"frames: at most {MAX_BATCH_FRAMES} frames per request, got {n}")


def _split_npy(services: Services, body: bytes) -> list[torch.Tensor]:
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise problems.bad_request(f"body is not a valid .npy array: {exc}") from None
    if arr.ndim != 4:
        raise problems.bad_shape(
            f"array: the batch form needs an (N, C, H, W) array, got shape {list(arr.shape)}"
        )
    _check_count(int(arr.shape[0]))
    start = time.monotonic()
    out = []
    for i in range(arr.shape[0]):
        try:
            out.append(services.preprocessor.array_to_input(arr[i], services.batcher.input_shape))
        except ValueError as exc:
            raise problems.bad_shape(f"array[{i}]: {exc}") from None
    metrics.DECODE_TIME.labels("npy").observe(time.monotonic() - start)
    return out
