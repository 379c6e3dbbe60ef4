"""The forward model: render a detector image from a static config and a pytree of parameters.

Corresponds to the pixel loop of nanoBragg.c ``main`` (``for spixel ... for fpixel``) with its nested loops
over sensor layers, sub-pixels, sources, phi steps and mosaic domains.

For one pixel the reference accumulates, over every sample ``j = (layer, sub-pixel, source, phi, mosaic)``,

    I = I_bg + sum_j F_cell(h_j)^2 F_latt(h_j)^2,      h_j = lattice_j . q_j,   q = (d - i) / lambda

and writes ``r_e^2 fluence I / steps * capture * polar * omega`` with
``steps = sources * mosaic_domains * phisteps * oversample^2``. Without the ``oversample_*`` flags the three
factors are evaluated once per pixel: omega at the first sub-pixel of the first layer, polar at the first
(sub-pixel, source) that survives the ``dmin`` cut, capture at the first sub-pixel of the LAST layer. With
a flag set, the corresponding factor multiplies the running sum after every sample instead,
``I <- (I + t_j) f_j``; we evaluate that recurrence in closed form with a reversed cumulative product.
A sample whose lattice factor is exactly zero (and there is no water) skips that multiplication, and a
source beyond ``dmin`` skips its whole phi x mosaic block, as in the reference.

Implementation: :func:`_tile` is the physics of a tile of pixels written over the sample axes with
broadcasting (layers, sub-pixels, sources, then the fused phi x mosaic lattice stack) and the tile's
pixels as the trailing axis, so XLA vectorises over pixels; :func:`pixel_values` ``lax.map`` s over tiles,
so memory stays bounded by ``tile x samples``. See docs/architecture.md and docs/performance.md.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from . import beam as beam_mod
from . import crystal, detector, geometry, lattice, structure_factors
from ._jit import EntryJit, compiler_options  # noqa: F401  (re-exported for users' own jits)


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Static (hashable) part of a simulation: everything that sets a shape or a Python branch.

    Attributes:
      fpixels, spixels: detector size in pixels (fast, slow).
      oversample: sub-pixels per pixel edge.
      phisteps, mosaic_domains, sources, thicksteps: sample counts per axis.
      shape: lattice-factor model, one of ``lattice.SHAPES``.
      pivot: ``"beam"`` or ``"sample"`` (how ``distance`` and ``beam_center`` place the detector).
      explicit_pix0: use ``Params.pix0`` as the detector origin instead of the pivot rule.
      curved: curved detector (every pixel at ``distance`` from the sample).
      point_pixel: solid angle ``1/R^2`` without obliquity.
      polarization: apply the Kahn polarization factor (``False`` is ``-nopolar``).
      thick_sensor: model sensor absorption (capture fraction); ``False`` means capture = 1.
      water: a water background is present (changes which zero-F_latt samples are skipped).
      oversample_thick, oversample_polar, oversample_omega: per-sample running-sum factors.
      phi_carryover: reproduce the reference's phi = 0 lattice carry-over (C-parity option, off by default).
      roi: inclusive ``(fmin, fmax, smin, smax)`` pixel window, or ``None`` for the whole detector.
      hkl_min: ``(hmin, kmin, lmin)`` of ``Params.F_grid``; ``None`` when no grid is used.
      interpolate: tricubic interpolation of ``F_grid`` (with the reference's out-of-range fallback).
      use_mask: skip pixels where ``Params.mask`` is zero.
      tile_pixels: pixels per tile; ``None`` picks one from ``sample_budget``.
      sample_budget: target number of pixel-samples held in memory at once.
      precision: ``"float32"`` runs the per-sample stage (lattice factor, F lookup, sums) in single
        precision while the geometry and the integer part of the Miller indices keep the parameters'
        precision (mixed precision, see :func:`_mixed_indices`: about 2x faster, within ~2e-6 of the
        image maximum of float64 even for N = 100); ``None`` uses the parameters' dtype. The image has
        the per-sample precision.
    """
    fpixels: int
    spixels: int
    oversample: int = 1
    phisteps: int = 1
    mosaic_domains: int = 1
    sources: int = 1
    thicksteps: int = 1
    shape: str = "square"
    pivot: str = "beam"
    explicit_pix0: bool = False
    curved: bool = False
    point_pixel: bool = False
    polarization: bool = True
    thick_sensor: bool = False
    water: bool = False
    oversample_thick: bool = False
    oversample_polar: bool = False
    oversample_omega: bool = False
    phi_carryover: bool = False
    roi: Optional[Tuple[int, int, int, int]] = None
    hkl_min: Optional[Tuple[int, int, int]] = None
    interpolate: bool = False
    use_mask: bool = False
    tile_pixels: Optional[int] = None
    sample_budget: int = 1 << 20
    precision: Optional[str] = None

    @property
    def steps(self) -> int:
        """The reference's normalisation count (sensor layers are not included)."""
        return self.sources * self.mosaic_domains * self.phisteps * self.oversample ** 2

    @property
    def samples_per_pixel(self) -> int:
        return self.steps * self.thicksteps

    def roi_box(self) -> Tuple[int, int, int, int]:
        """The rendered window clipped to the detector, inclusive ``(f0, f1, s0, s1)``."""
        f0, f1, s0, s1 = self.roi if self.roi is not None else (0, self.fpixels, 0, self.spixels)
        return (max(f0, 0), min(f1, self.fpixels - 1), max(s0, 0), min(s1, self.spixels - 1))


