"""Writer for 8-bit binary PGM previews (``-pgmfile``).

Format:
    ``P5\\n<width> <height>\\n# pixels scaled by <scale>\\n255\\n`` followed by
    ``width*height`` unsigned bytes, fast axis varying fastest.  ``<scale>``
    is printed with C ``%g``.

Mirrors the ``write_pgm`` block of ``main()`` in nanoBragg.c.  The caller does
the C's pixel conversion (``min(value*scale, 255)`` truncated to an unsigned
char); this module only serialises.
"""

from __future__ import annotations

import numpy as np

from jaxbragg.io._common import PathLike, atomic_write
from jaxbragg.io.smv import format_g

__all__ = ["write_pgm", "pgm_bytes"]


def pgm_bytes(data_uint8_2d: np.ndarray, scale: float) -> bytes:
    """Return the exact bytes :func:`write_pgm` would write."""
    arr = np.asarray(data_uint8_2d)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"PGM data must be a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"PGM data must be 8-bit unsigned integers, got {arr.dtype}")
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError("PGM data values must lie in 0..255")
        arr = arr.astype(np.uint8)
    height, width = arr.shape
    head = f"P5\n{width} {height}\n# pixels scaled by {format_g(scale)}\n255\n"
    return head.encode("ascii") + arr.tobytes(order="C")


def write_pgm(path: PathLike, data_uint8_2d: np.ndarray, scale: float) -> None:
    """Write a P5 PGM image exactly as nanoBragg does.

    Args:
        path: destination; replaced atomically.
        data_uint8_2d: pixels, shape ``(slow, fast)``; integer values 0..255.
        scale: the pixel scale factor recorded in the comment line.

    Raises:
        ValueError: data not 2-D or not representable as uint8.
        InputError: the destination cannot be written.
    """
    atomic_write(path, [pgm_bytes(data_uint8_2d, scale)])
