"""The physics of a tile of pixels: a pipeline of named stages over the sample axes.

For one pixel the reference accumulates, over every sample ``j = (layer, sub-pixel, source, phi, mosaic)``,

    I = I_bg + sum_j F_cell(h_j)^2 F_latt(h_j)^2,      h_j = lattice_j . q_j,   q = (d - i) / lambda

and writes ``r_e^2 fluence I / steps * capture * polar * omega`` (see :mod:`jaxbragg.simulate`). The
pipeline of :func:`render_tile`, one function and one result type per stage:

==========================  ====================  =========================================================
stage                       result                what it holds
==========================  ====================  =========================================================
:func:`sample_points`       :class:`SamplePoints` lab position of every (layer, sub-pixel) sample point
:func:`diffracted_rays`     :class:`Rays`         ray length and direction, solid angle, capture fraction
:func:`scattering`          :class:`Scattering`   q per source, the dmin test, polarization
:func:`miller_indices`      :class:`Miller`       h = a . q per phi x mosaic sample, and h - round(h)
:func:`lattice_terms`       :class:`LatticeTerms` F_latt and which samples reach the F lookup
:func:`normalisation`       :class:`Normalisation` the scale, the running-sum weights and I_bg
:func:`cell_factors`        :class:`CellFactors`  F_cell (nearest / tricubic, the interpolation switch)
:func:`intensity`           :class:`PixelValues`  the pixel values
==========================  ====================  =========================================================

Axes: the sample axes follow the reference's loop order ``[L, O, O, S, PM]`` (sensor layer, sub-pixel slow,
sub-pixel fast, source, fused phi x mosaic) and the tile's pixels ``T`` are always the trailing axis, so
XLA vectorises the fused per-sample loop over pixels (docs/performance.md). The per-sample physics is
the small public functions of :mod:`detector`, :mod:`beam`, :mod:`lattice` and
:mod:`structure_factors`; this module only wires them together. What the kernel does to steer XLA
(materialising conditionals, compiler options) comes from :mod:`jaxbragg._schedule`, chosen by backend.
"""
from __future__ import annotations

import functools
from typing import List, NamedTuple, Optional

import jax
import jax.numpy as jnp

from . import beam as beam_mod
from . import derivatives, detector, geometry, lattice, structure_factors
from ._schedule import Schedule, for_backend


class SamplePoints(NamedTuple):
    """Where the samples of a tile sit: ``position`` [L, O, O, T, 3] (metres, lab frame) and the layer
    index ``layers`` [L, 1, 1, 1]."""
    position: jax.Array
    layers: jax.Array


class Rays(NamedTuple):
    """The diffracted rays: ``airpath`` [L, O, O, T] (metres), unit ``diffracted`` [L, O, O, T, 3], solid
    angle ``omega`` [L, O, O, T] (sr) and sensor ``capture`` fraction [L, O, O, T]."""
    airpath: jax.Array
    diffracted: jax.Array
    omega: jax.Array
    capture: jax.Array


class Scattering(NamedTuple):
    """``incident`` [S, 1, 3]; q's components 3 x [L, O, O, S, T] (1/m); ``valid`` [L, O, O, S, T] (inside
    the dmin cut); ``first_group`` [T], each pixel's first (layer, sub-pixel, source) group inside dmin;
    ``polar`` the polarization factor, [L, O, O, S, T] per sample or [T] per pixel (the reference's
    cached value)."""
    incident: jax.Array
    q: List[jax.Array]
    valid: jax.Array
    first_group: jax.Array
    polar: jax.Array


class Miller(NamedTuple):
    """Miller indices per sample: ``hkl`` 3 x [L, O, O, S, PM, T] for the F lookup and the reduced
    index ``reduced`` (``h - round(h)`` in the sample precision, or ``h - h0`` in mixed precision) for the
    lattice factor."""
    hkl: List[jax.Array]
    reduced: List[jax.Array]


class LatticeTerms(NamedTuple):
    """``f_latt`` [L, O, O, S, PM, T]; ``valid`` and ``reached`` [L, O, O, S, 1 or PM, T]: samples inside
    dmin, and those the reference reaches the F lookup for (zero F_latt without water is skipped)."""
    f_latt: jax.Array
    valid: jax.Array
    reached: jax.Array


