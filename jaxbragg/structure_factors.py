"""Structure-factor amplitude F_cell for fractional Miller indices.

Corresponds to the ``F_cell`` block of the nanoBragg.c inner loop (nearest-neighbour lookup; the tricubic
``polin3`` branch is the interpolation seam, see :func:`lookup`).

The amplitudes live on a dense grid ``F[h - hmin, k - kmin, l - lmin]`` covering the index box of the
input file; cells of the box missing from the file already hold ``default_F`` (the reader fills them).

* nearest: ``h0 = ceil(h - 1/2)`` (likewise k, l); ``F = grid[h0, k0, l0]`` inside the box, ``default_F``
  outside it or when no grid was given.

The lookup is a gather, so the image is differentiable with respect to every grid value (and to
``default_F``), though not with respect to h, k, l (F is piecewise constant in them).
"""
from __future__ import annotations

import jax.numpy as jnp


def nearest_index(hkl):
    """Nearest integer indices, rounding halves up like the reference: ``ceil(x - 0.5)``."""
    return jnp.ceil(hkl - 0.5)


def lookup_nearest(hkl, grid, hkl_min, default_f):
    """Nearest-neighbour amplitude for fractional ``hkl`` [..., 3].

    Args:
      hkl: [..., 3] fractional indices.
      grid: [nh, nk, nl] amplitudes, or ``None`` for a uniform ``default_f`` crystal.
      hkl_min: static tuple (hmin, kmin, lmin) of the grid's first cell.
      default_f: amplitude outside the grid.
    """
    if grid is None:
        return jnp.broadcast_to(default_f, hkl.shape[:-1]).astype(hkl.dtype)
    idx = nearest_index(hkl).astype(jnp.int32) - jnp.asarray(hkl_min, dtype=jnp.int32)
    shape = jnp.asarray(grid.shape, dtype=jnp.int32)
    inside = jnp.all((idx >= 0) & (idx < shape), axis=-1)
    safe = jnp.clip(idx, 0, shape - 1)
    values = grid[safe[..., 0], safe[..., 1], safe[..., 2]]
    return jnp.where(inside, values, default_f)
