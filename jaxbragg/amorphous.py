r"""Scattering from amorphous material (water, air, ice, ...): the physics of nonBragg.c.

For every pixel the reference sums over its sub-pixels ``(s, f)`` and sources ``k``

.. math::

    I = \frac{r_e^2\,\Phi\,N_\mathrm{mol}}{\mathrm{steps}}
        \sum_{s,f,k} \operatorname{sign}(F)\,F^2\!\left(\tfrac{\sin\theta}{\lambda}\right) P\,\Omega\,w_k ,
    \qquad N_\mathrm{mol} = \frac{V \rho N_A}{M},\quad \mathrm{steps} = S\,O^2,

with ``sin(theta)/lambda = |d - i| / (2 lambda)`` (``d``, ``i`` unit diffracted and incident directions),
``Phi`` the fluence [photons/m^2], ``V = thickness x width x height`` [m^3], ``rho`` the density
[kg/m^3], ``M`` the molar mass [kg/mol], ``P`` the Kahn polarization factor and
``Omega = pixel^2 close_distance / R^3`` (``1/R^2`` with point pixels) evaluated for **every** sub-pixel
and source (nonBragg has no once-per-pixel cache), and ``w_k`` the source weights (which nonBragg, unlike
nanoBragg, honours; ``steps`` counts sources, not their weights).

``F(stol)`` comes from a profile table. The reference (``polint``) pads the table with two points at each
end (``stol = -1e99, -1e98`` with the first F, ``+1e98, +1e99`` with the last), finds the table point
``k`` at or below ``stol`` and evaluates the cubic through points ``k-1 .. k+2`` in Lagrange form; a
negative interpolated F gives a negative intensity (``sign(F) F^2``). :func:`interpolate_polint` is that
rule term for term. :func:`interpolate_pchip` is our smooth alternative: the monotone piecewise cubic
Hermite interpolant (Fritsch-Carlson slopes, flat ends), C1, never outside the range of the two
neighbouring points, so a non-negative table gives a non-negative F; with it the intensity is ``F^2``.

The geometry is the project's: :func:`jaxbragg.detector.place_detector`, :func:`~jaxbragg.detector.
pixel_position` (flat and curved), :func:`~jaxbragg.detector.solid_angle`,
:func:`jaxbragg.beam.polarization_factor`. nonBragg's own beam-centre convention and defaults belong to
its command line (:mod:`jaxbragg.cli.nonbragg`). Units are SI throughout (stol in 1/m).

Everything is a pure function of a static :class:`AmorphousConfig` and a pytree :class:`AmorphousParams`,
differentiable with respect to every float field (the profile values included). :func:`render` tiles the
pixels (``lax.map`` over tiles of ``sample_budget / (O^2 S)`` pixels) so memory stays bounded.
"""
from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from . import beam as beam_mod
from . import detector, geometry
from ._jit import EntryJit

__all__ = ["AmorphousConfig", "AmorphousParams", "Profile", "load_profile", "profile_names",
           "molecules", "pad_profile", "polint4", "interpolate_polint", "interpolate_pchip",
           "profile_F", "sample_stol", "pixel_values", "render", "amorphous_image", "pixel_maps",
           "PROFILE_UNITS"]

R_E_SQR = beam_mod.R_E_SQR
AVOGADRO = beam_mod.AVOGADRO
PAD_NEAR, PAD_FAR = 1e98, 1e99        # the reference's padding abscissae (1/m)

#: Multipliers from a profile file's first column to sin(theta)/lambda in 1/m: ``-stol`` (sin(theta)/
#: lambda in 1/A), ``-4stol`` (4 sin(theta)/lambda), ``-Q`` (4 pi sin(theta)/lambda).
PROFILE_UNITS = {"stol": 1e10, "4stol": 1e10 / 4, "Q": 1e10 / np.pi / 4}


