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

Frames are fitted to the model input as ``model.resize`` says (stretch or letterbox;
``api.decoding`` and ``serving.frames``), and every box in every answer is mapped back
to the image the client sent, so boxes are normalised coordinates of that image.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import torch
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from its_runtime import problems
from its_runtime.letterbox import Fit
from its_runtime.observability import metrics
from its_runtime.serving import batching
from its_runtime.serving.api import decoding, errors
from its_runtime.serving.api.services import SERVICES, Services
from its_runtime.serving.frames import DECODER
from its_runtime.serving.preprocess import Decoded

_CAMERA_ID = re.compile(r"^[A-Za-z0-9]([-_.A-Za-z0-9]{0,126}[A-Za-z0-9])?$")
#: Most frames one batch request may carry.
MAX_BATCH_FRAMES = 256


@dataclasses.dataclass(frozen=True)
class FrameMeta:
    camera_id: str | None
    timestamp: float
    deadline_ms: float | None
    priority: int


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
    number: float | None = None
    try:
        if (isinstance(raw, int | float) and not isinstance(raw, bool)) or isinstance(raw, str):
            number = float(raw)
    except (ValueError, OverflowError):
        pass
    if number is not None:
        # NaN or an infinity would be echoed back and is no time (nor JSON).
        if math.isfinite(number):
            return number
    elif isinstance(raw, str):
        try:
            parsed = datetime.datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.UTC)
            with contextlib.suppress(OverflowError, ValueError):  # past year 1 or 9999
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
        value = float(int(raw) if integer else float(raw))
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise problems.bad_request(f"{field} must be {kind}, got {str(raw)[:64]!r}") from None
    except OverflowError:  # int(inf), or an integer too large for a float
        raise problems.bad_request(f"{field} must be finite, got {str(raw)[:64]!r}") from None
    if positive and not value > 0:
        raise problems.bad_request(f"{field} must be positive, got {value}")
    if not math.isfinite(value):
        raise problems.bad_request(f"{field} must be finite")
    return value


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
    except (RequestPayloadError, aiohttp.ClientPayloadError, HttpProcessingError) as exc:
        # A body that does not match its Content-Encoding (or ends early) is the
        # client's error, not the server's.
        raise problems.bad_request(f"request body could not be read: {exc}") from None
    if not body:
        raise problems.bad_request("request body is empty; send an image, a .npy array or JSON")
    return body


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is an integer
        # of over 4300 digits; nesting deeper than the stack is a RecursionError.
        raise problems.bad_request(f"body is not valid JSON: {str(exc)[:200]}") from None


def _frame_result(services: Services, meta: FrameMeta, det: Any, fit: Fit) -> dict[str, Any]:
    det = decoding.to_source(det, fit)
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
    with services.admission() as admission:
        body = await _read_body(request, services)
        if request.content_type == "application/json":
            doc = _parse_json(body)
            if not isinstance(doc, dict):
                raise problems.bad_request("JSON body must be an object with 'image' or 'array'")
            meta = _parse_meta(request, doc, fallback=None)
            payload = decoding.json_payload(doc, "")
        else:
            meta = _parse_meta(request, {}, fallback=None)
            payload = decoding.binary_payload(request.content_type, body)
        (frame,) = await decoding.decode_all(services, request.app[DECODER], [payload], [""])
        admission.release()  # the submit below queues the frame before it first yields
        det = await _infer(services, frame.tensor, meta, started)
    out = _frame_result(services, meta, det, frame.fit)
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
    admission = services.admission()
    try:
        body = await _read_body(request, services)
        decoder = request.app[DECODER]
        metas: list[FrameMeta]
        decoded: list[Decoded]
        if request.content_type == "application/json":
            doc = _parse_json(body)
            frames = doc.get("frames") if isinstance(doc, dict) else None
            if not isinstance(frames, list) or not frames:
                raise problems.bad_request(
                    "JSON body must be an object with a non-empty 'frames' list"
                )
            decoding.check_count(len(frames), MAX_BATCH_FRAMES)
            shared = _parse_meta(request, doc, fallback=None)
            metas, payloads, wheres = [], [], []
            for i, frame in enumerate(frames):
                where = f"frames[{i}]."
                if not isinstance(frame, dict):
                    raise problems.bad_request(f"frames[{i}] must be an object")
                metas.append(_parse_meta(request, frame, where, fallback=shared))
                payloads.append(decoding.json_payload(frame, where))
                wheres.append(where)
            decoded = await decoding.decode_all(services, decoder, payloads, wheres)
        else:
            payload = decoding.binary_payload(request.content_type, body)
            if payload.kind != "npy":
                raise problems.unsupported_media(
                    "the batch form takes application/json frames or one (N, C, H, W) .npy array"
                )
            shared = _parse_meta(request, {}, fallback=None)
            decoded = await asyncio.get_running_loop().run_in_executor(
                services.decode_pool, decoding.split_npy, decoder, body, MAX_BATCH_FRAMES
            )
            metas = [shared] * len(decoded)
        if services.batcher.free_slots < len(decoded):
            metrics.ERRORS.labels("queue_full").inc()
            raise problems.ApiError(
                429,
                "queue_full",
                f"queue has room for {services.batcher.free_slots} frames, not {len(decoded)}; "
                "retry later",
            )
        # gather schedules the submits before the drain can resume: they queue first.
        pending = asyncio.gather(
            *(_infer(services, f.tensor, m, started) for f, m in zip(decoded, metas, strict=True)),
            return_exceptions=True,
        )
    finally:
        admission.release()
    outcomes = await pending
    results: list[dict[str, Any]] = []
    for meta, frame, outcome in zip(metas, decoded, outcomes, strict=True):
        if isinstance(outcome, problems.ApiError):
            results.append(
                {"camera_id": meta.camera_id, "timestamp": meta.timestamp, **outcome.body()}
            )
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append(_frame_result(services, meta, outcome, frame.fit))
    return web.json_response(
        {"results": results, "latency_ms": round((time.monotonic() - started) * 1000.0, 3)}
    )
