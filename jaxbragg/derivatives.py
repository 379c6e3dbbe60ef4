"""Derivative rules of the per-sample stage: tangents at about the cost of one more pass over the samples.

The expensive part of a render is, per pixel, the sum over its samples ``j = (group g, orientation m)``

    S = sum_j t_j,    t_j = valid_j (F_cell(h_j) F_latt(x_j; N))^2,    h_j = a_m . q_g,

(``x_j`` the reduced index, ``h - round(h)`` or the mixed-precision ``h - h0``). Differentiating it with
JAX's own rules carries every tangent through every sample: ``jax.jacfwd`` over 13 parameters batched
13 tangent copies of the per-sample loop (and XLA:CPU did not keep them fused), and reverse mode stored or
recomputed ~30 per-sample intermediates. :func:`sample_sums` is a ``jax.custom_jvp`` whose rule instead
splits the tangent into

* per-sample partials that depend on the primal only: ``G_c = dt/dh_c`` (c = h, k, l; the lattice factor
  and, with tricubic interpolation, F_cell), ``dt/dN_i``, ``dt/dfudge`` and, for the F tangent,
  ``G_F = dt/dF = 2 F F_latt^2``; computed in one pass (a ``jax.vjp`` of the per-sample term) and
  reduced per pixel to

      M[m, c, k] = sum_g G_c[g, m] q_k[g]          (what a change of the lattice vectors a_m does)
      W[g, k]    = sum_m sum_c G_c[g, m] a_m[c, k]   (what a change of q_g does)
      GN[i] = sum_j dt_j/dN_i,  ...

* the contraction of those with the tangents: ``dS = sum da . M + sum dq . W + dN . GN + ... + sum_j G_F,j
  dF_j`` (``dF_j`` the lookup of the F tangent at ``h_j``: lookups are linear in the grid).

The partials do not depend on the tangents, so under ``jax.vmap`` (``jacfwd``) they are computed once
whatever the number of tangents, and only the per-pixel contraction is batched; under reverse mode JAX
transposes the contraction (a few per-pixel products, and for the grid a scatter of ``G_F`` times the
interpolation weights). Everything upstream of ``q`` and ``a`` (pixel geometry, orientations) and
downstream of ``S`` (scale, polarization, solid angle) is per pixel or per group and keeps JAX's rules.

Covered: every crystal shape, nearest and tricubic F (with the reference's switch-off), float64 and the
mixed float32 mode. Not covered (the kernel keeps the plain path, :func:`covers`): the running-sum
``oversample_thick/polar/omega`` modes, whose per-sample factors enter the sum, and the phi carry-over
re-render of one pixel (``first_variant``).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from . import lattice, structure_factors
from ._schedule import for_backend


class SampleSums(NamedTuple):
    """Per-pixel sample sums [T] (sample precision): ``primary`` (tricubic with interpolation, nearest
    without, or the two switched at a cutoff), ``nearest`` and ``first_bad`` as in
    :class:`jaxbragg.kernel.CellFactors` (``None`` unless interpolating without a cutoff)."""
    primary: jax.Array
    nearest: Optional[jax.Array] = None
    first_bad: Optional[jax.Array] = None


class Crystal(NamedTuple):
    """The crystal inputs of the per-sample stage (duck-types the ``Params`` fields the stages read)."""
    ncells: jax.Array
    fudge: jax.Array
    F_grid: Optional[jax.Array]
    default_F: jax.Array


def covers(config, first_variant: bool) -> bool:
    """Whether :func:`sample_sums` (with its derivative rule) renders this tile."""
    return not (first_variant or config.oversample_thick or config.oversample_polar or config.oversample_omega)


def _stages(config, dtype, sd, token, q, lat_stack, crystal, recip_A, valid, cutoff):
    """Miller indices, lattice factors and F of every sample, by the kernel's own stages."""
    from . import kernel
    sc = kernel.Scattering(None, q, valid, None, None)
    miller = kernel.miller_indices(config, sc, lat_stack[None], False, dtype, sd, token)
    lat = kernel.lattice_terms(config, crystal, sc, miller, recip_A, sd)
    cell = kernel.cell_factors(config, crystal, miller, lat, cutoff)
    return miller, lat, cell


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def sample_sums(config, dtype, sd, token, q, lat_stack, crystal: Crystal, recip_A, valid, cutoff) -> SampleSums:
    """The per-pixel sample sums of a tile (see the module docstring).

    Args:
      config, dtype, sd: (static) the ``SimConfig``, the working and the sample precision.
      token: the schedule's token (:func:`jaxbragg._schedule.Schedule.token`).
      q: q's components 3 x [L, O, O, S, T] (1/m).
      lat_stack: [PM, 3, 3] lattice rows per phi x mosaic sample (metres).
      crystal: :class:`Crystal`.
      recip_A: [3, 3] reciprocal vectors in 1/Angstrom (gauss and tophat shapes).
      valid: [L, O, O, S, T] inside the dmin cut.
      cutoff: with interpolation, each pixel's switch-off sample [T], or ``None``.
    """
    from . import kernel
    _, lat, cell = _stages(config, dtype, sd, token, q, lat_stack, crystal, recip_A, valid, cutoff)
    near = None if cell.nearest is None else kernel.sample_sum(lat, cell.nearest, sd)
    return SampleSums(kernel.sample_sum(lat, cell.primary, sd), near, cell.first_bad)