@dataclasses.dataclass(frozen=True)
class AmorphousConfig:
    """Static part of an amorphous render (anything that sets a shape or a branch).

    Attributes:
      fpixels, spixels: detector size in pixels.
      oversample: sub-pixels per pixel edge.
      sources: number of sources.
      pivot: ``"beam"`` or ``"sample"`` (how ``distance`` and ``beam_center`` place the detector).
      curved: every pixel at ``distance`` from the sample (the reference's curved-detector mapping).
      point_pixel: solid angle ``1/R^2``.
      polarization: apply the Kahn factor (``False`` is ``-nopolar``).
      interpolation: ``"polint"`` (the reference) or ``"pchip"`` (smooth, non-negative).
      roi: inclusive ``(fmin, fmax, smin, smax)`` window or ``None``.
      tile_pixels: pixels per tile (``None``: from ``sample_budget``).
      sample_budget: pixel-samples held in memory at once.
    """
    fpixels: int
    spixels: int
    oversample: int = 1
    sources: int = 1
    pivot: str = "beam"
    curved: bool = False
    point_pixel: bool = False
    polarization: bool = True
    interpolation: str = "polint"
    roi: Optional[Tuple[int, int, int, int]] = None
    tile_pixels: Optional[int] = None
    sample_budget: int = 1 << 20

    @property
    def steps(self) -> int:
        """The reference's normalisation count: sources x sub-pixels."""
        return self.sources * self.oversample ** 2

    def roi_box(self) -> Tuple[int, int, int, int]:
        """The rendered window clipped to the detector, inclusive ``(f0, f1, s0, s1)``."""
        f0, f1, s0, s1 = self.roi if self.roi is not None else (0, self.fpixels, 0, self.spixels)
        return (max(f0, 0), min(f1, self.fpixels - 1), max(s0, 0), min(s1, self.spixels - 1))


@chex.dataclass(frozen=True)
class AmorphousParams:
    """Differentiable inputs, SI units.

    Detector (as :func:`jaxbragg.detector.place_detector`): unrotated unit basis ``fdet, sdet, odet``
    [3], ``beam`` [3] unit direction of the direct beam, ``detector_rotations`` [3] rad,
    ``twotheta_axis`` [3], ``twotheta`` rad, ``beam_center`` [2] m (the pivot point on the detector,
    along fast and slow from the corner of pixel (0, 0)), ``distance`` m, ``pixel_size`` m.
    Beam: ``source_dirs`` [S, 3] unit vectors sample -> source, ``source_lambda`` [S] m,
    ``source_weights`` [S], ``polar_vector`` [3] unit E axis, ``kahn``, ``fluence`` photons/m^2.
    Sample: ``thickness, width, height`` m, ``density`` kg/m^3, ``molar_mass`` kg/mol.
    Profile: ``stol`` [N] sin(theta)/lambda in 1/m (increasing), ``F`` [N] electrons; ``F_low``,
    ``F_high``: values beyond the table (``None``: ``F[0]`` and ``F[-1]``). ``pix0`` [3] m: an explicit
    position of the first pixel's corner (overrides the pivot placement; ``None``: placed by the pivot).
    """
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
    source_weights: chex.Array
    polar_vector: chex.Array
    kahn: chex.Array
    fluence: chex.Array
    thickness: chex.Array
    width: chex.Array
    height: chex.Array
    density: chex.Array
    molar_mass: chex.Array
    stol: chex.Array
    F: chex.Array
    F_low: Optional[chex.Array] = None
    F_high: Optional[chex.Array] = None
    pix0: Optional[chex.Array] = None


# ----------------------------------------------------------------------------------------------------
# profiles

class Profile(NamedTuple):
    """A profile table in SI: ``stol`` [N] 1/m, ``F`` [N] (missing values 0), and the values used beyond
    the table ``F_low``/``F_high`` (the first and last values the file gives, as the reference pads)."""
    stol: np.ndarray
    F: np.ndarray
    F_low: float
    F_high: float


_DATA = os.path.join(os.path.dirname(__file__), "data")
_ALIASES = {"nano-ice": "nanoice", "nano_ice": "nanoice", "short-water": "shortwater",
            "short_water": "shortwater"}


def profile_names() -> Tuple[str, ...]:
    """Names of the profiles shipped with jaxbragg (``jaxbragg/data/*.stol``)."""
    return tuple(sorted(f[:-5] for f in os.listdir(_DATA) if f.endswith(".stol")))


