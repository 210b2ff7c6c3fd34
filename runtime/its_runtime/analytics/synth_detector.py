"""A real torch detector with hand-set weights that finds the generated vehicles.

It stands in for a trained model wherever the generated scenes of
:mod:`its_runtime.analytics.synth` are analysed (tests, benchmarks, demos), and it is
a genuine network run by torch on every frame, not a lookup of the ground truth:

1. a 1x1 convolution with set weights scores every pixel per class (red minus blue
   for cars, blue minus red for trucks; the grey road scores zero);
2. a sigmoid and threshold give per-class masks, cleaned by a 3x3 opening
   (min-pool then max-pool) so single noisy pixels vanish;
3. connected components are labelled by iterated 3x3 max-pooling of cell indices
   within the mask (every cell ends up holding its component's largest index), on a
   grid 4x coarser than the input, then carried back to full resolution (objects
   closer than 4 pixels merge; the drawn vehicles never are);
4. boxes are the per-label min/max of pixel coordinates (``scatter_reduce``), and
   scores the mean pixel score of each component.

It implements the batcher's ``BatchExecutor`` protocol (``max_batch_size``,
``input_shape``, ``run_batch``), so it plugs into
:class:`its_runtime.batching.DynamicBatcher` exactly where the engine does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from its_runtime.detections import Detections

#: Class ids the detector reports, in the runtime's default class-name order.
CAR = 1
TRUCK = 2


class ColourBoxNet(nn.Module):
    def __init__(self, *, min_area_px: int = 12, max_iterations: int = 256) -> None:
        super().__init__()
        self.score = nn.Conv2d(3, 2, kernel_size=1)
        weight = torch.tensor([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]]).view(2, 3, 1, 1)
        self.score.weight = nn.Parameter(weight * 12.0, requires_grad=False)
        self.score.bias = nn.Parameter(torch.tensor([-0.35, -0.35]) * 12.0, requires_grad=False)
        self.min_area_px = min_area_px
        self.max_iterations = max_iterations

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in 0..1 -> (per-class pixel scores, component labels), (B, 2, H, W)."""
        scores = torch.sigmoid(self.score(x))
        mask = (scores > 0.5).to(x.dtype)
        mask = -F.max_pool2d(-mask, 3, stride=1, padding=1)  # erode
        mask = F.max_pool2d(mask, 3, stride=1, padding=1)  # dilate
        h, w = mask.shape[-2:]
        # Label on a grid 4x coarser (16x fewer pixels, 4x fewer iterations), then
        # carry the labels back to full resolution inside the full-resolution mask.
        coarse = F.max_pool2d(mask, 4, stride=4, ceil_mode=True)
        ch, cw = coarse.shape[-2:]
        index = torch.arange(1, ch * cw + 1, dtype=x.dtype, device=x.device).view(1, 1, ch, cw)
        labels = index * coarse
        for i in range(self.max_iterations):
            grown = F.max_pool2d(labels, 3, stride=1, padding=1) * coarse
            if i % 4 == 3 and torch.equal(grown, labels):
                break
            labels = grown
        full = labels.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)[..., :h, :w]
        return scores, full * mask


class ColourBoxDetector:
    """``BatchExecutor`` around :class:`ColourBoxNet` (CPU, float32)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 96, 160),
        *,
        max_batch_size: int = 16,
        class_ids: tuple[int, int] = (CAR, TRUCK),
    ) -> None:
        self.net = ColourBoxNet().eval()
        self._input_shape = input_shape
        self._max_batch_size = max_batch_size
        self._class_ids = class_ids
        self.frames_run = 0

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        with torch.inference_mode():
            scores, labels = self.net(batch)
        self.frames_run += int(batch.shape[0])
        return [self._boxes(scores[i], labels[i]) for i in range(batch.shape[0])]

    def _boxes(self, scores: torch.Tensor, labels: torch.Tensor) -> Detections:
        c, h, w = labels.shape
        flat = labels.reshape(c, -1)
        ys = torch.arange(h).repeat_interleave(w)
        xs = torch.arange(w).repeat(h)
        boxes: list[list[float]] = []
        confidences: list[float] = []
        classes: list[int] = []
        for ch in range(c):
            on = flat[ch] > 0
            if not bool(on.any()):
                continue
            ids, inverse, counts = torch.unique(
                flat[ch][on], return_inverse=True, return_counts=True
            )
            n = len(ids)
            px, py = xs[on], ys[on]
            x1 = torch.full((n,), w, dtype=torch.long).scatter_reduce(0, inverse, px, "amin")
            y1 = torch.full((n,), h, dtype=torch.long).scatter_reduce(0, inverse, py, "amin")
            x2 = torch.zeros(n, dtype=torch.long).scatter_reduce(0, inverse, px, "amax")
            y2 = torch.zeros(n, dtype=torch.long).scatter_reduce(0, inverse, py, "amax")
            total = torch.zeros(n).scatter_add(0, inverse, scores[ch].reshape(-1)[on])
            mean = total / counts
            for k in range(n):
                if int(counts[k]) < self.net.min_area_px:
                    continue
                boxes.append(
                    [
                        float(x1[k]) / w,
                        float(y1[k]) / h,
                        float(x2[k] + 1) / w,
                        float(y2[k] + 1) / h,
                    ]
                )
                confidences.append(float(mean[k]))
                classes.append(self._class_ids[ch])
        if not boxes:
            return Detections()
        return Detections(
            boxes=np.asarray(boxes, dtype=np.float32),
            scores=np.asarray(confidences, dtype=np.float32),
            classes=np.asarray(classes, dtype=np.int64),
        )
