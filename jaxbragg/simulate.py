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

Layout: the physics of a tile of pixels is the stage pipeline of :mod:`jaxbragg.kernel` (ray -> q -> Miller
index -> lattice factor and F -> intensity, with polarization, solid angle and capture), each stage
returning a named result. This module holds what is shared by every way of rendering: the static
:class:`SimConfig` (experiment) with its :class:`Execution` knobs, the :class:`Params` pytree, the
per-image set-up (:class:`ImageSetup`: detector frame, phi x mosaic lattice stack, precision), one tiling
rule (:func:`_choose_tile`, :func:`_map_tiles`), and the reference's image-wide rules (mask, phi
carry-over, interpolation switch-off) applied by :func:`finish_image`. :func:`pixel_values`
``lax.map`` s the pipeline over tiles, so memory stays bounded by ``tile x samples``. How XLA is steered
on each backend is :mod:`jaxbragg._schedule`. See docs/architecture.md and docs/performance.md.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from . import crystal, detector
from ._jit import EntryJit, compiler_options, strong_types  # noqa: F401  (re-exported for users' own jits)
from ._schedule import for_backend
from .kernel import PixelValues, render_tile


@dataclasses.dataclass(frozen=True)
class Execution:
    """How a render is executed, apart from what is rendered: the knobs that change speed and memory
    (and, for ``precision``, the rounding) but not the experiment.

    Attributes:
      tile_pixels, sample_budget, precision: the execution knobs (:class:`Execution`), not part of the
        experiment:
      tile_pixels: pixels per tile; ``None`` picks one from ``sample_budget``.
      sample_budget: target number of pixel-samples held in memory at once.
      precision: ``"float32"`` for the mixed-precision per-sample stage, ``None`` for the parameters'
        dtype (see :class:`SimConfig`).

    A :class:`SimConfig` carries these as its last three fields (so one hashable object keys a
    compilation); ``config.execution`` reads them and ``config.with_execution(knobs)`` sets them.
    """
    tile_pixels: Optional[int] = None
    sample_budget: int = 1 << 20
    precision: Optional[str] = None


