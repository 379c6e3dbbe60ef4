"""Reader for plain-text structure-factor (``-hkl``) files.

Format:
    One reflection per line, ``h k l F`` separated by whitespace; any further
    columns (sigma, phase, ...) are ignored.  Reflections may appear in any
    order and indices may be negative.  ``F`` is a structure-factor
    *amplitude* (electrons), not an intensity; it is returned unchanged.

Mirrors the ``-hkl`` branch of ``main()`` in nanoBragg.c: the index box is the
min/max of each index over the file, every cell of the box that the file does
not mention holds ``default_F``, and when a reflection is listed twice the
later line wins.

Deliberate differences from the C (stricter or more tolerant, never silently
different on a well-formed file):
    * blank lines, ``#``/``!`` comment lines, CRLF line endings, a UTF-8 BOM
      and surrounding whitespace are accepted (the C stops reading at the
      first line it cannot parse);
    * a non-integer index is an error (the C only warns, then truncates);
    * NaN/inf amplitudes, short lines and non-UTF-8 files are errors.

Numbers follow the C's ``fscanf("%lg")`` reading, so fixed-width columns whose
negative numbers touch (``-12-10  5  33.1``) are read as separate values.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from jaxbragg.io._common import (
    NUMBER_PATTERN,
    PathLike,
    fail,
    read_text,
    scan_numbers,
    show,
    text_lines,
)

__all__ = ["HKLGrid", "read_hkl", "MAX_GRID_CELLS"]

#: Largest index box (cells) a reader will allocate; guards against a stray
#: huge index turning into a multi-gigabyte array.
MAX_GRID_CELLS = 1 << 28

_INDEX_TOL = 1e-6
_INT32 = 2**31 - 1

_ROW_RE = re.compile(
    r"\s*"
    + r"\s*".join([r"(" + NUMBER_PATTERN + r")(?=[\s+-]|\Z)"] * 4),
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True, eq=False)
class HKLGrid:
    """Structure-factor amplitudes on a dense Miller-index box.

    Attributes:
        F: float64 array of shape ``(hmax-hmin+1, kmax-kmin+1, lmax-lmin+1)``;
            ``F[h-hmin, k-kmin, l-lmin]`` is the amplitude of reflection
            ``(h, k, l)``.  Stored read-only.
        hmin, kmin, lmin, hmax, kmax, lmax: inclusive index bounds.
        count: number of reflection lines read from an hkl file (duplicates
            included); for a grid loaded from an Fdump cache it is the number
            of cells, as the C reports.
    """

    F: np.ndarray
    hmin: int
    kmin: int
    lmin: int
    hmax: int
    kmax: int
    lmax: int
    count: int

    def __post_init__(self) -> None:
        F = np.array(self.F, dtype=np.float64, copy=True)
        bounds = (self.hmin, self.kmin, self.lmin, self.hmax, self.kmax, self.lmax)
        for name, value in zip(("hmin", "kmin", "lmin", "hmax", "kmax", "lmax"), bounds):
            if int(value) != value:
                raise ValueError(f"HKLGrid.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        expect = (
            self.hmax - self.hmin + 1,
            self.kmax - self.kmin + 1,
            self.lmax - self.lmin + 1,
        )
        if min(expect) < 1:
            raise ValueError(f"HKLGrid bounds are empty: {bounds}")
        if F.shape != expect:
            raise ValueError(f"HKLGrid.F has shape {F.shape}, bounds imply {expect}")
        F.setflags(write=False)
        object.__setattr__(self, "F", F)
        object.__setattr__(self, "count", int(self.count))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(nh, nk, nl)``, the size of the index box."""
        return tuple(self.F.shape)  # type: ignore[return-value]

    @property
    def mins(self) -> tuple[int, int, int]:
        """``(hmin, kmin, lmin)``."""
        return (self.hmin, self.kmin, self.lmin)

    @property
    def maxs(self) -> tuple[int, int, int]:
        """``(hmax, kmax, lmax)``."""
        return (self.hmax, self.kmax, self.lmax)

    @classmethod
    def from_reflections(cls, h, k, l, F, default_F: float = 0.0) -> "HKLGrid":
        """Build a grid from reflection lists, C-style.

        Args:
            h, k, l: integer Miller indices (1-D, same length, at least one).
            F: amplitudes for each reflection.
            default_F: value for box cells not listed.

        Returns:
            The grid spanning min..max of each index; later duplicates win.
        """
        h = np.asarray(h, dtype=np.int64).ravel()
        k = np.asarray(k, dtype=np.int64).ravel()
        l = np.asarray(l, dtype=np.int64).ravel()
        F = np.asarray(F, dtype=np.float64).ravel()
        if not (h.size == k.size == l.size == F.size) or h.size == 0:
            raise ValueError("h, k, l, F must be non-empty and of equal length")
        lo = (int(h.min()), int(k.min()), int(l.min()))
        hi = (int(h.max()), int(k.max()), int(l.max()))
        grid = np.full(
            (hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1),
            float(default_F),
            dtype=np.float64,
        )
        # Fancy-index assignment with repeated indices keeps the last value.
        grid[h - lo[0], k - lo[1], l - lo[2]] = F
        return cls(grid, lo[0], lo[1], lo[2], hi[0], hi[1], hi[2], int(h.size))


