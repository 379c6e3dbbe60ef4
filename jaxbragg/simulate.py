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

Implementation: :func:`_pixel` is the physics of one pixel written over its sample axes with broadcasting
(layers, sub-pixels, sources, then the fused phi x mosaic lattice stack); :func:`render` ``vmap`` s it over a
tile of pixels and ``lax.map`` s over tiles, so memory stays bounded by ``tile x samples``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from . import beam as beam_mod
from . import crystal, detector, geometry, lattice, structure_factors


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


def _pixel(config: SimConfig, p: Params, frame, lat_stacks, recip_A, spix, fpix, first_variant=False,
           cutoff=None):
    """Photon count of one pixel (before masking).

    Args:
      lat_stacks: [V, P*M, 3, 3] lattice-orientation variants; variant 0 is used everywhere except, when
        ``first_variant`` (static) is set, the pixel's first sample group that survives ``dmin``, which
        uses variant 1 (see :func:`phi_schedule`).
      spix, fpix: integer pixel indices (traced).
      cutoff: with interpolation, the within-pixel sample index from which nearest lookup replaces
        tricubic interpolation (traced); ``None`` returns both variants, see below.

    Returns:
      The pixel value; with ``config.interpolate`` and no ``cutoff``, a tuple ``(value with tricubic F,
      value with nearest F, index of the first sample failing the interpolation range test or
      ``samples_per_pixel`` if none)``.
    """
    dtype = p.pixel_size.dtype
    nl, o = config.thicksteps, config.oversample
    sub = p.pixel_size / o
    sub_idx = jnp.arange(o, dtype=dtype)
    f_coord = sub * (fpix * o + sub_idx) + sub / 2.0                      # [O]
    s_coord = sub * (spix * o + sub_idx) + sub / 2.0                      # [O]
    layers = jnp.arange(nl, dtype=dtype)
    depth = layers * p.thickstep                                          # [L]
    shape3 = (nl, o, o)
    pos = detector.pixel_position(
        frame, jnp.broadcast_to(f_coord[None, None, :], shape3),
        jnp.broadcast_to(s_coord[None, :, None], shape3),
        jnp.broadcast_to(depth[:, None, None], shape3), config.curved, p.beam)   # [L, O, O, 3]
    airpath = geometry.norm(pos)
    diffracted = pos / airpath[..., None]
    omega = detector.solid_angle(airpath, frame["close_distance"], p.pixel_size, config.point_pixel)
    if config.thick_sensor:
        capture = detector.capture_fraction(diffracted, frame["odet"], layers[:, None, None],
                                            p.thickstep, p.mu)
    else:
        capture = jnp.ones(shape3, dtype)

    incident = -p.source_dirs                                             # [S, 3]
    lam = p.source_lambda
    q = (diffracted[..., None, :] - incident) / lam[:, None]              # [L, O, O, S, 3]
    stol = 0.5 * geometry.norm(q)
    valid = ~((p.dmin > 0.0) & (stol > 0.0) & (p.dmin > 0.5 / jnp.where(stol > 0, stol, 1.0)))
    if config.polarization:
        polar = beam_mod.polarization_factor(p.kahn, incident, diffracted[..., None, :], p.polar_vector)
    else:
        polar = jnp.ones(valid.shape, dtype)

    hkl = jnp.einsum("...j,xpvj->...xpv", q, lat_stacks)                 # [L, O, O, S, V, PM, 3]
    if first_variant:
        flat_valid = valid.reshape(-1)
        first = jnp.zeros_like(flat_valid).at[jnp.argmax(flat_valid)].set(jnp.any(flat_valid))
        pick = jax.nn.one_hot(first.reshape(valid.shape).astype(jnp.int32), lat_stacks.shape[0], dtype=dtype)
        hkl = jnp.einsum("...x,...xpv->...pv", pick, hkl)                # [L, O, O, S, PM, 3]
    else:
        hkl = hkl[..., 0, :, :]                                           # [L, O, O, S, PM, 3]

    f_latt = lattice.lattice_factor(hkl, p.ncells, p.fudge, recip_A, config.shape)
    # samples the reference never reaches the F lookup for: beyond dmin, or zero F_latt without water
    reached = valid[..., None] if config.water else valid[..., None] & (f_latt != 0.0)
    i_bg = beam_mod.water_background(p.fluence, p.water_size)
    running = config.oversample_thick or config.oversample_polar or config.oversample_omega
    if running:
        factor = jnp.ones(valid.shape, dtype)
        if config.oversample_thick:
            factor = factor * capture[..., None]
        if config.oversample_polar:
            factor = factor * polar
        if config.oversample_omega:
            factor = factor * omega[..., None]
        f_eff = jnp.where(reached, factor[..., None], 1.0).reshape(-1)
        tail = jnp.flip(jnp.cumprod(jnp.flip(f_eff)))                     # prod_{k >= j} f_k

    scale = beam_mod.R_E_SQR * p.fluence / config.steps
    if not config.oversample_thick:
        scale = scale * capture[-1, 0, 0]
    if not config.oversample_polar and config.polarization:
        flat_valid = valid.reshape(-1)
        scale = scale * jnp.where(jnp.any(flat_valid), polar.reshape(-1)[jnp.argmax(flat_valid)], 0.0)
    if not config.oversample_omega:
        scale = scale * omega[0, 0, 0]

    def value(f_cell):
        term = jnp.where(valid[..., None], (f_cell * f_latt) ** 2, 0.0)  # [L, O, O, S, PM]
        if running:
            return scale * (jnp.sum(term.reshape(-1) * tail) + i_bg * tail[0])
        return scale * (i_bg + jnp.sum(term))

    near = structure_factors.lookup_nearest(hkl, p.F_grid, config.hkl_min, p.default_F)
    if not config.interpolate:
        return value(near)
    tri = structure_factors.lookup_tricubic(hkl, p.F_grid, config.hkl_min, p.default_F)
    order = jnp.arange(f_latt.size).reshape(f_latt.shape)
    if cutoff is not None:
        return value(jnp.where(order < cutoff, tri, near))
    bad = reached & ~structure_factors.interpolation_in_range(hkl, config.hkl_min, p.F_grid.shape)
    first_bad = jnp.min(jnp.where(bad, order, f_latt.size))
    return value(tri), value(near), first_bad


