"""The one detection format every layer passes around.

Post-processing turns torchvision-style dicts and YOLO-style raw tensors into this;
the batcher hands it back to callers; tracking, counting and the HTTP API read it.
Boxes are normalised (0..1) ``x1, y1, x2, y2`` so that counting lines and regions,
which the config also writes in normalised coordinates, need no frame size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


def _empty_boxes() -> npt.NDArray[np.float32]:
    return np.zeros((0, 4), dtype=np.float32)


def _empty_scores() -> npt.NDArray[np.float32]:
    return np.zeros((0,), dtype=np.float32)


def _empty_classes() -> npt.NDArray[np.int64]:
    return np.zeros((0,), dtype=np.int64)


@dataclass(frozen=True)
class Detections:
    """Detections of one frame: ``boxes`` (N, 4), ``scores`` (N,), ``classes`` (N,)."""

    boxes: npt.NDArray[np.float32] = field(default_factory=_empty_boxes)
    scores: npt.NDArray[np.float32] = field(default_factory=_empty_scores)
    classes: npt.NDArray[np.int64] = field(default_factory=_empty_classes)

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.classes.shape != (n,):
            raise ValueError(
                f"inconsistent detections: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"classes {self.classes.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    def to_json(self, class_names: Sequence[str] = ()) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for box, score, cls in zip(self.boxes, self.scores, self.classes, strict=True):
            c = int(cls)
            out.append(
                {
                    "box": [round(float(v), 5) for v in box],
                    "score": round(float(score), 4),
                    "class_id": c,
                    "class": class_names[c] if 0 <= c < len(class_names) else str(c),
                }
            )
        return out
