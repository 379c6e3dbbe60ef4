"""Raw float image files (``-floatfile``).

Format:
    No header; ``slow*fast`` IEEE-754 single-precision values, little endian,
    fast axis varying fastest.  Values are whatever the caller stores
    (nanoBragg writes photons per pixel).

Mirrors the ``floatfile`` ``fwrite`` in ``main()`` of nanoBragg.c (native
``float`` on a little-endian host).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from jaxbragg.io._common import PathLike, atomic_write, fail, read_bytes

__all__ = ["write_float", "read_float"]


def write_float(path: PathLike, image: np.ndarray) -> None:
    """Write *image* as raw little-endian float32, C order.

    Args:
        path: destination; replaced atomically.
        image: array of any real dtype and shape (normally ``(slow, fast)``);
            converted to float32.

    Raises:
        InputError: the destination cannot be written.
    """
    arr = np.ascontiguousarray(np.asarray(image), dtype="<f4")
    atomic_write(path, [memoryview(arr).cast("B")])


def read_float(path: PathLike, shape: Sequence[int] | int | None = None) -> np.ndarray:
    """Read a raw little-endian float32 image.

    Args:
        path: the file.
        shape: expected shape, e.g. ``(spixels, fpixels)``; ``None`` returns
            the flat array.

    Returns:
        Native-endian float32 array of *shape*.

    Raises:
        InputError: unreadable file, or a size that is not ``4*prod(shape)``
            bytes (or not a multiple of 4 when *shape* is ``None``).
    """
    raw = read_bytes(path, "float image")
    if shape is None:
        if len(raw) % 4:
            raise fail(path, f"size {len(raw)} bytes is not a multiple of 4 (float32)")
        dims: tuple[int, ...] = (len(raw) // 4,)
    else:
        dims = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        if any(d < 0 for d in dims):
            raise ValueError(f"invalid shape {shape!r}")
        need = 4 * math.prod(dims)
        if len(raw) != need:
            raise fail(
                path,
                f"size {len(raw)} bytes does not match shape {dims} "
                f"({need} bytes of float32)",
            )
    return np.frombuffer(raw, dtype="<f4").reshape(dims).astype(np.float32)
