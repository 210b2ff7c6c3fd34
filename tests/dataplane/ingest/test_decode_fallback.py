"""``cameraDecode``: without what NVDEC needs, a camera decodes on the CPU and says why.

This machine class has no CUDA; the tests show the fallback as every report carries it
(the camera's stream snapshot, ``/ready``, the ``its_camera_decode_info`` metric and the
log) and that frames keep flowing. The links further down the chain (FFmpeg cannot
create a CUDA device; opening with the hwaccel fails) are reached by pretending the
earlier ones hold. On a CUDA machine these tests are skipped: there the GPU path is
checked by ``test_gpu_decode.py``.
"""

from __future__ import annotations

import json
import logging
import pathlib

import av.codec.hwaccel
import pytest
import torch

from its_runtime.dataplane.camera import PipelineOptions
from its_runtime.dataplane.ingest import decode
from its_runtime.dataplane.ingest.decision import DecodeDecision
from its_runtime.kits import synth
from its_runtime.observability import dataplane_stats
from its_runtime.observability.metrics import REGISTRY
from its_runtime.serving.api.readiness import Readiness
from tests.dataplane.ingest.support import read_all
from tests.dataplane.support import camera, runtime_config, serving

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is available: the GPU path is tested instead"
)

SIZE = (160, 96)
NO_CUDA = "CUDA is not available to torch"


class Recorder:
    """Every observer call, recorded as (name, *args)."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def __getattr__(self, name: str) -> object:
        def record(*args: object) -> None:
            self.calls.append((name, *args))

        return record


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    scene = synth.two_lane_scene(2.0, every_s=1.0)
    return synth.encode_h264(scene, tmp_path_factory.mktemp("fallback") / "scene.ts")


@pytest.fixture
def fresh_probe() -> object:
    decode.cuda_device_error.cache_clear()
    yield None
    decode.cuda_device_error.cache_clear()


@pytest.mark.parametrize(("mode", "level"), [("auto", logging.INFO), ("gpu", logging.WARNING)])
async def test_without_cuda_auto_and_gpu_decode_on_the_cpu_say_why_and_keep_going(
    video: pathlib.Path, mode: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    observer = Recorder()
    caplog.set_level(logging.INFO, logger="its_runtime.dataplane.ingest.reader")
    frames, stats = await read_all(
        video.as_uri(),
        size=SIZE,
        decode_mode=mode,
        device_frames=lambda: True,
        observer=observer,  # type: ignore[arg-type]
    )
    assert len(frames) == 60
    assert all(f.device_image is None and f.image.shape == (96, 160, 3) for f in frames)
    decision = stats.snapshot()["decode"]
    assert decision["requested"] == mode
    assert decision["backend"] == "cpu"
    assert decision["reason"].startswith(NO_CUDA)
    assert [c for c in observer.calls if c[0] == "decode_chosen"] == [
        ("decode_chosen", "cam", mode, "cpu")
    ]
    logged = [r for r in caplog.records if "decoding on the CPU" in r.getMessage()]
    assert len(logged) == 1  # once per change, not per frame
    assert logged[0].levelno == level
    assert NO_CUDA in logged[0].getMessage()


def test_cpu_mode_is_the_cpu_whatever_the_machine() -> None:
    assert decode.gpu_unavailable_reason("cpu", lambda: True) == "cameraDecode is cpu"


def test_each_missing_link_is_named(monkeypatch: pytest.MonkeyPatch, fresh_probe: object) -> None:
    assert (decode.gpu_unavailable_reason("gpu", lambda: True) or "").startswith(NO_CUDA)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for mode, device_frames in (("gpu", None), ("auto", lambda: False)):
        why = decode.gpu_unavailable_reason(mode, device_frames) or ""
        assert "does not take CUDA frames" in why
    why = decode.gpu_unavailable_reason("gpu", lambda: True) or ""
    if "cuda" in av.codec.hwaccel.hwdevices_available():
        # This FFmpeg has the CUDA hwaccel, but there is no driver to create a device.
        assert why.startswith("FFmpeg cannot create a CUDA device for NVDEC: ")
    else:
        assert "built without the CUDA hwaccel" in why


async def test_a_gpu_open_that_fails_reopens_on_the_cpu_with_the_cause(
    video: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check passed (pretended), yet opening with the hwaccel fails: the camera is
    opened again without it, at once, and decodes."""
    monkeypatch.setattr(decode, "gpu_unavailable_reason", lambda *_: None)
    container, decision = decode.open_camera(
        video.as_uri(),
        requested="gpu",
        device_frames=lambda: True,
        open_timeout_s=5.0,
        read_timeout_s=5.0,
    )
    with container:
        assert not container.streams.video[0].codec_context.is_hwaccel
        assert next(container.decode(video=0)).format.name == "yuv420p"
    assert decision.backend == "cpu"
    assert decision.reason.startswith("opening the stream with NVDEC failed (")
    frames, stats = await read_all(
        video.as_uri(), size=SIZE, decode_mode="gpu", device_frames=lambda: True
    )
    assert len(frames) == 60
    assert stats.decode is not None
    assert stats.decode.reason.startswith("opening the stream with NVDEC failed (")


