"""Writer for grayscale PNG images (``-pngfile``), with no dependency beyond the standard library.

Format (PNG specification, ISO/IEC 15948):
    the 8-byte signature ``\\x89PNG\\r\\n\\x1a\\n``, then chunks, each ``length`` (4 bytes, big endian,
    counting the data only), a 4-letter ``type``, the ``data`` and a CRC-32 of type + data:

    * ``IHDR``: width, height (4 bytes each), bit depth (8 or 16), colour type 0 (grayscale),
      compression 0, filter method 0, interlace 0;
    * ``tEXt`` (optional, any number): ``keyword``, a zero byte, Latin-1 text;
    * ``IDAT``: the zlib stream of the scanlines; each scanline is one filter-type byte (always 0,
      "None", here) followed by the row's samples, big endian for 16-bit;
    * ``IEND``: empty.

Row 0 of the array is the top row of the picture, so an image ``[slow, fast]`` shows the fast axis
left to right and the slow axis top to bottom, like the PGM and like adxv. The caller chooses the
grey levels (``cli/outputs.py`` for the ``-pngfile`` preview); this module only serialises.
"""

from __future__ import annotations

import struct
import zlib
from typing import Mapping, Optional

import numpy as np

from jaxbragg.io._common import PathLike, atomic_write

__all__ = ["png_bytes", "write_png", "PNG_SIGNATURE"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(data_2d: np.ndarray, text: Optional[Mapping[str, str]] = None, level: int = 6) -> bytes:
    """Return a complete grayscale PNG file for ``data_2d``.

    Args:
        data_2d: pixels, shape ``(height, width)``; ``uint8`` gives an 8-bit file, ``uint16`` a 16-bit
            one. Other integer dtypes are accepted when every value fits in 0..255.
        text: optional ``tEXt`` entries (keyword -> text); keywords are 1-79 Latin-1 characters.
        level: zlib compression level 0-9.

    Raises:
        ValueError: data not 2-D, empty, or not representable; a bad ``tEXt`` keyword.
    """
    arr = np.asarray(data_2d)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"PNG data must be a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype == np.uint16:
        depth, rows = 16, arr.astype(">u2")
    elif arr.dtype == np.uint8:
        depth, rows = 8, arr
    elif np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
        depth, rows = 8, arr.astype(np.uint8)
    else:
        raise ValueError(f"PNG data must be uint8 or uint16 (or integers in 0..255), got {arr.dtype}")
    height, width = arr.shape
    if width >= 2 ** 31 or height >= 2 ** 31:
        raise ValueError("PNG dimensions must be below 2**31")
    raw = np.zeros((height, 1 + width * rows.itemsize), np.uint8)        # filter byte 0 per row
    raw[:, 1:] = np.ascontiguousarray(rows).view(np.uint8).reshape(height, -1)
    out = [PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0))]
    for key, value in (text or {}).items():
        kb = key.encode("latin-1")
        if not 1 <= len(kb) <= 79 or b"\0" in kb:
            raise ValueError(f"bad PNG text keyword {key!r}")
        out.append(_chunk(b"tEXt", kb + b"\0" + str(value).encode("latin-1", "replace")))
    out.append(_chunk(b"IDAT", zlib.compress(raw.tobytes(), level)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def write_png(path: PathLike, data_2d: np.ndarray, text: Optional[Mapping[str, str]] = None) -> None:
    """Write :func:`png_bytes` of ``data_2d`` to ``path``, replacing it atomically.

    Raises:
        ValueError: see :func:`png_bytes`.
        InputError: the destination cannot be written.
    """
    atomic_write(path, [png_bytes(data_2d, text)])