@chex.dataclass(frozen=True)
class Params:
    """Differentiable inputs (a pytree of arrays). SI units: metres, radians, photons/m^2.

    Crystal: ``lattice`` [3, 3] rows a, b, c at phi = 0 (metres); ``ncells`` [3]; ``fudge``;
    ``spindle`` [3] unit axis; ``phi0``, ``phistep``; ``mosaic_umats`` [M, 3, 3].
    Structure factors: ``default_F``; ``F_grid`` [nh, nk, nl] or ``None``.
    Detector: unrotated unit basis ``fdet``, ``sdet``, ``odet`` [3]; ``beam`` [3] unit beam direction;
    ``detector_rotations`` [3]; ``twotheta_axis`` [3]; ``twotheta``; ``beam_center`` [2] (pivot point on the
    detector, metres); ``distance``; ``pix0`` [3] (only with ``explicit_pix0``); ``pixel_size``;
    sensor ``thickstep`` (layer thickness) and ``mu`` (attenuation, 1/m).
    Beam: ``source_dirs`` [S, 3] unit sample->source; ``source_lambda`` [S]; ``fluence``; ``kahn``
    (polarization factor); ``polar_vector`` [3]; ``water_size`` (metres); ``dmin`` (metres, 0 = off).
    ``mask`` [spixels, fpixels] (only with ``use_mask``).
    """
    lattice: chex.Array
    ncells: chex.Array
    fudge: chex.Array
    spindle: chex.Array
    phi0: chex.Array
    phistep: chex.Array
    mosaic_umats: chex.Array
    default_F: chex.Array
    fdet: chex.Array
    sdet: chex.Array
    odet: chex.Array
    beam: chex.Array
    detector_rotations: chex.Array
    twotheta_axis: chex.Array
    twotheta: chex.Array
    beam_center: chex.Array
    distance: chex.Array
    pixel_size: chex.Array
    source_dirs: chex.Array
    source_lambda: chex.Array
    fluence: chex.Array
    kahn: chex.Array
    polar_vector: chex.Array
    water_size: chex.Array
    dmin: chex.Array
    thickstep: chex.Array
    mu: chex.Array
    F_grid: Optional[chex.Array] = None
    pix0: Optional[chex.Array] = None
    mask: Optional[chex.Array] = None


def detector_frame(config: SimConfig, p: Params):
    """Placed detector (see :func:`jaxbragg.detector.place_detector`)."""
    return detector.place_detector(
        p.fdet, p.sdet, p.odet, p.beam, p.detector_rotations, p.twotheta_axis, p.twotheta,
        config.pivot, p.beam_center, p.distance, p.pix0 if config.explicit_pix0 else None)