class Normalisation(NamedTuple):
    """``scale`` (r_e^2 fluence / steps times the cached factors) [T] or []; ``tail`` [N, T], the product
    of the per-sample running-sum factors from each sample on (``None`` without ``oversample_*``);
    ``i_bg`` the water background."""
    scale: jax.Array
    tail: Optional[jax.Array]
    i_bg: jax.Array


class CellFactors(NamedTuple):
    """F_cell per sample [L, O, O, S, PM, T]: ``primary`` (tricubic with interpolation, nearest without, or
    the two switched at a cutoff); with interpolation and no cutoff also ``nearest`` and ``first_bad`` [T],
    the index of each pixel's first sample outside the interpolation range (``samples_per_pixel`` if
    none)."""
    primary: jax.Array
    nearest: Optional[jax.Array] = None
    first_bad: Optional[jax.Array] = None


class PixelValues(NamedTuple):
    """Photon counts of pixels (before masking), [T] per tile or [N] for a run of pixels.

    ``value`` is the image's value. With interpolation (and no cutoff) the reference's image-wide switch
    to nearest lookup is resolved later (:func:`jaxbragg.simulate.finish_image`), so ``nearest`` holds the
    value with nearest F and ``first_bad`` each pixel's first out-of-range sample; both are ``None``
    otherwise.
    """
    value: jax.Array
    nearest: Optional[jax.Array] = None
    first_bad: Optional[jax.Array] = None


def tree_sum(x):
    """Sum over axis 0 by explicit pairwise additions.

    The order of additions depends only on ``x.shape[0]`` (the samples of a pixel), never on the other
    axes (the tile of pixels), and XLA does not reassociate explicit additions: a pixel's value is
    bit-identical whatever tile it is rendered in. Pairwise summation is also more accurate than a
    running sum.

    The samples are split into power-of-two blocks (240 = 128 + 64 + 32 + 16), each summed as a balanced
    tree, and the block sums are added from the smallest up: ``S128 + (S64 + (S32 + S16))``. That is, bit
    for bit, the balanced tree over the samples padded with zeros to the next power of two, without the
    padding: XLA:CPU made a pad the root of its own kernel, so the per-sample values were written out and
    read back instead of being summed where they are computed.
    """
    n = x.shape[0]
    total = None
    end = n
    for k in range(n.bit_length()):
        if not n >> k & 1:
            continue
        block = x[end - (1 << k):end]
        end -= 1 << k
        while block.shape[0] > 1:
            block = block[0::2] + block[1::2]
        total = block[0] if total is None else block[0] + total
    return total


# ---------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------

def sample_points(config, p, frame, spix, fpix) -> SamplePoints:
    """Sub-pixel centres ``(index * o + k + 1/2) * pixel / o`` on every sensor layer, placed in the lab."""
    dtype = p.pixel_size.dtype
    nl, o = config.thicksteps, config.oversample
    n_t = spix.shape[0]
    sub = p.pixel_size / o
    sub_idx = jnp.arange(o, dtype=dtype)[:, None]
    f_coord = geometry.mul(sub, fpix[None, :] * o + sub_idx) + sub / 2.0  # [O, T]
    s_coord = geometry.mul(sub, spix[None, :] * o + sub_idx) + sub / 2.0  # [O, T]
    layers = jnp.arange(nl, dtype=dtype)[:, None, None, None]
    shape4 = (nl, o, o, n_t)
    pos = detector.pixel_position(
        frame, jnp.broadcast_to(f_coord[None, None, :, :], shape4),
        jnp.broadcast_to(s_coord[None, :, None, :], shape4),
        jnp.broadcast_to(layers * p.thickstep, shape4), config.curved, p.beam)   # [L, O, O, T, 3]
    return SamplePoints(pos, layers)


def diffracted_rays(config, p, frame, points: SamplePoints, sched: Schedule, token) -> Rays:
    """Ray from the sample to each sample point; its solid angle and the sensor's capture fraction."""
    def ray(pos):
        airpath = geometry.norm(pos)
        return airpath, geometry.rounded(pos / airpath[..., None])

    # computed once: XLA:CPU does not share a producer between sibling kernels, and each of q's
    # components, the dmin test, polarization and solid angle would recompute the square root
    airpath, diffracted = sched.once(token, ray, points.position)
    omega = detector.solid_angle(airpath, frame["close_distance"], p.pixel_size, config.point_pixel)
    if config.thick_sensor:
        capture = detector.capture_fraction(diffracted, frame["odet"], points.layers, p.thickstep, p.mu)
    else:
        capture = jnp.ones(airpath.shape, p.pixel_size.dtype)            # [L, O, O, T]
    return Rays(airpath, diffracted, omega, capture)