def load_profile(name_or_path, units: str = "stol") -> Profile:
    """Load a profile by name (``"water"``, ``"air"``, ``"ice"``, ``"nanoice"``, ``"shortwater"``,
    ``"unity"``) or from a ``.stol`` file path.

    Args:
      units: what the file's first column is: ``"stol"`` (sin(theta)/lambda, 1/A), ``"4stol"`` or
        ``"Q"`` (4 pi sin(theta)/lambda, 1/A); see :data:`PROFILE_UNITS`.

    Raises:
      InputError: unknown name, unreadable file or malformed line.
    """
    from .errors import InputError
    from .io.stol import read_stol
    if units not in PROFILE_UNITS:
        raise ValueError(f"units must be one of {sorted(PROFILE_UNITS)}, got {units!r}")
    key = _ALIASES.get(str(name_or_path).lower(), str(name_or_path).lower())
    if os.sep not in str(name_or_path) and key in profile_names():
        path = os.path.join(_DATA, key + ".stol")
    elif os.path.exists(os.fspath(name_or_path)):
        path = os.fspath(name_or_path)
    else:
        raise InputError(f"{name_or_path}: no such profile file or built-in profile "
                         f"(built-in: {', '.join(profile_names())})")
    x, f = read_stol(path)
    given = f[~np.isnan(f)]
    low = float(given[0]) if given.size else float("nan")
    high = float(given[-1]) if given.size else float("nan")
    return Profile(x * PROFILE_UNITS[units], np.where(np.isnan(f), 0.0, f), low, high)


def pad_profile(stol, F, F_low=None, F_high=None):
    """The reference's padded table ``[N + 4]``: ``(-1e99, -1e98, stol..., 1e98, 1e99)`` with
    ``(F_low, F_low, F..., F_high, F_high)`` (defaults ``F[0]``, ``F[-1]``)."""
    F_low = F[0] if F_low is None else F_low
    F_high = F[-1] if F_high is None else F_high
    one = jnp.ones((2,), stol.dtype)
    xs = jnp.concatenate([jnp.array([-PAD_FAR, -PAD_NEAR], stol.dtype), stol,
                          jnp.array([PAD_NEAR, PAD_FAR], stol.dtype)])
    ys = jnp.concatenate([one * F_low, F, one * F_high])
    return xs, ys


def polint4(xa, ya, x):
    """Cubic through four points, the reference's ``polint`` term for term (Lagrange form).

    ``xa``, ``ya``: [..., 4]; ``x``: [...]."""
    x0, x1, x2, x3 = (xa[..., i] for i in range(4))
    y0, y1, y2, y3 = (ya[..., i] for i in range(4))
    t0 = (x - x1) * (x - x2) * (x - x3) * y0 / ((x0 - x1) * (x0 - x2) * (x0 - x3))
    t1 = (x - x0) * (x - x2) * (x - x3) * y1 / ((x1 - x0) * (x1 - x2) * (x1 - x3))
    t2 = (x - x0) * (x - x1) * (x - x3) * y2 / ((x2 - x0) * (x2 - x1) * (x2 - x3))
    t3 = (x - x0) * (x - x1) * (x - x2) * y3 / ((x3 - x0) * (x3 - x1) * (x3 - x2))
    return t0 + t1 + t2 + t3


def interpolate_polint(stol, F, x, F_low=None, F_high=None):
    """F at ``x`` [...] (1/m) by the reference's rule (see the module docstring).

    The table point at or below ``x`` is found by binary search (the reference walks from the previous
    sample's point; for an increasing table both give the same point)."""
    xs, ys = pad_profile(stol, F, F_low, F_high)
    n = xs.shape[0]
    k = jnp.clip(jnp.searchsorted(xs, x, side="right") - 1, 1, n - 3)
    idx = k[..., None] + jnp.arange(-1, 3)
    return polint4(xs[idx], ys[idx], x)


def _pchip_slopes(x, y):
    """Fritsch-Carlson slopes [N] (weighted harmonic mean of the neighbouring secants, 0 at a local
    extremum and at both ends), written without a division by a zero secant so gradients stay finite."""
    h = x[1:] - x[:-1]
    d = (y[1:] - y[:-1]) / h
    h0, h1, d0, d1 = h[:-1], h[1:], d[:-1], d[1:]
    w1, w2 = 2.0 * h1 + h0, h1 + 2.0 * h0
    same = d0 * d1 > 0.0
    den = jnp.where(same, w1 * d1 + w2 * d0, 1.0)
    inner = jnp.where(same, (w1 + w2) * d0 * d1 / den, 0.0)
    zero = jnp.zeros((1,), y.dtype)
    return jnp.concatenate([zero, inner, zero])


