"""A small real detector and executors around it, for the serving tests.

``TinyDetector`` is a genuine convolutional network (random weights, built in code):
features, global pooling and a head that yields a fixed number of boxes, scores and
classes per frame. Its cost grows with ``width`` and ``depth``, which the server tests
use to make batches take long enough for queues to build up.

``GatedExecutor`` runs the same network but can hold batches back until the test lets
them go, so scheduling tests (priorities, queue limits, deadlines) are deterministic on
a busy 2-core machine instead of depending on timing luck.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from its_runtime.detections import Detections


class TinyDetector(nn.Module):
    def __init__(self, width: int = 8, depth: int = 2, boxes: int = 4, classes: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.k, self.c = boxes, classes
        self.head = nn.Linear(width, boxes * (4 + classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = self.features(x).mean(dim=(2, 3))
        out = self.head(pooled).view(x.shape[0], self.k, 4 + self.c)
        corners = torch.sigmoid(out[..., :4])
        x1 = torch.minimum(corners[..., 0], corners[..., 2])
        x2 = torch.maximum(corners[..., 0], corners[..., 2])
        y1 = torch.minimum(corners[..., 1], corners[..., 3])
        y2 = torch.maximum(corners[..., 1], corners[..., 3])
        probs = torch.softmax(out[..., 4:], dim=-1)
        scores, classes = probs.max(dim=-1)
        return torch.stack([x1, y1, x2, y2], dim=-1), scores, classes


class ModuleExecutor:
    """A :class:`~its_runtime.serving.batching.BatchExecutor` over an ``nn.Module`` on CPU."""

    def __init__(
        self,
        module: nn.Module,
        input_shape: tuple[int, int, int] = (3, 64, 64),
        max_batch_size: int = 8,
    ) -> None:
        self.module = module.eval()
        self.input_shape = input_shape
        self.max_batch_size = max_batch_size
        self.batch_sizes: list[int] = []
        self.first_values: list[list[float]] = []

    @property
    def pipeline_depth(self) -> int:
        return 1  # CPU: stage and run one batch at a time

    def stage(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(frames))

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        self.batch_sizes.append(int(batch.shape[0]))
        self.first_values.append([float(v) for v in batch[:, 0, 0, 0]])
        if torch.isnan(batch).any():
            raise ValueError("NaN in batch")
        with torch.inference_mode():
            boxes, scores, classes = self.module(batch)
        boxes, scores, classes = boxes.cpu(), scores.cpu(), classes.cpu()
        return [
            Detections(
                boxes=boxes[i].numpy().astype(np.float32),
                scores=scores[i].numpy().astype(np.float32),
                classes=classes[i].numpy().astype(np.int64),
            )
            for i in range(batch.shape[0])
        ]


class GatedExecutor(ModuleExecutor):
    """Holds every batch until :meth:`open` (or forever after :meth:`close`)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def open(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.clear()

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        self.entered.release()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("test gate never opened")
        return super().run_batch(batch)