def scattering(config, p, rays: Rays, sched: Schedule, token) -> Scattering:
    """``q = (d - i) / lambda`` for every source, the reference's dmin cut, and the polarization factor
    (per sample with ``oversample_polar``, else that of each pixel's first group inside dmin)."""
    dtype = p.pixel_size.dtype
    n_t = rays.airpath.shape[-1]
    incident = -p.source_dirs[:, None, :]                                 # [S, 1, 3]
    d5 = rays.diffracted[:, :, :, None, :, :]                             # [L, O, O, 1, T, 3]

    def q_and_dmin(d5):
        """q's components 3 x [L, O, O, S, T] and the dmin test [L, O, O, S, T]."""
        q = (d5 - incident) / p.source_lambda[:, None, None]              # [L, O, O, S, T, 3]

        def beyond_dmin(q):
            stol = 0.5 * geometry.norm(q)
            return ~((stol > 0.0) & (p.dmin > 0.5 / jnp.where(stol > 0, stol, 1.0)))

        # without a dmin cut (the usual case) skip the test's square root and division altogether
        valid = jax.lax.cond(p.dmin > 0.0, beyond_dmin, lambda q: jnp.ones(q.shape[:-1], bool), q)
        return [q[..., c] for c in range(3)], valid

    # the per-(sub-pixel, source) quantities are computed once per tile: left to itself XLA fuses their
    # divisions into the sample loop and recomputes them for every phi x mosaic sample
    qc, valid = sched.once(token, q_and_dmin, d5)
    n_groups = valid.size // n_t
    # each pixel's first (layer, sub-pixel, source) group inside dmin (argmax: 0 where none is)
    first_group = jnp.argmax(valid.reshape(n_groups, n_t), axis=0)        # [T]
    if config.polarization and config.oversample_polar:
        polar = beam_mod.polarization_factor(p.kahn, incident, d5, p.polar_vector)
    elif config.polarization:
        # only the factor of each pixel's first group inside dmin is used (0 if there is none); without
        # a dmin cut that is group 0, evaluated alone
        def first_polar(_):
            every = beam_mod.polarization_factor(p.kahn, incident, d5, p.polar_vector)
            pick = jnp.arange(n_groups)[:, None] == first_group
            flat = valid.reshape(n_groups, n_t)
            # a sum of exact zeros and one value: the value itself
            return jnp.sum(jnp.where(pick & flat, every.reshape(n_groups, n_t), 0.0), axis=0)

        def group_zero(_):
            return beam_mod.polarization_factor(p.kahn, incident[0], rays.diffracted[0, 0, 0], p.polar_vector)

        polar = jax.lax.cond(p.dmin > 0.0, first_polar, group_zero, None)   # [T]
    else:
        polar = jnp.ones(valid.shape, dtype)                              # [L, O, O, S, T]
    return Scattering(incident, qc, valid, first_group, polar)