def _zero(t) -> bool:
    return isinstance(t, SymbolicZero) or t is None


def _any_nonzero(tree) -> bool:
    return not all(_zero(t) for t in jax.tree_util.tree_leaves(tree, is_leaf=_zero))


def _f_lookups(config, cutoff, shape):
    """F_cell of every sample as functions ``f(hkl, grid, default_F)``, one per output variant (the
    kernel's lookups; linear in ``(grid, default_F)``)."""
    near = lambda hkl, g, d: structure_factors.lookup_nearest(hkl, g, config.hkl_min, d)
    if not config.interpolate:
        return [near]
    tri = lambda hkl, g, d: structure_factors.lookup_tricubic(jnp.stack(hkl, axis=-1), g, config.hkl_min, d)
    if cutoff is None:
        return [tri, near]
    order = jnp.arange(config.samples_per_pixel).reshape(shape[:-1])[..., None]
    return [lambda hkl, g, d: jnp.where(order < cutoff, tri(hkl, g, d), near(hkl, g, d))]


def _partials(config, sd, miller, lat, crystal, recip_A, f_of_h, n_t):
    """Per-sample partials of ``t = valid (F F_latt)^2`` for one F variant ``f_of_h`` (F as a function of
    the float indices): ``(G [3 x samples], GN [3 x samples], Gfudge [samples] or None, Grecip [3, 3, T]
    or None)``, by one ``jax.vjp`` of the per-sample term."""
    shape = lat.f_latt.shape
    wide = lambda v: jnp.broadcast_to(v.astype(sd), shape)
    n_wide = [wide(crystal.ncells[i]) for i in range(3)]
    fudge_wide = wide(crystal.fudge)
    recip_t = jnp.broadcast_to(recip_A.astype(sd)[..., None], (3, 3, n_t))   # reduced over the samples

    def term(x, hkl, n, fudge, recip):
        f_latt = lattice.lattice_factor_reduced(x, n, fudge, recip, config.shape)
        f_cell = f_of_h(hkl).astype(sd)
        return jnp.where(lat.valid, (f_cell * f_latt) ** 2, 0.0)

    value, pullback = jax.vjp(term, list(miller.reduced), list(miller.hkl), n_wide, fudge_wide, recip_t)
    gx, gh, gn, gfudge, grecip = pullback(jnp.ones_like(value))
    g = [a + b.astype(sd) for a, b in zip(gx, gh)]
    uses_fudge = config.shape != "square"
    uses_recip = config.shape in ("gauss", "tophat")
    return g, gn, gfudge if uses_fudge else None, grecip if uses_recip else None


