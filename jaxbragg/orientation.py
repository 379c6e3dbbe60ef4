"""Crystal orientation draws of the reference nanoBragg.c: mosaic domains and the random misset.

Every draw is three ``ran1`` deviates ``r_i = 2 ran1 - 1`` from the ported generator
(:class:`jaxbragg.rng.CRandom`), turned into a unit axis and an angle (C ``mosaic_rotation_umat``):

    v = (sqrt(1 - r2^2) sin(pi r1), sqrt(1 - r2^2) cos(pi r1), r2),
    rot = mosaicity * (1 - r3^2)^(1/3)                       (float32, libm ``powf``, as the C),

and the rotation by ``rot`` about ``v`` (Rodrigues). :func:`_draw_axis_angle` is that draw, written once;
:func:`mosaic_rotation_umat` makes it a matrix, :func:`mosaic_axes_angles` keeps axis and angle apart so
the spread can be fitted (``jaxbragg.parameters``). :func:`umat2misset` is the C's matrix to XYZ
missetting angles. Host-side NumPy/Python, outside ``jit``; seeds are C ``idum`` values
(:func:`jaxbragg.rng.idum_from_cli`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from .rng import _THIRD_F32, DEFAULT_MOSAIC_IDUM, CRandom, _f32, generator, powf

__all__ = ["mosaic_rotation_umat", "umat2misset", "mosaic_umats", "mosaic_axes_angles", "random_misset",
           "random_misset_umat"]


def _draw_axis_angle(mosaicity_f32: float, rng: CRandom) -> Tuple[Tuple[float, float, float], float]:
    """One domain's draw: unit axis ``v`` (three floats) and angle ``rot`` [rad] (a float32 value) on a
    cap of size ``mosaicity_f32`` (already narrowed to float32); consumes three ``ran1`` draws."""
    r1 = 2.0 * rng.ran1() - 1.0
    r2 = 2.0 * rng.ran1() - 1.0
    r3 = 2.0 * rng.ran1() - 1.0
    xyrad = math.sqrt(1.0 - r2 * r2)
    rot = _f32(mosaicity_f32 * powf(1.0 - r3 * r3, _THIRD_F32))
    return (xyrad * math.sin(math.pi * r1), xyrad * math.cos(math.pi * r1), r2), rot


def mosaic_rotation_umat(mosaicity: float, rng: CRandom) -> np.ndarray:
    """C ``mosaic_rotation_umat``: random rotation on a cap of size ``mosaicity``.

    Args:
        mosaicity: cap size in radians; narrowed to float32 like the C's
            ``float`` parameter (90.0 covers the full sphere).
        rng: generator; consumes three ``ran1`` draws.

    Returns:
        (3, 3) float64 rotation matrix, row-major like the C's ``umat[9]``.
    """
    (v1, v2, v3), rot = _draw_axis_angle(_f32(mosaicity), rng)
    c = math.cos(rot)
    omc = 1.0 - c
    s = math.sin(rot)
    a = omc * v1
    ab = a * v2
    sv3 = s * v3
    ac = a * v3
    sv2 = s * v2
    bc = omc * v2 * v3
    sv1 = s * v1
    return np.array(
        [
            [c + omc * (v1 * v1), ab - sv3, ac + sv2],
            [ab + sv3, c + omc * (v2 * v2), bc - sv1],
            [ac - sv2, bc + sv1, c + omc * (v3 * v3)],
        ],
        dtype=np.float64,
    )


def _unit_rows(r):
    out = []
    norms = []
    for x, y, z in r:
        m = math.sqrt(x * x + y * y + z * z)
        norms.append(m)
        if m > 0:
            x, y, z = x / m, y / m, z / m
        out.append([x, y, z])
    return out, norms


def _cross_unit(p, q):
    x = p[1] * q[2] - p[2] * q[1]
    y = p[2] * q[0] - p[0] * q[2]
    z = p[0] * q[1] - p[1] * q[0]
    m = math.sqrt(x * x + y * y + z * z)
    if m > 0:
        x, y, z = x / m, y / m, z / m
    return [x, y, z]


def umat2misset(umat) -> Tuple[float, float, float]:
    """C ``umat2misset``: rotation matrix to missetting angles (rotx, roty, rotz), radians."""
    u = np.asarray(umat, dtype=np.float64).reshape(3, 3)
    rows = [[float(v) for v in row] for row in u]
    rows, (mx, my, mz) = _unit_rows(rows)

    if mx >= 0 and my <= 0 and mz <= 0:
        rows[1] = [0.0, 1.0, 0.0]
        rows[2] = [0.0, 0.0, 1.0]
    if mx <= 0 and my >= 0 and mz <= 0:
        rows[0] = [1.0, 0.0, 0.0]
        rows[2] = [0.0, 0.0, 1.0]
    if mx <= 0 and my <= 0 and mz >= 0:
        rows[0] = [1.0, 0.0, 0.0]
        rows[1] = [0.0, 1.0, 0.0]

    # two passes of filling in missing rows from the other two
    for _ in range(2):
        xcy = _cross_unit(rows[0], rows[1])
        ycz = _cross_unit(rows[1], rows[2])
        zcx = _cross_unit(rows[2], rows[0])
        if mx <= 0:
            rows[0] = ycz
        if my <= 0:
            rows[1] = zcx
        if mz <= 0:
            rows[2] = xcy

    rows, _ = _unit_rows(rows)
    (uxx, uxy, _uxz), (uyx, uyy, _uyz), (uzx, uzy, uzz) = rows

    if uzx * uzx < 1.0:
        rotx = math.atan2(uzy, uzz)
        roty = math.atan2(-uzx, math.sqrt(uzy * uzy + uzz * uzz))
        rotz = math.atan2(uyx, uxx)
    else:
        rotx = math.atan2(1, 1) * 4
        roty = math.atan2(1, 1) * 2
        rotz = math.atan2(uxy, -uyy)
    return rotx, roty, rotz


def mosaic_umats(
    spread_rad: float,
    n_domains: int,
    seed: Optional[int] = DEFAULT_MOSAIC_IDUM,
    rng: Optional[CRandom] = None,
) -> np.ndarray:
    """The C's mosaic-domain loop.

    Args:
        spread_rad: mosaic spread in radians (``-mosaic`` degrees / RTD, a
            double in the C, narrowed to float32 at the call).
        n_domains: number of domains (>= 1).
        seed: C idum (``-mosaic_seed S`` gives ``-S``; default -12345678).
            ``None`` with ``rng`` given keeps ``rng.idum``.
        rng: optional shared :class:`CRandom` (statics shared like the C);
            its ``idum`` is left advanced.

    Returns:
        (n_domains, 3, 3) float64; domain 0 is the identity (its three draws
        are still consumed, as in the C).
    """
    rng = generator(seed, rng, DEFAULT_MOSAIC_IDUM)
    n = int(n_domains)
    out = np.empty((n, 3, 3), dtype=np.float64)
    for d in range(n):
        out[d] = mosaic_rotation_umat(spread_rad, rng)
        if d == 0:
            out[0] = np.eye(3)
    return out


def random_misset_umat(seed: Optional[int], rng: Optional[CRandom] = None) -> np.ndarray:
    """The umat drawn by ``-misset random`` (``mosaic_rotation_umat(90.0, ...)``)."""
    rng = generator(seed, rng, DEFAULT_MOSAIC_IDUM)
    return mosaic_rotation_umat(90.0, rng)


def random_misset(seed: Optional[int], rng: Optional[CRandom] = None) -> Tuple[float, float, float]:
    """The C's ``-misset random`` angles (rotx, roty, rotz) in radians.

    The cap size 90.0 is used as radians by the C (i.e. many full turns),
    which still yields a rotation about a uniformly random axis.

    Args:
        seed: C idum (``-misset_seed S`` gives ``-S``).
        rng: optional shared :class:`CRandom`.
    """
    return umat2misset(random_misset_umat(seed, rng))


def mosaic_axes_angles(
    spread_rad: float,
    n_domains: int,
    seed: Optional[int] = DEFAULT_MOSAIC_IDUM,
    rng: Optional[CRandom] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Axis and angle of each domain of :func:`mosaic_umats`, from the same draws.

    ``mosaic_rotation_umat`` builds a Rodrigues rotation about the unit axis
    ``v = (sqrt(1 - r2^2) sin(pi r1), sqrt(1 - r2^2) cos(pi r1), r2)`` by
    ``rot = mosaicity * (1 - r3^2)^(1/3)`` (float32, as in the C). Returning
    ``(v, rot)`` instead of the matrix lets a caller rescale every domain's
    angle, i.e. treat the spread as a continuous parameter with the domain
    directions fixed by the seed (``jaxbragg.parameters``).

    Args:
        spread_rad, n_domains, seed, rng: as for :func:`mosaic_umats`.

    Returns:
        ``(axes, angles)``: (n_domains, 3) unit axes and (n_domains,) angles
        in radians, float64. Domain 0 gets angle 0 (the C forces it to the
        identity); its axis is the one drawn.
    """
    rng = generator(seed, rng, DEFAULT_MOSAIC_IDUM)
    n = int(n_domains)
    m = _f32(spread_rad)
    axes = np.empty((n, 3), dtype=np.float64)
    angles = np.empty(n, dtype=np.float64)
    for d in range(n):
        axes[d], angles[d] = _draw_axis_angle(m, rng)
    angles[0] = 0.0
    return axes, angles
