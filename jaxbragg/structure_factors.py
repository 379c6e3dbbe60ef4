"""Structure-factor amplitude F_cell for fractional Miller indices.

Corresponds to the ``F_cell`` block of the nanoBragg.c inner loop: nearest-neighbour lookup, or the
tricubic (``polin3``) interpolation between Bragg nodes.

The amplitudes live on a dense grid ``F[h - hmin, k - kmin, l - lmin]`` covering the index box of the
input file; cells of the box missing from the file already hold ``default_F`` (the reader fills them).
``n_h = hmax - hmin + 1`` (likewise k, l) are the grid's extents.

* nearest: ``h0 = ceil(h - 1/2)`` (likewise k, l); ``F = grid[h0, k0, l0]`` inside the box, ``default_F``
  outside it or when no grid was given.

* tricubic: with ``f_h = floor(h)`` the nodes are ``h_i = f_h - 1 + i`` for ``i = 0..3`` (likewise k, l)
  and ``F`` is the 4x4x4 tensor-product Lagrange polynomial through ``grid[h_i, k_j, l_m]``,

      p(x; x_0..x_3, y_0..y_3) = sum_i  y_i prod_{j != i} (x - x_j) / (x_i - x_j),

      F = p(h; h_i, G_i),   G_i = p(k; k_j, H_ij),   H_ij = p(l; l_m, grid[h_i, k_j, l_m]),

  i.e. reduced over l first, then k, then h, each term formed as
  ``(x - x_a)(x - x_b)(x - x_c) y_i / ((x_i - x_a)(x_i - x_b)(x_i - x_c))`` and the four terms summed in
  index order, the same floating-point operations as the reference's nested ``polint``, so the two
  agree to rounding. The polynomial reproduces any cubic in each of h, k, l exactly and equals the grid
  at integer indices.

* range test for interpolation (on the fractional indices, not on their floor):
  a sample is out of range when ``h - hmin + 3 > n_h`` or ``h - 2 < hmin`` (or likewise for k, l).

* fallback: the reference switches interpolation off at the first out-of-range sample in its loop
  order and keeps it off for every later sample of the run. That sample and all later ones take the
  nearest-neighbour value (the reference assigns ``default_F`` to the offending sample but immediately
  overwrites it with the nearest lookup, because its ``!interpolate`` branch follows in the same pass);
  earlier samples take the tricubic value. See :func:`lookup_with_fallback`.

The lookups are gathers, so the image is differentiable with respect to every grid value (and to
``default_F``). The nearest lookup is not differentiable with respect to h, k, l (piecewise constant
in them); the tricubic one is (piecewise cubic, the node selection ``floor`` contributes no gradient).
"""
from __future__ import annotations

import jax.numpy as jnp


def nearest_index(hkl):
    """Nearest integer indices, rounding halves up like the reference: ``ceil(x - 0.5)``."""
    return jnp.ceil(hkl - 0.5)


def lookup_nearest(hkl, grid, hkl_min, default_f):
    """Nearest-neighbour amplitude for fractional ``hkl`` [..., 3].

    Args:
      hkl: [..., 3] fractional indices, or a sequence (h, k, l) of equally shaped arrays.
      grid: [nh, nk, nl] amplitudes, or ``None`` for a uniform ``default_f`` crystal.
      hkl_min: static tuple (hmin, kmin, lmin) of the grid's first cell.
      default_f: amplitude outside the grid.
    """
    comps = list(hkl) if isinstance(hkl, (list, tuple)) else [hkl[..., i] for i in range(3)]
    if grid is None:
        return jnp.broadcast_to(default_f, comps[0].shape).astype(comps[0].dtype)
    inside = True
    flat = 0
    for axis in range(3):     # one flat gather index: ((h - hmin) nk + (k - kmin)) nl + (l - lmin)
        i = nearest_index(comps[axis]).astype(jnp.int32) - hkl_min[axis]
        inside = inside & (i >= 0) & (i < grid.shape[axis])
        flat = flat * grid.shape[axis] + jnp.clip(i, 0, grid.shape[axis] - 1)
    return jnp.where(inside, grid.reshape(-1)[flat], default_f)


def interpolation_in_range(hkl, hkl_min, grid_shape):
    """Whether each sample passes the reference's range test for tricubic interpolation.

    A sample is out of range when, for any axis, ``h - hmin + 3 > n_h`` or ``h - 2 < hmin`` with
    ``n_h = hmax - hmin + 1`` the grid extent. The test uses the fractional index itself, so it is
    slightly stricter than "all 4 nodes inside the grid" on the low side.

    Args:
      hkl: [..., 3] fractional indices.
      hkl_min: (hmin, kmin, lmin) of the grid's first cell.
      grid_shape: (nh, nk, nl) extents of the grid.

    Returns:
      bool [...]: True where interpolation is allowed.
    """
    lo = jnp.asarray(hkl_min, dtype=hkl.dtype)
    n = jnp.asarray(grid_shape, dtype=hkl.dtype)
    out = ((hkl - lo + 3) > n) | ((hkl - 2) < lo)
    return ~jnp.any(out, axis=-1)