def _square_partials(sd, miller, lat, crystal, f_of_h, sched, token):
    """:func:`_partials` for the square shape in closed form, from the term ``t`` and two per-axis factors.

    With ``F_latt = prod_c num_c / den_c`` (:func:`jaxbragg.lattice._sincg_parts`: ``num = sin(pi r)``,
    ``r = N d - round(N d)``, ``den = sin(pi d)``): ``dt/dx_c = 2 t (N_c A_c - B_c)`` and
    ``dt/dN_c = 2 t d_c A_c`` with ``A = pi cos(pi r) / num`` and ``B = pi cos(pi d) / den`` (both 0 on
    the ``d -> 0`` limit, where ``dF_latt/dd = 0``, on an axis with ``N <= 1``, and A where ``num = 0``,
    where t = 0). ``t``, ``A`` and ``B`` are written once (7 values per sample, three times the forward's
    polynomials); the reductions form ``G`` from them."""
    n = [crystal.ncells[c].astype(sd) for c in range(3)]

    def pieces():
        t = jnp.where(lat.valid, (f_of_h(miller.hkl).astype(sd) * lat.f_latt) ** 2, 0.0)
        a_fac, b_fac = [], []
        for c in range(3):
            x = miller.reduced[c]
            d = x - jnp.round(x)
            u = n[c] * d
            r = u - jnp.round(u)
            off = lattice._limit(d) | (n[c] <= 1.0)
            num = lattice.sin_pi(r)
            den = jnp.where(off, 1.0, lattice.sin_pi(d))
            a_fac.append(jnp.where(off | (num == 0.0), 0.0,
                                   jnp.pi * lattice.cos_pi(r) / jnp.where(num == 0.0, 1.0, num)))
            b_fac.append(jnp.where(off, 0.0, jnp.pi * lattice.cos_pi(d) / den))
        return t, a_fac, b_fac

    t, a_fac, b_fac = sched.once(token, pieces)
    g = [2.0 * t * (n[c] * a_fac[c] - b_fac[c]) for c in range(3)]
    gn = [2.0 * t * (x - jnp.round(x)) * a_fac[c] for c, x in enumerate(miller.reduced)]
    return g, gn, None, None


def _sum_samples(x, n_t):
    """Sum of per-sample values [..., T] over every sample axis: [T]."""
    return jnp.sum(x.reshape(-1, n_t), axis=0)


def _tangents(config, dtype, sd, token, primals, tangents, want_f):
    """The sums' tangents for one chunk of pixels: the per-pixel reductions of the per-sample partials
    (primal only), contracted with the tangents."""
    q, lat_stack, crystal, recip_A, valid, cutoff = primals
    dq, dlat, dcrystal, drecip = tangents
    sched = for_backend()
    n_t = valid.shape[-1]
    miller, lat, _ = _stages(config, dtype, sd, token, q, lat_stack, crystal, recip_A, valid, cutoff)
    qs = [x.astype(sd)[..., None, :] for x in q]                          # [L, O, O, S, 1, T]
    a = lat_stack.astype(sd)[..., None]                                   # [PM, 3, 3, 1]
    out = []
    for f in _f_lookups(config, cutoff, lat.f_latt.shape):
        f_of_h = lambda hkl, f=f: f(hkl, crystal.F_grid, crystal.default_F)
        # one pass writes the partials; each reduction below reads them (XLA:CPU would otherwise
        # recompute the lattice factor inside every reduction)
        if config.shape == "square" and not config.interpolate:
            g, gn, gfudge, grecip = _square_partials(sd, miller, lat, crystal, f_of_h, sched, token)
        else:
            g, gn, gfudge, grecip = sched.once(
                token, lambda: _partials(config, sd, miller, lat, crystal, recip_A, f_of_h, n_t))
        t = jnp.zeros((n_t,), sd)
        if dlat is not None:
            da = dlat.astype(sd)[..., None]                               # [PM, 3, 3, 1]
            # sum_g G_c q_k: how a change of the lattice rows moves the sum
            t = t + sum(jnp.sum(da[:, c, k] * jnp.sum(g[c] * qs[k], axis=(0, 1, 2, 3)), axis=0)
                        for c in range(3) for k in range(3))
        for k in range(3):
            if dq[k] is not None:
                # sum_m sum_c G_c a_m[c, k]: how a change of q moves the sum
                w = jnp.sum(sum(g[c] * a[:, c, k] for c in range(3)), axis=-2)   # [L, O, O, S, T]
                t = t + _sum_samples(dq[k].astype(sd) * w, n_t)
        if dcrystal.ncells is not None:
            t = t + sum(dcrystal.ncells[i].astype(sd) * _sum_samples(gn[i], n_t) for i in range(3))
        if gfudge is not None and dcrystal.fudge is not None:
            t = t + dcrystal.fudge.astype(sd) * _sum_samples(gfudge, n_t)
        if grecip is not None and drecip is not None:
            t = t + jnp.sum(drecip.astype(sd)[..., None] * grecip, axis=(0, 1))
        if want_f:
            # dF is the lookup of the F tangent (lookups are linear in the grid and default_F)
            grid = crystal.F_grid
            dgrid = None if grid is None else (
                jnp.zeros_like(grid) if dcrystal.F_grid is None else dcrystal.F_grid)
            ddef = jnp.zeros_like(crystal.default_F) if dcrystal.default_F is None else dcrystal.default_F
            g_f = jnp.where(lat.valid, 2.0 * f_of_h(miller.hkl).astype(sd) * lat.f_latt ** 2, 0.0)
            t = t + _sum_samples(g_f * f(miller.hkl, dgrid, ddef).astype(sd), n_t)
        out.append(t)
    return out


