"""The runtime server as a real process: the API, batching, backpressure and metrics."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ServeFn, Server


def road_jpeg(width: int = 320, height: int = 180, seed: int = 0) -> bytes:
    """A small synthetic road scene: sky, asphalt, lane marks and a few cars."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), (135, 170, 200))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, height // 3, width, height], fill=(70, 70, 75))
    for x in range(0, width, 40):
        draw.rectangle([x, height * 2 // 3, x + 20, height * 2 // 3 + 3], fill=(230, 230, 230))
    for _ in range(4):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(height // 3, height - 20))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.rectangle([x, y, x + 40, y + 18], fill=color)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def npy(arr: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def metric_families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, suffix: str = "", **labels: str) -> float:
    for s in families[name].samples:
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError(f"{name}{suffix} {labels}")


async def post(
    session: aiohttp.ClientSession, url: str, data: Any, **kw: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=data, **kw) as r:
        return r.status, await r.json()


@pytest.fixture(scope="module")
def fast(serve: ServeFn) -> Server:
    """A quick model, batches up to 8, a queue delay long enough to batch bursts."""
    return serve(
        batching={"maxBatchSize": 8, "maxQueueDelayMs": 20}, server={"maxBodyBytes": 200_000}
    )


@pytest.fixture(scope="module")
def slow(serve: ServeFn) -> Server:
    """A model that takes ~0.1 s a frame (on one core), one frame a batch, two queue places."""
    return serve(
        model="slow",
        batching={"maxBatchSize": 1, "optBatchSize": 1, "maxQueueSize": 2, "maxQueueDelayMs": 0},
    )


async def test_a_jpeg_frame_comes_back_as_detections(fast: Server) -> None:
    async with aiohttp.ClientSession() as s:
        status, body = await post(
            s,
            fast.url + "/v1/detect?camera_id=cam-1&timestamp=1700000000.5",
            road_jpeg(),
            headers={"Content-Type": "image/jpeg"},
        )
    assert status == 200, body
    assert body["camera_id"] == "cam-1"
    assert body["timestamp"] == 1700000000.5
    assert body["count"] == len(body["detections"]) >= 1
    for det in body["detections"]:
        assert len(det["box"]) == 4
        assert all(0.0 <= v <= 1.0 for v in det["box"])
        assert det["class"] in ("background", "car", "truck", "bus", "motorcycle", "person")


async def test_raw_arrays_and_json_frames_are_accepted(fast: Server) -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    async with aiohttp.ClientSession() as s:
        st1, npy_body = await post(
            s, fast.url + "/v1/detect", npy(pixels), headers={"Content-Type": "application/x-npy"}
        )
        st2, json_body = await post(
            s,
            fast.url + "/v1/detect",
            None,
            json={
                "camera_id": "cam-2",
                "timestamp": "2024-05-01T12:00:00Z",
                "array": pixels.tolist(),
            },
        )
        st3, b64_body = await post(
            s,
            fast.url + "/v1/detect",
            None,
            json={"image": base64.b64encode(road_jpeg()).decode()},
        )
    assert (st1, st2, st3) == (200, 200, 200), (npy_body, json_body, b64_body)
    # The same pixels give the same detections whichever way they are sent.
    assert npy_body["detections"] == json_body["detections"]
    assert json_body["camera_id"] == "cam-2"
    assert json_body["timestamp"] == 1714564800.0
    assert b64_body["count"] == len(b64_body["detections"]) >= 1


async def test_the_batch_form_answers_every_frame_in_order(fast: Server) -> None:
    frames = [
        {
            "camera_id": f"cam-{i}",
            "timestamp": 1000 + i,
            "image": base64.b64encode(road_jpeg(seed=i)).decode(),
        }
        for i in range(5)
    ]
    async with aiohttp.ClientSession() as s:
        status, body = await post(s, fast.url + "/v1/detect/batch", None, json={"frames": frames})
        arr = np.random.default_rng(2).random((3, 3, 64, 64), dtype=np.float32)
        st_npy, npy_body = await post(
            s,
            fast.url + "/v1/detect/batch?camera_id=gate",
            npy(arr),
            headers={"Content-Type": "application/x-npy"},
        )
    assert status == 200, body
    assert [r["camera_id"] for r in body["results"]] == [f"cam-{i}" for i in range(5)]
    assert [r["timestamp"] for r in body["results"]] == [1000 + i for i in range(5)]
    assert all(r["count"] == len(r["detections"]) >= 1 for r in body["results"])
    assert st_npy == 200, npy_body
    assert [r["camera_id"] for r in npy_body["results"]] == ["gate"] * 3


async def test_concurrent_clients_are_served_in_batches(fast: Server) -> None:
    before = metric_families(fast.get("/metrics")[1].decode())
    count0 = sample(before, "its_batch_size", "_count")
    sum0 = sample(before, "its_batch_size", "_sum")
    payload = road_jpeg()
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *(
                post(s, fast.url + "/v1/detect", payload, headers={"Content-Type": "image/jpeg"})
                for _ in range(48)
            )
        )
    assert all(status == 200 for status, _ in results)
    after = metric_families(fast.get("/metrics")[1].decode())
    batches = sample(after, "its_batch_size", "_count") - count0
    frames = sample(after, "its_batch_size", "_sum") - sum0
    assert frames == 48
    assert batches < 48 / 2, f"48 concurrent frames ran in {batches} batches"
    # Some batch used more than 4 places: read from the histogram's buckets.
    assert sample(after, "its_batch_size", "_bucket", le="4.0") < sample(
        after, "its_batch_size", "_bucket", le="+Inf"
    )


async def test_bad_input_gets_a_clear_error_and_the_server_stays_healthy(fast: Server) -> None:
    url = fast.url + "/v1/detect"
    jpeg = road_jpeg()
    async with aiohttp.ClientSession() as s:
        cases = {
            "corrupt": await post(
                s,
                url,
                jpeg[: len(jpeg) // 3] + b"\x00" * 64,
                headers={"Content-Type": "image/jpeg"},
            ),
            "not_image": await post(
                s, url, b"hello, not an image", headers={"Content-Type": "image/png"}
            ),
            "wrong_shape": await post(
                s,
                url,
                npy(np.zeros((3, 32, 32), np.float32)),
                headers={"Content-Type": "application/x-npy"},
            ),
            "ragged": await post(s, url, None, json={"array": [[1, 2], [3]]}),
            "too_large": await post(
                s, url, b"\xff\xd8\xff" + b"\x00" * 300_000, headers={"Content-Type": "image/jpeg"}
            ),
            "bad_camera": await post(
                s, url + "?camera_id=no%20spaces", jpeg, headers={"Content-Type": "image/jpeg"}
            ),
            "bad_deadline": await post(
                s, url, jpeg, headers={"Content-Type": "image/jpeg", "X-Deadline-Ms": "soon"}
            ),
            "bad_json": await post(
                s, url, b"{not json", headers={"Content-Type": "application/json"}
            ),
            "media": await post(s, url, b"a,b", headers={"Content-Type": "text/csv"}),
            "empty": await post(s, url, b"", headers={"Content-Type": "image/jpeg"}),
        }
        expected = {
            "corrupt": (400, "bad_image"), "not_image": (400, "bad_image"),
            "wrong_shape": (422, "bad_shape"), "ragged": (422, "bad_shape"),
            "too_large": (413, "too_large"), "bad_camera": (400, "bad_request"),
            "bad_deadline": (400, "bad_request"), "bad_json": (400, "bad_request"),
            "media": (415, "unsupported_media_type"), "empty": (400, "bad_request"),
        }  # fmt: skip
        for name, (status, body) in cases.items():
            assert (status, body["error"]["reason"]) == expected[name], (name, body)
            assert body["error"]["message"], name
        assert "(3, 64, 64)" in cases["wrong_shape"][1]["error"]["message"]
        assert "camera_id" in cases["bad_camera"][1]["error"]["message"]
        assert "deadline_ms" in cases["bad_deadline"][1]["error"]["message"]
        assert "200000" in cases["too_large"][1]["error"]["message"]
        # Still healthy and still serving.
        assert fast.get("/live")[0] == 200
        assert fast.get("/ready")[0] == 200
        status, body = await post(s, url, jpeg, headers={"Content-Type": "image/jpeg"})
        assert status == 200
    families = metric_families(fast.get("/metrics")[1].decode())
    assert sample(families, "its_errors", "_total", reason="bad_image") >= 2
    assert sample(families, "its_errors", "_total", reason="too_large") >= 1


async def test_metrics_are_exposed_and_parseable(fast: Server) -> None:
    status, text = fast.get("/metrics")
    assert status == 200
    families = metric_families(text.decode())
    for name in (
        "its_request_latency_seconds", "its_frame_latency_seconds", "its_queue_time_seconds",
        "its_compute_time_seconds", "its_batch_size", "its_queue_depth", "its_frames",
        "its_errors", "its_backend_info", "its_engine_cache_hits", "its_engine_cache_builds",
        "its_gpu_telemetry_available", "its_ready", "its_frames_per_second",
    ):  # fmt: skip
        assert name in families, name
    buckets = [
        float(s.labels["le"])
        for s in families["its_request_latency_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
    ]
    assert len([b for b in buckets if 0.05 <= b <= 0.15]) >= 8  # fine around 100 ms
    assert sample(families, "its_ready") == 1
    assert sample(families, "its_gpu_telemetry_available") == 0  # no GPU here
    assert sample(families, "its_backend_info", backend="eager") == 1


async def test_the_performance_report_reads_latency_percentiles(fast: Server) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(5):
            await post(
                s, fast.url + "/v1/detect", road_jpeg(), headers={"Content-Type": "image/jpeg"}
            )
        async with s.get(fast.url + "/v1/performance") as r:
            report = await r.json()
    assert report["frames"] >= 5
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] < 5000
    assert report["sla"]["latency_ms"] == 100.0
    assert 0.0 <= report["sla"]["compliance"] <= 1.0
    assert report["throughput"]["fps"] > 0
    assert report["errors"]["rate"] >= 0.0
    assert report["queue_depth"] == 0
    assert report["gpu_utilization"] is None
    assert report["degradation"]["degraded"] is False


@pytest.mark.slow
async def test_a_full_queue_answers_429_at_once(slow: Server) -> None:
    payload = npy(np.zeros((512, 512, 3), np.uint8))
    headers = {"Content-Type": "application/x-npy"}

    async def timed() -> tuple[int, str, float]:
        start = time.monotonic()
        status, body = await post(s, slow.url + "/v1/detect", payload, headers=headers)
        reason = body["error"]["reason"] if status != 200 else ""
        return status, reason, time.monotonic() - start

    async with aiohttp.ClientSession() as s:
        outcomes = await asyncio.gather(*(timed() for _ in range(12)))
    statuses = [o[0] for o in outcomes]
    assert statuses.count(200) >= 3  # one running and two queued at least
    rejected = [o for o in outcomes if o[0] == 429]
    assert len(rejected) >= 5, statuses
    assert all(reason == "queue_full" for _, reason, _ in rejected)
    slowest_ok = max(o[2] for o in outcomes if o[0] == 200)
    assert max(o[2] for o in rejected) < slowest_ok  # rejected at once, not after waiting


@pytest.mark.slow
async def test_a_request_that_cannot_meet_its_deadline_gets_503(slow: Server) -> None:
    payload = npy(np.zeros((512, 512, 3), np.uint8))
    headers = {"Content-Type": "application/x-npy"}
    async with aiohttp.ClientSession() as s:
        busy = [
            asyncio.create_task(post(s, slow.url + "/v1/detect", payload, headers=headers))
            for _ in range(2)
        ]
        await asyncio.sleep(0.05)
        start = time.monotonic()
        status, body = await post(
            s, slow.url + "/v1/detect", payload, headers={**headers, "X-Deadline-Ms": "60"}
        )
        took = time.monotonic() - start
        await asyncio.gather(*busy)
    assert status == 503, body
    assert body["error"]["reason"] == "deadline_exceeded"
    assert took < 0.5  # refused around its deadline, not answered late