def phi_schedule(config: SimConfig, p: Params):
    """Spindle angles of the phi sweep, and (C-parity option) those of the image's first sample group.

    Spec path: every group uses ``phi0 + i * phistep``. With ``phi_carryover`` the reference's defect is
    reproduced: at a step where ``phi == 0`` exactly it skips the rotation and reuses the lattice left from
    the previous rotated step, i.e. the last non-zero angle of the previous (sub-pixel, source) group.
    Every group but the image's very first one inherits that angle; the first one started from the
    unrotated lattice, which is the spec schedule. This is the only place the option acts.

    Returns:
      (angles [P], first_group_angles [P] or ``None``).
    """
    angles = crystal.phi_angles(p.phi0, p.phistep, config.phisteps)
    if not config.phi_carryover:
        return angles, None
    nonzero = angles != 0.0
    steps = jnp.arange(config.phisteps)
    last_rotated = jnp.max(jnp.where(nonzero, steps, -1), initial=-1)
    carried_in = jnp.where(last_rotated >= 0, angles[jnp.maximum(last_rotated, 0)], 0.0)

    def fill(carry, pair):
        angle, rotated = pair
        out = jnp.where(rotated, angle, carry)
        return out, out

    _, steady = jax.lax.scan(fill, carried_in, (angles, nonzero))
    _, first = jax.lax.scan(fill, jnp.zeros_like(carried_in), (angles, nonzero))
    return steady, first


def _lattice_stack(config: SimConfig, p: Params, angles):
    """Fused phi x mosaic lattice stack [P*M, 3, 3] (rows a, b, c per sample)."""
    stack = crystal.sample_lattices(p.lattice, p.spindle, angles, p.mosaic_umats)
    return stack.reshape(config.phisteps * config.mosaic_domains, 3, 3)


def _sample_dtype(config: SimConfig, p: Params):
    return jnp.dtype(config.precision) if config.precision is not None else p.pixel_size.dtype


def _working_precision(p: Params) -> Params:
    """Params for the geometry and Miller-index stages: float32 inputs are promoted to float64 when JAX
    has 64-bit types enabled (the CLI enables them).

    Miller indices are ``h = a . q`` with ``|q| ~ 1e10 / m`` and ``|a| ~ 1e-8 m``; in float32 they carry
    ~1e-6 absolute error, which the lattice factor of a large crystal (N >= 20) turns into ~1e-4 relative
    intensity errors. The lattice factor depends only on the reduced index ``d = h - h0``, so we form
    the integer part of ``h`` in float64 and run the expensive per-sample work (lattice factor, F lookup,
    sums) on ``d`` in the caller's precision (:func:`_mixed_indices`). Without 64-bit types everything
    stays float32.
    """
    if p.pixel_size.dtype != jnp.float32 or not jax.config.jax_enable_x64:
        return p
    up = lambda x: x.astype(jnp.float64) if x is not None and jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree_util.tree_map(up, p)


def _materialise(pred, tree):
    """Return ``tree`` unchanged, computed in full before its consumers run.

    XLA:CPU drops ``optimization_barrier`` before fusion and happily duplicates cheap per-pixel or
    per-tile computations (index arithmetic, a two-theta ``sin``, a transpose) into the per-sample loop,
    re-evaluating them for every phi x mosaic sample. A conditional on a runtime predicate (always true
    here) cannot be fused across, so its outputs are materialised once.
    """
    return _once(pred, lambda t: t, tree)


def _once(pred, fn, *args):
    """``fn(*args)`` computed in full before its consumers run, like :func:`_materialise`, but inside the
    conditional's branch, so the results are written once instead of computed and then copied."""
    shapes = jax.eval_shape(fn, *args)
    # the untaken branch must differ, or XLA simplifies the conditional away
    zeros = lambda *_: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return jax.lax.cond(pred, fn, zeros, *args)


def _tree_sum(x):
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
def _mixed_indices(live, qc, lat_stacks, first, sd):
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
    h0, rem, dq = _materialise(live, (h0, rem, dq))
    corr = _miller(dq, lat_stacks.astype(sd), first)                       # 3 x [L, O, O, S, PM, T]
    return h0, [r + c for r, c in zip(rem, corr)]


@_mixed_indices.defjvp
def _mixed_indices_jvp(sd, primals, tangents):
    live, qc, lat_stacks, first = primals
    _, dqc, dlat, _ = tangents
    h0, x = _mixed_indices(live, qc, lat_stacks, first, sd)
    dh = jax.jvp(lambda q, a: _miller(q, a, first), (qc, lat_stacks), (dqc, dlat))[1]
    return (h0, x), ([jnp.zeros_like(i) for i in h0], [d.astype(sd) for d in dh])


