"""Decoding camera frames and raw arrays into model input, and refusing bad ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from its_runtime.serving import preprocess

SHAPE = (3, 64, 96)  # C, H, W


def _scene(width: int, height: int) -> Image.Image:
    """A road-like frame: grey asphalt, lane marks, a few coloured boxes (vehicles)."""
    img = Image.new("RGB", (width, height), (90, 90, 95))
    draw = ImageDraw.Draw(img)
    for x in range(0, width, width // 8):
        draw.rectangle([x, height // 2 - 2, x + width // 16, height // 2 + 2], fill=(240, 240, 240))
    draw.rectangle([width // 5, height // 3, width // 3, height // 2], fill=(200, 30, 30))
    draw.rectangle([width // 2, height // 2, 2 * width // 3, 3 * height // 4], fill=(30, 60, 200))
    return img


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_jpeg_and_png_decode_to_model_input(fmt: str) -> None:
    img = _scene(96, 64)
    x = preprocess.decode_image(
        _encode(img, fmt, quality=95) if fmt == "JPEG" else _encode(img, fmt), SHAPE
    )
    assert x.shape == torch.Size(SHAPE)
    assert x.dtype == torch.float32
    want = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    assert (x - want).abs().mean() < 0.02  # lossless for PNG, near for JPEG


def test_large_jpeg_is_reduced_while_decoding_and_matches_a_full_decode() -> None:
    data = _encode(_scene(960, 544), "JPEG", quality=90)
    x = preprocess.decode_image(data, SHAPE)

    full = Image.open(io.BytesIO(data)).convert("RGB").resize((96, 64), Image.Resampling.BILINEAR)
    want = torch.from_numpy(np.array(full)).permute(2, 0, 1).float() / 255
    assert x.shape == torch.Size(SHAPE)
    assert (x - want).abs().mean() < 0.03

    draft = Image.open(io.BytesIO(data))
    draft.draft("RGB", (96, 64))
    assert draft.size == (120, 68)  # libjpeg decoded at 1/8 scale: what decode_image asks for


def test_grayscale_and_rgba_pngs_become_three_channels() -> None:
    gray = _scene(96, 64).convert("L")
    rgba = _scene(96, 64).convert("RGBA")
    assert preprocess.decode_image(_encode(gray, "PNG"), SHAPE).shape == torch.Size(SHAPE)
    assert preprocess.decode_image(_encode(rgba, "PNG"), SHAPE).shape == torch.Size(SHAPE)


def test_single_channel_models_get_one_channel() -> None:
    x = preprocess.decode_image(_encode(_scene(96, 64), "PNG"), (1, 64, 96))
    assert x.shape == (1, 64, 96)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty image body"),
        (b"this is not an image", "not a JPEG or PNG"),
        (_encode(_scene(32, 32), "GIF"), "not a JPEG or PNG"),
        (_encode(_scene(320, 200), "JPEG")[:400], "corrupt image"),
        (_encode(_scene(320, 200), "PNG")[:200], "corrupt image"),
    ],
    ids=["empty", "garbage", "gif", "truncated-jpeg", "truncated-png"],
)
def test_bad_image_bytes_raise_image_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(preprocess.ImageDecodeError, match=message):
        preprocess.decode_image(data, SHAPE)


def test_raw_uint8_frame_is_accepted_in_hwc_layout() -> None:
    arr = np.full((64, 96, 3), 255, dtype=np.uint8)
    x = preprocess.array_to_input(arr, SHAPE)
    assert x.shape == torch.Size(SHAPE)
    assert float(x.min()) == 1.0


def test_raw_float_frame_is_accepted_in_chw_layout() -> None:
    arr = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    x = preprocess.array_to_input(arr, SHAPE)
    np.testing.assert_array_equal(x.numpy(), arr)


@pytest.mark.parametrize(
    ("arr", "message"),
    [
        (
            np.zeros((64, 64, 3), np.uint8),
            r"shape \(64, 64, 3\), expected \(H, W, C\) = \(64, 96, 3\)",
        ),
        (np.zeros((64, 96, 3), np.float32), r"expected \(C, H, W\) = \(3, 64, 96\)"),
        (np.full(SHAPE, np.nan, np.float32), "NaN"),
        (np.zeros((64, 96, 3), np.int32), "dtype int32 is not supported"),
    ],
    ids=["wrong-size", "float-hwc", "nan", "int32"],
)
def test_raw_arrays_of_the_wrong_shape_or_dtype_name_what_was_expected(
    arr: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess.array_to_input(arr, SHAPE)