def _miller(qc, lat_stacks, first):
    """Miller indices ``h = a . q``, 3 x [L, O, O, S, PM, T], from q's components 3 x [L, O, O, S, 1, 1, T]
    and the orientation variants ``lat_stacks`` [V, PM, 3, 3]: variant 0, or variant 1 where ``first``
    [L, O, O, S, 1, T] is set (``None``: nowhere).

    One index at a time, as broadcast multiply-adds that XLA fuses with the lattice factor (a
    ``dot_general`` with a contraction of length 3 would materialise them and run slower).
    """
    lat = lat_stacks[..., None]                                           # [V, PM, 3, 3, 1]
    hkl = [qc[0] * lat[:, :, v, 0] + qc[1] * lat[:, :, v, 1] + qc[2] * lat[:, :, v, 2]
           for v in range(3)]                                             # 3 x [L, O, O, S, V, PM, T]
    if first is None:
        return [x[..., 0, :, :] for x in hkl]
    return [jnp.where(first, x[..., 1, :, :], x[..., 0, :, :]) for x in hkl]


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _mixed_indices(token, qc, lat_stacks, first, sd):
    """Miller indices for the mixed-precision mode: ``h = a . q`` split into a float64 part per (pixel,
    orientation) and a float32 correction per sample.

    With ``q_0`` the centre of a pixel's samples and ``dq = q - q_0``, ``h = a . q_0 + a . dq``. The first
    term is formed in float64 for the P x M orientations of a pixel only and split into its nearest
    integer ``h_0`` and a remainder ``r`` in [-1/2, 1/2]; the second is small (sub-pixel offsets,
    divergence, dispersion, sensor depth: |a . dq| ~ 0.01-1) and is formed in float32 inside the sample
    loop. ``x = r + a . dq`` then equals ``h - h_0`` to ~1e-7, whereas float32 ``h`` itself (|h| up to
    ~100) would be off by ~1e-5, which a large crystal turns into 1e-4 intensity errors. The per-sample
    cost is three float32 multiply-adds instead of a float64 pass over every sample.

    Derivatives: ``dx = dh`` (``h_0`` is piecewise constant), formed in float64 from ``q`` and ``a`` as in
    the float64 path. Differentiating the float32 split instead made reverse mode 2.7x slower (XLA:CPU
    ran the transposed float32 contractions through slow library reductions).

    Returns:
      (h0, x): float64 nearest indices 3 x [1, 1, 1, 1, PM, T] and float32 ``x = h - h0``
      3 x [L, O, O, S, PM, T] (|x| <~ 1: not reduced once more).
    """
    # the midpoint of the pixel's first and last samples: opposite corners of the sub-pixel grid and of
    # the divergence grid, the ends of a wavelength or depth range, so |dq| is about halved (a max/min
    # over the samples was as good but its reductions cost more than the rest of this set-up)
    q0 = [(x[:1, :1, :1, :1] + x[-1:, -1:, -1:, -1:]) * 0.5 for x in qc]   # [1, 1, 1, 1, 1, 1, T]
    base = _miller(q0, lat_stacks, first)                                  # 3 x [1, 1, 1, 1, PM, T]
    h0 = [structure_factors.nearest_index(x) for x in base]
    rem = [(x - i).astype(sd) for x, i in zip(base, h0)]
    dq = [(x - x0).astype(sd) for x, x0 in zip(qc, q0)]                    # [L, O, O, S, 1, 1, T]
    # per-pixel inputs, materialised so the sample loop does not recompute them in float64
    h0, rem, dq = for_backend().materialise(token, (h0, rem, dq))
    corr = _miller(dq, lat_stacks.astype(sd), first)                       # 3 x [L, O, O, S, PM, T]
    return h0, [r + c for r, c in zip(rem, corr)]


@_mixed_indices.defjvp
def _mixed_indices_jvp(sd, primals, tangents):
    token, qc, lat_stacks, first = primals
    _, dqc, dlat, _ = tangents
    h0, x = _mixed_indices(token, qc, lat_stacks, first, sd)
    dh = jax.jvp(lambda q, a: _miller(q, a, first), (qc, lat_stacks), (dqc, dlat))[1]
    return (h0, x), ([jnp.zeros_like(i) for i in h0], [d.astype(sd) for d in dh])


def miller_indices(config, sc: Scattering, lat_stacks, first_variant: bool, dtype, sd, token) -> Miller:
    """``h = a . q`` for every phi x mosaic orientation (variant 1 of ``lat_stacks`` at each pixel's first
    group inside dmin when ``first_variant``), and the reduced index the lattice factor uses (in the
    sample precision ``sd``; mixed precision when it is below the working precision ``dtype``)."""
    n_t = sc.valid.shape[-1]
    n_groups = sc.valid.size // n_t
    qc = [x[..., None, None, :] for x in sc.q]                            # [L, O, O, S, 1, 1, T]
    if first_variant:
        flat = sc.valid.reshape(n_groups, n_t)
        first = (jnp.arange(n_groups)[:, None] == sc.first_group) & flat
        first = first.reshape(sc.valid.shape)[..., None, :]               # [L, O, O, S, 1, T]
    else:
        first = None

    if sd == dtype or n_groups == 1:
        # (mixed precision with one sample point per pixel: the split's per-pixel float64 part would be
        # the whole index computation, so the reduced index is formed in float64 and then converted)
        hkl = _miller(qc, lat_stacks, first)
        reduced = [(x - structure_factors.nearest_index(x)).astype(sd) for x in hkl]
    else:
        h0, x = _mixed_indices(token, qc, lat_stacks, first, sd)
        hkl = [i + v.astype(i.dtype) for i, v in zip(h0, x)]              # for the F lookup only
        # the square shape's sines reduce their arguments themselves
        reduced = x if config.shape == "square" else [v - structure_factors.nearest_index(v) for v in x]
    return Miller(hkl, reduced)


