"""Both detector output styles come out as the same normalised Detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from its_runtime import config
from its_runtime.engine import postprocess
from its_runtime.kits.models import ssdlite

HW = (100, 200)  # model input height, width


def _yolo_row(cx: float, cy: float, w: float, h: float, scores: list[float]) -> list[float]:
    return [cx, cy, w, h, *scores]


def _yolo(images: list[list[list[float]]], candidates: int = 16) -> torch.Tensor:
    """Real detectors emit thousands of candidates: pad with zero-score rows."""
    width = len(images[0][0])
    padded = [
        rows + [[10.0, 10.0, 4.0, 4.0] + [0.0] * (width - 4)] * (candidates - len(rows))
        for rows in images
    ]
    return torch.tensor(padded, dtype=torch.float32)


def test_yolo_boxes_are_normalised_xyxy_with_best_class() -> None:
    raw = _yolo([[_yolo_row(100, 50, 40, 20, [0.1, 0.9, 0.2])]])
    (dets,) = postprocess.from_yolo(
        raw, batch=1, input_hw=HW, score_threshold=0.3, iou_threshold=0.5
    )
    np.testing.assert_allclose(dets.boxes, [[0.4, 0.4, 0.6, 0.6]], atol=1e-6)
    np.testing.assert_allclose(dets.scores, [0.9], atol=1e-6)
    assert dets.classes.tolist() == [1]


def test_yolo_nms_suppresses_overlaps_within_a_class_only() -> None:
    raw = _yolo(
        [
            [
                _yolo_row(100, 50, 40, 20, [0.9, 0.0]),
                _yolo_row(101, 50, 40, 20, [0.8, 0.0]),  # same class, overlaps: suppressed
                _yolo_row(101, 51, 40, 20, [0.0, 0.7]),  # other class, overlaps: kept
                _yolo_row(20, 20, 10, 10, [0.6, 0.0]),  # same class, apart: kept
                _yolo_row(150, 80, 10, 10, [0.1, 0.2]),  # below threshold: dropped
            ]
        ]
    )
    (dets,) = postprocess.from_yolo(
        raw, batch=1, input_hw=HW, score_threshold=0.3, iou_threshold=0.5
    )
    np.testing.assert_allclose(sorted(dets.scores.tolist()), [0.6, 0.7, 0.9], atol=1e-6)
    assert sorted(dets.classes.tolist()) == [0, 0, 1]


def test_yolo_channels_first_layout_is_read_the_same() -> None:
    raw = _yolo([[_yolo_row(100, 50, 40, 20, [0.9, 0.1])]])
    a = postprocess.from_yolo(raw, batch=1, input_hw=HW, score_threshold=0.3, iou_threshold=0.5)
    b = postprocess.from_yolo(
        raw.transpose(1, 2), batch=1, input_hw=HW, score_threshold=0.3, iou_threshold=0.5
    )
    np.testing.assert_array_equal(a[0].boxes, b[0].boxes)


def test_boxes_are_clipped_to_the_frame_and_padding_rows_dropped() -> None:
    raw = _yolo(
        [
            [_yolo_row(0, 0, 40, 40, [0.9])],
            [_yolo_row(100, 50, 10, 10, [0.9])],  # a padding row of the bucket
        ]
    )
    dets = postprocess.from_yolo(raw, batch=1, input_hw=HW, score_threshold=0.3, iou_threshold=0.5)
    assert len(dets) == 1
    np.testing.assert_allclose(dets[0].boxes, [[0.0, 0.0, 0.1, 0.2]], atol=1e-6)


def test_yolo_output_of_wrong_rank_is_an_output_format_error() -> None:
    with pytest.raises(postprocess.OutputFormatError, match=r"expected a \(batch, candidates"):
        postprocess.from_yolo(
            torch.zeros(2, 10), batch=2, input_hw=HW, score_threshold=0.3, iou_threshold=0.5
        )


def test_torchvision_dicts_are_thresholded_and_normalised() -> None:
    out = [
        {
            "boxes": torch.tensor([[20.0, 10.0, 60.0, 30.0], [0.0, 0.0, 5.0, 5.0]]),
            "scores": torch.tensor([0.8, 0.1]),
            "labels": torch.tensor([3, 1]),
        }
    ]
    (dets,) = postprocess.from_torchvision(out, batch=1, input_hw=HW, score_threshold=0.3)
    np.testing.assert_allclose(dets.boxes, [[0.1, 0.1, 0.3, 0.3]], atol=1e-6)
    assert dets.classes.tolist() == [3]
    assert dets.to_json(["bg", "car", "truck", "bus"])[0]["class"] == "bus"


def test_scripted_torchvision_losses_detections_tuple_is_accepted() -> None:
    det = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
    (dets,) = postprocess.from_torchvision(({}, [det]), batch=1, input_hw=HW, score_threshold=0.3)
    assert len(dets) == 0


def test_torchvision_dict_missing_keys_is_an_output_format_error() -> None:
    with pytest.raises(postprocess.OutputFormatError, match=r"lacks \['labels'\]"):
        postprocess.from_torchvision(
            [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}],
            batch=1,
            input_hw=HW,
            score_threshold=0.3,
        )


def test_real_ssdlite_outputs_in_both_styles_become_detections() -> None:
    model = ssdlite.build_ssdlite(num_classes=4)
    model.score_thresh = 0.0
    raw_model = ssdlite.SsdliteRaw(model, (320, 320)).eval()
    frames = torch.rand(2, 3, 320, 320)
    with torch.inference_mode():
        tv = postprocess.to_detections(
            model(frames),
            config.OutputFormat.TORCHVISION,
            batch=2,
            input_hw=(320, 320),
            score_threshold=0.0,
            iou_threshold=0.5,
        )
        raw = raw_model(frames)
    ours = postprocess.to_detections(
        raw,
        config.OutputFormat.YOLO,
        batch=2,
        input_hw=(320, 320),
        score_threshold=0.0,
        iou_threshold=0.5,
    )
    assert raw.shape == (2, 3234, 8)
    for a, b in zip(tv, ours, strict=True):
        assert len(a) > 0
        assert len(b) > 0
        assert 0 not in b.classes  # the background column never wins
        # Same network, same decoding: the best-scoring box agrees.
        np.testing.assert_allclose(a.scores.max(), b.scores.max(), rtol=1e-4)
