"""A small YOLO-style detector: anchor-free heads at strides 8, 16 and 32.

Shaped like the detectors the runtime serves (a strided conv backbone, a small neck,
one prediction per grid cell per scale, boxes decoded inside the model) so that its
exported and compiled forms exercise the same paths, while ``width`` keeps it tiny in
tests (a few thousand parameters at width 4) or detector-sized in the benchmark.

Output: ``(B, N, 4 + K)``, boxes ``cx, cy, w, h`` in input pixels and K sigmoid class
scores, the "yolo" output format. A ``torchvision``-style variant returns per-image
``{boxes, scores, labels}`` dicts of the top-k candidates (no NMS, so it stays
exportable with static shapes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

STRIDES = (8, 16, 32)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU()
    )


class TinyYolo(nn.Module):
    """Backbone of stride-2 blocks, one 1x1 prediction conv per output stride."""

    def __init__(self, num_classes: int, width: int = 8, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        w = width
        self.stem = nn.Sequential(_block(in_channels, w, 2), _block(w, 2 * w, 2))  # /4
        self.stage8 = _block(2 * w, 4 * w, 2)
        self.stage16 = _block(4 * w, 8 * w, 2)
        self.stage32 = _block(8 * w, 16 * w, 2)
        self.heads = nn.ModuleList(nn.Conv2d(c, 4 + num_classes, 1) for c in (4 * w, 8 * w, 16 * w))
        prior = -math.log((1 - 0.01) / 0.01)  # start near 1% class confidence, as YOLO does
        for head in self.heads:
            assert isinstance(head, nn.Conv2d)
            assert head.bias is not None
            nn.init.constant_(head.bias[4:], prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f8 = self.stage8(self.stem(x))
        f16 = self.stage16(f8)
        f32 = self.stage32(f16)
        outs = [
            _decode(head(f), stride)
            for head, f, stride in zip(self.heads, (f8, f16, f32), STRIDES, strict=True)
        ]
        return torch.cat(outs, dim=1)


def _decode(pred: torch.Tensor, stride: int) -> torch.Tensor:
    b, c, h, w = pred.shape
    pred = pred.permute(0, 2, 3, 1).reshape(b, h * w, c)
    ys = torch.arange(h, device=pred.device, dtype=pred.dtype)
    xs = torch.arange(w, device=pred.device, dtype=pred.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((gx, gy), dim=-1).reshape(1, h * w, 2)
    centre = (pred[..., :2].sigmoid() * 2 - 0.5 + grid) * stride
    size = torch.exp(pred[..., 2:4].clamp(max=4.0)) * stride
    scores = pred[..., 4:].sigmoid()
    return torch.cat((centre, size, scores), dim=-1)


class TorchvisionStyle(nn.Module):
    """Wrap a YOLO-style net to return torchvision-style per-image dicts (top-k, xyxy)."""

    def __init__(self, raw: nn.Module, top_k: int = 50) -> None:
        super().__init__()
        self.raw = raw
        self.top_k = top_k

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        raw = self.raw(x)
        scores, labels = raw[..., 4:].max(dim=-1)
        k = min(self.top_k, raw.shape[1])
        top_scores, idx = scores.topk(k, dim=1)
        cxcywh = torch.gather(raw[..., :4], 1, idx.unsqueeze(-1).expand(-1, -1, 4))
        half = cxcywh[..., 2:] / 2
        boxes = torch.cat((cxcywh[..., :2] - half, cxcywh[..., :2] + half), dim=-1)
        top_labels = torch.gather(labels, 1, idx)
        return [
            {"boxes": boxes[i], "scores": top_scores[i], "labels": top_labels[i]}
            for i in range(x.shape[0])
        ]


def build_yolo(num_classes: int, width: int = 8, in_channels: int = 3, seed: int = 0) -> TinyYolo:
    """A YOLO-style detector with deterministic random weights, in eval mode."""
    torch.manual_seed(seed)
    return TinyYolo(num_classes, width, in_channels).eval()


def build_torchvision_style(
    num_classes: int, width: int = 8, in_channels: int = 3, top_k: int = 50, seed: int = 0
) -> TorchvisionStyle:
    return TorchvisionStyle(build_yolo(num_classes, width, in_channels, seed), top_k).eval()