def lattice_terms(config, p, sc: Scattering, miller: Miller, recip_A, sd) -> LatticeTerms:
    """The lattice factor of every sample (in the sample precision ``sd``) and the samples the reference
    takes on to the F lookup."""
    f_latt = lattice.lattice_factor_reduced(miller.reduced, p.ncells.astype(sd), p.fudge.astype(sd),
                                            recip_A.astype(sd), config.shape)
    valid_s = sc.valid[..., None, :]                                      # [L, O, O, S, 1, T]
    # samples the reference never reaches the F lookup for: beyond dmin, or zero F_latt without water
    reached = valid_s if config.water else valid_s & (f_latt != 0.0)
    return LatticeTerms(f_latt, valid_s, reached)


def normalisation(config, p, rays: Rays, sc: Scattering, lat: LatticeTerms) -> Normalisation:
    """``r_e^2 fluence / steps`` times the factors the reference caches once per pixel (capture of the
    last layer, polarization, solid angle of the first sub-pixel), and for the ``oversample_*`` factors
    the closed form of the running recurrence ``I <- (I + t_j) f_j``: ``sum_j t_j prod_{k >= j} f_k``."""
    dtype = p.pixel_size.dtype
    n_t = sc.valid.shape[-1]
    i_bg = geometry.rounded(beam_mod.water_background(p.fluence, p.water_size))
    tail = None
    if config.oversample_thick or config.oversample_polar or config.oversample_omega:
        factor = jnp.ones(sc.valid.shape, dtype)
        if config.oversample_thick:
            factor = factor * rays.capture[:, :, :, None, :]
        if config.oversample_polar:
            factor = factor * sc.polar
        if config.oversample_omega:
            factor = factor * rays.omega[:, :, :, None, :]
        f_eff = jnp.where(lat.reached, factor[..., None, :], 1.0).reshape(-1, n_t)
        tail = jnp.flip(jnp.cumprod(jnp.flip(f_eff, 0), axis=0), 0)      # prod_{k >= j} f_k, [N, T]

    scale = beam_mod.R_E_SQR * p.fluence / config.steps
    if not config.oversample_thick:
        scale = scale * rays.capture[-1, 0, 0]
    if not config.oversample_polar and config.polarization:
        scale = scale * sc.polar
    if not config.oversample_omega:
        scale = scale * rays.omega[0, 0, 0]
    return Normalisation(scale, tail, i_bg)


def cell_factors(config, p, miller: Miller, lat: LatticeTerms, cutoff) -> CellFactors:
    """F_cell of every sample. With interpolation the reference switches to nearest lookup for the rest of
    the image at its first sample outside the tricubic range: with ``cutoff`` [T] (the switch's sample
    index in each pixel) the switch is applied here, without it both lookups and each pixel's first
    out-of-range sample are returned for :func:`jaxbragg.simulate.finish_image` to resolve."""
    near = structure_factors.lookup_nearest(miller.hkl, p.F_grid, config.hkl_min, p.default_F)
    if not config.interpolate:
        return CellFactors(near)
    stacked = jnp.stack(miller.hkl, axis=-1)
    tri = structure_factors.lookup_tricubic(stacked, p.F_grid, config.hkl_min, p.default_F)
    n_samples = config.samples_per_pixel
    order = jnp.arange(n_samples).reshape(lat.f_latt.shape[:-1])[..., None]  # [L, O, O, S, PM, 1]
    if cutoff is not None:
        return CellFactors(jnp.where(order < cutoff, tri, near))
    in_range = structure_factors.interpolation_in_range(jnp.stack(miller.hkl, axis=-1), config.hkl_min,
                                                        p.F_grid.shape)
    bad = lat.reached & ~in_range
    n_t = lat.f_latt.shape[-1]
    first_bad = jnp.min(jnp.where(bad, order, n_samples).reshape(-1, n_t), axis=0)
    return CellFactors(tri, near, first_bad)


def sample_terms(lat: LatticeTerms, f_cell, sd):
    """``(F_cell F_latt)^2`` of every sample inside dmin (0 outside), [samples, T]."""
    n_t = lat.f_latt.shape[-1]
    return jnp.where(lat.valid, (f_cell.astype(sd) * lat.f_latt) ** 2, 0.0).reshape(-1, n_t)


