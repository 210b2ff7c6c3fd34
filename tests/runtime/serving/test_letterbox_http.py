"""``model.resize`` on the HTTP path: every box comes back on the image the client sent.

Real JPEGs (coloured rectangles on grey, 960x544 and 1920x1080) go through the real
application to the colour-box detector, in letterbox and in stretch mode. The
detector resolves whole input pixels (3 source pixels here), so the HTTP tests allow
one input pixel; the decode + map path itself is checked to 1 source pixel by finding
the rectangle's edges in the letterboxed tensor to sub-pixel precision.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from its_runtime.letterbox import PAD_VALUE, Fit, ResizeMode
from its_runtime.serving import preprocess

from .scenes import (
    RED,
    app_client,
    box_errors,
    edges_in_source,
    rectangles,
    scene_jpeg,
    tolerance,
)

#: (frame size, square model input): both reduce the frame 3x.
CASES = [((960, 544), 320), ((1920, 1080), 640)]


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
@pytest.mark.parametrize(("size", "input_size"), CASES, ids=["960x544", "1920x1080"])
async def test_detect_returns_boxes_on_the_drawn_rectangles(
    size: tuple[int, int], input_size: int, resize: str
) -> None:
    w, h = size
    async with app_client(input_size, resize=resize) as (client, _):
        for seed in range(2):
            rects = rectangles(w, h, seed)
            r = await client.post(
                "/v1/detect",
                data=scene_jpeg(w, h, rects),
                headers={"Content-Type": "image/jpeg"},
            )
            body = await r.json()
            assert r.status == 200, body
            errors = box_errors(body["detections"], rects, w, h)
            assert max(errors) <= tolerance(w, h, input_size, resize), (errors, body)
            for det in body["detections"]:
                assert all(0.0 <= v <= 1.0 for v in det["box"])


async def test_the_batch_form_maps_each_frame_with_its_own_fit() -> None:
    """Two frames of different sizes in one request: each mapped back to itself."""
    sizes = [(960, 544), (1920, 1080), (544, 960)]
    scenes = [(w, h, rectangles(w, h, 7)) for w, h in sizes]
    frames = [
        {"image": base64.b64encode(scene_jpeg(w, h, rects)).decode(), "camera_id": f"cam-{i}"}
        for i, (w, h, rects) in enumerate(scenes)
    ]
    async with app_client(320) as (client, _):
        r = await client.post("/v1/detect/batch", json={"frames": frames})
        body = await r.json()
    assert r.status == 200, body
    assert [res["camera_id"] for res in body["results"]] == ["cam-0", "cam-1", "cam-2"]
    for (w, h, rects), result in zip(scenes, body["results"], strict=True):
        errors = box_errors(result["detections"], rects, w, h)
        assert max(errors) <= tolerance(w, h, 320, "letterbox"), (w, h, errors)


async def test_raw_arrays_are_input_sized_so_their_boxes_are_not_mapped() -> None:
    arr = np.full((320, 320, 3), 128, np.uint8)
    arr[40:100, 60:200] = RED
    buf = io.BytesIO()
    np.save(buf, arr)
    async with app_client(320) as (client, _):
        r = await client.post(
            "/v1/detect", data=buf.getvalue(), headers={"Content-Type": "application/x-npy"}
        )
        body = await r.json()
    assert r.status == 200, body
    (det,) = body["detections"]
    np.testing.assert_allclose(det["box"], [60 / 320, 40 / 320, 200 / 320, 100 / 320], atol=1e-4)


@pytest.mark.parametrize(("size", "input_size"), CASES, ids=["960x544", "1920x1080"])
def test_letterboxed_tensor_maps_back_to_the_drawn_rectangle_within_one_pixel(
    size: tuple[int, int], input_size: int
) -> None:
    w, h = size
    for seed in range(4):
        rects = rectangles(w, h, seed)
        frame = preprocess.decode_frame(
            scene_jpeg(w, h, rects), (3, input_size, input_size), ResizeMode.LETTERBOX
        )
        fit = frame.fit
        assert fit == Fit.compute(w, h, input_size, input_size, ResizeMode.LETTERBOX)
        assert fit.pad_y > 0
        x = frame.tensor
        assert x.shape == (3, input_size, input_size)
        pad = torch.tensor(PAD_VALUE, dtype=torch.float32) / 255.0
        assert bool((x[:, : fit.pad_y] == pad).all())
        assert bool((x[:, fit.pad_y + fit.scaled_h :] == pad).all())
        for box, colour in rects:
            back = edges_in_source(x, fit, colour)
            assert np.abs(back - np.array(box)).max() <= 1.0, (seed, colour, back, box)


def test_stretch_decodes_exactly_as_before() -> None:
    """The default: draft-decoded and resized to the input as the code before letterbox
    did it, nothing padded, no mapping."""
    rects = rectangles(960, 544, 3)
    data = scene_jpeg(960, 544, rects)
    frame = preprocess.decode_frame(data, (3, 320, 320))
    assert frame.fit.identity
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (320, 320))
    old = np.asarray(img.convert("RGB").resize((320, 320), Image.Resampling.BILINEAR))
    want = torch.from_numpy(old.transpose(2, 0, 1).copy()).to(torch.float32) / 255.0
    assert torch.equal(frame.tensor, want)
    assert torch.equal(preprocess.decode_image(data, (3, 320, 320)), want)
    for box, colour in rects:
        back = edges_in_source(frame.tensor, frame.fit, colour)
        assert np.abs(back - np.array(box)).max() <= 1.0