@pytest.mark.slow
async def test_ready_latest_and_metrics_show_the_decode_path(
    video: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    config = runtime_config([camera("cam-dec", video.as_uri())], journal_dir=tmp_path)
    config = config.model_copy(update={"camera_decode": "gpu"})
    options = PipelineOptions(realtime=False, lossless=True)
    async with serving(config, {}, options=options) as (_, plane, client):
        pipeline = plane.pipelines["cam-dec"]
        await pipeline.finished.wait()
        async with client.get("/ready") as resp:
            ready = await resp.json()
        async with client.get("/v1/cameras/cam-dec/latest") as resp:
            latest = json.loads(await resp.read())
        async with client.get("/metrics") as resp:
            metrics = await resp.text()
    assert pipeline.stats.frames_analysed == 60  # the camera was analysed all the same
    section = ready["camera_decode"]
    assert section["requested"] == "gpu"
    assert (section["gpu"], section["cpu"]) == (0, 1)
    decision = section["cameras"]["cam-dec"]
    assert decision["backend"] == "cpu"
    assert decision["requested"] == "gpu"
    assert decision["reason"].startswith(NO_CUDA)
    assert latest["stream"]["decode"] == decision
    assert 'its_camera_decode_info{backend="cpu",camera="cam-dec",requested="gpu"} 1.0' in metrics


def test_the_decode_metric_keeps_one_series_per_camera() -> None:
    ingest = dataplane_stats.PrometheusIngest()
    ingest.decode_chosen("cam-m", "auto", "gpu")
    ingest.decode_chosen("cam-m", "auto", "cpu")  # NVDEC refused the stream mid-way

    def value(backend: str) -> float | None:
        labels = {"camera": "cam-m", "requested": "auto", "backend": backend}
        return REGISTRY.get_sample_value("its_camera_decode_info", labels)

    assert value("cpu") == 1.0
    assert value("gpu") is None


def test_a_decision_reports_a_fallback_only_when_the_gpu_was_required() -> None:
    assert DecodeDecision("gpu", "cpu", "x").fell_back
    assert not DecodeDecision("auto", "cpu", "x").fell_back
    assert not DecodeDecision("gpu", "gpu", "x").fell_back
    assert DecodeDecision("auto", "gpu", "y").to_json() == {
        "requested": "auto",
        "backend": "gpu",
        "reason": "y",
    }


async def test_readiness_sections_are_shown_and_never_decide() -> None:
    readiness = Readiness()
    readiness.warmed_up = True
    readiness.describe("camera_decode", lambda: {"gpu": 1})

    def broken() -> object:
        raise RuntimeError("boom")

    readiness.describe("broken", broken)
    ok, details = await readiness.evaluate()
    assert ok
    assert details["camera_decode"] == {"gpu": 1}
    assert details["broken"] == {"error": "RuntimeError: boom"}