def interpolate_pchip(stol, F, x, F_low=None, F_high=None):
    """F at ``x`` [...] (1/m) by the monotone piecewise cubic Hermite interpolant of the table; ``F_low``
    below the table and ``F_high`` above it (defaults ``F[0]``, ``F[-1]``)."""
    F_low = F[0] if F_low is None else F_low
    F_high = F[-1] if F_high is None else F_high
    m = _pchip_slopes(stol, F)
    n = stol.shape[0]
    k = jnp.clip(jnp.searchsorted(stol, x, side="right") - 1, 0, n - 2)
    xk, h = stol[k], stol[k + 1] - stol[k]
    t = jnp.clip((x - xk) / h, 0.0, 1.0)
    t2, t3 = t * t, t * t * t
    val = ((2 * t3 - 3 * t2 + 1) * F[k] + (t3 - 2 * t2 + t) * h * m[k]
           + (-2 * t3 + 3 * t2) * F[k + 1] + (t3 - t2) * h * m[k + 1])
    return jnp.where(x < stol[0], F_low, jnp.where(x > stol[-1], F_high, val))


def profile_F(config: AmorphousConfig, p: AmorphousParams, x):
    """F at sin(theta)/lambda ``x`` [...] with the configured interpolation."""
    if config.interpolation not in ("polint", "pchip"):
        raise ValueError(f"interpolation must be 'polint' or 'pchip', got {config.interpolation!r}")
    if config.interpolation == "polint" and jnp.result_type(p.stol, x) != jnp.float64:
        raise ValueError("interpolation='polint' needs float64 (the reference pads the table at 1e99, "
                         "beyond float32); use interpolation='pchip' in single precision")
    fn = interpolate_polint if config.interpolation == "polint" else interpolate_pchip
    return fn(p.stol, p.F, x, p.F_low, p.F_high)


def molecules(thickness, width, height, density, molar_mass):
    """Number of molecules in the illuminated volume: ``V rho N_A / M``."""
    return thickness * width * height * density * AVOGADRO / molar_mass


def sample_stol(diffracted, incident, wavelength):
    """sin(theta)/lambda [1/m] of unit ``diffracted`` and ``incident`` directions: ``|d - i| / (2 lambda)``."""
    return 0.5 * geometry.norm((diffracted - incident) / wavelength[..., None])


# ----------------------------------------------------------------------------------------------------
# the pixel kernel

def _frame(config: AmorphousConfig, p: AmorphousParams):
    return detector.place_detector(p.fdet, p.sdet, p.odet, p.beam, p.detector_rotations, p.twotheta_axis,
                                   p.twotheta, config.pivot, p.beam_center, p.distance, p.pix0)


def _tile(config: AmorphousConfig, p: AmorphousParams, frame, spix, fpix):
    """Per-pixel results of a tile of pixels ``spix, fpix`` [T].

    Sample axes ``[O (slow sub-pixel), O (fast sub-pixel), S (source)]`` with the pixels trailing.
    Returns a dict of [T] arrays: ``I`` photons; ``omega_sum`` (the solid angles of the sub-pixels,
    summed, as the reference's detector total); and the last sample's ``F``, ``stol``, ``polar``,
    ``omega`` (what the reference's ``-Fmap`` and ``-img`` use).
    """
    dtype = p.pixel_size.dtype
    o = config.oversample
    sub = p.pixel_size / o
    sub_idx = jnp.arange(o, dtype=dtype)[:, None]
    f_coord = geometry.mul(sub, fpix[None, :] * o + sub_idx) + sub / 2.0        # [O, T]
    s_coord = geometry.mul(sub, spix[None, :] * o + sub_idx) + sub / 2.0        # [O, T]
    shape = (o, o, spix.shape[0])
    pos = detector.pixel_position(frame, jnp.broadcast_to(f_coord[None, :, :], shape),
                                  jnp.broadcast_to(s_coord[:, None, :], shape), jnp.zeros(shape, dtype),
                                  config.curved, p.beam)                        # [O, O, T, 3]
    airpath = geometry.norm(pos)
    diffracted = geometry.rounded(pos / airpath[..., None])
    omega = detector.solid_angle(airpath, frame["close_distance"], p.pixel_size, config.point_pixel)
    incident = -p.source_dirs[:, None, :]                                       # [S, 1, 3]
    d = diffracted[:, :, None, :, :]                                            # [O, O, 1, T, 3]
    stol = sample_stol(d, incident, p.source_lambda[:, None])                   # [O, O, S, T]
    F = profile_F(config, p, stol)
    if config.polarization:
        polar = beam_mod.polarization_factor(p.kahn, incident, d, p.polar_vector)
    else:
        polar = jnp.ones(stol.shape, dtype)
    f2 = F * F if config.interpolation == "pchip" else jnp.sign(F) * F * F
    om = omega[:, :, None, :]
    term = f2 * polar * om * p.source_weights[:, None]
    total = jnp.sum(term.reshape(-1, shape[-1]), axis=0)
    n_mol = molecules(p.thickness, p.width, p.height, p.density, p.molar_mass)
    image = total * R_E_SQR * p.fluence * n_mol / config.steps
    return dict(I=image, omega_sum=jnp.sum(omega.reshape(-1, shape[-1]), axis=0),
                F=F[-1, -1, -1], stol=stol[-1, -1, -1], polar=polar[-1, -1, -1], omega=omega[-1, -1])


