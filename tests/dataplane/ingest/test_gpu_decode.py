"""NVDEC decode (``cameraDecode: gpu``) on a CUDA machine: frames never leave the GPU.

Decodes a generated H.264 file on both paths and compares them: the GPU frames are
CUDA tensors, letterboxed with the padding where ``Fit`` says, within a small
tolerance of the CPU decode (the same H.264 pictures; only the two bilinear
downscalers differ); and the engine's staging stacks them on the device, with no host
buffer in the way. Skipped where there is no CUDA device (tests/conftest.py).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from its_runtime.config import ResizeMode
from its_runtime.dataplane.camera import frame_to_tensor
from its_runtime.engine import spec as spec_mod
from its_runtime.engine import staging
from its_runtime.kits import synth
from its_runtime.letterbox import PAD_VALUE, Fit
from tests.dataplane.ingest.support import read_all

pytestmark = pytest.mark.gpu

SIZE = (160, 96)
FIT = Fit.compute(320, 240, *SIZE, ResizeMode.LETTERBOX)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    scene = synth.two_lane_scene(2.0, every_s=1.0, width=320, height=240)
    return synth.encode_h264(scene, tmp_path_factory.mktemp("nvdec") / "scene43.ts")


async def test_nvdec_frames_are_cuda_tensors_letterboxed_and_match_the_cpu_decode(
    video: pathlib.Path,
) -> None:
    gpu, gpu_stats = await read_all(
        video.as_uri(),
        size=SIZE,
        resize=ResizeMode.LETTERBOX,
        decode_mode="gpu",
        device_frames=lambda: True,
    )
    cpu, _ = await read_all(
        video.as_uri(), size=SIZE, resize=ResizeMode.LETTERBOX, decode_mode="cpu"
    )
    assert gpu_stats.decode is not None
    assert gpu_stats.decode.backend == "gpu", gpu_stats.decode.reason
    assert len(gpu) == len(cpu) == 60
    for on_gpu, on_cpu in zip(gpu, cpu, strict=True):
        assert on_gpu.media_time == pytest.approx(on_cpu.media_time)
        image = on_gpu.device_image
        assert image is not None
        assert image.is_cuda
        assert image.dtype == torch.uint8
        assert tuple(image.shape) == (3, 96, 160)
        assert on_gpu.image.size == 0  # nothing on the host
        assert on_gpu.fit == FIT
        assert bool((image[:, :, : FIT.pad_x] == PAD_VALUE).all())
        assert bool((image[:, :, FIT.pad_x + FIT.scaled_w :] == PAD_VALUE).all())
        host = image.permute(1, 2, 0).cpu().numpy().astype(np.float32)
        assert float(np.abs(host - on_cpu.image.astype(np.float32)).mean()) < 3.0


async def test_device_frames_are_stacked_on_the_device_without_a_host_buffer(
    video: pathlib.Path,
) -> None:
    frames, _ = await read_all(
        video.as_uri(), size=SIZE, decode_mode="auto", device_frames=lambda: True
    )
    tensors = [frame_to_tensor(f, 3) for f in frames[:4]]
    assert all(t.is_cuda and t.dtype == torch.float32 for t in tensors)
    device = tensors[0].device
    spec = spec_mod.InputSpec(3, 96, 160, max_batch=4, opt_batch=4, buckets=(1, 2, 4))
    stager = staging.BatchStager(spec, device, torch.float32)
    batch = stager.collate(tensors)
    out = stager.stage(batch, 4)
    torch.cuda.synchronize(device)
    assert out.is_cuda
    assert torch.equal(out, torch.stack(tensors))
    assert stager._slot_host == []  # no pinned host buffer was ever needed
    # A batch mixing an HTTP frame (host) with camera frames (device) works too.
    mixed = [tensors[0].cpu(), *tensors[1:3]]
    out = stager.stage(stager.collate(mixed), 4)
    torch.cuda.synchronize(device)
    assert torch.equal(out[:3].cpu(), torch.stack([t.cpu() for t in mixed]))
