"""The letterbox arithmetic: placement, and boxes mapped back to the frame within 1 px."""

from __future__ import annotations

import numpy as np
import pytest

from its_runtime.letterbox import PAD_VALUE, Fit, ResizeMode


@pytest.mark.parametrize(
    ("src", "dst", "scaled", "pad"),
    [
        ((960, 544), (320, 320), (320, 181), (0, 69)),
        ((1920, 1080), (640, 640), (640, 360), (0, 140)),
        ((544, 960), (320, 320), (181, 320), (69, 0)),
        ((320, 320), (320, 320), (320, 320), (0, 0)),
    ],
)
def test_letterbox_keeps_the_aspect_ratio_and_centres_the_frame(
    src: tuple[int, int], dst: tuple[int, int], scaled: tuple[int, int], pad: tuple[int, int]
) -> None:
    fit = Fit.compute(*src, *dst, ResizeMode.LETTERBOX)
    assert (fit.scaled_w, fit.scaled_h) == scaled
    assert (fit.pad_x, fit.pad_y) == pad
    assert abs(fit.scaled_w / fit.scaled_h - src[0] / src[1]) < 0.01


def test_stretch_needs_no_mapping() -> None:
    fit = Fit.compute(1920, 1080, 320, 320, "stretch")
    assert fit.identity
    boxes = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    assert fit.boxes_to_source(boxes) is boxes


@pytest.mark.parametrize(("w", "h", "dst"), [(960, 544, 320), (1920, 1080, 640), (640, 480, 416)])
def test_boxes_map_back_to_the_frame_within_one_pixel(w: int, h: int, dst: int) -> None:
    """A box drawn on the frame, found on the letterboxed input at whole input pixels
    (the best any detector can do), lands back on the frame within 1 source pixel once
    the detector's own resolution (one input pixel = 1/scale source pixels) is allowed."""
    fit = Fit.compute(w, h, dst, dst, ResizeMode.LETTERBOX)
    rng = np.random.default_rng(1)
    for _ in range(50):
        x1, y1 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        x2, y2 = x1 + int(rng.integers(20, 60)), y1 + int(rng.integers(20, 60))
        truth = np.array([[x1 / w, y1 / h, x2 / w, y2 / h]], np.float32)
        on_input = fit.boxes_to_input(truth)
        back = fit.boxes_to_source(on_input) * np.array([w, h, w, h], np.float32)
        assert np.abs(back - np.array([x1, y1, x2, y2])).max() <= 1.0
        # Rounded to whole input pixels, the error is at most half an input pixel.
        snapped = (np.round(on_input * dst) / dst).astype(np.float32)
        back = fit.boxes_to_source(snapped) * np.array([w, h, w, h], np.float32)
        input_px = w / fit.scaled_w
        assert np.abs(back - np.array([x1, y1, x2, y2])).max() <= 0.5 * input_px + 1e-3
    # And the image itself: the frame sits centred on grey padding.
    scaled = np.full((fit.scaled_h, fit.scaled_w, 3), 7, np.uint8)
    placed = fit.place(scaled)
    assert placed.shape == (dst, dst, 3)
    assert (placed[: fit.pad_y] == PAD_VALUE).all()
    assert (
        placed[fit.pad_y : fit.pad_y + fit.scaled_h, fit.pad_x : fit.pad_x + fit.scaled_w] == 7
    ).all()


def test_boxes_in_the_padding_are_clipped_to_the_frame() -> None:
    fit = Fit.compute(960, 544, 320, 320, ResizeMode.LETTERBOX)
    boxes = np.array([[0.0, 0.0, 0.5, 0.1]], np.float32)  # top padding band
    out = fit.boxes_to_source(boxes)
    assert out.min() >= 0.0
    assert out.max() <= 1.0
    assert out[0, 1] == 0.0
    assert out[0, 3] == 0.0
