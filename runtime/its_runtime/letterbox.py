"""How a frame of any size becomes the model's fixed input, and how boxes come back.

Two modes (``model.resize``):

* ``stretch`` scales width and height independently to the input size. Boxes come back
  in normalised coordinates of the input, which are the normalised coordinates of the
  frame too: nothing to map. Fine for models trained that way (torchvision's SSD).
* ``letterbox`` scales by one factor so the whole frame fits, centres it and pads the
  rest with grey (114, as YOLO-style training does). The model then sees objects with
  their true aspect ratio, which is what YOLO-style models were trained on; boxes come
  back in input coordinates and must be mapped back (undo the padding, then the
  scale) before anything compares them with lines and regions drawn on the frame.

:class:`Fit` is the one place that arithmetic lives; every decode path (PIL for HTTP
JPEGs, PyAV/swscale for cameras, torch on the GPU) asks it for the scaled size and the
padding, and every path maps boxes back through :meth:`Fit.boxes_to_source`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from its_runtime.config import ResizeMode

#: Grey used for the padding (YOLO's convention; 114/255 after normalisation).
PAD_VALUE = 114

__all__ = ["PAD_VALUE", "Fit", "ResizeMode"]


@dataclass(frozen=True, slots=True)
class Fit:
    """Placement of a ``src_w`` x ``src_h`` frame inside a ``dst_w`` x ``dst_h`` input."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    #: Size of the scaled frame inside the input (equal to dst for stretch).
    scaled_w: int
    scaled_h: int
    #: Left and top padding in input pixels (0 for stretch).
    pad_x: int
    pad_y: int

    @classmethod
    def compute(cls, src_w: int, src_h: int, dst_w: int, dst_h: int, mode: ResizeMode | str) -> Fit:
        if min(src_w, src_h, dst_w, dst_h) < 1:
            raise ValueError(f"sizes must be positive: {src_w}x{src_h} -> {dst_w}x{dst_h}")
        if ResizeMode(mode) is ResizeMode.STRETCH:
            return cls(src_w, src_h, dst_w, dst_h, dst_w, dst_h, 0, 0)
        scale = min(dst_w / src_w, dst_h / src_h)
        scaled_w = min(dst_w, max(1, round(src_w * scale)))
        scaled_h = min(dst_h, max(1, round(src_h * scale)))
        return cls(
            src_w,
            src_h,
            dst_w,
            dst_h,
            scaled_w,
            scaled_h,
            (dst_w - scaled_w) // 2,
            (dst_h - scaled_h) // 2,
        )

    @property
    def identity(self) -> bool:
        """True when boxes need no mapping (stretch, or a frame already the input size)."""
        return (
            self.pad_x == 0
            and self.pad_y == 0
            and self.scaled_w == self.dst_w
            and self.scaled_h == self.dst_h
        )

    def place(self, scaled: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """``scaled`` ((scaled_h, scaled_w, C) uint8) padded into a (dst_h, dst_w, C) canvas."""
        if scaled.shape[:2] != (self.scaled_h, self.scaled_w):
            raise ValueError(
                f"scaled frame is {scaled.shape[1]}x{scaled.shape[0]}, "
                f"expected {self.scaled_w}x{self.scaled_h}"
            )
        if self.identity:
            return scaled
        canvas = np.full((self.dst_h, self.dst_w, scaled.shape[2]), PAD_VALUE, dtype=np.uint8)
        canvas[self.pad_y : self.pad_y + self.scaled_h, self.pad_x : self.pad_x + self.scaled_w] = (
            scaled
        )
        return canvas

    def boxes_to_source(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Boxes (N, 4) normalised to the input -> normalised to the source frame.

        Boxes reaching into the padding are clipped to the frame.
        """
        if self.identity or len(boxes) == 0:
            return boxes
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] * self.dst_w - self.pad_x) / self.scaled_w
        out[:, 1::2] = (boxes[:, 1::2] * self.dst_h - self.pad_y) / self.scaled_h
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def boxes_to_input(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The inverse of :meth:`boxes_to_source` (tests and ground truth use it)."""
        if self.identity or len(boxes) == 0:
            return boxes
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] * self.scaled_w + self.pad_x) / self.dst_w
        out[:, 1::2] = (boxes[:, 1::2] * self.scaled_h + self.pad_y) / self.dst_h
        return out
