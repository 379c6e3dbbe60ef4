"""Reader and writer for nanoBragg's binary structure-factor cache (``Fdump.bin``).

Format (byte-compatible with the reference program on little-endian hosts):
    * ASCII header ``"hmin hmax kmin kmax lmin lmax\\n\\f"`` (decimal integers,
      single spaces, newline, form feed);
    * then ``(nh+1) * (nk+1)`` runs of ``nl+1`` float64 values (little
      endian), where ``nh = hmax-hmin+1`` etc., ordered h-major, l fastest.

    The reference allocates one spare slot past the end of every axis and
    dumps it too.  Its ``default_F`` fill only covers the real index box, so
    the spare slots are always written as 0.0 while box cells hold either the
    file's amplitude or ``default_F``.  :func:`write_fdump` reproduces this
    padding exactly and :func:`read_fdump` drops it.

Mirrors the "make dump file" block of the ``-hkl`` branch of ``main()`` in
nanoBragg.c (writer) and the branch that loads ``Fdump.bin`` when no ``-hkl``
file is given (reader).  Values are raw amplitudes, no units applied.
"""

from __future__ import annotations

import re

import numpy as np

from jaxbragg.io._common import PathLike, atomic_write, fail, read_bytes
from jaxbragg.io.hkl import HKLGrid

__all__ = ["write_fdump", "read_fdump"]

_HEADER_RE = re.compile(
    rb"\A[ \t]*" + rb"[ \t]+".join([rb"([+-]?\d{1,10})"] * 6) + rb"[ \t]*\r?\n\f"
)


def _header(grid: HKLGrid) -> bytes:
    return (
        f"{grid.hmin} {grid.hmax} {grid.kmin} {grid.kmax} {grid.lmin} {grid.lmax}\n\f"
    ).encode("ascii")


def _padded(grid: HKLGrid) -> np.ndarray:
    nh, nk, nl = grid.F.shape
    out = np.zeros((nh + 1, nk + 1, nl + 1), dtype="<f8")
    out[:nh, :nk, :nl] = grid.F
    return out


def fdump_bytes(grid: HKLGrid) -> bytes:
    """Return the exact bytes :func:`write_fdump` would write for *grid*."""
    return _header(grid) + _padded(grid).tobytes(order="C")


def write_fdump(path: PathLike, grid: HKLGrid) -> None:
    """Write *grid* as an ``Fdump.bin`` cache, byte-identical to the C's.

    Args:
        path: destination; replaced atomically.
        grid: the structure factors (e.g. from :func:`read_hkl`).

    Raises:
        InputError: the destination cannot be written.
    """
    atomic_write(path, [_header(grid), memoryview(_padded(grid)).cast("B")])


def read_fdump(path: PathLike) -> HKLGrid:
    """Load an ``Fdump.bin`` cache written by nanoBragg or :func:`write_fdump`.

    Args:
        path: the cache file.

    Returns:
        The grid over ``hmin..hmax`` etc. (padding slots dropped); ``count``
        is ``nh*nk*nl`` as in the C.

    Raises:
        InputError: unreadable file, malformed header, empty index range, a
            data size that does not match the header, or a NaN/inf amplitude.
    """
    raw = read_bytes(path, "Fdump file")
    m = _HEADER_RE.match(raw)
    if m is None:
        raise fail(
            path,
            "not an Fdump file (expected header 'hmin hmax kmin kmax lmin lmax' "
            "followed by newline and form feed)",
        )
    hmin, hmax, kmin, kmax, lmin, lmax = (int(g) for g in m.groups())
    nh, nk, nl = hmax - hmin + 1, kmax - kmin + 1, lmax - lmin + 1
    if min(nh, nk, nl) < 1:
        raise fail(
            path,
            f"empty index range in Fdump header (h {hmin}..{hmax}, "
            f"k {kmin}..{kmax}, l {lmin}..{lmax})",
        )
    expected = (nh + 1) * (nk + 1) * (nl + 1) * 8
    found = len(raw) - m.end()
    if found != expected:
        raise fail(
            path,
            f"Fdump data is {found} bytes but its header "
            f"(h {hmin}..{hmax}, k {kmin}..{kmax}, l {lmin}..{lmax}) needs {expected}",
        )
    full = np.frombuffer(raw, dtype="<f8", count=expected // 8, offset=m.end())
    full = full.reshape(nh + 1, nk + 1, nl + 1)
    F = full[:nh, :nk, :nl].astype(np.float64)
    bad = np.argwhere(~np.isfinite(F))
    if bad.size:
        h, k, l = (int(v) for v in bad[0] + (hmin, kmin, lmin))
        value = float(F[tuple(bad[0])])
        raise fail(
            path, f"Fdump amplitude of reflection {h} {k} {l} is not finite ({value!r})"
        )
    return HKLGrid(F, hmin, kmin, lmin, hmax, kmax, lmax, nh * nk * nl)
