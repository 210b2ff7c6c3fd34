"""Frames in, model input out: decode, resize, normalise, check.

On a 2-core node decoding is a large share of the cost of a frame, so a JPEG larger
than the model input is decoded at a reduced scale (PIL's draft mode asks libjpeg for
1/2, 1/4 or 1/8 DCT scaling, the largest scale still at least the input size) before
the final resize; a 960x544 camera frame for a 320x320 model decodes at 480x272.

How a frame is fitted to the input is ``model.resize`` (:mod:`its_runtime.letterbox`):
``stretch`` (the default) resizes it to the input size, so boxes come back in
normalised coordinates of the frame already; ``letterbox`` resizes it to the
:class:`~its_runtime.letterbox.Fit`'s scaled size and pads it with grey (114), and the
caller maps boxes back with the :class:`Decoded` frame's ``fit``. Raw arrays
(:func:`array_to_input`) must already be the input size, so neither mode resizes them
and their boxes need no mapping.

Errors are typed so the HTTP layer can map them: a corrupt or unsupported image is an
``ImageDecodeError`` (HTTP 400); a raw array of the wrong shape or dtype is a
``ValueError`` naming expected and actual (HTTP 422).
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from its_runtime.letterbox import Fit, ResizeMode

#: Frames above this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 64 * 1024 * 1024
_FORMATS = ("JPEG", "PNG")


class ImageDecodeError(ValueError):
    """The bytes are not a decodable JPEG or PNG image."""


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded:
    """A frame as model input, and where it sits in that input."""

    #: ``(C, H, W)`` float32 in 0..1 of the input size, on the CPU or the engine's device.
    tensor: torch.Tensor
    #: How the frame was fitted: ``fit.boxes_to_source`` maps the frame's boxes back.
    fit: Fit


def decode_image(
    data: bytes, input_shape: tuple[int, int, int], resize: ResizeMode = ResizeMode.STRETCH
) -> torch.Tensor:
    """Decode JPEG/PNG bytes into a ``(C, H, W)`` float32 tensor in 0..1 of the input size."""
    return decode_frame(data, input_shape, resize).tensor


def decode_frame(
    data: bytes, input_shape: tuple[int, int, int], resize: ResizeMode = ResizeMode.STRETCH
) -> Decoded:
    """:func:`decode_image`, with the :class:`Fit` that maps boxes back to the frame."""
    channels, height, width = input_shape
    mode = "RGB" if channels == 3 else "L"
    if not data:
        raise ImageDecodeError("empty image body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=_FORMATS)
            if img.width * img.height > MAX_PIXELS:
                raise ImageDecodeError(
                    f"image is {img.width}x{img.height}, over the {MAX_PIXELS} pixel limit"
                )
            fit = Fit.compute(img.width, img.height, width, height, resize)
            if isinstance(img, JpegImagePlugin.JpegImageFile) and (
                img.width > fit.scaled_w or img.height > fit.scaled_h
            ):
                img.draft(mode, (fit.scaled_w, fit.scaled_h))
            img.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a JPEG or PNG image") from None
    except Image.DecompressionBombError:
        # PIL refuses twice its own pixel limit in Image.open, before our check runs.
        raise ImageDecodeError(f"image is over the {MAX_PIXELS} pixel limit") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"corrupt image: {exc}") from None
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != (fit.scaled_w, fit.scaled_h):
        img = img.resize((fit.scaled_w, fit.scaled_h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return Decoded(_hwc_uint8_to_chw_float(fit.place(arr)), fit)


def array_to_input(arr: npt.NDArray[np.generic], input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Check a raw frame and turn it into a ``(C, H, W)`` float32 tensor in 0..1.

    Accepted: ``(H, W, C)`` uint8 pixels (``(H, W)`` for one channel), or ``(C, H, W)``
    floats already in 0..1, of the input size (never resized, so ``model.resize`` does
    not apply and boxes need no mapping). Anything else raises ``ValueError`` naming
    both shapes.
    """
    c, h, w = input_shape
    if arr.dtype == np.uint8:
        if arr.ndim == 2 and c == 1:
            arr = arr[:, :, None]
        if arr.shape != (h, w, c):
            raise ValueError(
                f"uint8 array has shape {tuple(arr.shape)}, expected (H, W, C) = {(h, w, c)}"
            )
        return _hwc_uint8_to_chw_float(arr.astype(np.uint8, copy=False))
    if np.issubdtype(arr.dtype, np.floating):
        if arr.shape != (c, h, w):
            raise ValueError(
                f"float array has shape {tuple(arr.shape)}, expected (C, H, W) = {(c, h, w)}"
            )
        if not np.isfinite(arr).all():
            raise ValueError("float array contains NaN or infinite values")
        return torch.from_numpy(np.array(arr, dtype=np.float32, order="C", copy=True))
    raise ValueError(
        f"array dtype {arr.dtype} is not supported; send (H, W, C) uint8 or (C, H, W) float32"
    )


def _hwc_uint8_to_chw_float(arr: npt.NDArray[np.uint8]) -> torch.Tensor:
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
    if not chw.flags.writeable:  # a PIL-backed array; torch wants memory it may own
        chw = chw.copy()
    return torch.from_numpy(chw).to(torch.float32).div_(255.0)
