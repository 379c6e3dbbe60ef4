"""Explicit-scatterer diffraction with exact path lengths (the reference's nearBragg.c), as JAX functions.

No lattice is assumed: the field at a detector point is the sum of spherical waves from point scatterers,
each lit by a source at a finite distance (or by a plane wave, ``far_source``). For scatterer ``i`` at
``x_i`` [m], source point ``q`` and detector point ``p``:

* path ``L_i = |x_i - q| + |p - x_i|`` (plane wave: ``x_i . e_x + |p - x_i|``, the beam runs along +x),
* phase ``phi_i = 2 pi L_i / lambda + phase_i``,
* Debye-Waller weight ``w_i = occ_i exp(-B_i |s|^2 / 4)``, ``s = (S - S0) / lambda`` [1/A] with ``S`` the
  unit vector scatterer -> pixel and ``S0`` source -> scatterer (plane wave: ``e_x``),
* amplitude ``A = sum_i w_i exp(i phi_i) / (|x_i - q| |p - x_i|)`` (plane wave: ``|x_i - q|`` -> 1 m).

Sampling, as the reference loops: sub-pixels (``oversample^2``), wavelengths ``lambda0 (1 + f_j)``, a
divergence grid of source points ``q = (-D + d_k, atan(h) D, atan(v) D)`` (``D`` the source distance, ``d_k``
the source-depth offsets). The amplitudes of the depth points always add coherently. Then either

* incoherent: ``I = sum_{sub, lambda, div} |sum_depth A|^2 / steps``, or
* ``coherent``: ``I = |sum_{all} A|^2 / steps^2``,

with ``steps = oversample^2 n_lambda n_div n_depth``, and the pixel value is
``I * Omega R^2 * fluence * r_e^2`` where ``Omega R^2 = pixel^2 distance / R`` (``R`` = origin -> pixel) at the
pixel's *last* sub-pixel (``1`` for ``point_pixel``), as the reference computes it.

The detector frame comes from :func:`jaxbragg.detector.place_detector` (two-theta about the spindle, origin
``-Xbeam f - Ybeam s + distance o``), the sub-pixel positions from :func:`jaxbragg.detector.pixel_position`,
``Omega`` from :func:`jaxbragg.detector.solid_angle` and the optional Kahn factor (a jaxbragg extension; the
reference has none) from :func:`jaxbragg.beam.polarization_factor`.

Memory is bounded: pixels are processed in tiles (``lax.map``) and scatterers in chunks (``lax.scan``), so a
step holds ``tile_pixels x rays_per_pixel x atom_chunk`` values (:class:`Tiling`). Everything is
differentiable in the scatterer arrays and the float fields of :class:`Experiment`; ``vmap`` over a batch of
:class:`Scatterers` works. Phases reach ``2 pi 10 m / 1 A ~ 6e11`` rad for the default 10 m source, so run in
float64 (the command line does); in float32 such phases carry no information.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import beam as beam_mod
from . import detector, geometry
from ._jit import EntryJit

#: The reference's constants (nearBragg.c ``#define``s), kept so that phases of ~1e11 rad round the same way.
TWO_PI = 6.28318530717959
PI = 3.14159265358979
R_E_SQR = beam_mod.R_E_SQR
FLUENCE = 1.25932015286227e+29          # photons/m^2, the reference's default
E_X = (1.0, 0.0, 0.0)                   # beam direction: the reference's fixed +x


class Scatterers(NamedTuple):
    """Point scatterers (a pytree; every field differentiable).

    Attributes:
      positions: [N, 3] metres.
      occupancy: [N] amplitude weight (the reference's "occupancy" column; any real number).
      b_factor: [N] Debye-Waller B [A^2].
      phase: [N] extra phase shift [rad].
    """
    positions: jax.Array
    occupancy: jax.Array
    b_factor: jax.Array
    phase: jax.Array


def scatterers(positions_A, occupancy=None, b_factor=None, phase_deg=None) -> Scatterers:
    """Build :class:`Scatterers` from the atom-file units: positions in A, phase in degrees.

    Missing columns take the reference's defaults: occupancy 1, B 0, phase -90 degrees.
    """
    xp = jnp if isinstance(positions_A, jax.Array) else np
    pos = xp.asarray(positions_A, dtype=float)
    n = pos.shape[0]
    occ = xp.ones(n) if occupancy is None else xp.asarray(occupancy, dtype=float)
    b = xp.zeros(n) if b_factor is None else xp.asarray(b_factor, dtype=float)
    ph = xp.full(n, -90.0) if phase_deg is None else xp.asarray(phase_deg, dtype=float)
    return Scatterers(pos / 1e10, occ, b, ph / (180.0 / PI))


class Experiment(NamedTuple):
    """Detector, beam and source (a pytree of floats; SI units, angles in radians).

    Attributes:
      distance: sample -> detector along the unrotated normal [m].
      beam_center: [2] (Xbeam, Ybeam) [m]: where the origin's normal meets the detector, from the corner of
        pixel (0, 0) along fast and slow.
      pixel: pixel size [m].
      fdet, sdet, odet: [3] fast, slow, normal directions before two-theta (used as given, not normalised).
      spindle: [3] two-theta axis.
      twotheta: detector swing about ``spindle`` [rad].
      pix0: [3] explicit position of the corner of pixel (0, 0) [m], or None to place it from the above.
      wavelength: central wavelength [m].
      wavelength_factors: [L] ``lambda_j = wavelength * factors_j`` (1 + offset).
      source_offsets: [D, 2] source-point offsets per metre of source distance, ``(atan(h), atan(v))`` for
        the divergence angles ``(h, v)`` (the reference's formula; :func:`experiment` converts angles with
        the C library's ``atan``); ignored for a plane wave, but counted in ``steps``.
      depths: [K] source-depth offsets along x [m] (ignored for a plane wave, but counted).
      source_distance: origin -> source plane [m] (unused for a plane wave).
      fluence: photons/m^2.
      kahn: Kahn polarization factor (used only with ``NearConfig.polarization``).
      polar_axis: [3] E-vector direction (used only with ``NearConfig.polarization``).
    """
    distance: jax.Array
    beam_center: jax.Array
    pixel: jax.Array
    fdet: jax.Array
    sdet: jax.Array
    odet: jax.Array
    spindle: jax.Array
    twotheta: jax.Array
    pix0: Optional[jax.Array]
    wavelength: jax.Array
    wavelength_factors: jax.Array
    source_offsets: jax.Array
    depths: jax.Array
    source_distance: jax.Array
    fluence: jax.Array
    kahn: jax.Array
    polar_axis: jax.Array


def experiment(*, fpixels, spixels, pixel=0.1e-3, distance=0.1, beam_center=None, fdet=(0, 0, 1),
               sdet=(0, -1, 0), odet=(1, 0, 0), spindle=(0, 0, 1), twotheta=0.0, pix0=None,
               wavelength=1e-10, wavelength_factors=(1.0,), divergence=((0.0, 0.0),), depths=(0.0,),
               source_distance=10.0, fluence=FLUENCE, kahn=0.0, polar_axis=(0, 0, 1)) -> Experiment:
    """An :class:`Experiment` with the reference's defaults (SI units); ``beam_center`` defaults to the
    reference's ``((F - 1) pixel / 2, (S + 1) pixel / 2)`` with ``F, S`` the pixel counts; ``divergence``
    [D, 2] are (h, v) angles in radians (turned into ``source_offsets`` with ``math.atan``, which is the
    C library's: XLA's ``atan`` can differ in the last bit, 1e-4 rad of phase at 10 m)."""
    offsets = [(math.atan(h), math.atan(v)) for h, v in np.asarray(divergence, dtype=np.float64).reshape(-1, 2)]
    if beam_center is None:
        beam_center = ((fpixels * pixel - pixel) / 2.0, (spixels * pixel + pixel) / 2.0)
    f = lambda x: np.asarray(x, dtype=np.float64)
    return Experiment(f(distance), f(beam_center), f(pixel), f(fdet), f(sdet), f(odet), f(spindle),
                      f(twotheta), None if pix0 is None else f(pix0), f(wavelength),
                      f(wavelength_factors).reshape(-1), f(offsets).reshape(-1, 2), f(depths).reshape(-1),
                      f(source_distance), f(fluence), f(kahn), f(polar_axis))


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Accuracy-neutral memory knobs (static): values per step are about
    ``tile_pixels x rays_per_pixel x atom_chunk``; the result does not depend on them beyond rounding."""
    atom_chunk: int = 256
    budget: int = 1 << 20            # values per (pixel tile x atom chunk) step

    def plan(self, n_pixels: int, rays: int, n_atoms: int) -> Tuple[int, int]:
        """(tile_pixels, atom_chunk) for a job."""
        chunk = max(1, min(self.atom_chunk, n_atoms, max(16, self.budget // max(rays, 1))))
        tile = max(1, min(n_pixels, self.budget // max(rays * chunk, 1)))
        return tile, chunk


@dataclasses.dataclass(frozen=True)
class NearConfig:
    """Static description of a render (anything that changes a shape or a branch).

    Attributes:
      fpixels, spixels: detector size in pixels.
      oversample: sub-pixels per pixel side.
      roi: (fmin, fmax, smin, smax) inclusive pixel window, or None for the whole detector.
      curved: pixels on a sphere of radius ``distance`` (the reference's mapping, see :func:`curved_position`).
      point_pixel: ``Omega R^2 = 1`` instead of ``pixel^2 distance / R``.
      far_source: plane-wave illumination along +x.
      coherent: add everything coherently (also across wavelengths, divergence and sub-pixels).
      polarization: multiply by the Kahn factor (jaxbragg extension; off reproduces the reference).
      debye_waller: evaluate the B-factor term (False skips it: the same image when every B is 0, like the
        reference's ``B != 0`` test, and faster; the gradient with respect to B is then 0).
      tiling: :class:`Tiling`.
    """
    fpixels: int
    spixels: int
    oversample: int = 1
    roi: Optional[Tuple[int, int, int, int]] = None
    curved: bool = False
    point_pixel: bool = False
    far_source: bool = False
    coherent: bool = False
    polarization: bool = False
    debye_waller: bool = True
    tiling: Tiling = Tiling()

    def roi_box(self) -> Tuple[int, int, int, int]:
        """The window clipped to the detector: (f0, f1, s0, s1), inclusive (may be empty)."""
        if self.roi is None:
            return 0, self.fpixels - 1, 0, self.spixels - 1
        f0, f1, s0, s1 = self.roi
        return max(f0, 0), min(f1, self.fpixels - 1), max(s0, 0), min(s1, self.spixels - 1)

    def roi_pixels(self) -> np.ndarray:
        """[P, 2] (slow, fast) indices of the window's pixels in row order."""
        f0, f1, s0, s1 = self.roi_box()
        s, f = np.meshgrid(np.arange(s0, s1 + 1), np.arange(f0, f1 + 1), indexing="ij")
        return np.stack([s.ravel(), f.ravel()], axis=-1).astype(np.int32)


def steps(config: NearConfig, exp: Experiment) -> int:
    """The reference's normaliser ``oversample^2 x n_lambda x n_div x n_depth``."""
    return (config.oversample ** 2 * exp.wavelength_factors.shape[0] * exp.source_offsets.shape[0]
            * exp.depths.shape[0])


# ---- small physics stages --------------------------------------------------------------------------

def _div(a, b):
    """``a / b`` as one IEEE division. XLA rewrites division by a broadcast scalar into a multiply by its
    reciprocal (one more rounding); on a phase of 1e11 rad that is 1e-4 rad, so the divisor is made
    opaque to the rewrite."""
    return a / (b + a * 0.0)


#: 2 pi split into parts of at most 12 significant bits (and a last full-precision part): ``k * part`` is
#: exact for integers ``k < 2^41``, so :func:`reduce_phase` subtracts ``k 2 pi`` to ~1e-30 relative.
_TWO_PI_PARTS = (6.28125, 0.0019350051879882812, 3.019813448190689e-07, 1.0253131677018246e-11,
                 2.4492935982947064e-16)
_REDUCE_LIMIT = 2.0 ** 40 * 6.28


def reduce_phase(phase):
    """``phase - k 2 pi`` (``k`` the nearest integer), exact to a few ulps of pi (Cody-Waite with a 100-bit
    2 pi). The same cos/sin as of the unreduced phase to the last bit or two, several times faster: libm
    (and XLA) take a slow exact path for arguments beyond ~1e9, and our phases reach ~1e12. Phases beyond
    ``2^40 2 pi`` are passed through unchanged."""
    k = jnp.round(phase * (1.0 / (2.0 * math.pi)))
    r = phase
    for part in _TWO_PI_PARTS:
        r = r - k * part
    return jnp.where(jnp.abs(phase) < _REDUCE_LIMIT, r, phase)


def frame(exp: Experiment):
    """Detector basis and origin: ``detector.place_detector`` swings the basis by two-theta about the
    spindle; the origin is then ``pix0 = -Xbeam f - Ybeam s + distance o`` from the swung basis (the
    reference's order of operations, which rounds differently from swinging the combination) unless
    ``exp.pix0`` is given."""
    xp = geometry._xp(*[x for x in exp if x is not None])
    frm = detector.place_detector(exp.fdet, exp.sdet, exp.odet, xp.asarray(E_X, dtype=float),
                                  xp.zeros(3), exp.spindle, exp.twotheta, "sample", exp.beam_center,
                                  exp.distance, pix0=exp.pix0)
    if exp.pix0 is None:
        mul = geometry.mul
        frm["pix0"] = (mul(-exp.beam_center[0], frm["fdet"]) - mul(exp.beam_center[1], frm["sdet"])
                       + mul(exp.distance, frm["odet"]))
    return frm


def curved_position(flat, distance):
    """The reference's curved detector: the point ``(distance, 0, 0)`` rotated about lab y by ``z/distance``
    and then about lab z by ``y/distance`` (``geometry.rot_y``, ``geometry.rot_z``, applied one after the
    other as the C does), with ``y, z`` the lab components of the flat position ``flat`` [..., 3]. Note the
    mirrored z: a flat point at ``+z`` lands at ``-z``."""
    start = jnp.stack([distance, 0.0 * distance, 0.0 * distance])

    def one(y, z):
        v = geometry.rot_y(z / distance) @ start
        return geometry.rot_z(y / distance) @ v

    fn = one
    for _ in range(flat.ndim - 1):
        fn = jax.vmap(fn)
    return fn(flat[..., 1], flat[..., 2])


def subpixel_positions(config: NearConfig, exp: Experiment, frm, pixels):
    """Lab positions [P, O*O, 3] of the sub-pixels of ``pixels`` [P, 2] (slow, fast), in the reference's
    loop order (slow sub-index outer): ``F = sub (f O + j) + sub / 2``."""
    o = config.oversample
    sub = exp.pixel / o
    j = jnp.arange(o)
    fi = (pixels[:, 1:2] * o)[:, None, :] + j[None, None, :]        # [P, 1, O]  (fast sub-index inner)
    si = (pixels[:, 0:1] * o)[:, :, None] + j[None, :, None]        # [P, O, 1]
    fi, si = jnp.broadcast_arrays(fi, si)
    fc = geometry.mul(sub, fi.reshape(len(pixels), o * o).astype(sub.dtype)) + sub / 2.0
    sc = geometry.mul(sub, si.reshape(len(pixels), o * o).astype(sub.dtype)) + sub / 2.0
    pos = detector.pixel_position(frm, fc, sc, jnp.zeros_like(fc), False, None)
    if config.curved:
        pos = curved_position(pos, exp.distance)
    return pos


def source_points(exp: Experiment):
    """Source positions [D, K, 3]: ``(-D + depth_k, atan(h) D, atan(v) D)``."""
    dist = exp.source_distance
    x = -dist + exp.depths                                          # [K]
    y = exp.source_offsets[:, 0] * dist                             # [D]
    z = exp.source_offsets[:, 1] * dist
    d, k = exp.source_offsets.shape[0], exp.depths.shape[0]
    return jnp.stack([jnp.broadcast_to(x[None, :], (d, k)), jnp.broadcast_to(y[:, None], (d, k)),
                      jnp.broadcast_to(z[:, None], (d, k))], axis=-1)


def scattered_wave(pixel, source, atom, occupancy, b_factor, phase_shift, wavelength, far_source: bool,
                   debye_waller: bool = True):
    """(Re, Im) of one scatterer's wave at one detector point (arrays broadcast): ``w exp(i phi) / (|x - q|
    |p - x|)`` with the module docstring's path, phase and Debye-Waller weight (``debye_waller`` False
    drops the B term, exactly as B = 0 would)."""
    to_pixel = pixel - atom
    r = geometry.norm(to_pixel)
    if far_source:
        s_path = atom[..., 0]
        s0 = jnp.asarray(E_X, dtype=r.dtype)
    else:
        from_source = atom - source
        s_path = geometry.norm(from_source)
        s0 = from_source / s_path[..., None] if debye_waller else None
    phase = _div(TWO_PI * (s_path + r), wavelength) + phase_shift
    if debye_waller:
        s = (to_pixel / r[..., None] - s0) / (wavelength * 1e10)[..., None]
        stol = geometry.norm(s) / 2.0
        weight = occupancy * jnp.exp(-b_factor * stol * stol)
    else:
        weight = occupancy
    amp = weight / r if far_source else weight / s_path / r
    phase = reduce_phase(phase)
    return amp * jnp.cos(phase), amp * jnp.sin(phase)


class PixelFields(NamedTuple):
    """Per-pixel sums before normalisation (each [P]).

    incoherent: ``sum_{sub, lambda, div} |sum_depth A|^2``; field_re/field_im: ``sum_all A``;
    omega_r2: ``Omega R^2`` at the last sub-pixel; polar: Kahn factor there (1 without polarization);
    last_position: [P, 3] the last sub-pixel's lab position [m].
    """
    incoherent: jax.Array
    field_re: jax.Array
    field_im: jax.Array
    omega_r2: jax.Array
    polar: jax.Array
    last_position: jax.Array


def _tile_fields(config: NearConfig, exp: Experiment, atoms: Scatterers, frm, pixels, chunk: int):
    """:class:`PixelFields` of one tile of pixels [T, 2], scanning the atoms in chunks of ``chunk``."""
    pos = subpixel_positions(config, exp, frm, pixels)              # [T, O2, 3]
    lam = exp.wavelength * exp.wavelength_factors                   # [L]
    if config.far_source:
        src = jnp.zeros((1, 1, 3), dtype=pos.dtype)                # unused
    else:
        src = source_points(exp)                                    # [D, K, 3]
    # ray axes: [T, O2, L, D, K]
    p = pos[:, :, None, None, None, None, :]
    q = src[None, None, None, :, :, None, :]
    w = lam[None, None, :, None, None, None]

    def step(carry, chunk_atoms):
        x, occ, b, ph = chunk_atoms
        re, im = scattered_wave(p, q, x, occ, b, ph, w, config.far_source, config.debye_waller)
        return (carry[0] + re.sum(-1), carry[1] + im.sum(-1)), None

    n = atoms.positions.shape[0]
    pad = -n % chunk
    padded = (jnp.pad(atoms.positions, ((0, pad), (0, 0))), jnp.pad(atoms.occupancy, (0, pad)),
              jnp.pad(atoms.b_factor, (0, pad)), jnp.pad(atoms.phase, (0, pad)))
    chunks = jax.tree_util.tree_map(lambda a: a.reshape((-1, chunk) + a.shape[1:]), padded)
    shape = p.shape[:2] + (lam.shape[0],) + q.shape[3:5]
    zero = jnp.zeros(shape, dtype=pos.dtype)
    if chunks[0].shape[0] == 1:         # one chunk: no loop (a simpler program compiles faster)
        (re, im), _ = step((zero, zero), jax.tree_util.tree_map(lambda a: a[0], chunks))
    else:
        (re, im), _ = jax.lax.scan(step, (zero, zero), chunks)
    n_div, n_depth = exp.source_offsets.shape[0], exp.depths.shape[0]
    if config.far_source:          # every source point sees the same plane wave: the reference still loops
        re, im = re * n_depth, im * n_depth
        incoherent = n_div * (re * re + im * im).sum((1, 2, 3, 4))
        field_re, field_im = n_div * re.sum((1, 2, 3, 4)), n_div * im.sum((1, 2, 3, 4))
    else:
        cre, cim = re.sum(-1), im.sum(-1)                           # depth points add coherently
        incoherent = (cre * cre + cim * cim).sum((1, 2, 3))
        field_re, field_im = re.sum((1, 2, 3, 4)), im.sum((1, 2, 3, 4))
    last = pos[:, -1, :]
    airpath = geometry.norm(last)
    omega_r2 = detector.solid_angle(airpath, exp.distance, exp.pixel, config.point_pixel) * airpath * airpath
    if config.polarization:
        incident = jnp.broadcast_to(jnp.asarray(E_X, dtype=last.dtype), last.shape)
        polar = beam_mod.polarization_factor(exp.kahn, incident, last / airpath[:, None],
                                             geometry.unitize(exp.polar_axis))
    else:
        polar = jnp.ones_like(airpath)
    return PixelFields(incoherent, field_re, field_im, omega_r2, polar, last)


def pixel_fields(config: NearConfig, atoms: Scatterers, exp: Experiment, pixels) -> PixelFields:
    """:class:`PixelFields` for ``pixels`` [P, 2] (slow, fast) integer indices, tiled over pixels
    (``lax.map``) and scatterers (``lax.scan``) so that memory stays bounded (:class:`Tiling`)."""
    pixels = jnp.asarray(pixels, dtype=jnp.int32)
    n_pix = pixels.shape[0]
    n_far = 1 if config.far_source else exp.source_offsets.shape[0] * exp.depths.shape[0]
    rays = config.oversample ** 2 * exp.wavelength_factors.shape[0] * n_far
    tile, chunk = config.tiling.plan(n_pix, rays, atoms.positions.shape[0])
    frm = frame(exp)
    pad = -n_pix % tile
    tiles = jnp.pad(pixels, ((0, pad), (0, 0))).reshape(-1, tile, 2)
    one_tile = lambda t: _tile_fields(config, exp, atoms, frm, t, chunk)
    if tiles.shape[0] == 1:             # one tile: no loop
        out = jax.tree_util.tree_map(lambda a: a[None], one_tile(tiles[0]))
    else:
        out = jax.lax.map(one_tile, tiles)
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:n_pix], out)


def pixel_values(config: NearConfig, exp: Experiment, fields: PixelFields, steps_: int,
                 field_re=None, field_im=None):
    """Photons per pixel [P] from :class:`PixelFields`: incoherent ``I / steps``, coherent
    ``|F|^2 / steps^2`` (``field_re/im`` replace the fields, e.g. with an accumulated amplitude), times
    ``Omega R^2 * fluence * r_e^2`` (and the Kahn factor with ``polarization``)."""
    if config.coherent:
        fre = fields.field_re if field_re is None else field_re
        fim = fields.field_im if field_im is None else field_im
        intensity = (fre * fre + fim * fim) / steps_ / steps_
    else:
        intensity = fields.incoherent / steps_
    return intensity * fields.omega_r2 * exp.fluence * R_E_SQR * fields.polar


def _render(config: NearConfig, atoms: Scatterers, exp: Experiment):
    pixels = config.roi_pixels()
    image = jnp.zeros((config.spixels, config.fpixels), dtype=atoms.positions.dtype)
    if len(pixels) == 0:
        return image
    fields = pixel_fields(config, atoms, exp, pixels)
    values = pixel_values(config, exp, fields, steps(config, exp))
    return image.at[pixels[:, 0], pixels[:, 1]].set(values)


_render_jit = EntryJit(_render, static_argnums=0)


def render(config: NearConfig, atoms: Scatterers, exp: Experiment) -> jax.Array:
    """The image [spixels, fpixels] in photons/pixel (zero outside the ROI). Pure and jit-compiled;
    differentiable with respect to ``atoms`` and the float fields of ``exp``; ``vmap`` over ``atoms``.

    Warns (once per call site) when the scatterers are not float64: the phases carry no information in
    float32 (module docstring)."""
    if jnp.result_type(atoms.positions) != jnp.float64:
        warnings.warn("jaxbragg.nearbragg.render: float64 is needed (phases reach ~1e11 rad); enable "
                      "jax_enable_x64", stacklevel=2)
    return _render_jit(config, atoms, exp)
