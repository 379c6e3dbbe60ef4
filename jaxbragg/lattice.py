"""Lattice (crystal-shape) factors F_latt for a crystal of Na x Nb x Nc unit cells.

Corresponds to the ``xtal_shape`` branch of the nanoBragg.c inner loop and its helpers ``sincg``/``sinc3``.
With fractional Miller indices ``(h, k, l)``, nearest integers ``(h0, k0, l0)`` and ``N = (Na, Nb, Nc)``:

* square (parallelepiped): ``F = prod_i sincg(pi h_i, N_i)``, ``sincg(x, N) = sin(N x) / sin(x)``
  (``N`` at ``x = 0``); an axis with ``N_i <= 1`` contributes 1.
* round (ellipsoid): ``F = Na Nb Nc 0.723601254558268 sinc3(pi sqrt(fudge sum_i (h_i - h0_i)^2 N_i^2))`` with
  ``sinc3(x) = 3 (sin x / x - cos x) / x^2`` (1 at 0).
* gauss: ``F = Na Nb Nc exp(-fudge r*^2 / 0.63)``.
* tophat: ``F = Na Nb Nc`` where ``fudge r*^2 < 0.3969``, else 0.

For gauss and tophat ``r*^2 = |dh a* + dk b* + dl c*|^2 (Na Nb Nc)^2`` uses the phi = 0, mosaic-free
reciprocal vectors in 1/Angstrom, exactly as the reference does (a dimensional convention of the reference,
kept so that its images are reproduced).

Everything is written for one sample (scalars or any broadcastable shape) and is differentiable; the
removable singularities are guarded with ``where`` so gradients stay finite at integer indices.
"""
from __future__ import annotations

import jax.numpy as jnp

SHAPES = ("square", "round", "gauss", "tophat")
_ROUND_NORM = 0.723601254558268


def sincg(x, n):
    """Grating function ``sin(n x) / sin(x)``, equal to ``n`` at ``x = 0`` (C ``sincg``)."""
    zero = x == 0.0
    xs = jnp.where(zero, 1.0, x)
    return jnp.where(zero, n, jnp.sin(xs * n) / jnp.sin(xs))


def sinc3(x):
    """Sphere transform ``3 (sin x / x - cos x) / x^2``, equal to 1 at ``x = 0`` (C ``sinc3``)."""
    zero = x == 0.0
    xs = jnp.where(zero, 1.0, x)
    return jnp.where(zero, 1.0, 3.0 * (jnp.sin(xs) / xs - jnp.cos(xs)) / (xs * xs))


def _safe_sqrt(x):
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def lattice_factor(hkl, ncells, fudge, recip_A, shape):
    """Lattice factor for fractional indices.

    Args:
      hkl: [..., 3] fractional Miller indices.
      ncells: [3] (Na, Nb, Nc), may be non-integer.
      fudge: scalar shape fudge factor (round, gauss, tophat).
      recip_A: [3, 3] rows a*, b*, c* in 1/Angstrom (used by gauss and tophat only).
      shape: one of ``SHAPES`` (static).

    Returns:
      F_latt [...].
    """
    if shape == "square":
        f = jnp.where(ncells > 1.0, sincg(jnp.pi * hkl, ncells), 1.0)
        return f[..., 0] * f[..., 1] * f[..., 2]
    dh = hkl - jnp.ceil(hkl - 0.5)
    nprod = ncells[0] * ncells[1] * ncells[2]
    if shape == "round":
        hrad_sqr = jnp.sum(dh * dh * ncells * ncells, axis=-1)
        return nprod * _ROUND_NORM * sinc3(jnp.pi * _safe_sqrt(hrad_sqr * fudge))
    dstar = dh @ recip_A
    rad_star_sqr = jnp.sum(dstar * dstar, axis=-1) * nprod * nprod
    if shape == "gauss":
        return nprod * jnp.exp(-(rad_star_sqr / 0.63 * fudge))
    if shape == "tophat":
        return jnp.where(rad_star_sqr * fudge < 0.3969, nprod, 0.0)
    raise ValueError(f"unknown crystal shape {shape!r}; expected one of {SHAPES}")
