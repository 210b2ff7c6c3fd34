"""Model outputs to the common ``Detections`` format, for both detector styles.

* torchvision style: a list (one per image) of ``{"boxes", "scores", "labels"}`` dicts
  with ``xyxy`` boxes in pixels of the model input, already filtered by NMS inside the
  model. A scripted torchvision detector returns ``(losses, detections)``; both are
  accepted.
* YOLO style: one raw tensor of candidates per image, ``(B, N, 4 + K)`` with boxes as
  ``cx, cy, w, h`` in pixels of the model input followed by K per-class scores (already
  through a sigmoid/softmax). Ultralytics exports put candidates last, ``(B, 4 + K, N)``;
  since N (thousands of anchors) always exceeds 4 + K (classes), the layout is told
  apart by which axis is longer (so a hand-made tensor with fewer candidates than
  columns must use the ``(B, N, 4 + K)`` layout). NMS runs here, per class
  (``torchvision.ops.batched_nms``), because data-dependent NMS is what keeps a
  detector from exporting and compiling cleanly.

Boxes leave normalised to 0..1 (divided by the model input size, clipped), the way the
rest of the system reads them. Rows past the real batch (bucket padding) are dropped.
An output of the wrong shape raises ``OutputFormatError`` naming what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.ops import batched_nms

from its_runtime import config
from its_runtime.detections import Detections

#: Most detections kept per frame after NMS.
MAX_DETECTIONS = 300


class OutputFormatError(ValueError):
    """The model's output does not have the configured output format's shape."""


def to_detections(
    output: Any,
    output_format: config.OutputFormat,
    *,
    batch: int,
    input_hw: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = MAX_DETECTIONS,
) -> list[Detections]:
    """Read ``batch`` frames' detections out of a model output of ``output_format``."""
    if output_format is config.OutputFormat.TORCHVISION:
        return from_torchvision(
            output, batch=batch, input_hw=input_hw, score_threshold=score_threshold
        )
    return from_yolo(
        output,
        batch=batch,
        input_hw=input_hw,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )


def from_torchvision(
    output: Any, *, batch: int, input_hw: tuple[int, int], score_threshold: float
) -> list[Detections]:
    if (
        isinstance(output, tuple)
        and len(output) == 2
        and isinstance(output[0], Mapping)
        and isinstance(output[1], list)
    ):
        output = output[1]  # a scripted torchvision detector's (losses, detections)
    if not isinstance(output, Sequence) or not all(isinstance(o, Mapping) for o in output):
        raise OutputFormatError(
            f"expected a list of {{boxes, scores, labels}} dicts (outputFormat torchvision), "
            f"got {_describe(output)}"
        )
    if len(output) < batch:
        raise OutputFormatError(f"model returned {len(output)} results for {batch} frames")
    out = []
    for item in output[:batch]:
        missing = {"boxes", "scores", "labels"} - set(item)
        if missing:
            raise OutputFormatError(f"detection dict lacks {sorted(missing)}: {_describe(item)}")
        boxes, scores, labels = item["boxes"], item["scores"], item["labels"]
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != labels.shape:
            raise OutputFormatError(f"inconsistent detection dict: {_describe(item)}")
        keep = scores > score_threshold
        out.append(_make(boxes[keep], scores[keep], labels[keep], input_hw))
    return out


def from_yolo(
    output: Any,
    *,
    batch: int,
    input_hw: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = MAX_DETECTIONS,
) -> list[Detections]:
    raw = output[0] if isinstance(output, (tuple, list)) and output else output
    if not isinstance(raw, torch.Tensor) or raw.ndim != 3:
        raise OutputFormatError(
            f"expected a (batch, candidates, 4 + classes) tensor (outputFormat yolo), "
            f"got {_describe(output)}"
        )
    if 5 <= raw.shape[1] < raw.shape[2]:
        raw = raw.transpose(1, 2)  # (B, 4 + K, N) -> (B, N, 4 + K)
    if raw.shape[2] < 5:
        raise OutputFormatError(f"yolo output {tuple(raw.shape)} has no class score columns")
    if raw.shape[0] < batch:
        raise OutputFormatError(f"model returned {raw.shape[0]} results for {batch} frames")
    raw = raw[:batch].float()
    best_scores, best_classes = raw[:, :, 4:].max(dim=2)
    cxcywh = raw[:, :, :4]
    half = cxcywh[:, :, 2:] / 2
    xyxy = torch.cat([cxcywh[:, :, :2] - half, cxcywh[:, :, :2] + half], dim=2)
    out = []
    for i in range(batch):
        keep = best_scores[i] > score_threshold
        boxes, scores, classes = xyxy[i][keep], best_scores[i][keep], best_classes[i][keep]
        kept = batched_nms(boxes, scores, classes, iou_threshold)[:max_detections]
        out.append(_make(boxes[kept], scores[kept], classes[kept], input_hw))
    return out


def _make(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, input_hw: tuple[int, int]
) -> Detections:
    h, w = input_hw
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
    norm = (boxes.float() / scale).clamp_(0.0, 1.0)
    visible = (norm[:, 2] > norm[:, 0]) & (norm[:, 3] > norm[:, 1])
    return Detections(
        boxes=norm[visible].cpu().numpy(),
        scores=scores[visible].float().cpu().numpy(),
        classes=classes[visible].to(torch.int64).cpu().numpy(),
    )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_describe(v) for v in value[:3])
        more = ", ..." if len(value) > 3 else ""
        return f"{type(value).__name__}[{inner}{more}] (len {len(value)})"
    return type(value).__name__
