"""``server.jpegDecode``: nvJPEG on the engine's device, the CPU fallback, and the report.

Without CUDA (forced here, so the tests read alike on every machine) the CPU decoder is
chosen and the reason reported, in ``/metrics`` too, and requests are answered as
before, ``gpu`` requested or not. The orchestration of the GPU path (one batched call
per request, frames it does not take left to PIL, failures falling back, errors never
500) runs here against a stand-in for nvJPEG (torchvision's CPU decoder feeding the
same device-side fit); the ``gpu`` tests run real nvJPEG where CUDA is present.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from its_runtime.letterbox import PAD_VALUE, Fit, ResizeMode
from its_runtime.observability import metrics
from its_runtime.serving import frames, jpeg, preprocess

from .scenes import (
    CudaColourBox,
    app_client,
    box_errors,
    edges_in_source,
    metric,
    rectangles,
    scene_jpeg,
    tolerance,
)

W, H = 960, 544


def _png(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_as(data: bytes, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert(mode).save(buf, "JPEG")
    return buf.getvalue()


GOOD = scene_jpeg(W, H, rectangles(W, H, 0))
#: Bytes no decoder can use: cut short, or a JPEG signature on garbage.
CORRUPT = {"truncated": GOOD[:400], "garbage": b"\xff\xd8\xff" + b"x" * 500 + b"\xff\xd9"}


async def detects_and_batches(client: Any, n: int) -> None:
    """A letterboxed JPEG answers 200 with boxes on the drawn rectangles, and a batch of
    ``n`` of it answers 200."""
    r = await client.post("/v1/detect", data=GOOD, headers={"Content-Type": "image/jpeg"})
    body = await r.json()
    assert r.status == 200, body
    assert max(box_errors(body["detections"], rectangles(W, H, 0), W, H)) <= tolerance(
        W, H, 320, "letterbox"
    )
    batch = [{"image": base64.b64encode(GOOD).decode()}] * n
    r = await client.post("/v1/detect/batch", json={"frames": batch})
    assert r.status == 200, await r.text()


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ---------------------------------------------------------------------------
# Which decoder, and why
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize(
    ("requested", "reason"),
    [
        ("auto", "CUDA is not available"),
        ("gpu", "gpu requested, but CUDA is not available"),
        ("cpu", "server.jpegDecode is cpu"),
    ],
)
def test_without_cuda_the_cpu_decoder_is_chosen_and_says_why(requested: str, reason: str) -> None:
    status = jpeg.resolve(requested, torch.device("cuda", 0), 3)
    assert status.as_dict() == {
        "requested": requested,
        "active": "cpu",
        "reason": reason,
        "device": None,
    }


def test_with_cuda_each_reason_to_stay_on_the_cpu_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert jpeg.resolve("auto", None, 3).reason == "the engine has not loaded yet"
    assert jpeg.resolve("gpu", torch.device("cpu"), 3).reason == (
        "gpu requested, but the engine runs on cpu"
    )
    assert jpeg.resolve("auto", torch.device("cuda", 0), 1).reason == (
        "the model takes 1 channel(s)"
    )

    def broken(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        raise RuntimeError("decode_jpegs_cuda: torchvision not compiled with nvJPEG support")

    monkeypatch.setattr(jpeg, "_decode_jpeg", broken)
    monkeypatch.setattr(jpeg, "_self_tests", {})
    status = jpeg.resolve("auto", torch.device("cuda", 7), 3)
    assert status.active == "cpu"
    assert status.reason.startswith("nvJPEG failed its self-test: RuntimeError")
    assert "not compiled with nvJPEG" in status.reason


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("requested", ["auto", "gpu"])
async def test_the_fallback_is_reported_and_requests_are_still_answered(requested: str) -> None:
    async with app_client(320, jpeg_decode=requested) as (client, app):
        status = frames.jpeg_decode_status(app)
        assert status["active"] == "cpu"
        assert "CUDA is not available" in status["reason"]
        assert await metric(client, "its_jpeg_decode_info", requested=requested) == 1.0
        assert await metric(client, "its_jpeg_decode_info", active="cpu") == 1.0
        assert await metric(client, "its_jpeg_decode_info", active="gpu") is None
        await detects_and_batches(client, 2)


@pytest.mark.parametrize("requested", ["auto", "gpu"])
@pytest.mark.parametrize("kind", sorted(CORRUPT))
async def test_corrupt_jpegs_are_400_whichever_decoder_is_asked_for(
    requested: str, kind: str
) -> None:
    async with app_client(320, jpeg_decode=requested) as (client, _):
        r = await client.post(
            "/v1/detect", data=CORRUPT[kind], headers={"Content-Type": "image/jpeg"}
        )
        body = await r.json()
        assert r.status == 400, body
        assert body["error"]["reason"] == "bad_image"
        frames_ = [{"image": base64.b64encode(d).decode()} for d in (GOOD, CORRUPT[kind])]
        r = await client.post("/v1/detect/batch", json={"frames": frames_})
        body = await r.json()
        assert r.status == 400, body
        assert "frames[1].image" in body["error"]["message"]


# ---------------------------------------------------------------------------
# The GPU path's orchestration, against a stand-in for nvJPEG
# ---------------------------------------------------------------------------


class FakeNvJpeg:
    """``jpeg.decode`` with torchvision's CPU decoder: the same header filter before it
    and the same device-side fit after it, on the CPU. Fails on ``poisoned`` bytes."""

    def __init__(self, poisoned: Sequence[bytes] = ()) -> None:
        self.calls: list[int] = []
        self.poisoned = set(poisoned)

    def __call__(
        self, datas: Sequence[bytes], fits: Sequence[Fit], device: torch.device
    ) -> list[torch.Tensor | None]:
        import torchvision.io

        self.calls.append(len(datas))
        out: list[torch.Tensor | None] = []
        for data, fit in zip(datas, fits, strict=True):
            if data in self.poisoned:
                out.append(None)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                img = torchvision.io.decode_jpeg(
                    torch.frombuffer(bytearray(data), dtype=torch.uint8),
                    mode=torchvision.io.ImageReadMode.RGB,
                )
            out.append(jpeg.fit_image(img, fit))
        return out


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> FakeNvJpeg:
    fake = FakeNvJpeg()
    monkeypatch.setattr(
        jpeg,
        "resolve",
        lambda requested, device, channels: jpeg.JpegDecodeStatus(
            requested, "gpu", "stand-in", "cpu"
        ),
    )
    monkeypatch.setattr(jpeg, "decode", fake)
    return fake


def _fallbacks(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value("its_jpeg_gpu_fallbacks_total", {"reason": reason})
    return value or 0.0


async def test_a_batch_request_decodes_its_jpegs_in_one_call(fake_gpu: FakeNvJpeg) -> None:
    sizes = [(960, 544), (1920, 1080), (544, 960)]
    scenes_ = [(w, h, rectangles(w, h, 5)) for w, h in sizes]
    datas = [scene_jpeg(w, h, rects) for w, h, rects in scenes_]
    grey = _jpeg_as(datas[0], "L")
    bodies = [*datas, _png(datas[0]), grey]
    unsupported = _fallbacks("unsupported")
    async with app_client(320) as (client, app):
        assert frames.jpeg_decode_status(app)["active"] == "gpu"
        assert await metric(client, "its_jpeg_decode_info", active="gpu") == 1.0
        batch = [{"image": base64.b64encode(d).decode()} for d in bodies]
        r = await client.post("/v1/detect/batch", json={"frames": batch})
        body = await r.json()
    assert r.status == 200, body
    assert fake_gpu.calls == [3]  # the three colour JPEGs, together; PNG and grey on the CPU
    assert _fallbacks("unsupported") == unsupported + 1  # the greyscale JPEG
    for (w, h, rects), result in zip(scenes_, body["results"][:3], strict=True):
        assert max(box_errors(result["detections"], rects, w, h)) <= tolerance(
            w, h, 320, "letterbox"
        )
    png_result = body["results"][3]
    assert max(box_errors(png_result["detections"], scenes_[0][2], W, H)) <= tolerance(
        W, H, 320, "letterbox"
    )


async def test_a_frame_nvjpeg_fails_on_is_decoded_on_the_cpu(fake_gpu: FakeNvJpeg) -> None:
    fake_gpu.poisoned.add(GOOD)
    errors = _fallbacks("error")
    async with app_client(320) as (client, _):
        r = await client.post("/v1/detect", data=GOOD, headers={"Content-Type": "image/jpeg"})
        body = await r.json()
        assert r.status == 200, body
        assert _fallbacks("error") == errors + 1
        assert max(box_errors(body["detections"], rectangles(W, H, 0), W, H)) <= tolerance(
            W, H, 320, "letterbox"
        )
        for data in CORRUPT.values():
            r = await client.post("/v1/detect", data=data, headers={"Content-Type": "image/jpeg"})
            assert r.status == 400, await r.text()
    assert fake_gpu.calls == [1]  # corrupt bytes never reached the decoder


def test_a_failed_batched_call_is_retried_frame_by_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def flaky(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        calls.append(len(encoded))
        if any(int(e[-3]) == 1 for e in encoded):
            raise RuntimeError("nvjpeg: bad bitstream")
        return [torch.zeros((3, 2, 2), dtype=torch.uint8) for _ in encoded]

    monkeypatch.setattr(jpeg, "_decode_jpeg", flaky)
    encoded = [torch.tensor([0, 0, v, 0, 0], dtype=torch.uint8) for v in (0, 1, 0)]
    out = jpeg._decode_all(encoded, torch.device("cpu"))
    assert calls == [3, 1, 1, 1]
    assert [o is None for o in out] == [False, True, False]


def test_the_device_side_fit_letterboxes_like_the_cpu_path() -> None:
    """``jpeg.fit_image`` (what runs on the GPU) on the CPU: same padding, same size,
    close pixels, and the drawn rectangle within one input pixel."""
    rects = rectangles(W, H, 2)
    data = scene_jpeg(W, H, rects)
    fit = Fit.compute(W, H, 320, 320, ResizeMode.LETTERBOX)
    img = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy())
    x = jpeg.fit_image(img.permute(2, 0, 1).contiguous(), fit)
    cpu = preprocess.decode_frame(data, (3, 320, 320), ResizeMode.LETTERBOX)
    assert cpu.fit == fit
    assert x.shape == cpu.tensor.shape
    assert x.dtype == torch.float32
    pad = cpu.tensor[:, : fit.pad_y]
    assert torch.equal(x[:, : fit.pad_y], pad)
    assert torch.equal(x[:, fit.pad_y + fit.scaled_h :], cpu.tensor[:, fit.pad_y + fit.scaled_h :])
    assert bool((pad == torch.tensor(PAD_VALUE, dtype=torch.float32) / 255).all())
    assert float((x - cpu.tensor).abs().mean()) < 0.01
    for box, colour in rects:
        back = edges_in_source(x, fit, colour)
        assert np.abs(back - np.array(box)).max() <= W / fit.scaled_w


# ---------------------------------------------------------------------------
# Real nvJPEG
# ---------------------------------------------------------------------------


def _cuda() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


@pytest.mark.gpu
def test_nvjpeg_matches_the_pil_path_and_letterboxes_on_the_device() -> None:
    device = _cuda()
    assert jpeg.self_test(device) is None
    decoder = frames.FrameDecoder(
        preprocess, (3, 320, 320), resize=ResizeMode.LETTERBOX, requested="gpu", device=_cuda
    )
    status = decoder.status()
    assert status.active == "gpu", status
    assert status.device == str(device)
    big = scene_jpeg(1920, 1080, rectangles(1920, 1080, 1))
    bodies = [GOOD, big, _png(GOOD), _jpeg_as(GOOD, "L"), _jpeg_as(GOOD, "CMYK"), GOOD[:400]]
    out = decoder.decode_on_gpu(bodies)
    assert [o is not None for o in out] == [True, True, False, False, False, False]
    for frame, (data, (w, h)) in zip(out[:2], [(GOOD, (W, H)), (big, (1920, 1080))], strict=True):
        assert frame is not None
        x = frame.tensor
        assert x.device == device
        assert x.dtype == torch.float32
        assert x.shape == (3, 320, 320)
        assert x.is_contiguous()
        cpu = preprocess.decode_frame(data, (3, 320, 320), ResizeMode.LETTERBOX)
        assert frame.fit == cpu.fit
        fit = frame.fit
        assert float((x.cpu() - cpu.tensor).abs().mean()) < 0.02
        pad = torch.tensor(PAD_VALUE, dtype=torch.float32, device=device) / 255
        assert bool((x[:, : fit.pad_y] == pad).all())
        assert bool((x[:, fit.pad_y + fit.scaled_h :] == pad).all())
        assert float((x[:, fit.pad_y : fit.pad_y + fit.scaled_h] - pad).abs().max()) > 0.1
        rects = rectangles(w, h, 0 if w == W else 1)
        for box, colour in rects:
            back = edges_in_source(x, fit, colour)
            assert np.abs(back - np.array(box)).max() <= w / fit.scaled_w
    with pytest.raises(preprocess.ImageDecodeError):
        decoder.decode(GOOD[:400])


@pytest.mark.gpu
async def test_http_frames_reach_a_cuda_engine_decoded_on_the_device() -> None:
    executor = CudaColourBox((3, 320, 320))
    async with app_client(320, jpeg_decode="auto", executor=executor) as (client, app):
        assert frames.jpeg_decode_status(app)["active"] == "gpu"
        assert await metric(client, "its_jpeg_decode_info", requested="auto", active="gpu") == 1
        await detects_and_batches(client, 3)
        for data in CORRUPT.values():
            r = await client.post("/v1/detect", data=data, headers={"Content-Type": "image/jpeg"})
            assert r.status == 400, await r.text()
    assert executor.frame_devices
    assert set(executor.frame_devices) == {"cuda"}