EXECUTION_FIELDS = tuple(f.name for f in dataclasses.fields(Execution))


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
      tile_pixels, sample_budget, precision: the execution knobs (:class:`Execution`), not part of the
        experiment:
      tile_pixels: pixels per tile; ``None`` picks one from ``sample_budget``.
      sample_budget: target number of pixel-samples held in memory at once.
      precision: ``"float32"`` runs the per-sample stage (lattice factor, F lookup, sums) in single
        precision while the geometry and the integer part of the Miller indices keep the parameters'
        precision (mixed precision, see :func:`jaxbragg.kernel._mixed_indices`: about 2x faster, within ~2e-6 of the
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
    def execution(self) -> Execution:
        """The execution knobs (tile size, sample budget, precision)."""
        return Execution(**{name: getattr(self, name) for name in EXECUTION_FIELDS})

    def with_execution(self, execution: Execution) -> "SimConfig":
        """This experiment with other execution knobs."""
        return dataclasses.replace(self, **dataclasses.asdict(execution))

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


def _field(rank: int, optional: bool = False):
    """A ``Params`` field whose array has ``rank`` axes for one image (a batch stack adds one)."""
    if optional:
        return dataclasses.field(default=None, metadata={"rank": rank})
    return dataclasses.field(metadata={"rank": rank})


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

    Each field's metadata gives its rank for one image (:data:`PARAM_RANK`, used by the batch module).
    """
    lattice: chex.Array = _field(2)
    ncells: chex.Array = _field(1)
    fudge: chex.Array = _field(0)
    spindle: chex.Array = _field(1)
    phi0: chex.Array = _field(0)
    phistep: chex.Array = _field(0)
    mosaic_umats: chex.Array = _field(3)
    default_F: chex.Array = _field(0)
    fdet: chex.Array = _field(1)
    sdet: chex.Array = _field(1)
    odet: chex.Array = _field(1)
    beam: chex.Array = _field(1)
    detector_rotations: chex.Array = _field(1)
    twotheta_axis: chex.Array = _field(1)
    twotheta: chex.Array = _field(0)
    beam_center: chex.Array = _field(1)
    distance: chex.Array = _field(0)
    pixel_size: chex.Array = _field(0)
    source_dirs: chex.Array = _field(2)
    source_lambda: chex.Array = _field(1)
    fluence: chex.Array = _field(0)
    kahn: chex.Array = _field(0)
    polar_vector: chex.Array = _field(1)
    water_size: chex.Array = _field(0)
    dmin: chex.Array = _field(0)
    thickstep: chex.Array = _field(0)
    mu: chex.Array = _field(0)
    F_grid: Optional[chex.Array] = _field(3, optional=True)
    pix0: Optional[chex.Array] = _field(1, optional=True)
    mask: Optional[chex.Array] = _field(2, optional=True)


#: Rank of each ``Params`` field for one image, in field order (from the field definitions above).
PARAM_RANK = {f.name: f.metadata["rank"] for f in dataclasses.fields(Params)}


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
    precision = config.execution.precision
    return jnp.dtype(precision) if precision is not None else p.pixel_size.dtype


def _working_precision(p: Params) -> Params:
    """Params for the geometry and Miller-index stages: float32 inputs are promoted to float64 when JAX
    has 64-bit types enabled (the CLI enables them).

    Miller indices are ``h = a . q`` with ``|q| ~ 1e10 / m`` and ``|a| ~ 1e-8 m``; in float32 they carry
    ~1e-6 absolute error, which the lattice factor of a large crystal (N >= 20) turns into ~1e-4 relative
    intensity errors. The lattice factor depends only on the reduced index ``d = h - h0``, so we form
    the integer part of ``h`` in float64 and run the expensive per-sample work (lattice factor, F lookup,
    sums) on ``d`` in the caller's precision (:func:`jaxbragg.kernel._mixed_indices`). Without 64-bit types everything
    stays float32.
    """
    if p.pixel_size.dtype != jnp.float32 or not jax.config.jax_enable_x64:
        return p
    up = lambda x: x.astype(jnp.float64) if x is not None and jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree_util.tree_map(up, p)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSetup:
    """What every tile of one image shares, built once per image by :func:`image_setup`.

    Attributes:
      params: the params in working precision (:func:`_working_precision`).
      sample_dtype: precision of the per-sample stage (:class:`Execution`).
      frame: the placed detector (:func:`detector_frame`).
      lat_stacks: [V, P*M, 3, 3] lattice-orientation variants: variant 0 on the spec phi schedule; with
        the carry-over variant, variant 1 for the image's first sample group (:func:`phi_schedule`).
      recip_A: [3, 3] reciprocal vectors in 1/Angstrom.
    """
    params: Params
    sample_dtype: object
    frame: dict
    lat_stacks: jax.Array
    recip_A: jax.Array


def image_setup(config: SimConfig, p: Params, carryover_variant: bool = False) -> ImageSetup:
    """The per-image set-up of every render path (``render``, ``render_pixels``, the C-parity fix-ups, the
    pixel trace, ``batch``)."""
    sd = _sample_dtype(config, p)
    p = _working_precision(p)
    angles, first_angles = phi_schedule(config, p)
    frame = detector_frame(config, p)
    stacks = _lattice_stack(config, p, angles)[None]
    if carryover_variant:
        stacks = jnp.concatenate([stacks, _lattice_stack(config, p, first_angles)[None]])
    recip_A = crystal.reciprocal_from_lattice(p.lattice) * 1e-10
    return ImageSetup(p, sd, frame, stacks, recip_A)


# ---------------------------------------------------------------------------------------------------
# the tiling rule
# ---------------------------------------------------------------------------------------------------

TILE_QUANTUM = 16


def _choose_tile(config: SimConfig, n_pixels: int) -> int:
    """Pixels per tile: ``sample_budget / samples_per_pixel`` (or ``tile_pixels``), always a multiple of
    ``TILE_QUANTUM`` (padding included). Every pixel then runs through the same vectorised code whatever
    the tile size, which keeps images bit-identical across tile sizes (no scalar remainder loop with a
    different rounding)."""
    knobs = config.execution
    want = knobs.tile_pixels if knobs.tile_pixels is not None else \
        knobs.sample_budget // max(config.samples_per_pixel, 1)
    want = min(max(want, 1), n_pixels)
    return -(-want // TILE_QUANTUM) * TILE_QUANTUM


def _roi_shape(config: SimConfig):
    f0, f1, s0, s1 = config.roi_box()
    return max(s1 - s0 + 1, 0), max(f1 - f0 + 1, 0)


def _map_tiles(config: SimConfig, setup: ImageSetup, spix, fpix, count: int) -> PixelValues:
    """:func:`jaxbragg.kernel.render_tile` over the pixels ``(spix[i], fpix[i])`` [n_tiles * tile] in tiles
    of :func:`_choose_tile`; the first ``count`` values.

    Each tile is rematerialised under reverse-mode AD: the backward pass recomputes one tile's samples
    at a time instead of storing every tile's per-sample intermediates (which cost ~100x the forward pass).
    """
    tile = _choose_tile(config, count)
    shape = (-1, tile)
    tile_fn = jax.checkpoint(lambda sf: render_tile(config, setup, sf[0], sf[1]))
    values = jax.lax.map(tile_fn, (spix.reshape(shape), fpix.reshape(shape)))
    return jax.tree_util.tree_map(lambda v: v.reshape(-1)[:count], values)


def _tiled_length(config: SimConfig, count: int) -> int:
    tile = _choose_tile(config, count)
    return -(-count // tile) * tile


def pixel_values(config: SimConfig, p: Params, start, count: int) -> PixelValues:
    """Photon counts of ``count`` consecutive pixels of the ROI window (row-major), from ``start``.

    ``start`` is traced and ``count`` static, so a caller can walk the window in equal chunks (to report
    progress, or to bound host memory) with a single compilation. Indices past the end wrap around and
    their values are meaningless; masking and the carry-over fix-up are applied by :func:`finish_image`.
    Returns a :class:`~jaxbragg.kernel.PixelValues` (its ``nearest`` and ``first_bad`` only with
    interpolation).
    """
    setup = image_setup(config, p)
    f0, _, s0, _ = config.roi_box()
    ns, nf = _roi_shape(config)
    flat = (start + jnp.arange(_tiled_length(config, count))) % (ns * nf)
    return _map_tiles(config, setup, s0 + flat // nf, f0 + flat % nf, count)


def _as_values(values) -> PixelValues:
    """``values`` as :class:`PixelValues` (callers may hand in a bare array, or the leaves of one)."""
    if isinstance(values, PixelValues):
        return values
    if isinstance(values, (tuple, list)):
        return PixelValues(*values)
    return PixelValues(values)


def finish_image(config: SimConfig, p: Params, values):
    """Full image [spixels, fpixels] from the ROI window's pixel values (:class:`PixelValues` of
    [ns * nf]): interpolation switch-off, mask, carry-over, placement."""
    f0, f1, s0, s1 = config.roi_box()
    ns, nf = _roi_shape(config)
    image = jnp.zeros((config.spixels, config.fpixels), _sample_dtype(config, p))
    if ns * nf == 0:
        return image
    values = _as_values(values)
    box = (s0, s1, f0, f1)
    out = _interpolation_fallback(config, p, values, box) if config.interpolate else values.value
    out = out.reshape(ns, nf)
    if config.use_mask:
        keep = p.mask[s0:s1 + 1, f0:f1 + 1] != 0
        out = jnp.where(keep, out, 0.0)
    if config.phi_carryover:
        out = _apply_carryover(config, p, out, box, values.first_bad)
    return image.at[s0:s1 + 1, f0:f1 + 1].set(out)


def assemble_image(config: SimConfig, p: Params, values):
    """:func:`finish_image` behind the tile-invariance barrier of the backend's schedule: a one-tile image
    has no tile loop, and XLA would fuse its last per-pixel steps into the image assembly, rounding
    differently from the same pixels in a tile loop. Every path that renders and assembles an image in
    one program (``render``, ``batch``) goes through here."""
    return finish_image(config, p, for_backend().tile_barrier(_as_values(values)))


def _empty_values(p: Params) -> PixelValues:
    return PixelValues(jnp.zeros((0,), p.pixel_size.dtype))


def render(config: SimConfig, p: Params):
    """Render the image [spixels, fpixels] (photons per pixel). Un-jitted; see :func:`simulate`."""
    ns, nf = _roi_shape(config)
    if not ns * nf:
        return finish_image(config, p, _empty_values(p))
    return assemble_image(config, p, pixel_values(config, p, 0, ns * nf))


def render_pixels(config: SimConfig, p: Params, spix, fpix):
    """Photon counts [N] of the pixels ``(spix[i], fpix[i])`` only (un-jitted; see :func:`simulate_pixels`).

    Fitting cost then scales with the pixels fitted (e.g. shoeboxes around spots), not the detector. The
    values equal the full image's at those pixels on the spec path; the whole-image C-parity rules (the
    phi carry-over option, the interpolation switch-off after the first out-of-range sample) and the
    mask are not applied: pass only the pixels you want (with interpolation, the tricubic values).
    ``config.roi`` is ignored.
    """
    spix = jnp.asarray(spix, jnp.int32).reshape(-1)
    fpix = jnp.asarray(fpix, jnp.int32).reshape(-1)
    n = spix.shape[0]
    pad = jnp.zeros(_tiled_length(config, n) - n, jnp.int32)
    values = _map_tiles(config, image_setup(config, p), jnp.concatenate([spix, pad]),
                        jnp.concatenate([fpix, pad]), n)
    return values.value


def _render_one(config, setup: ImageSetup, s, f, cutoff=None, first_variant=False):
    """The value of the single pixel ``(s, f)`` (scalars), re-rendered for a C-parity fix-up."""
    cutoff = None if cutoff is None else jnp.atleast_1d(cutoff)
    return render_tile(config, setup, jnp.atleast_1d(s), jnp.atleast_1d(f), first_variant,
                       cutoff=cutoff).value[0]


def _interpolation_fallback(config, p, values: PixelValues, box):
    """The reference turns interpolation off for the rest of the image at its first out-of-range sample.

    Pixels before that sample's pixel (in loop order) keep the tricubic value, pixels after it take the
    nearest-neighbour value, and that pixel itself is re-rendered with the switch at the right sample.
    """
    tri, near, first_bad = values
    setup = image_setup(config, p)
    p = setup.params
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
    mixed = _render_one(config, setup, s0 + k // nf, f0 + k % nf, cutoff=first_bad[k])
    return jnp.where(any_bad & (idx == k), mixed, out)


def _apply_carryover(config, p, values, box, first_bad=None):
    """Re-render the image's first rendered pixel with its first sample group on the spec schedule.

    With interpolation, ``first_bad`` [pixels] gives each pixel's first out-of-range sample, and the
    re-rendered pixel switches to nearest lookup from there as in the main render.
    """
    setup = image_setup(config, p, carryover_variant=True)
    p = setup.params
    s0, s1, f0, f1 = box
    nf = f1 - f0 + 1
    if config.use_mask:
        keep = (p.mask[s0:s1 + 1, f0:f1 + 1] != 0).reshape(-1)
        first = jnp.argmax(keep)
    else:
        first = 0
    cutoff = None if first_bad is None else first_bad[first]
    value = _render_one(config, setup, s0 + first // nf, f0 + first % nf, cutoff=cutoff, first_variant=True)
    flat = values.reshape(-1)
    if config.use_mask:
        value = jnp.where(jnp.any(keep), value, flat[first])
    return flat.at[first].set(value).reshape(values.shape)


_simulate_jit = EntryJit(render, static_argnums=0)
_simulate_pixels_jit = EntryJit(render_pixels, static_argnums=0)


def simulate_pixels(config: SimConfig, params: Params, spix, fpix):
    """Jitted :func:`render_pixels`; one compilation per (config, number of pixels)."""
    from .validate import validate
    validate(config, params)
    return _simulate_pixels_jit(config, strong_types(params), spix, fpix)


def simulate(config: SimConfig, params: Params):
    """Render the image [spixels, fpixels] (photons per pixel): jitted :func:`render`.

    ``config`` is static (one compilation per distinct config); every leaf of ``params`` is traced, so
    changing values (not shapes or dtypes) never recompiles. Weakly typed leaves (e.g. a Python float put
    in with ``params.replace``) are made strongly typed first so they do not trigger a recompilation.
    Composes with ``jax.grad``, ``jax.vmap`` and an outer ``jax.jit``.
    """
    from .validate import validate
    validate(config, params)          # physically impossible inputs: a named error before tracing
    return _simulate_jit(config, strong_types(params))
