"""torchvision's SSDlite320-MobileNetV3-Large, built with no downloaded weights.

``build_ssdlite`` is the model exactly as torchvision ships it: it normalises and
resizes internally, runs NMS, and returns torchvision-style dicts. Its NMS has
data-dependent shapes, so torch.export cannot capture it; it serves eagerly only.

``SsdliteRaw`` is the same network cut before post-processing, the way detectors are
deployed to TensorRT: normalisation, backbone, heads and box decoding against anchors
precomputed for the fixed input size, returning YOLO-style raw candidates
``(B, N, 4 + K)`` (``cx, cy, w, h`` pixels, softmax class scores with the background
column zeroed so class ids still index ``classNames``). NMS then runs in the runtime's
post-processing. It exports with a dynamic batch and compiles with AOTInductor.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD


def build_ssdlite(num_classes: int, seed: int = 0) -> SSD:
    """SSDlite320-MobileNetV3-Large with random weights, in eval mode."""
    torch.manual_seed(seed)
    model = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    )
    return model.eval()


class SsdliteRaw(nn.Module):
    """SSDlite's dense part with raw YOLO-style output, for a fixed input size."""

    mean: torch.Tensor
    std: torch.Tensor
    code_weights: torch.Tensor
    anchor_centres: torch.Tensor
    anchor_sizes: torch.Tensor

    def __init__(self, ssd: SSD, input_hw: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = ssd.backbone
        self.head = ssd.head
        mean = torch.tensor(ssd.transform.image_mean).view(1, -1, 1, 1)
        std = torch.tensor(ssd.transform.image_std).view(1, -1, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        weights = ssd.box_coder.weights
        self.register_buffer("code_weights", torch.tensor(weights).view(1, 1, 4))
        self.xform_clip = float(ssd.box_coder.bbox_xform_clip)
        with torch.no_grad():
            probe = torch.zeros(1, 3, *input_hw)
            features = list(self.backbone(probe).values())
            anchors = ssd.anchor_generator(ImageList(probe, [input_hw]), features)[0]
        widths = anchors[:, 2] - anchors[:, 0]
        heights = anchors[:, 3] - anchors[:, 1]
        centres = torch.stack((anchors[:, 0] + 0.5 * widths, anchors[:, 1] + 0.5 * heights), 1)
        self.register_buffer("anchor_centres", centres.unsqueeze(0))
        self.register_buffer("anchor_sizes", torch.stack((widths, heights), 1).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        features = list(self.backbone(x).values())
        out = self.head(features)
        codes = out["bbox_regression"] / self.code_weights
        centre = codes[..., :2] * self.anchor_sizes + self.anchor_centres
        size = torch.exp(codes[..., 2:].clamp(max=self.xform_clip)) * self.anchor_sizes
        scores = out["cls_logits"].softmax(dim=-1)
        scores = torch.cat((torch.zeros_like(scores[..., :1]), scores[..., 1:]), dim=-1)
        return torch.cat((centre, size, scores), dim=-1)


def build_ssdlite_raw(
    num_classes: int, input_hw: tuple[int, int] = (320, 320), seed: int = 0
) -> SsdliteRaw:
    return SsdliteRaw(build_ssdlite(num_classes, seed), input_hw).eval()