def _as_index(value: float, axis: str, path: PathLike, lineno: int) -> int:
    if not math.isfinite(value):
        raise fail(path, f"Miller index {axis} is not finite ({value!r})", lineno)
    nearest = round(value)
    if abs(value - nearest) > _INDEX_TOL:
        raise fail(path, f"Miller index {axis} = {value!r} is not an integer", lineno)
    if abs(nearest) > _INT32:
        raise fail(path, f"Miller index {axis} = {value!r} is out of range", lineno)
    return int(nearest)


def read_hkl(path: PathLike, default_F: float = 0.0) -> HKLGrid:
    """Read an ``h k l F`` text file into a dense :class:`HKLGrid`.

    Args:
        path: the hkl file.
        default_F: amplitude given to box cells the file does not list (the
            C's ``-default_F``; 0 by default).

    Returns:
        The grid; ``count`` is the number of reflection lines read.

    Raises:
        InputError: unreadable or non-UTF-8 file, no reflections, a line with
            fewer than four numeric columns, a non-integer index, a NaN/inf
            amplitude, or an index box too large to allocate.  The message
            names the file and, for line problems, ``line N``.
    """
    text = read_text(path, "hkl file")
    hs: list[int] = []
    ks: list[int] = []
    ls: list[int] = []
    fs: list[float] = []
    rows: list[int] = []
    for lineno, raw in enumerate(text_lines(text), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        m = _ROW_RE.match(line)
        if m is None:
            values, bad = scan_numbers(line, 4)
            if bad is not None:
                raise fail(
                    path,
                    f"expected 4 numeric columns (h k l F), column {len(values) + 1} "
                    f"is not a number: {show(bad)}",
                    lineno,
                )
            raise fail(
                path,
                f"expected 4 numeric columns (h k l F), found {len(values)}",
                lineno,
            )
        hv, kv, lv, fv = (float(g) for g in m.groups())
        hs.append(_as_index(hv, "h", path, lineno))
        ks.append(_as_index(kv, "k", path, lineno))
        ls.append(_as_index(lv, "l", path, lineno))
        if not math.isfinite(fv):
            raise fail(path, f"structure factor F is not finite ({fv!r})", lineno)
        fs.append(fv)
        rows.append(lineno)
    if not hs:
        raise fail(path, "hkl file contains no reflections")
    if not math.isfinite(float(default_F)):
        raise fail(path, f"default_F must be finite, got {default_F!r}")
    cells = (
        (max(hs) - min(hs) + 1) * (max(ks) - min(ks) + 1) * (max(ls) - min(ls) + 1)
    )
    if cells > MAX_GRID_CELLS:
        # name the reflection farthest from the median index: the likely stray line
        idx = np.array([hs, ks, ls], dtype=np.float64)
        far = int(np.argmax(np.abs(idx - np.median(idx, axis=1, keepdims=True)).max(axis=0)))
        raise fail(
            path,
            f"index box h {min(hs)}..{max(hs)}, k {min(ks)}..{max(ks)}, "
            f"l {min(ls)}..{max(ls)} has {cells} cells (limit {MAX_GRID_CELLS}); "
            f"the farthest reflection is {hs[far]} {ks[far]} {ls[far]}",
            rows[far],
        )
    return HKLGrid.from_reflections(hs, ks, ls, fs, default_F)