def _tile(config: SimConfig, p: Params, frame, lat_stacks, recip_A, spix, fpix, first_variant=False,
          cutoff=None, sample_dtype=None):
    """Photon counts of a tile of pixels (before masking).

    The per-sample physics is written with broadcasting over the sample axes
    ``[L, O, O, S, PM]`` (sensor layer, sub-pixel slow, sub-pixel fast, source, phi x mosaic) and a
    trailing pixel axis ``T``. Keeping the pixels innermost lets XLA vectorise the fused sample loop over
    many pixels (the phi x mosaic axis is often 1 and rarely a multiple of the SIMD width); with the
    pixel axis leading (``vmap`` over pixels) the same code ran 2-5x slower (docs/performance.md).

    Args:
      lat_stacks: [V, P*M, 3, 3] lattice-orientation variants; variant 0 is used everywhere except, when
        ``first_variant`` (static) is set, each pixel's first sample group that survives ``dmin``, which
        uses variant 1 (see :func:`phi_schedule`).
      spix, fpix: [T] integer pixel indices (traced).
      cutoff: with interpolation, [T] within-pixel sample index from which nearest lookup replaces
        tricubic interpolation (traced); ``None`` returns both variants, see below.
      sample_dtype: precision of the per-sample stage (default: that of ``p``); geometry and Miller
        indices use ``p``'s precision (see :func:`_working_precision`).

    Returns:
      [T] pixel values; with ``config.interpolate`` and no ``cutoff``, a tuple ``(values with tricubic F,
      values with nearest F, index of the first sample failing the interpolation range test or
      ``samples_per_pixel`` if none)``, each [T].
    """
    dtype = p.pixel_size.dtype
    sd = dtype if sample_dtype is None else sample_dtype
    # always true, but not a compile-time constant (a one-tile image has constant indices)
    live = jnp.min(spix) >= 0
    # the per-image quantities enter as finished values in every context: left to itself XLA recomputes
    # them inside the per-pixel kernels of a one-tile image but hoists them out of the tile loop, and the
    # two kernels round differently (FMA contraction); see geometry.mul
    frame, lat_stacks, recip_A = _materialise(live, (frame, lat_stacks, recip_A))
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

    def ray(pos):
        airpath = geometry.norm(pos)
        return airpath, geometry.rounded(pos / airpath[..., None])

    # computed once: XLA:CPU does not share a producer between sibling kernels, and each of q's
    # components, the dmin test, polarization and solid angle would recompute the square root
    airpath, diffracted = _once(live, ray, pos)
    omega = detector.solid_angle(airpath, frame["close_distance"], p.pixel_size, config.point_pixel)
    if config.thick_sensor:
        capture = detector.capture_fraction(diffracted, frame["odet"], layers, p.thickstep, p.mu)
    else:
        capture = jnp.ones(shape4, dtype)                                 # [L, O, O, T]

    incident = -p.source_dirs[:, None, :]                                 # [S, 1, 3]
    d5 = diffracted[:, :, :, None, :, :]                                  # [L, O, O, 1, T, 3]

    def scattering(d5):
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
    qc, valid = _once(live, scattering, d5)
    lat_stacks, recip_A = _materialise(live, (lat_stacks, recip_A))
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
            return beam_mod.polarization_factor(p.kahn, incident[0], diffracted[0, 0, 0], p.polar_vector)

        polar = jax.lax.cond(p.dmin > 0.0, first_polar, group_zero, None)   # [T]
    else:
        polar = jnp.ones(valid.shape, dtype)                              # [L, O, O, S, T]

    qc = [x[..., None, None, :] for x in qc]                              # [L, O, O, S, 1, 1, T]
    if first_variant:
        flat = valid.reshape(n_groups, n_t)
        first = (jnp.arange(n_groups)[:, None] == first_group) & flat
        first = first.reshape(valid.shape)[..., None, :]                  # [L, O, O, S, 1, T]
    else:
        first = None

    if sd == dtype or n_groups == 1:
        # (mixed precision with one sample point per pixel: the split's per-pixel float64 part would be
        # the whole index computation, so the reduced index is formed in float64 and then converted)
        hkl = _miller(qc, lat_stacks, first)
        dhkl = [(x - structure_factors.nearest_index(x)).astype(sd) for x in hkl]
    else:
        h0, x = _mixed_indices(live, qc, lat_stacks, first, sd)
        hkl = [i + v.astype(i.dtype) for i, v in zip(h0, x)]              # for the F lookup only
        # the square shape's sines reduce their arguments themselves
        dhkl = x if config.shape == "square" else [v - structure_factors.nearest_index(v) for v in x]
    f_latt = lattice.lattice_factor_reduced(dhkl, p.ncells.astype(sd), p.fudge.astype(sd),
                                            recip_A.astype(sd), config.shape)
    valid_s = valid[..., None, :]                                         # [L, O, O, S, 1, T]
    # samples the reference never reaches the F lookup for: beyond dmin, or zero F_latt without water
    reached = valid_s if config.water else valid_s & (f_latt != 0.0)
    i_bg = geometry.rounded(beam_mod.water_background(p.fluence, p.water_size))
    running = config.oversample_thick or config.oversample_polar or config.oversample_omega
    if running:
        factor = jnp.ones(valid.shape, dtype)
        if config.oversample_thick:
            factor = factor * capture[:, :, :, None, :]
        if config.oversample_polar:
            factor = factor * polar
        if config.oversample_omega:
            factor = factor * omega[:, :, :, None, :]
        f_eff = jnp.where(reached, factor[..., None, :], 1.0).reshape(-1, n_t)
        tail = jnp.flip(jnp.cumprod(jnp.flip(f_eff, 0), axis=0), 0)      # prod_{k >= j} f_k, [N, T]

    scale = beam_mod.R_E_SQR * p.fluence / config.steps
    if not config.oversample_thick:
        scale = scale * capture[-1, 0, 0]
    if not config.oversample_polar and config.polarization:
        scale = scale * polar
    if not config.oversample_omega:
        scale = scale * omega[0, 0, 0]

    def value(f_cell):
        term = jnp.where(valid_s, (f_cell.astype(sd) * f_latt) ** 2, 0.0).reshape(-1, n_t)
        if running:
            mul = geometry.mul
            return (scale * (_tree_sum(mul(term.astype(dtype), tail)) + mul(i_bg, tail[0]))).astype(sd)
        return (scale * (i_bg + _tree_sum(term))).astype(sd)

    near = structure_factors.lookup_nearest(hkl, p.F_grid, config.hkl_min, p.default_F)
    if not config.interpolate:
        return value(near)
    tri = structure_factors.lookup_tricubic(jnp.stack(hkl, axis=-1), p.F_grid, config.hkl_min, p.default_F)
    n_samples = config.samples_per_pixel
    order = jnp.arange(n_samples).reshape(f_latt.shape[:-1])[..., None]  # [L, O, O, S, PM, 1]
    if cutoff is not None:
        return value(jnp.where(order < cutoff, tri, near))
    in_range = structure_factors.interpolation_in_range(jnp.stack(hkl, axis=-1), config.hkl_min,
                                                        p.F_grid.shape)
    bad = reached & ~in_range
    first_bad = jnp.min(jnp.where(bad, order, n_samples).reshape(-1, n_t), axis=0)
    return value(tri), value(near), first_bad


