"""Unit cell, orientation, spindle (phi) rotation and mosaic domains.

Corresponds to the cell set-up block of nanoBragg.c ``main`` (``-cell``, ``-mat``, ``-misset``) and to the
phi / mosaic part of its inner loop (``rotate_axis`` about the spindle, then ``rotate_umat``).

Conventions
-----------
* Lattice vectors are stored as the ROWS of a [3, 3] array: ``lattice = [a; b; c]`` in metres and
  ``recip = [a*; b*; c*]`` in 1/m, with ``a . a* = 1`` (no 2 pi).
* Default orientation of a cell ``(a, b, c, alpha, beta, gamma)``: ``a*`` along x, ``b*`` in the x-y plane
  (the reference's choice). With V the cell volume from the angles,
  ``|a*| = b c sin(alpha) / V`` (cyclic), and the reciprocal angles follow from the direct ones.
* ``-misset rx ry rz`` rotates the reciprocal vectors about x, then y, then z
  (:func:`jaxbragg.geometry.rotate_xyz`).
* Real space from reciprocal space: ``a = (b* x c*) / V*`` with ``V* = a* . (b* x c*)``; for a user cell the
  reference fixes the lengths to the requested ``a, b, c`` exactly, which :func:`lattice_from_reciprocal`
  does when ``lengths`` is given.
* Per sample: ``a(phi, m) = U_m R(spindle, phi) a`` for each phi step and mosaic-domain matrix ``U_m``.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from . import geometry
from .geometry import _xp


def cell_volume(cell):
    """Cell volume from ``cell = (a, b, c, alpha, beta, gamma)`` (lengths any unit, angles radians).

    Uses the half-angle-sum form the reference uses: ``V = 2abc sqrt|sin s sin(s-al) sin(s-be) sin(s-ga)|``
    with ``s = (al + be + ga) / 2``.
    """
    xp = _xp(cell)
    a, b, c, al, be, ga = (cell[i] for i in range(6))
    s = (al + be + ga) / 2
    skew = xp.abs(xp.sin(s) * xp.sin(s - al) * xp.sin(s - be) * xp.sin(s - ga))
    return 2.0 * a * b * c * xp.sqrt(skew)


def _reciprocal_parts(cell):
    xp = _xp(cell)
    cell = xp.asarray(cell)
    a, b, c, al, be, ga = (cell[i] for i in range(6))
    v = cell_volume(cell)
    a_s = b * c * xp.sin(al) / v
    b_s = c * a * xp.sin(be) / v
    c_s = a * b * xp.sin(ga) / v
    cos_al_s = (xp.cos(be) * xp.cos(ga) - xp.cos(al)) / (xp.sin(be) * xp.sin(ga))
    cos_be_s = (xp.cos(ga) * xp.cos(al) - xp.cos(be)) / (xp.sin(ga) * xp.sin(al))
    cos_ga_s = (xp.cos(al) * xp.cos(be) - xp.cos(ga)) / (xp.sin(al) * xp.sin(be))
    sin_ga_s = xp.minimum(c / (v * a_s * b_s), 1.0)  # sin(gamma*) = c V* / (a* b*)
    return a, b, c, v, a_s, b_s, c_s, cos_al_s, cos_be_s, cos_ga_s, sin_ga_s


def _assemble(a_s, b_s, c_s, cos_al_s, cos_be_s, cos_ga_s, sin_ga_s, c_z):
    xp = _xp(a_s, b_s, c_s, cos_al_s, cos_be_s, cos_ga_s, sin_ga_s, c_z)
    zero = xp.zeros_like(a_s)
    return xp.stack([
        xp.stack([a_s, zero, zero]),
        xp.stack([b_s * cos_ga_s, b_s * sin_ga_s, zero]),
        xp.stack([c_s * cos_be_s, c_s * (cos_al_s - cos_be_s * cos_ga_s) / sin_ga_s, c_z]),
    ])


def default_reciprocal(cell):
    """Reciprocal vectors [3, 3] (rows a*, b*, c*, 1/length unit) of ``cell`` in the default orientation.

    ``a*`` along x, ``b*`` in the x-y plane, and ``c*_z = 1 / (V a* b* sin gamma*)`` so that the vectors
    are exactly the reciprocal basis of the requested cell.
    """
    a, b, c, v, a_s, b_s, c_s, cal, cbe, cga, sga = _reciprocal_parts(cell)
    return _assemble(a_s, b_s, c_s, cal, cbe, cga, sga, 1.0 / (v * a_s * b_s * sga))


def reference_default_reciprocal(cell):
    """The reference's default orientation, including its ``c*_z`` (C-parity; used by the CLI only).

    nanoBragg.c sets ``c*_z = |c*| V / (a b c sin gamma*)``, which equals the exact ``1 / (V a* b* sin
    gamma*)`` only when ``abc sin(alpha) sin(beta) sin(gamma) = V``, i.e. for cells with right angles.
    For other cells the real-space cell it then builds (lengths forced to a, b, c) has slightly different
    angles than requested (75/85/95 deg becomes 75.039/85.014/95.008 deg, as the C itself prints). The CLI
    reproduces this so that ``-cell`` gives the reference's images; the library API uses
    :func:`default_reciprocal`. See specs/deviations.md.
    """
    a, b, c, v, a_s, b_s, c_s, cal, cbe, cga, sga = _reciprocal_parts(cell)
    return _assemble(a_s, b_s, c_s, cal, cbe, cga, sga, c_s * v / (a * b * c * sga))


def lattice_from_reciprocal(recip, lengths=None):
    """Real-space lattice rows [3, 3] from reciprocal rows ``recip``.

    Args:
      recip: [3, 3] rows a*, b*, c*.
      lengths: optional [3] target lengths of a, b, c (the reference's user-cell path); when absent the
        plain duality ``a = (b* x c*) / V*`` is used (the ``-mat`` path).
    """
    xp = _xp(recip, lengths)
    recip = xp.asarray(recip)
    bxc = xp.cross(recip[1], recip[2])
    cxa = xp.cross(recip[2], recip[0])
    axb = xp.cross(recip[0], recip[1])
    crosses = xp.stack([bxc, cxa, axb])
    if lengths is None:
        v_star = xp.dot(recip[0], bxc)
        return crosses / v_star
    return geometry.unitize(crosses) * xp.asarray(lengths)[:, None]


def oriented_lattice(recip, misset, lengths=None):
    """Lattice rows [3, 3] of reciprocal rows ``recip`` after the ``-misset`` rotation (x, then y, then z;
    radians) of the reciprocal vectors; ``lengths`` as for :func:`lattice_from_reciprocal`.

    A concrete all-zero ``misset`` skips the rotation (so the lattice is bit for bit the unrotated one).
    """
    xp = _xp(recip, misset, lengths)
    if xp is np and not np.any(misset):
        return lattice_from_reciprocal(recip, lengths)
    return lattice_from_reciprocal(geometry.rotate_xyz(recip, xp.asarray(misset)), lengths)


def reciprocal_from_lattice(lattice):
    """Reciprocal rows [3, 3] of a real-space lattice (rows a, b, c): ``a* = (b x c) / V``."""
    xp = _xp(lattice)
    a, b, c = lattice[0], lattice[1], lattice[2]
    bxc = xp.cross(b, c)
    v = xp.dot(a, bxc)
    return xp.stack([bxc, xp.cross(c, a), xp.cross(a, b)]) / v


def lattice_from_cell(cell, misset=(0.0, 0.0, 0.0)):
    """Real-space lattice [3, 3] (rows a, b, c; unit of the cell lengths) of a cell after misset angles.

    Args:
      cell: [6] ``(a, b, c, alpha, beta, gamma)``, angles in radians.
      misset: [3] rotations about x, y, z in radians, applied to the reciprocal vectors.
    """
    xp = _xp(cell, misset)
    cell = xp.asarray(cell)
    recip = geometry.rotate_xyz(default_reciprocal(cell), xp.asarray(misset, dtype=cell.dtype))
    return lattice_from_reciprocal(recip, cell[:3])


def phi_angles(phi0, phistep, n_steps):
    """Spindle angles [n_steps] of the phi sweep: ``phi0 + phistep * i`` (radians)."""
    return phi0 + phistep * jnp.arange(n_steps, dtype=jnp.result_type(phi0, phistep))


def sample_lattices(lattice, spindle, angles, umats):
    """Rotated lattices for every (phi, mosaic) pair: ``U_m R(spindle, phi_p) a`` -> [P, M, 3, 3].

    Args:
      lattice: [3, 3] rows a, b, c at phi = 0.
      spindle: [3] unit spindle axis.
      angles: [P] spindle angles (radians).
      umats: [M, 3, 3] mosaic-domain rotation matrices.
    """
    rphi = geometry.axis_matrix(spindle, angles)                  # [P, 3, 3]
    rotated = jnp.einsum("pij,vj->pvi", rphi, lattice)            # [P, 3(vec), 3]
    return jnp.einsum("mij,pvj->pmvi", umats, rotated)            # [P, M, 3(vec), 3]
