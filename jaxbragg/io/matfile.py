"""Reader for MOSFLM orientation-matrix files (``-mat``).

Format:
    The first nine numbers of the file form the MOSFLM ``A`` matrix, three
    per line::

        a*_x  b*_x  c*_x
        a*_y  b*_y  c*_y
        a*_z  b*_z  c*_z

    i.e. the COLUMNS of the printed block are the reciprocal-cell vectors.
    Anything after the ninth number (missetting angles, U matrix, cell, ...)
    is ignored.  The values are reciprocal-lattice vectors multiplied by the
    wavelength of the indexed data, so they are dimensionless (1/Angstrom
    times Angstrom).

Mirrors the ``matfilename`` block of ``main()`` in nanoBragg.c, which reads
three ``fscanf("%lg%lg%lg")`` triples into ``a_star[i], b_star[i],
c_star[i]`` for ``i = 1, 2, 3``.  Like ``fscanf``, numbers may be split across
lines arbitrarily and fixed-width fields whose signs touch
(``0.0123-0.0456``) are separate numbers.

The caller must divide by the wavelength in Angstrom to obtain reciprocal
vectors in 1/Angstrom (the C scales by ``1e-10/lambda0`` with ``lambda0`` in
metres, which is the same thing).
"""

from __future__ import annotations

import math

import numpy as np

from jaxbragg.io._common import PathLike, SCAN_RE, fail, read_text, show, text_lines

__all__ = ["read_mat"]

# |det| / (|a*| |b*| |c*|) below this means the three vectors are coplanar to
# within numerical noise (1 for orthogonal vectors, 0 for coplanar ones).
_SINGULAR_RATIO = 1e-9


def read_mat(path: PathLike) -> np.ndarray:
    """Read the MOSFLM ``A`` matrix as a (3, 3) array whose ROWS are a*, b*, c*.

    Args:
        path: the matrix file.

    Returns:
        float64 array ``M`` with ``M[0] = a*``, ``M[1] = b*``, ``M[2] = c*``
        (Cartesian x, y, z components), still multiplied by the wavelength:
        divide by lambda in Angstrom to get 1/Angstrom.  (``M`` is the
        transpose of the 3x3 block as printed in the file.)

    Raises:
        InputError: unreadable file, fewer than nine numbers, a non-numeric
            token among the first nine, a non-finite value, or a singular
            matrix.  Token-level messages carry ``line N``.
    """
    text = read_text(path, "matrix file")
    values: list[float] = []
    lineno = 1          # an empty file: its end is on line 1
    first_line = None
    for lineno, line in enumerate(text_lines(text), start=1):
        pos = 0
        while len(values) < 9:
            m = SCAN_RE.match(line, pos)
            if m is None:
                rest = line[pos:].strip()
                if rest:
                    raise fail(
                        path,
                        f"expected a number (matrix element {len(values) + 1} of 9), "
                        f"found {show(rest.split(None, 1)[0])}",
                        lineno,
                    )
                break
            value = float(m.group(1))
            if not math.isfinite(value):
                raise fail(
                    path,
                    f"matrix element {len(values) + 1} is not finite ({m.group(1)})",
                    lineno,
                )
            values.append(value)
            if first_line is None:
                first_line = lineno
            pos = m.end()
        if len(values) == 9:
            break
    if len(values) < 9:
        raise fail(
            path,
            f"expected 9 numbers for the A matrix, found {len(values)} before the end of the file",
            lineno,
        )
    printed = np.asarray(values, dtype=np.float64).reshape(3, 3)
    M = np.ascontiguousarray(printed.T)
    # singularity is judged scale-free: each row divided by its largest |element| first, so entries of
    # 1e300 or 1e-300 neither overflow nor underflow the test
    peak = np.max(np.abs(M), axis=1)
    with np.errstate(all="ignore"):
        unit = M / np.where(peak > 0.0, peak, 1.0)[:, None]
        det = float(np.linalg.det(unit))
        scale = float(np.prod(np.linalg.norm(unit, axis=1)))
    if not np.all(peak > 0.0) or not math.isfinite(det) or abs(det) <= _SINGULAR_RATIO * scale:
        raise fail(
            path,
            f"A matrix (lines {first_line}-{lineno}) is singular (its rows a*, b*, c* are linearly "
            f"dependent: |det| = {abs(det) / scale if scale else 0.0:.3g} of the product of their "
            f"lengths); a*, b*, c* must be independent",
        )
    return M
