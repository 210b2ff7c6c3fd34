"""The frame converter: both paths fit frames alike; the GPU path falls back per frame.

The device path's code (DLPack wrapping of PyAV's NV12 planes, pitch and all, then the
torch conversion) runs here on a host NV12 frame, the CPU twin of an NVDEC surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import av.video.frame
import numpy as np
import pytest
import torch

from its_runtime.config import ResizeMode
from its_runtime.dataplane.ingest.convert import FrameConverter
from its_runtime.dataplane.ingest.decision import DecodeDecision
from its_runtime.dataplane.ingest.frames import Frame
from its_runtime.detections import Detections
from its_runtime.kits import synth
from its_runtime.letterbox import PAD_VALUE, Fit

#: A width whose rows FFmpeg pads (line size > width): the planes are pitch-strided.
WIDTH, HEIGHT = 300, 180
SIZE = (160, 128)
GPU = DecodeDecision("gpu", "gpu", "NVDEC decodes h264; frames stay on the GPU")


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> av.video.frame.VideoFrame:
    scene = synth.two_lane_scene(1.0, first_s=0.0, width=WIDTH, height=HEIGHT)
    path = synth.encode_h264(scene, tmp_path_factory.mktemp("convert") / "scene.ts")
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 20:
                return frame
    raise AssertionError("the video is too short")


def converter(decision: DecodeDecision, changes: list[DecodeDecision]) -> FrameConverter:
    return FrameConverter(SIZE, ResizeMode.LETTERBOX, decision, changes.append)


def test_the_device_path_fits_frames_as_the_host_path_does(
    decoded: av.video.frame.VideoFrame,
) -> None:
    changes: list[DecodeDecision] = []
    conv = converter(GPU, changes)
    fit = conv.fit(WIDTH, HEIGHT)
    assert fit == Fit.compute(WIDTH, HEIGHT, *SIZE, ResizeMode.LETTERBOX)
    assert (fit.scaled_w, fit.scaled_h, fit.pad_x, fit.pad_y) == (160, 96, 0, 16)
    surface = decoded.reformat(format="nv12")
    assert surface.planes[0].line_size > WIDTH  # pitch-strided, as NVDEC surfaces are
    on_device = conv.from_planes(surface, fit)
    assert on_device.dtype == torch.uint8
    assert tuple(on_device.shape) == (3, 128, 160)
    image = on_device.permute(1, 2, 0).numpy()
    assert (image[: fit.pad_y] == PAD_VALUE).all()
    assert (image[fit.pad_y + fit.scaled_h :] == PAD_VALUE).all()
    host, device_image, host_fit = FrameConverter(
        SIZE, ResizeMode.LETTERBOX, DecodeDecision("cpu", "cpu", "x"), changes.append
    ).convert(decoded)
    assert device_image is None
    assert host_fit == fit
    assert host.shape == image.shape
    assert float(np.abs(host.astype(np.float32) - image.astype(np.float32)).mean()) < 3.0
    assert changes == []


def test_a_software_frame_on_a_gpu_connection_switches_it_to_the_cpu(
    decoded: av.video.frame.VideoFrame,
) -> None:
    changes: list[DecodeDecision] = []
    conv = converter(GPU, changes)
    image, device_image, _ = conv.convert(decoded)  # yuv420p: FFmpeg decoded in software
    assert device_image is None
    assert image.shape == (128, 160, 3)
    assert conv.decision.backend == "cpu"
    assert conv.decision.requested == "gpu"
    assert conv.decision.reason.startswith("NVDEC refused the stream")
    assert changes == [conv.decision]
    conv.convert(decoded)
    assert len(changes) == 1  # reported once


@dataclass
class _Format:
    name: str


class _CudaLooking:
    """A frame that claims to be a CUDA frame but whose planes cannot be wrapped."""

    def __init__(self, real: av.video.frame.VideoFrame) -> None:
        self._real = real
        self.format = _Format("cuda")
        self.sw_format = _Format("yuv444p")
        self.width, self.height = real.width, real.height

    def to_ndarray(self, **kw: Any) -> Any:
        return self._real.to_ndarray(**kw)


def test_a_frame_the_gpu_cannot_convert_is_converted_on_the_host(
    decoded: av.video.frame.VideoFrame,
) -> None:
    changes: list[DecodeDecision] = []
    conv = converter(GPU, changes)
    image, device_image, _ = conv.convert(_CudaLooking(decoded))  # type: ignore[arg-type]
    assert device_image is None
    assert image.shape == (128, 160, 3)
    assert conv.decision.backend == "cpu"
    assert "yuv444p is not converted on the device" in conv.decision.reason
    assert len(changes) == 1


def test_without_a_size_frames_keep_the_source_size(decoded: av.video.frame.VideoFrame) -> None:
    conv = FrameConverter(None, ResizeMode.LETTERBOX, DecodeDecision("cpu", "cpu", "x"), print)
    image, _, fit = conv.convert(decoded)
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert fit.identity


def test_the_pipeline_maps_letterboxed_boxes_back_and_drops_those_in_the_padding() -> None:
    fit = Fit.compute(WIDTH, HEIGHT, *SIZE, ResizeMode.LETTERBOX)
    frame = Frame("c", 1, 1, 0.0, 0.0, 0.0, np.zeros((128, 160, 3), np.uint8), WIDTH, HEIGHT, fit)
    on_input = fit.boxes_to_input(np.array([[0.1, 0.2, 0.3, 0.4]], np.float32))
    padding = np.array([[0.2, 0.0, 0.4, 0.1]], np.float32)  # the top band only
    detections = Detections(
        boxes=np.concatenate([on_input, padding]),
        scores=np.array([0.9, 0.8], np.float32),
        classes=np.array([1, 2], np.int64),
    )
    mapped = frame.to_source(detections)
    assert len(mapped) == 1
    assert np.allclose(mapped.boxes[0], [0.1, 0.2, 0.3, 0.4], atol=1e-5)
    assert mapped.classes.tolist() == [1]
    stretched = Frame("c", 1, 1, 0.0, 0.0, 0.0, frame.image, WIDTH, HEIGHT, None)
    assert stretched.to_source(detections) is detections