def _choose_tile(config: SimConfig, n_pixels: int) -> int:
    if config.tile_pixels is not None:
        return max(1, min(config.tile_pixels, n_pixels))
    return max(1, min(n_pixels, config.sample_budget // max(config.samples_per_pixel, 1)))


def _roi_shape(config: SimConfig):
    f0, f1, s0, s1 = config.roi_box()
    return max(s1 - s0 + 1, 0), max(f1 - f0 + 1, 0)


def pixel_values(config: SimConfig, p: Params, start, count: int):
    """Photon counts of ``count`` consecutive pixels of the ROI window (row-major), from ``start``.

    ``start`` is traced and ``count`` static, so a caller can walk the window in equal chunks (to report
    progress, or to bound host memory) with a single compilation. Indices past the end wrap around and
    their values are meaningless; masking and the carry-over fix-up are applied by :func:`finish_image`.
    """
    frame = detector_frame(config, p)
    angles, _ = phi_schedule(config, p)
    lat_stack = _lattice_stack(config, p, angles)[None]
    recip_A = crystal.reciprocal_from_lattice(p.lattice) * 1e-10
    f0, _, s0, _ = config.roi_box()
    ns, nf = _roi_shape(config)
    n_pix = ns * nf
    tile = _choose_tile(config, count)
    n_tiles = -(-count // tile)
    flat = (start + jnp.arange(n_tiles * tile)) % n_pix
    s_idx = (s0 + flat // nf).reshape(n_tiles, tile)
    f_idx = (f0 + flat % nf).reshape(n_tiles, tile)
    pixel_fn = lambda s, f: _pixel(config, p, frame, lat_stack, recip_A, s, f, False)
    values = jax.lax.map(lambda sf: jax.vmap(pixel_fn)(sf[0], sf[1]), (s_idx, f_idx))
    return jax.tree_util.tree_map(lambda v: v.reshape(-1)[:count], values)


def finish_image(config: SimConfig, p: Params, values):
    """Full image [spixels, fpixels] from the ROI window's pixel values [ns * nf]: mask, carry-over, place."""
    f0, f1, s0, s1 = config.roi_box()
    ns, nf = _roi_shape(config)
    image = jnp.zeros((config.spixels, config.fpixels), p.pixel_size.dtype)
    if ns * nf == 0:
        return image
    if config.interpolate:
        values = _interpolation_fallback(config, p, values, (s0, s1, f0, f1))
    values = values.reshape(ns, nf)
    if config.use_mask:
        keep = p.mask[s0:s1 + 1, f0:f1 + 1] != 0
        values = jnp.where(keep, values, 0.0)
    if config.phi_carryover:
        values = _apply_carryover(config, p, values, (s0, s1, f0, f1))
    return image.at[s0:s1 + 1, f0:f1 + 1].set(values)


def _interpolation_fallback(config, p, values, box):
    """The reference turns interpolation off for the rest of the image at its first out-of-range sample.

    Pixels before that sample's pixel (in loop order) keep the tricubic value, pixels after it take the
    nearest-neighbour value, and that pixel itself is re-rendered with the switch at the right sample.
    """
    tri, near, first_bad = values
    s0, s1, f0, f1 = box
    n = tri.shape[0]
    bad = first_bad < config.samples_per_pixel
    if config.use_mask:
        bad = bad & (p.mask[s0:s1 + 1, f0:f1 + 1] != 0).reshape(-1)
    k = jnp.argmax(bad)                       # first pixel holding an out-of-range sample
    any_bad = jnp.any(bad)
    idx = jnp.arange(n)
    out = jnp.where(any_bad & (idx > k), near, tri)
    frame = detector_frame(config, p)
    angles, _ = phi_schedule(config, p)
    nf = f1 - f0 + 1
    mixed = _pixel(config, p, frame, _lattice_stack(config, p, angles)[None],
                   crystal.reciprocal_from_lattice(p.lattice) * 1e-10, s0 + k // nf, f0 + k % nf,
                   cutoff=first_bad[k])
    return jnp.where(any_bad & (idx == k), mixed, out)


def render(config: SimConfig, p: Params):
    """Render the image [spixels, fpixels] (photons per pixel). Un-jitted; see :func:`simulate`."""
    ns, nf = _roi_shape(config)
    values = pixel_values(config, p, 0, ns * nf) if ns * nf else jnp.zeros((0,), p.pixel_size.dtype)
    return finish_image(config, p, values)


def _apply_carryover(config, p, values, box):
    """Re-render the image's first rendered pixel with its first sample group on the spec schedule."""
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
    value = _pixel(config, p, frame, stacks, recip_A, s, f, True)
    flat = values.reshape(-1)
    if config.use_mask:
        value = jnp.where(jnp.any(keep), value, flat[first])
    return flat.at[first].set(value).reshape(values.shape)


_simulate_jit = jax.jit(render, static_argnums=0)


def _strong(x):
    x = jnp.asarray(x)
    return x if not getattr(x, "weak_type", False) else jnp.asarray(x, dtype=x.dtype)


def simulate(config: SimConfig, params: Params):
    """Render the image [spixels, fpixels] (photons per pixel): jitted :func:`render`.

    ``config`` is static (one compilation per distinct config); every leaf of ``params`` is traced, so
    changing values (not shapes or dtypes) never recompiles. Weakly typed leaves (e.g. a Python float put
    in with ``params.replace``) are made strongly typed first so they do not trigger a recompilation.
    Composes with ``jax.grad``, ``jax.vmap`` and an outer ``jax.jit``.
    """
    return _simulate_jit(config, jax.tree_util.tree_map(_strong, params))