def sample_sum(lat: LatticeTerms, f_cell, sd):
    """``sum_j (F_cell F_latt)^2`` over each pixel's samples [T] (pairwise, :func:`tree_sum`)."""
    return tree_sum(sample_terms(lat, f_cell, sd))


def pixel_value(norm: Normalisation, total, sd):
    """``scale * (I_bg + sum)`` from a pixel's sample sum (without running factors)."""
    return (norm.scale * (norm.i_bg + total)).astype(sd)


def intensity(lat: LatticeTerms, norm: Normalisation, cell: CellFactors, dtype, sd) -> PixelValues:
    """``scale * (I_bg + sum_j (F_cell F_latt)^2)`` (pairwise sum, :func:`tree_sum`), or with running
    factors ``scale * (sum_j t_j tail_j + I_bg tail_0)``; in the sample precision ``sd``."""
    def value(f_cell):
        if norm.tail is not None:
            mul = geometry.mul
            term = sample_terms(lat, f_cell, sd)
            return (norm.scale * (tree_sum(mul(term.astype(dtype), norm.tail))
                                  + mul(norm.i_bg, norm.tail[0]))).astype(sd)
        return pixel_value(norm, sample_sum(lat, f_cell, sd), sd)

    if cell.nearest is None:
        return PixelValues(value(cell.primary))
    return PixelValues(value(cell.primary), value(cell.nearest), cell.first_bad)


# ---------------------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------------------

def render_tile(config, setup, spix, fpix, first_variant: bool = False, cutoff=None) -> PixelValues:
    """Photon counts of a tile of pixels ``(spix[t], fpix[t])`` (before masking).

    Args:
      config: the :class:`~jaxbragg.simulate.SimConfig`.
      setup: the image's :class:`~jaxbragg.simulate.ImageSetup` (working-precision params, detector frame,
        lattice-orientation variants [V, P*M, 3, 3], reciprocal vectors, sample precision).
      spix, fpix: [T] integer pixel indices (traced).
      first_variant: (static) use variant 1 of the lattice stack at each pixel's first sample group
        inside dmin (the phi carry-over re-render, see :func:`jaxbragg.simulate.phi_schedule`).
      cutoff: with interpolation, [T] within-pixel sample index from which nearest lookup replaces
        tricubic interpolation (traced); ``None`` leaves the switch to ``finish_image``.
    """
    sched = for_backend()
    p, sd = setup.params, setup.sample_dtype
    dtype = p.pixel_size.dtype
    token = sched.token(spix)
    # the per-image quantities enter as finished values in every context: left to itself XLA recomputes
    # them inside the per-pixel kernels of a one-tile image but hoists them out of the tile loop, and the
    # two kernels round differently (FMA contraction); see jaxbragg._schedule
    frame, lat_stacks, recip_A = sched.materialise(token, (setup.frame, setup.lat_stacks, setup.recip_A))
    points = sample_points(config, p, frame, spix, fpix)
    rays = diffracted_rays(config, p, frame, points, sched, token)
    lat_stacks, recip_A = sched.materialise(token, (lat_stacks, recip_A))
    sc = scattering(config, p, rays, sched, token)
    if derivatives.covers(config, first_variant):
        # the same stages behind the derivative rules of jaxbragg.derivatives (the value is unchanged)
        crystal = derivatives.Crystal(p.ncells, p.fudge, p.F_grid, p.default_F)
        sums = derivatives.sample_sums(config, dtype, sd, token, sc.q, lat_stacks[0], crystal, recip_A,
                                       sc.valid, cutoff)
        norm = normalisation(config, p, rays, sc, None)
        if sums.nearest is None:
            return PixelValues(pixel_value(norm, sums.primary, sd))
        return PixelValues(pixel_value(norm, sums.primary, sd), pixel_value(norm, sums.nearest, sd),
                           sums.first_bad)
    miller = miller_indices(config, sc, lat_stacks, first_variant, dtype, sd, token)
    lat = lattice_terms(config, p, sc, miller, recip_A, sd)
    norm = normalisation(config, p, rays, sc, lat)
    cell = cell_factors(config, p, miller, lat, cutoff)
    return intensity(lat, norm, cell, dtype, sd)