#: pixel-samples per chunk of the partials' pass: its per-sample arrays stay in the processor's cache
CHUNK_SAMPLES = 1 << 15


def _by_chunks(fn, samples_per_pixel, *args):
    """``fn(*args)`` over chunks of the pixel axis (the trailing axis of every array in ``args`` and of
    every result), one chunk at a time (``lax.map``); the last chunk is padded with copies of the last
    pixel."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    n_t = leaves[0].shape[-1]
    chunk = max(CHUNK_SAMPLES // max(samples_per_pixel, 1) // 16, 1) * 16
    if chunk >= n_t:
        return fn(*args)
    n_c = -(-n_t // chunk)
    pad = lambda x: jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_c * chunk - n_t)], mode="edge")
    split = lambda x: jnp.moveaxis(pad(x).reshape(x.shape[:-1] + (n_c, chunk)), -2, 0)
    join = lambda x: jnp.moveaxis(x, 0, -2).reshape(x.shape[1:-1] + (n_c * chunk,))[..., :n_t]
    out = jax.lax.map(lambda parts: fn(*jax.tree_util.tree_unflatten(tree, parts)), [split(x) for x in leaves])
    return jax.tree_util.tree_map(join, out)


@functools.partial(sample_sums.defjvp, symbolic_zeros=True)
def _sample_sums_jvp(config, dtype, sd, primals, tangents):
    token, q, lat_stack, crystal, recip_A, valid, cutoff = primals
    _, dq, dlat, dcrystal, drecip, _, _ = tangents
    out = sample_sums(config, dtype, sd, *primals)
    n_t = valid.shape[-1]
    want_f = _any_nonzero((dcrystal.F_grid, dcrystal.default_F))
    nz = lambda t: None if _zero(t) else t
    dq = [nz(t) for t in dq]
    dcrystal = Crystal(*(nz(t) for t in dcrystal))
    tangents = (dq, nz(dlat), dcrystal, nz(drecip))
    tan = _by_chunks(lambda q, valid, cutoff, dq: _tangents(
        config, dtype, sd, token, (q, lat_stack, crystal, recip_A, valid, cutoff),
        (dq, tangents[1], dcrystal, tangents[3]), want_f), config.samples_per_pixel, q, valid, cutoff, dq)
    float0 = lambda x: None if x is None else np.zeros(x.shape, jax.dtypes.float0)
    return out, SampleSums(tan[0], tan[1] if len(tan) > 1 else None, float0(out.first_bad))
