"""Hypothesis strategies for hostile requests to the runtime's HTTP API.

Bodies are drawn from what a broken camera gateway, a fuzzer or a confused client
sends: random bytes; real JPEG and PNG images truncated, bit-flipped or with their
dimensions rewritten (zero, huge); ``.npy`` arrays of every dtype and shape, and
``.npy`` headers that promise more data than the body holds; JSON of the wrong
types, nested junk, deep nesting, non-standard ``NaN``/``Infinity`` tokens and
integers of hundreds of digits. Values for the frame metadata fields and for the
counts API's query parameters mix the valid with the garbage (negative, huge, NaN,
unicode digits, dates at the ends of the calendar).
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import struct
import zlib
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from tests.property.conftest import INPUT_SHAPE

C, H, W = INPUT_SHAPE


def _image(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    img = Image.new(mode, size)
    bands = len(img.getbands())
    img.putpixel((0, 0), (255,) * bands if bands > 1 else 255)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


#: Valid images the mutations start from (odd sizes and modes on purpose).
JPEG = _image("JPEG", (W, H))
IMAGES = [
    JPEG,
    _image("JPEG", (1, 1)),
    _image("JPEG", (W * 2, 3), "L"),
    _image("JPEG", (17, 9), "CMYK"),
    _image("PNG", (W, H)),
    _image("PNG", (1, 1), "RGBA"),
    _image("PNG", (1, 700), "P"),
    _image("PNG", (5, 5), "I;16"),
    _image("PNG", (3, 2), "1"),
]


def npy(arr: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
    """A version 1.0 ``.npy`` file whose header says ``shape`` whatever ``data`` holds."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    pad = 64 - (10 + len(text) + 1) % 64
    header = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def _png_with_size(png: bytes, width: int, height: int, fix_crc: bool) -> bytes:
    ihdr = bytearray(png[12:29])  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr))) if fix_crc else png[29:33]
    return png[:12] + bytes(ihdr) + crc + png[33:]


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    at = jpeg.find(b"\xff\xc0")
    if at < 0:
        return jpeg
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


@st.composite
def corrupt_images(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(IMAGES))
    how = draw(st.sampled_from(["truncate", "flip", "size", "valid"]))
    if how == "truncate":
        return base[: draw(st.integers(0, len(base) - 1))]
    if how == "flip":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "size":
        dim = st.one_of(st.sampled_from([0, 1, 65535, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
        width, height = draw(dim), draw(dim)
        if base.startswith(b"\x89PNG"):
            return _png_with_size(base, width, height, draw(st.booleans()))
        return _jpeg_with_size(base, width & 0xFFFF, height & 0xFFFF)
    return base


_DTYPES = st.sampled_from(
    ["u1", "f4", "f8", "f2", "i8", "i1", "u2", "?", "c8", "U3", "S2", "M8[s]", "m8[s]"]
)


@st.composite
def npy_bodies(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["array", "model-shape", "forged", "truncated"]))
    if how == "forged":
        ndim = draw(st.integers(0, 5))
        shape = tuple(draw(st.lists(st.integers(0, 2**40), min_size=ndim, max_size=ndim)))
        descr = draw(st.sampled_from(["<f8", "|u1", "<f4", "|O", "<U8", "|V0", "bogus"]))
        return npy_header(shape, descr, draw(st.binary(max_size=256)))
    if how == "model-shape":
        dtype = draw(st.sampled_from(["u1", "f4", "f8", "f2"]))
        shape = (H, W, C) if dtype == "u1" else (C, H, W)
        batch = draw(st.booleans())
        arr = np.zeros(((2,) if batch else ()) + shape, dtype)
        if dtype != "u1":
            arr.flat[0] = draw(st.floats(allow_nan=True, allow_infinity=True, width=16))
        return npy(arr)
    dtype = draw(_DTYPES)
    shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6)
    arr = draw(hnp.arrays(np.dtype(dtype), shapes))
    data = npy(arr)
    if how == "truncated":
        return data[: draw(st.integers(0, len(data)))]
    return data


#: JSON numbers Python's json module reads and writes, and the tokens it accepts.
_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", ""]),
)
JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)

#: Tokens written raw into a JSON text (the json module reads these, RFC 8259 does not).
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 400, "-" + "9" * 5000]


def dumps_with_raw(doc: Any) -> bytes:
    """``doc`` as JSON, where the strings ``@NaN@`` etc. become raw tokens."""
    text = json.dumps(doc)
    for token in RAW_TOKENS:
        text = text.replace(json.dumps(f"@{token}@"), token)
    return text.encode()


_RAW_VALUES = st.sampled_from([f"@{t}@" for t in RAW_TOKENS])
META_VALUES = st.one_of(JSON_VALUES, _RAW_VALUES)
FRAME_KEYS = ["image", "array", "camera_id", "timestamp", "deadline_ms", "priority", "frames"]


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["object", "any", "deep", "text"]))
    if how == "deep":
        depth = draw(st.integers(1, 100_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if how == "text":
        return draw(st.binary(max_size=64)) + b"{" + draw(st.text(max_size=64)).encode()
    if how == "any":
        return dumps_with_raw(draw(META_VALUES))
    keys = st.one_of(st.sampled_from(FRAME_KEYS), st.text(max_size=8))
    values = st.one_of(
        META_VALUES,
        corrupt_images().map(lambda b: base64.b64encode(b).decode()),
        st.lists(st.lists(st.integers(-300, 300), max_size=4), max_size=4),
    )
    doc = draw(st.dictionaries(keys, values, max_size=6))
    if "frames" in doc and draw(st.booleans()):
        doc["frames"] = draw(st.lists(st.dictionaries(keys, values, max_size=4), max_size=300))
    return dumps_with_raw(doc)


BODIES = st.one_of(st.binary(max_size=2048), corrupt_images(), npy_bodies(), json_bodies())

CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "image/jpeg",
            "image/png",
            "image/",
            "application/octet-stream",
            "application/json",
            "application/json; charset=utf-16",
            "application/json; charset=bogus",
            "application/x-npy",
            "application/npy",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
)


# -- query parameters of the counts API ---------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats().map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0", "-0", "0.0", "1" * 5000, "٣٠", "1_000"]),
)
_TIMES = st.one_of(
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            datetime.datetime.min.isoformat(),
            datetime.datetime.max.isoformat(),
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59-12:00",
            "2026-13-01",
            "2026-02-30T00:00",
            "now",
        ]
    ),
)
_DURATIONS = st.one_of(
    st.builds(
        lambda n, u: f"{n}{u}",
        st.integers(-5, 10**6),
        st.sampled_from(["", "s", "m", "h", "d", "w", "ms"]),
    ),
    st.sampled_from(["1" * 5000, "9" * 4301 + "d", " 60 ", "٦٠", "60.5", "0x3c"]),
)
PARAM_VALUES = st.one_of(_NUMBERS, _TIMES, _TIMES, _DURATIONS, st.text(max_size=30))
PARAM_NAMES = st.one_of(
    st.sampled_from(["from", "to", "interval"]),
    st.sampled_from(["from", "to", "interval", "camera", "line"]),
    st.text(min_size=1, max_size=8),
)
