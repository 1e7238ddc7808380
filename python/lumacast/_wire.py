"""The push wire format, version 1 (see crates/capture/src/push.rs in the repository).

One frame is a 32-byte little-endian header followed by the raw pixels::

    0..4   magic b"LMCF"         4  version 1
    5      pixel format (1 = mono8, 2 = mono16, 3 = rgb8)
    6      bit depth (mono16: 1..16, 0 means 16; mono8/rgb8: 0 or 8)
    7      flags (bit 0: timestamp present, bit 1: frame number present)
    8..12  width u32             12..16 height u32
    16..24 frame number u64      24..32 timestamp u64, microseconds since the UNIX epoch
    32..   pixels, row-major, no padding; mono16 as little-endian u16
"""

from __future__ import annotations

import struct
from typing import Optional, Tuple

import numpy as np

MAGIC = b"LMCF"
VERSION = 1
FORMAT_MONO8, FORMAT_MONO16, FORMAT_RGB8 = 1, 2, 3
FLAG_TIMESTAMP, FLAG_FRAME_NUMBER = 0x01, 0x02
# magic, version, format, bit depth, flags, width, height, frame number, timestamp
HEADER = struct.Struct("<4sBBBBIIQQ")
assert HEADER.size == 32

#: Smallest and largest accepted side (the server checks these too).
MIN_SIDE, MAX_SIDE = 16, 16384

_U64_MAX = (1 << 64) - 1
_ACCEPTED = (
    "push a 2-D uint8 or uint16 array (mono8, mono16) or a (height, width, 3) uint8 "
    "array (RGB)"
)


def encode(
    frame: np.ndarray,
    *,
    frame_number: Optional[int] = None,
    timestamp_us: Optional[int] = None,
    bit_depth: Optional[int] = None,
) -> Tuple[bytes, np.ndarray]:
    """Split one frame into its 32-byte header and a C-contiguous pixel array.

    ``frame`` is a 2-D ``uint8`` (mono8), 2-D ``uint16`` (mono16) or ``H x W x 3``
    ``uint8`` (rgb8) array. The pixel array shares memory with ``frame`` when it already
    is C-contiguous and little-endian, so sending it copies nothing.

    Raises ``TypeError`` for any other dtype and ``ValueError`` for any other shape or a
    bad ``bit_depth``. Sizes are left to the server, which answers with a clear message.
    """
    arr = np.asarray(frame)
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError(f"unsupported uint16 array of shape {arr.shape}: {_ACCEPTED}")
        fmt = FORMAT_MONO16
        depth = 16 if bit_depth is None else int(bit_depth)
        if not 1 <= depth <= 16:
            raise ValueError(f"mono16 bit_depth must be in 1..16, got {bit_depth}")
        pixels = np.ascontiguousarray(arr.astype("<u2", copy=False))
    elif arr.dtype == np.uint8:
        if arr.ndim == 2:
            fmt = FORMAT_MONO8
        elif arr.ndim == 3 and arr.shape[2] == 3:
            fmt = FORMAT_RGB8
        else:
            raise ValueError(f"unsupported uint8 array of shape {arr.shape}: {_ACCEPTED}")
        if bit_depth not in (None, 0, 8):
            raise ValueError(f"bit_depth must be None, 0 or 8 for 8-bit frames, got {bit_depth}")
        depth = 8
        pixels = np.ascontiguousarray(arr)
    else:
        raise TypeError(
            f"unsupported dtype {arr.dtype} (shape {arr.shape}): {_ACCEPTED}; convert "
            "first, e.g. frame.astype(np.uint16)"
        )
    height, width = arr.shape[0], arr.shape[1]
    flags = 0
    for name, value, flag in (
        ("timestamp_us", timestamp_us, FLAG_TIMESTAMP),
        ("frame_number", frame_number, FLAG_FRAME_NUMBER),
    ):
        if value is not None:
            if not 0 <= int(value) <= _U64_MAX:
                raise ValueError(f"{name} must fit in an unsigned 64-bit integer, got {value}")
            flags |= flag
    header = HEADER.pack(
        MAGIC,
        VERSION,
        fmt,
        depth,
        flags,
        width,
        height,
        0 if frame_number is None else int(frame_number),
        0 if timestamp_us is None else int(timestamp_us),
    )
    return header, pixels


def pack_frame(
    frame: np.ndarray,
    *,
    frame_number: Optional[int] = None,
    timestamp_us: Optional[int] = None,
    bit_depth: Optional[int] = None,
) -> bytes:
    """One frame as the bytes of a POST body (header + pixels; copies the pixels)."""
    header, pixels = encode(
        frame, frame_number=frame_number, timestamp_us=timestamp_us, bit_depth=bit_depth
    )
    return header + pixels.tobytes()
