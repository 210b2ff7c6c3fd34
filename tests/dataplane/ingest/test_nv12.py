"""The torch NV12 -> RGB conversion agrees with PyAV's (swscale's) own, on the CPU.

The GPU decode path runs this very code on CUDA tensors; here it runs on CPU tensors
made from the NV12 planes of a real decoded H.264 frame, against ``to_ndarray("rgb24")``
of the same frame.
"""

from __future__ import annotations

import pathlib

import av
import av.video.frame
import numpy as np
import numpy.typing as npt
import pytest
import torch

from its_runtime.dataplane.ingest import nv12
from its_runtime.kits import synth
from its_runtime.letterbox import PAD_VALUE, Fit, ResizeMode


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> av.video.frame.VideoFrame:
    scene = synth.two_lane_scene(1.0, first_s=0.0)
    path = synth.encode_h264(scene, tmp_path_factory.mktemp("nv12") / "scene.ts")
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 20:  # vehicles in view: colour edges, not just grey road
                return frame
    raise AssertionError("the video is too short")


def planes(frame: av.video.frame.VideoFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Y (H, W) and UV (H/2, W/2, 2) of the frame as NV12, the layout NVDEC delivers."""
    h, w = frame.height, frame.width
    packed = np.asarray(frame.reformat(format="nv12").to_ndarray(), dtype=np.uint8)
    return torch.from_numpy(packed[:h].copy()), torch.from_numpy(
        packed[h:].reshape(h // 2, w // 2, 2).copy()
    )


def hwc(rgb: torch.Tensor) -> npt.NDArray[np.float32]:
    return rgb.permute(1, 2, 0).numpy().astype(np.float32)


def mae(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(np.abs(a - b).mean())


def colour_mae(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Mean error over the coloured pixels (the vehicles), where the matrix matters."""
    coloured = (b.max(axis=-1) - b.min(axis=-1)) > 60
    assert coloured.sum() > 500
    return float(np.abs(a - b)[coloured].mean())


@pytest.mark.parametrize(
    ("colorspace", "matrix"),
    [(2, "bt601"), (6, "bt601"), (1, "bt709")],  # unspecified, SMPTE 170M, BT.709
)
def test_nv12_to_rgb_matches_swscale_for_the_stream_s_matrix(
    decoded: av.video.frame.VideoFrame, colorspace: int, matrix: str
) -> None:
    decoded.colorspace = colorspace
    assert nv12.matrix_for(colorspace) == matrix
    reference = np.asarray(decoded.to_ndarray(format="rgb24"), dtype=np.float32)
    y, uv = planes(decoded)
    got = hwc(nv12.nv12_to_rgb(y, uv, matrix=matrix))
    assert got.shape == reference.shape
    assert mae(got, reference) < 1.5
    assert colour_mae(got, reference) < 3.5
    # The other matrix is visibly wrong on the vehicles: the check tells them apart.
    other = "bt709" if matrix == "bt601" else "bt601"
    assert colour_mae(hwc(nv12.nv12_to_rgb(y, uv, matrix=other)), reference) > 5.0


def test_full_range_streams_are_converted_as_full_range(
    decoded: av.video.frame.VideoFrame,
) -> None:
    decoded.colorspace = 2
    reference = np.asarray(
        decoded.to_ndarray(format="rgb24", src_color_range="JPEG"), dtype=np.float32
    )
    y, uv = planes(decoded)
    assert mae(hwc(nv12.nv12_to_rgb(y, uv, full_range=True)), reference) < 1.0
    assert mae(hwc(nv12.nv12_to_rgb(y, uv, full_range=False)), reference) > 4.0


def test_16_bit_planes_are_read_in_the_8_bit_scale(decoded: av.video.frame.VideoFrame) -> None:
    y, uv = planes(decoded)
    eight = nv12.nv12_to_rgb(y, uv)
    sixteen = nv12.nv12_to_rgb(
        (y.to(torch.int32) << 8).to(torch.uint16), (uv.to(torch.int32) << 8).to(torch.uint16)
    )
    assert float((eight - sixteen).abs().max()) < 1e-3


def test_the_scaled_and_letterboxed_input_matches_swscale_and_fit_place(
    decoded: av.video.frame.VideoFrame,
) -> None:
    decoded.colorspace = 2
    fit = Fit.compute(decoded.width, decoded.height, 160, 160, ResizeMode.LETTERBOX)
    assert (fit.scaled_w, fit.scaled_h, fit.pad_x, fit.pad_y) == (160, 96, 0, 32)
    y, uv = planes(decoded)
    got = nv12.to_input(y, uv, fit, matrix="bt601", full_range=False)
    assert got.dtype == torch.uint8
    assert tuple(got.shape) == (3, 160, 160)
    scaled = np.asarray(
        decoded.to_ndarray(format="rgb24", width=fit.scaled_w, height=fit.scaled_h),
        dtype=np.uint8,
    )
    expected = fit.place(scaled)
    image = got.permute(1, 2, 0).numpy()
    # The padding is exactly Fit's: same grey, same rows.
    assert (image[: fit.pad_y] == PAD_VALUE).all()
    assert (image[fit.pad_y + fit.scaled_h :] == PAD_VALUE).all()
    assert np.array_equal(image[: fit.pad_y], expected[: fit.pad_y])
    # The picture is swscale's within the difference of two bilinear downscalers.
    assert mae(image.astype(np.float32), expected.astype(np.float32)) < 2.5


def test_place_pads_like_fit_place() -> None:
    fit = Fit.compute(640, 480, 320, 320, ResizeMode.LETTERBOX)
    rgb = torch.rand(3, fit.scaled_h, fit.scaled_w) * 255
    got = nv12.place(rgb, fit).permute(1, 2, 0).numpy()
    want = fit.place(rgb.round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy())
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="expected"):
        nv12.place(torch.zeros(3, 10, 10), fit)


def test_planes_must_be_nv12_shaped() -> None:
    with pytest.raises(ValueError, match="UV"):
        nv12.nv12_to_rgb(torch.zeros(4, 4, dtype=torch.uint8), torch.zeros(2, 2, dtype=torch.uint8))


def test_the_video_fixture_is_h264(tmp_path: pathlib.Path) -> None:
    # What NVDEC would decode: the generated video is H.264 4:2:0, as the cameras' are.
    path = synth.encode_h264(synth.two_lane_scene(0.2), tmp_path / "s.ts")
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        assert ctx.name == "h264"
        assert ctx.pix_fmt == "yuv420p"
