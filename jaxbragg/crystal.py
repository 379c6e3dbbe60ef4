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

from . import geometry


def cell_volume(cell):
    """Cell volume from ``cell = (a, b, c, alpha, beta, gamma)`` (lengths any unit, angles radians).

    Uses the half-angle-sum form the reference uses: ``V = 2abc sqrt|sin s sin(s-al) sin(s-be) sin(s-ga)|``
    with ``s = (al + be + ga) / 2``.
    """
    a, b, c, al, be, ga = (cell[i] for i in range(6))
    s = (al + be + ga) / 2
    skew = jnp.abs(jnp.sin(s) * jnp.sin(s - al) * jnp.sin(s - be) * jnp.sin(s - ga))
    return 2.0 * a * b * c * jnp.sqrt(skew)


def default_reciprocal(cell):
    """Reciprocal vectors [3, 3] (rows a*, b*, c*, 1/length unit) of ``cell`` in the default orientation."""
    cell = jnp.asarray(cell)
    a, b, c, al, be, ga = (cell[i] for i in range(6))
    v = cell_volume(cell)
    a_s = b * c * jnp.sin(al) / v
    b_s = c * a * jnp.sin(be) / v
    c_s = a * b * jnp.sin(ga) / v
    cos_al_s = (jnp.cos(be) * jnp.cos(ga) - jnp.cos(al)) / (jnp.sin(be) * jnp.sin(ga))
    cos_be_s = (jnp.cos(ga) * jnp.cos(al) - jnp.cos(be)) / (jnp.sin(ga) * jnp.sin(al))
    cos_ga_s = (jnp.cos(al) * jnp.cos(be) - jnp.cos(ga)) / (jnp.sin(al) * jnp.sin(be))
    sin_ga_s = jnp.minimum(c / (v * a_s * b_s), 1.0)  # sin(gamma*) = c V* / (a* b*)
    zero = jnp.zeros_like(a_s)
    return jnp.stack([
        jnp.stack([a_s, zero, zero]),
        jnp.stack([b_s * cos_ga_s, b_s * sin_ga_s, zero]),
        jnp.stack([c_s * cos_be_s, c_s * (cos_al_s - cos_be_s * cos_ga_s) / sin_ga_s,
                   c_s * v / (a * b * c * sin_ga_s)]),
    ])


def lattice_from_reciprocal(recip, lengths=None):
    """Real-space lattice rows [3, 3] from reciprocal rows ``recip``.

    Args:
      recip: [3, 3] rows a*, b*, c*.
      lengths: optional [3] target lengths of a, b, c (the reference's user-cell path); when absent the
        plain duality ``a = (b* x c*) / V*`` is used (the ``-mat`` path).
    """
    recip = jnp.asarray(recip)
    bxc = jnp.cross(recip[1], recip[2])
    cxa = jnp.cross(recip[2], recip[0])
    axb = jnp.cross(recip[0], recip[1])
    crosses = jnp.stack([bxc, cxa, axb])
    if lengths is None:
        v_star = jnp.dot(recip[0], bxc)
        return crosses / v_star
    return geometry.unitize(crosses) * jnp.asarray(lengths)[:, None]


def reciprocal_from_lattice(lattice):
    """Reciprocal rows [3, 3] of a real-space lattice (rows a, b, c): ``a* = (b x c) / V``."""
    a, b, c = lattice[0], lattice[1], lattice[2]
    bxc = jnp.cross(b, c)
    v = jnp.dot(a, bxc)
    return jnp.stack([bxc, jnp.cross(c, a), jnp.cross(a, b)]) / v


def lattice_from_cell(cell, misset=(0.0, 0.0, 0.0)):
    """Real-space lattice [3, 3] (rows a, b, c; unit of the cell lengths) of a cell after misset angles.

    Args:
      cell: [6] ``(a, b, c, alpha, beta, gamma)``, angles in radians.
      misset: [3] rotations about x, y, z in radians, applied to the reciprocal vectors.
    """
    cell = jnp.asarray(cell)
    recip = geometry.rotate_xyz(default_reciprocal(cell), jnp.asarray(misset, dtype=cell.dtype))
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