TILE_QUANTUM = 16


def _choose_tile(config: AmorphousConfig, n_pixels: int) -> int:
    want = config.tile_pixels if config.tile_pixels is not None else \
        config.sample_budget // max(config.steps, 1)
    want = min(max(want, 1), max(n_pixels, 1))
    return -(-want // TILE_QUANTUM) * TILE_QUANTUM


def _window(config: AmorphousConfig):
    f0, f1, s0, s1 = config.roi_box()
    return f0, s0, max(s1 - s0 + 1, 0), max(f1 - f0 + 1, 0)


def pixel_values(config: AmorphousConfig, p: AmorphousParams, start, count: int):
    """The :func:`_tile` dict for ``count`` consecutive pixels of the ROI window (row-major) from ``start``
    (traced, so a caller can walk the window in equal chunks with one compilation); indices past the end
    wrap around."""
    frame = _frame(config, p)
    f0, s0, ns, nf = _window(config)
    n_pix = max(ns * nf, 1)
    tile = _choose_tile(config, count)
    n_tiles = -(-count // tile)
    flat = (start + jnp.arange(n_tiles * tile)) % n_pix
    s_idx = (s0 + flat // nf).reshape(n_tiles, tile).astype(p.pixel_size.dtype)
    f_idx = (f0 + flat % nf).reshape(n_tiles, tile).astype(p.pixel_size.dtype)
    # recomputed per tile in the backward pass instead of storing every tile's per-sample values
    tile_fn = jax.checkpoint(lambda sf: _tile(config, p, frame, sf[0], sf[1]))
    values = jax.lax.map(tile_fn, (s_idx, f_idx))
    return jax.tree_util.tree_map(lambda v: v.reshape(-1)[:count], values)


def place(config: AmorphousConfig, values):
    """Full image [spixels, fpixels] from the ROI window's values [ns * nf] (zeros outside)."""
    f0, s0, ns, nf = _window(config)
    image = jnp.zeros((config.spixels, config.fpixels), values.dtype)
    if ns * nf == 0:
        return image
    return jax.lax.dynamic_update_slice(image, values.reshape(ns, nf), (s0, f0))


def render(config: AmorphousConfig, p: AmorphousParams):
    """The amorphous-scattering image [spixels, fpixels] in photons per pixel (0 outside the ROI).

    Plain function (compose it with ``grad``/``vmap``/``jit``); :func:`amorphous_image` is its jitted
    entry point."""
    _, _, ns, nf = _window(config)
    if ns * nf == 0:
        return jnp.zeros((config.spixels, config.fpixels), p.pixel_size.dtype)
    return place(config, pixel_values(config, p, 0, ns * nf)["I"])


def pixel_maps(config: AmorphousConfig, p: AmorphousParams):
    """Every per-pixel result of :func:`_tile` as a full image (dict of [spixels, fpixels])."""
    _, _, ns, nf = _window(config)
    vals = pixel_values(config, p, 0, max(ns * nf, 1))
    return {k: place(config, v[:ns * nf]) for k, v in vals.items()}


#: ``render`` compiled (static config): ``amorphous_image(config, params)``.
amorphous_image = EntryJit(render, static_argnums=(0,))
