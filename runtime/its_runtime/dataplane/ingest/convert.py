"""A decoded frame to the model's input size, on the path its connection decodes on.

One :class:`FrameConverter` per camera connection (the source size, and so the
letterbox :class:`~its_runtime.letterbox.Fit`, is known only once the stream is open):

* **CPU** (software frames): swscale converts to RGB and scales in one call, as it
  always did: to the input size for ``stretch``, to ``Fit``'s scaled size for
  ``letterbox``, then :meth:`Fit.place` pads it. The frame's ``image`` is (H, W, 3)
  uint8 on the host.
* **GPU** (CUDA frames from NVDEC, kept on the device by PyAV's ``is_hw_owned``): the
  surface's two planes are wrapped with DLPack, **no copy**; :mod:`.nv12` resizes,
  converts and pads them in torch on the device, on the device's default stream (the
  stream FFmpeg copies its NVDEC output on, so the kernels run after that copy, and
  the batcher's staging waits on it before it stacks the frames). The frame's
  ``device_image`` is (3, H, W) uint8 on the device and ``image`` is empty: the pixels
  never come to the host.

A CUDA frame that the GPU path cannot take (an unexpected surface format, a CUDA
error) is downloaded by swscale and converted on the CPU instead, and the connection
is reported as decoding on the CPU from then on; a software frame on a GPU connection
(NVDEC refused the stream and FFmpeg fell back to its software decoder) likewise.
"""

from __future__ import annotations

from collections.abc import Callable

import av.video.frame
import numpy as np
import numpy.typing as npt
import torch
import torch.utils.dlpack

from its_runtime.config import ResizeMode
from its_runtime.dataplane.ingest import nv12
from its_runtime.dataplane.ingest.decision import CPU, GPU, DecodeDecision
from its_runtime.letterbox import Fit

#: ``image`` of a frame whose pixels stay on the device.
NO_HOST_IMAGE: npt.NDArray[np.uint8] = np.zeros((0, 0, 3), dtype=np.uint8)
#: Surface formats the GPU path converts (NVDEC's 8-bit and 10/16-bit 4:2:0 output).
DEVICE_FORMATS = frozenset({"nv12", "p010le", "p016le"})


class FrameConverter:
    """Converts one connection's frames; reports a changed decision to ``on_change``."""

    def __init__(
        self,
        size: tuple[int, int] | None,
        resize: ResizeMode | str,
        decision: DecodeDecision,
        on_change: Callable[[DecodeDecision], None],
    ) -> None:
        """``size`` is the model's (width, height); None keeps the source's size."""
        self._size = size
        self._resize = ResizeMode(resize)
        self.decision = decision
        self._on_change = on_change
        self._fits: dict[tuple[int, int], Fit] = {}

    def fit(self, width: int, height: int) -> Fit:
        """Where a ``width`` x ``height`` frame goes in the input (computed once per size)."""
        fit = self._fits.get((width, height))
        if fit is None:
            dst = (width, height) if self._size is None else self._size
            fit = Fit.compute(width, height, dst[0], dst[1], self._resize)
            self._fits[(width, height)] = fit
        return fit

    def convert(
        self, frame: av.video.frame.VideoFrame
    ) -> tuple[npt.NDArray[np.uint8], torch.Tensor | None, Fit]:
        """(host image, device image or None, fit) of a decoded frame."""
        fit = self.fit(frame.width, frame.height)
        on_device = frame.format.name == "cuda"
        if self.decision.backend == GPU:
            if not on_device:
                self._fall_back(
                    "NVDEC refused the stream (FFmpeg decodes it in software); "
                    "frames are converted on the CPU"
                )
            else:
                try:
                    return NO_HOST_IMAGE, self.from_planes(frame, fit), fit
                except Exception as exc:
                    self._fall_back(
                        f"the GPU conversion failed ({type(exc).__name__}: {exc}); frames are "
                        "copied to the host and converted there"[:300]
                    )
        return self._on_host(frame, fit), None, fit

    def _fall_back(self, reason: str) -> None:
        self.decision = DecodeDecision(self.decision.requested, CPU, reason)
        self._on_change(self.decision)

    def _on_host(self, frame: av.video.frame.VideoFrame, fit: Fit) -> npt.NDArray[np.uint8]:
        if self._size is None:
            return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
        if fit.identity:  # stretch (or a frame with the input's aspect): one swscale call
            array = frame.to_ndarray(format="rgb24", width=fit.dst_w, height=fit.dst_h)
            return np.asarray(array, dtype=np.uint8)
        scaled = frame.to_ndarray(format="rgb24", width=fit.scaled_w, height=fit.scaled_h)
        return fit.place(np.asarray(scaled, dtype=np.uint8))

    def from_planes(self, frame: av.video.frame.VideoFrame, fit: Fit) -> torch.Tensor:
        """The model input made from the frame's NV12 planes, where they are.

        A CUDA frame's planes are the decoder's surface, wrapped with DLPack (no copy;
        PyAV refuses a stream argument, so the capsule is taken here rather than by
        ``torch.from_dlpack(plane)``); the work runs on the device's default stream. A
        host NV12 frame (tests) goes the same way on the CPU.
        """
        fmt = frame.sw_format or frame.format
        if fmt.name not in DEVICE_FORMATS:
            raise ValueError(f"surface format {fmt.name} is not converted on the device")
        y = torch.utils.dlpack.from_dlpack(frame.planes[0].__dlpack__())
        uv = torch.utils.dlpack.from_dlpack(frame.planes[1].__dlpack__())
        matrix = nv12.matrix_for(int(frame.colorspace))
        full_range = int(frame.color_range) == nv12.AVCOL_RANGE_JPEG
        if not y.is_cuda:
            return nv12.to_input(y, uv, fit, matrix=matrix, full_range=full_range)
        with torch.cuda.stream(torch.cuda.default_stream(y.device)):
            return nv12.to_input(y, uv, fit, matrix=matrix, full_range=full_range)