def _polint(xa, ya, x):
    """Four-node Lagrange polynomial through (xa[..., i], ya[..., i]) evaluated at x.

    Forms each term as ``(x - x_a)(x - x_b)(x - x_c) y_i / ((x_i - x_a)(x_i - x_b)(x_i - x_c))`` and sums
    the terms in index order, the reference's operation order.

    Args:
      xa: [..., 4] nodes (broadcastable against ``ya``).
      ya: [..., 4] values.
      x: [...] evaluation points (broadcastable against ``ya[..., 0]``).
    """
    x0, x1, x2, x3 = (xa[..., i] for i in range(4))
    y0, y1, y2, y3 = (ya[..., i] for i in range(4))
    t0 = (x - x1) * (x - x2) * (x - x3) * y0 / ((x0 - x1) * (x0 - x2) * (x0 - x3))
    t1 = (x - x0) * (x - x2) * (x - x3) * y1 / ((x1 - x0) * (x1 - x2) * (x1 - x3))
    t2 = (x - x0) * (x - x1) * (x - x3) * y2 / ((x2 - x0) * (x2 - x1) * (x2 - x3))
    t3 = (x - x0) * (x - x1) * (x - x2) * y3 / ((x3 - x0) * (x3 - x1) * (x3 - x2))
    return t0 + t1 + t2 + t3


def lookup_tricubic(hkl, grid, hkl_min, default_f):
    """Tricubic (4x4x4 Lagrange) interpolated amplitude for fractional ``hkl`` [..., 3].

    Nodes are ``floor(x) - 1 .. floor(x) + 2`` per axis; the polynomial is reduced over l, then k, then
    h, exactly as the reference's nested ``polint``. Samples failing :func:`interpolation_in_range`
    get ``default_f`` here (their neighbourhood gather is clamped into the grid and discarded); the
    reference's run-wide switch to nearest lookup is :func:`lookup_with_fallback`.

    Args:
      hkl: [..., 3] fractional indices.
      grid: [nh, nk, nl] amplitudes, or ``None`` (then every sample gets ``default_f``, as the
        reference turns interpolation off without a structure-factor file).
      hkl_min: static tuple (hmin, kmin, lmin) of the grid's first cell.
      default_f: amplitude for out-of-range samples.

    Returns:
      [...] amplitudes, dtype of ``hkl``.
    """
    if grid is None:
        return jnp.broadcast_to(default_f, hkl.shape[:-1]).astype(hkl.dtype)
    flr = jnp.floor(hkl)
    offs = jnp.arange(-1, 3, dtype=hkl.dtype)
    nodes = flr[..., None] + offs                               # [..., 3, 4] node indices as floats
    shape = jnp.asarray(grid.shape, dtype=jnp.int32)
    idx = nodes.astype(jnp.int32) - jnp.asarray(hkl_min, dtype=jnp.int32)[:, None]
    idx = jnp.clip(idx, 0, shape[:, None] - 1)
    ih = idx[..., 0, :, None, None]
    ik = idx[..., 1, None, :, None]
    il = idx[..., 2, None, None, :]
    sub = grid[ih, ik, il]                                      # [..., 4(h), 4(k), 4(l)]
    h, k, l = hkl[..., 0], hkl[..., 1], hkl[..., 2]
    xh, xk, xl = nodes[..., 0, :], nodes[..., 1, :], nodes[..., 2, :]
    over_l = _polint(xl[..., None, None, :], sub, l[..., None, None])   # [..., 4, 4]
    over_k = _polint(xk[..., None, :], over_l, k[..., None])           # [..., 4]
    value = _polint(xh, over_k, h)                                       # [...]
    ok = interpolation_in_range(hkl, hkl_min, grid.shape)
    return jnp.where(ok, value, default_f).astype(hkl.dtype)


def interpolation_cutoff(hkl, hkl_min, grid_shape, order_index):
    """Loop-order index of the first sample failing the range test (the reference's switch-off point).

    A vectorised ``min`` of ``order_index`` over the out-of-range samples; returns the largest value of
    ``order_index``'s integer dtype when every sample is in range. When the image is evaluated in
    chunks, the caller takes the min over the chunks' results.

    Args:
      hkl: [..., 3] fractional indices.
      hkl_min: (hmin, kmin, lmin) of the grid's first cell.
      grid_shape: (nh, nk, nl) extents of the grid.
      order_index: integer array broadcastable to ``hkl[..., 0]``: each sample's position in the
        reference's global loop order (use int64 when the sample count can exceed 2**31).

    Returns:
      Scalar integer cutoff.
    """
    order_index = jnp.asarray(order_index)
    big = jnp.iinfo(order_index.dtype).max
    ok = interpolation_in_range(hkl, hkl_min, grid_shape)
    order = jnp.broadcast_to(order_index, ok.shape)
    return jnp.min(jnp.where(ok, big, order), initial=big)


def lookup_with_fallback(hkl, grid, hkl_min, default_f, order_index, cutoff):
    """Amplitude with the reference's interpolate-until-first-failure behaviour.

    Samples whose ``order_index < cutoff`` get :func:`lookup_tricubic`; the sample at the cutoff and
    all later ones get :func:`lookup_nearest` (the reference's ``default_F`` assignment to the
    offending sample is overwritten by its nearest lookup in the same pass). ``cutoff`` is the
    loop-order index of the first out-of-range sample over the whole run, found by the caller with a
    vectorised min over the out-of-range samples' order indices (:func:`interpolation_cutoff`), or
    any number above every order index when there is none. By construction every sample before the
    cutoff is in range.

    Args:
      hkl: [..., 3] fractional indices.
      grid: [nh, nk, nl] amplitudes, or ``None`` (every sample gets ``default_f``).
      hkl_min: static tuple (hmin, kmin, lmin) of the grid's first cell.
      default_f: amplitude outside the grid.
      order_index: integer array broadcastable to ``hkl[..., 0]``: each sample's position in the
        reference's global loop order.
      cutoff: scalar integer, the switch-off point.

    Returns:
      [...] amplitudes.
    """
    if grid is None:
        return jnp.broadcast_to(default_f, hkl.shape[:-1]).astype(hkl.dtype)
    tri = lookup_tricubic(hkl, grid, hkl_min, default_f)
    near = lookup_nearest(hkl, grid, hkl_min, default_f)
    return jnp.where(jnp.asarray(order_index) < cutoff, tri, near)