TILE_QUANTUM = 16


def _choose_tile(config: SimConfig, n_pixels: int) -> int:
    """Pixels per tile: ``sample_budget / samples_per_pixel`` (or ``tile_pixels``), always a multiple of
    ``TILE_QUANTUM`` (padding included). Every pixel then runs through the same vectorised code whatever
    the tile size, which keeps images bit-identical across tile sizes (no scalar remainder loop with a
    different rounding)."""
    want = config.tile_pixels if config.tile_pixels is not None else \
        config.sample_budget // max(config.samples_per_pixel, 1)
    want = min(max(want, 1), n_pixels)
    return -(-want // TILE_QUANTUM) * TILE_QUANTUM


def _roi_shape(config: SimConfig):
    f0, f1, s0, s1 = config.roi_box()
    return max(s1 - s0 + 1, 0), max(f1 - f0 + 1, 0)


def _tile_inputs(config: SimConfig, p: Params):
    """What every tile shares: sample dtype, working-precision params, detector frame, the spec-path
    lattice stack [1, P*M, 3, 3] and the reciprocal vectors in 1/Angstrom."""
    sd = _sample_dtype(config, p)
    p = _working_precision(p)
    angles, _ = phi_schedule(config, p)
    return (sd, p, detector_frame(config, p), _lattice_stack(config, p, angles)[None],
            crystal.reciprocal_from_lattice(p.lattice) * 1e-10)


def pixel_values(config: SimConfig, p: Params, start, count: int):
    """Photon counts of ``count`` consecutive pixels of the ROI window (row-major), from ``start``.

    ``start`` is traced and ``count`` static, so a caller can walk the window in equal chunks (to report
    progress, or to bound host memory) with a single compilation. Indices past the end wrap around and
    their values are meaningless; masking and the carry-over fix-up are applied by :func:`finish_image`.
    """
    sd, p, frame, lat_stack, recip_A = _tile_inputs(config, p)
    f0, _, s0, _ = config.roi_box()
    ns, nf = _roi_shape(config)
    n_pix = ns * nf
    tile = _choose_tile(config, count)
    n_tiles = -(-count // tile)
    flat = (start + jnp.arange(n_tiles * tile)) % n_pix
    s_idx = (s0 + flat // nf).reshape(n_tiles, tile)
    f_idx = (f0 + flat % nf).reshape(n_tiles, tile)
    # rematerialised under reverse-mode AD: the backward pass recomputes one tile's samples at a time
    # instead of storing every tile's per-sample intermediates (which cost ~100x the forward pass)
    tile_fn = jax.checkpoint(lambda sf: _tile(config, p, frame, lat_stack, recip_A, sf[0], sf[1],
                                              sample_dtype=sd))
    values = jax.lax.map(tile_fn, (s_idx, f_idx))
    return jax.tree_util.tree_map(lambda v: v.reshape(-1)[:count], values)


def finish_image(config: SimConfig, p: Params, values):
    """Full image [spixels, fpixels] from the ROI window's pixel values [ns * nf]: mask, carry-over, place."""
    f0, f1, s0, s1 = config.roi_box()
    ns, nf = _roi_shape(config)
    image = jnp.zeros((config.spixels, config.fpixels), _sample_dtype(config, p))
    if ns * nf == 0:
        return image
    first_bad = None
    if config.interpolate:
        first_bad = values[2]
        values = _interpolation_fallback(config, p, values, (s0, s1, f0, f1))
    values = values.reshape(ns, nf)
    if config.use_mask:
        keep = p.mask[s0:s1 + 1, f0:f1 + 1] != 0
        values = jnp.where(keep, values, 0.0)
    if config.phi_carryover:
        values = _apply_carryover(config, p, values, (s0, s1, f0, f1), first_bad)
    return image.at[s0:s1 + 1, f0:f1 + 1].set(values)


def render_pixels(config: SimConfig, p: Params, spix, fpix):
    """Photon counts [N] of the pixels ``(spix[i], fpix[i])`` only (un-jitted; see :func:`simulate_pixels`).

    Fitting cost then scales with the pixels fitted (e.g. shoeboxes around spots), not the detector. The
    values equal the full image's at those pixels on the spec path; the whole-image C-parity rules (the
    phi carry-over option, the interpolation switch-off after the first out-of-range sample) and the
    mask are not applied: pass only the pixels you want. ``config.roi`` is ignored.
    """
    spix = jnp.asarray(spix, jnp.int32).reshape(-1)
    fpix = jnp.asarray(fpix, jnp.int32).reshape(-1)
    n = spix.shape[0]
    sd, p, frame, lat_stack, recip_A = _tile_inputs(config, p)
    tile = _choose_tile(config, n)
    n_tiles = -(-n // tile)
    pad = n_tiles * tile - n
    s_idx = jnp.concatenate([spix, jnp.zeros(pad, jnp.int32)]).reshape(n_tiles, tile)
    f_idx = jnp.concatenate([fpix, jnp.zeros(pad, jnp.int32)]).reshape(n_tiles, tile)
    out = jax.lax.map(jax.checkpoint(lambda sf: _tile(config, p, frame, lat_stack, recip_A, sf[0], sf[1],
                                                      sample_dtype=sd)), (s_idx, f_idx))
    if config.interpolate:
        out = out[0]        # tricubic values (no image-wide switch-off for a pixel subset)
    return out.reshape(-1)[:n]


def _interpolation_fallback(config, p, values, box):
    """The reference turns interpolation off for the rest of the image at its first out-of-range sample.

    Pixels before that sample's pixel (in loop order) keep the tricubic value, pixels after it take the
    nearest-neighbour value, and that pixel itself is re-rendered with the switch at the right sample.
    """
    tri, near, first_bad = values
    sd, p, frame, lat_stack, recip_A = _tile_inputs(config, p)
    s0, s1, f0, f1 = box
    n = tri.shape[0]
    bad = first_bad < config.samples_per_pixel
    if config.use_mask:
        bad = bad & (p.mask[s0:s1 + 1, f0:f1 + 1] != 0).reshape(-1)
    k = jnp.argmax(bad)                       # first pixel holding an out-of-range sample
    any_bad = jnp.any(bad)
    idx = jnp.arange(n)
    out = jnp.where(any_bad & (idx > k), near, tri)
    nf = f1 - f0 + 1
    mixed = _tile(config, p, frame, lat_stack, recip_A, (s0 + k // nf)[None], (f0 + k % nf)[None],
                  cutoff=first_bad[k][None], sample_dtype=sd)[0]
    return jnp.where(any_bad & (idx == k), mixed, out)


def render(config: SimConfig, p: Params):
    """Render the image [spixels, fpixels] (photons per pixel). Un-jitted; see :func:`simulate`."""
    ns, nf = _roi_shape(config)
    if not ns * nf:
        return finish_image(config, p, jnp.zeros((0,), p.pixel_size.dtype))
    values = pixel_values(config, p, 0, ns * nf)
    # a one-tile image has no tile loop, and XLA would fuse its last per-pixel steps into the image
    # assembly, rounding differently from the same pixels in a tile loop (see geometry.mul)
    lowest = jnp.min(jax.tree_util.tree_leaves(values)[0])
    values = _materialise(~(lowest < -jnp.inf), values)     # always true, whatever the values (NaN too)
    return finish_image(config, p, values)


def _apply_carryover(config, p, values, box, first_bad=None):
    """Re-render the image's first rendered pixel with its first sample group on the spec schedule.

    With interpolation, ``first_bad`` [pixels] gives each pixel's first out-of-range sample, and the
    re-rendered pixel switches to nearest lookup from there as in the main render.
    """
    sd = _sample_dtype(config, p)
    p = _working_precision(p)
    frame = detector_frame(config, p)
    angles, first_angles = phi_schedule(config, p)
    recip_A = crystal.reciprocal_from_lattice(p.lattice) * 1e-10
    s0, s1, f0, f1 = box
    nf = f1 - f0 + 1
    if config.use_mask:
        keep = (p.mask[s0:s1 + 1, f0:f1 + 1] != 0).reshape(-1)
        first = jnp.argmax(keep)
    else:
        first = 0
    stacks = jnp.concatenate([_lattice_stack(config, p, angles)[None],
                              _lattice_stack(config, p, first_angles)[None]])
    s, f = s0 + first // nf, f0 + first % nf
    cutoff = None if first_bad is None else jnp.atleast_1d(first_bad[first])
    value = _tile(config, p, frame, stacks, recip_A, jnp.atleast_1d(s), jnp.atleast_1d(f), True,
                  cutoff=cutoff, sample_dtype=sd)[0]
    flat = values.reshape(-1)
    if config.use_mask:
        value = jnp.where(jnp.any(keep), value, flat[first])
    return flat.at[first].set(value).reshape(values.shape)


_simulate_jit = EntryJit(render, static_argnums=0)


def _strong(x):
    x = jnp.asarray(x)
    return x if not getattr(x, "weak_type", False) else jnp.asarray(x, dtype=x.dtype)


_simulate_pixels_jit = EntryJit(render_pixels, static_argnums=0)


def simulate_pixels(config: SimConfig, params: Params, spix, fpix):
    """Jitted :func:`render_pixels`; one compilation per (config, number of pixels)."""
    from .validate import validate
    validate(config, params)
    return _simulate_pixels_jit(config, jax.tree_util.tree_map(_strong, params), spix, fpix)


def simulate(config: SimConfig, params: Params):
    """Render the image [spixels, fpixels] (photons per pixel): jitted :func:`render`.

    ``config`` is static (one compilation per distinct config); every leaf of ``params`` is traced, so
    changing values (not shapes or dtypes) never recompiles. Weakly typed leaves (e.g. a Python float put
    in with ``params.replace``) are made strongly typed first so they do not trigger a recompilation.
    Composes with ``jax.grad``, ``jax.vmap`` and an outer ``jax.jit``.
    """
    from .validate import validate
    validate(config, params)          # physically impossible inputs: a named error before tracing
    return _simulate_jit(config, jax.tree_util.tree_map(_strong, params))
