"""Request bytes to model input, on the CPU or the engine's GPU, with the frame's Fit.

:class:`FrameDecoder` is what the HTTP handlers decode through. An image body is
decoded by nvJPEG onto the engine's CUDA device when :func:`jpeg.resolve
<its_runtime.serving.jpeg.resolve>` says so (``server.jpegDecode``; see
:mod:`.jpeg`), else, and for every frame nvJPEG does not take, by the preprocessor on
the CPU (PIL, :mod:`.preprocess`). Either way the result is a
:class:`~its_runtime.serving.preprocess.Decoded`: the input tensor and the
:class:`~its_runtime.letterbox.Fit` (``model.resize``) whose ``boxes_to_source`` maps
the frame's detections back to the image the client sent. Raw arrays are already the
input size: their Fit is the identity.

The decoder in use is published as ``its_jpeg_decode_info{requested,active}`` whenever
it changes (an engine that loads onto CUDA after start turns ``auto`` to gpu), and
:func:`jpeg_decode_status` reports it with the reason, for ``/ready``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from aiohttp import web

from its_runtime.letterbox import Fit, ResizeMode
from its_runtime.observability import metrics
from its_runtime.serving import jpeg, preprocess
from its_runtime.serving.api.services import Preprocessor
from its_runtime.serving.preprocess import Decoded

log = logging.getLogger(__name__)

#: ``decode_frame(data, input_shape, resize)`` of a preprocessor that can letterbox.
DecodeFrame = Callable[[bytes, tuple[int, int, int], ResizeMode], Decoded]


def engine_device(executor: object) -> Callable[[], torch.device | None]:
    """The executor's device now (None while it loads); an executor that names no
    device takes CPU frames (the batcher's protocol), so it counts as CPU."""
    if not hasattr(executor, "device"):
        cpu = torch.device("cpu")
        return lambda: cpu

    def current() -> torch.device | None:
        device = getattr(executor, "device", None)
        return device if isinstance(device, torch.device) else None

    return current


class FrameDecoder:
    """Decodes request payloads into :class:`Decoded` frames (see the module docstring)."""

    def __init__(
        self,
        preprocessor: Preprocessor,
        input_shape: tuple[int, int, int],
        *,
        resize: ResizeMode = ResizeMode.STRETCH,
        requested: str = "auto",
        device: Callable[[], torch.device | None] = lambda: None,
    ) -> None:
        self.preprocessor = preprocessor
        self.input_shape = input_shape
        self.resize = ResizeMode(resize)
        self.requested = requested
        self._device = device
        decode_frame: DecodeFrame | None = getattr(preprocessor, "decode_frame", None)
        if decode_frame is None and self.resize is not ResizeMode.STRETCH:
            raise ValueError(
                f"model.resize is {self.resize.value}, but the preprocessor has no "
                "decode_frame(data, input_shape, resize) to fit frames with"
            )
        self._decode_frame = decode_frame
        _, h, w = input_shape
        self._identity = Fit.compute(w, h, w, h, ResizeMode.STRETCH)
        self._published: jpeg.JpegDecodeStatus | None = None
        self._lock = threading.Lock()
        self.status()

    def status(self) -> jpeg.JpegDecodeStatus:
        """The JPEG decoder in use and why; publishes it when it changed."""
        status = jpeg.resolve(self.requested, self._device(), self.input_shape[0])
        if status != self._published:
            with self._lock:
                if status != self._published:
                    metrics.JPEG_DECODE_INFO.clear()
                    metrics.JPEG_DECODE_INFO.labels(status.requested, status.active).set(1)
                    log.info(
                        "JPEG decode: %s (requested %s): %s",
                        status.active,
                        status.requested,
                        status.reason,
                    )
                    self._published = status
        return status

    @property
    def gpu_active(self) -> bool:
        """Whether nvJPEG was active when last resolved (cheap; no self-test)."""
        published = self._published
        return published is not None and published.gpu

    def decode(self, data: bytes) -> Decoded:
        """One image body (nvJPEG when active, else PIL); ``ValueError`` if it is bad."""
        (frame,) = self.decode_on_gpu([data])
        return frame if frame is not None else self.decode_on_cpu(data)

    def decode_on_gpu(self, datas: Sequence[bytes]) -> list[Decoded | None]:
        """Image bodies through nvJPEG in one batched call; None for each frame the CPU
        must decode (nvJPEG inactive, not a JPEG it takes, or it failed on it)."""
        out: list[Decoded | None] = [None] * len(datas)
        status = self.status()
        if not status.gpu or status.device is None:
            return out
        _, h, w = self.input_shape
        picked: list[int] = []
        fits: list[Fit] = []
        for i, data in enumerate(datas):
            size = jpeg.header(data, preprocess.MAX_PIXELS)
            if size is None:
                if data.startswith(b"\xff\xd8"):
                    metrics.JPEG_GPU_FALLBACKS.labels("unsupported").inc()
                continue
            picked.append(i)
            fits.append(Fit.compute(size[0], size[1], w, h, self.resize))
        if not picked:
            return out
        tensors = jpeg.decode([datas[i] for i in picked], fits, torch.device(status.device))
        for i, fit, tensor in zip(picked, fits, tensors, strict=True):
            if tensor is None:
                metrics.JPEG_GPU_FALLBACKS.labels("error").inc()
            else:
                out[i] = Decoded(tensor, fit)
        return out

    def decode_on_cpu(self, data: bytes) -> Decoded:
        """One image body with the preprocessor (PIL); ``ValueError`` if it is bad."""
        if self._decode_frame is not None:
            return self._decode_frame(data, self.input_shape, self.resize)
        return Decoded(self.preprocessor.decode_image(data, self.input_shape), self._identity)

    def array(self, arr: npt.NDArray[np.generic]) -> Decoded:
        """A raw input-sized array (never resized: its Fit is the identity)."""
        return Decoded(self.preprocessor.array_to_input(arr, self.input_shape), self._identity)


#: The application's frame decoder (set by ``its_runtime.serving.app.create_app``).
DECODER = web.AppKey("its_frame_decoder", FrameDecoder)


def jpeg_decode_status(app: web.Application) -> dict[str, Any]:
    """``{"requested", "active", "reason", "device"}`` of the app's JPEG decoder."""
    return dict(app[DECODER].status().as_dict())
