"""NV12 (and P010/P016) planes to the model's RGB input, in torch, on any device.

What NVDEC hands over are the two planes of a YUV 4:2:0 surface: luma ``Y`` (H, W)
and interleaved chroma ``UV`` (H/2, W/2, 2), 8-bit (``nv12``) or 16-bit with the
samples in the high bits (``p010le``/``p016le``). Everything here is plain torch, so
the same code runs on the GPU in production and on the CPU in the tests that compare
it with swscale's own conversion.

Order of work, and why: the planes are first *resized* straight to the size the frame
takes inside the model input (:class:`~its_runtime.letterbox.Fit`'s scaled size; the
chroma plane to the same size, which also upsamples it), then converted to RGB. YUV
to RGB is affine per pixel, so resizing first gives the same result (up to the final
clamp) while a 1080p camera is converted at, say, 640x360 instead of 1920x1080.
Downscaling is antialiased, as swscale's bilinear filter is.

Matrices: BT.709 when the stream is tagged so, else BT.601 (what swscale assumes for
untagged streams, so both decode paths agree); limited ("MPEG", 16-235) range unless
the stream is tagged full ("JPEG") range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from its_runtime.letterbox import PAD_VALUE, Fit

#: AVColorSpace / AVColorRange values that change the conversion (libavutil/pixfmt.h).
AVCOL_SPC_BT709 = 1
AVCOL_RANGE_JPEG = 2

#: (Kr, Kb) luma coefficients of the two matrices.
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def matrix_for(colorspace: int) -> str:
    """The matrix name for a frame's ``colorspace`` tag (BT.601 unless tagged BT.709)."""
    return "bt709" if colorspace == AVCOL_SPC_BT709 else "bt601"


def _resize(plane: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) float -> (C, *size), bilinear, antialiased when it shrinks."""
    if tuple(plane.shape[-2:]) == size:
        return plane
    shrinks = size[0] < plane.shape[-2] or size[1] < plane.shape[-1]
    return F.interpolate(
        plane.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=shrinks
    ).squeeze(0)


def nv12_to_rgb(
    y: torch.Tensor,
    uv: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    matrix: str = "bt601",
    full_range: bool = False,
) -> torch.Tensor:
    """``y`` (H, W) and ``uv`` (H/2, W/2, 2) -> (3, h, w) float32 RGB in 0..255.

    ``size`` is the (height, width) of the output (default: the luma plane's). The
    planes may be strided views (a decoder surface's pitch); 16-bit planes (P010/P016)
    are read in their high 8 bits' scale.
    """
    if y.ndim != 2 or uv.ndim != 3 or uv.shape[-1] != 2:
        raise ValueError(
            f"expected Y (H, W) and UV (H/2, W/2, 2), got {tuple(y.shape)}, {tuple(uv.shape)}"
        )
    kr, kb = _KR_KB[matrix]
    scale = 1.0 / 256.0 if y.dtype != torch.uint8 else 1.0
    out_size = (int(y.shape[0]), int(y.shape[1])) if size is None else size
    luma = _resize(y.unsqueeze(0).to(torch.float32), out_size)[0]
    chroma = _resize(uv.permute(2, 0, 1).to(torch.float32), out_size)
    if scale != 1.0:
        luma = luma * scale
        chroma = chroma * scale
    cb, cr = chroma[0] - 128.0, chroma[1] - 128.0
    if full_range:
        luma_s, c_s = 1.0, 1.0
    else:
        luma = luma - 16.0
        luma_s, c_s = 255.0 / 219.0, 255.0 / 224.0
    kg = 1.0 - kr - kb
    yy = luma * luma_s
    r = yy + (2.0 * (1.0 - kr) * c_s) * cr
    g = yy - (2.0 * kb * (1.0 - kb) / kg * c_s) * cb - (2.0 * kr * (1.0 - kr) / kg * c_s) * cr
    b = yy + (2.0 * (1.0 - kb) * c_s) * cb
    return torch.stack([r, g, b]).clamp_(0.0, 255.0)


def place(rgb: torch.Tensor, fit: Fit) -> torch.Tensor:
    """(3, scaled_h, scaled_w) float RGB -> (3, dst_h, dst_w) uint8, padded as ``fit`` says.

    The torch twin of :meth:`Fit.place` (same grey, same offsets).
    """
    if tuple(rgb.shape[-2:]) != (fit.scaled_h, fit.scaled_w):
        raise ValueError(
            f"scaled frame is {rgb.shape[-1]}x{rgb.shape[-2]}, "
            f"expected {fit.scaled_w}x{fit.scaled_h}"
        )
    image = rgb.round().to(torch.uint8)
    if fit.identity:
        return image
    canvas = torch.full(
        (rgb.shape[0], fit.dst_h, fit.dst_w), PAD_VALUE, dtype=torch.uint8, device=rgb.device
    )
    canvas[:, fit.pad_y : fit.pad_y + fit.scaled_h, fit.pad_x : fit.pad_x + fit.scaled_w] = image
    return canvas


def to_input(
    y: torch.Tensor, uv: torch.Tensor, fit: Fit, *, matrix: str, full_range: bool
) -> torch.Tensor:
    """Decoded planes -> the model's (3, dst_h, dst_w) uint8 input, fitted by ``fit``."""
    rgb = nv12_to_rgb(
        y, uv, size=(fit.scaled_h, fit.scaled_w), matrix=matrix, full_range=full_range
    )
    return place(rgb, fit)
