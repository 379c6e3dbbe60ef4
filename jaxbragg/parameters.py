"""Physical parameters: named, SI-unit, differentiable inputs of the forward model.

The kernel's :class:`~jaxbragg.simulate.Params` holds derived arrays (lattice vectors, mosaic matrices,
per-source wavelengths). A fit wants the quantities a crystallographer reasons about instead. This module
splits a simulation into

* :class:`Physical`, a pytree of float arrays with one field per physical quantity (SI units, radians);
* :class:`Template`, everything else: the static :class:`~jaxbragg.simulate.SimConfig`, a base ``Params``
  that supplies the fields ``Physical`` does not cover (detector basis, spindle, pixel size, sources, ...),
  and the fixed, non-differentiable ingredients of the map below;

and maps one onto the other with the pure function :func:`to_params`, differentiable in every field:

* lattice rows ``[a; b; c] = L(cell) (E(rotvec) X(misset) U0)^T``, where ``L(cell)`` is the lattice of
  :func:`jaxbragg.crystal.default_reciprocal` (``a*`` along x, ``b*`` in the x-y plane), ``U0`` the
  template's base orientation, ``X`` the ``-misset`` rotation (x, then y, then z) and
  ``E(r) = exp([r]_x)`` the rotation by ``|r|`` about ``r/|r|``, the smooth parametrisation to fit
  (``E(0) = I``; its gradient is finite there);
* spindle step ``phistep = osc / phisteps``;
* mosaic domain ``m``: ``U_m = R(v_m, mosaic_spread * w_m)``, a Rodrigues rotation about the fixed unit axis
  ``v_m`` by the fixed angle per radian of spread ``w_m`` (both from the reference's generator, domain 0
  with ``w_0 = 0``), so the spread is a smooth scale of every domain's rotation;
* source wavelengths ``lambda_s = wavelength (1 + bandwidth u_s)`` with fixed offsets ``u_s`` that span
  ``[-1/2, 1/2]`` for the reference's dispersion grid: ``bandwidth`` is the fractional spread
  ``(lambda_max - lambda_min) / wavelength``;
* ``ncells``, ``phi0``, ``distance``, ``beam_center``, ``detector_rotations``, ``twotheta``, ``kahn``,
  ``fluence``, ``default_F`` and ``F_grid`` are copied (``distance`` and ``beam_center`` keep the pivot
  dependent meaning of ``Params``).

:func:`from_setup` builds both halves from a command line resolved by :mod:`jaxbragg.cli.resolve` so that
``to_params`` returns that command line's ``Params`` (to rounding): the CLI lattice becomes the base
orientation ``U0 = (L(cell)^-1 lattice)^T`` with the cell read off the lattice, and the mosaic axes and
angles are read off the CLI's matrices. See ``specs/differentiability.md``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from . import crystal, geometry
from ._jit import EntryJit, strong_types
from . import rng as rng_mod
from . import simulate as sim
from .simulate import Params, SimConfig


@chex.dataclass(frozen=True)
class Physical:
    """The physical parameters of a simulation (a pytree of float arrays; SI units, radians).

    Attributes:
      cell_lengths: [3] a, b, c [m].
      cell_angles: [3] alpha, beta, gamma [rad].
      misset: [3] rotations about lab x, then y, then z [rad] (as ``-misset``).
      rotvec: [3] orientation rotation vector [rad], applied after the misset and base orientation.
      phi0: spindle angle of the first phi step [rad].
      osc: total spindle range ``phisteps * phistep`` [rad].
      mosaic_spread: mosaic spread [rad]; scales every domain's rotation angle.
      ncells: [3] crystal size in unit cells (Na, Nb, Nc); continuous.
      distance: detector distance [m] (beam pivot: along the beam; sample pivot: to the plane).
      beam_center: [2] pivot point on the detector [m] (Fbeam, Sbeam or Fclose, Sclose).
      detector_rotations: [3] detector rotations about lab x, y, z [rad].
      twotheta: detector two-theta swing [rad].
      wavelength: nominal wavelength [m].
      bandwidth: fractional wavelength spread of the sources (max - min) / wavelength.
      kahn: Kahn polarization factor.
      fluence: incident photons per m^2.
      default_F: structure factor of reflections outside ``F_grid``.
      F_grid: [nh, nk, nl] structure-factor amplitudes, or ``None`` without a grid.
    """
    cell_lengths: chex.Array
    cell_angles: chex.Array
    misset: chex.Array
    rotvec: chex.Array
    phi0: chex.Array
    osc: chex.Array
    mosaic_spread: chex.Array
    ncells: chex.Array
    distance: chex.Array
    beam_center: chex.Array
    detector_rotations: chex.Array
    twotheta: chex.Array
    wavelength: chex.Array
    bandwidth: chex.Array
    kahn: chex.Array
    fluence: chex.Array
    default_F: chex.Array
    F_grid: Optional[chex.Array] = None


FIELDS = tuple(f.name for f in dataclasses.fields(Physical))


@dataclasses.dataclass(frozen=True, eq=False)
class Template:
    """The fixed half of a simulation (a pytree whose ``config`` is static metadata).

    Attributes:
      config: the static :class:`~jaxbragg.simulate.SimConfig`.
      base: ``Params`` supplying every field that :func:`to_params` does not set.
      orientation: [3, 3] base orientation ``U0`` (a rotation; lattice rows ``L(cell) U0^T``).
      mosaic_axes: [M, 3] unit rotation axis of each mosaic domain.
      mosaic_unit_angles: [M] rotation angle of each domain per radian of spread (domain 0: 0).
      dispersion_offsets: [S] wavelength offset of each source per unit of bandwidth.
    """
    config: SimConfig
    base: Params
    orientation: chex.Array
    mosaic_axes: chex.Array
    mosaic_unit_angles: chex.Array
    dispersion_offsets: chex.Array


jax.tree_util.register_dataclass(
    Template, data_fields=["base", "orientation", "mosaic_axes", "mosaic_unit_angles", "dispersion_offsets"],
    meta_fields=["config"])


def rotvec_matrix(rotvec):
    """Rotation matrix [3, 3] ``exp([r]_x) = I + sin(t)/t K + (1 - cos t)/t^2 K^2`` (``t = |r|``, ``K = [r]_x``).

    Below ``t = 0.01`` both coefficients come from their Taylor series (error < 1e-16), which keeps the
    value and every derivative finite and exact at ``r = 0``; ``(1 - cos t)/t^2`` is written as
    ``sinc(t/2)^2 / 2`` so float32 loses nothing to cancellation.
    """
    r = jnp.asarray(rotvec)
    t2 = geometry.dot(r, r)
    small = t2 < 1e-4
    t = jnp.sqrt(jnp.where(small, 1.0, t2))
    half_sinc = jnp.sin(0.5 * t) / (0.5 * t)
    a = jnp.where(small, 1.0 - t2 / 6.0 + t2 * t2 / 120.0, jnp.sin(t) / t)
    b = jnp.where(small, 0.5 - t2 / 24.0 + t2 * t2 / 720.0, 0.5 * half_sinc * half_sinc)
    zero = jnp.zeros_like(r[0])
    k = jnp.stack([jnp.stack([zero, -r[2], r[1]]),
                   jnp.stack([r[2], zero, -r[0]]),
                   jnp.stack([-r[1], r[0], zero])])
    return jnp.eye(3, dtype=k.dtype) + a * k + b * (k @ k)


def cell_lattice(cell_lengths, cell_angles):
    """Lattice rows [3, 3] (metres) of a cell in the default orientation of :func:`crystal.default_reciprocal`.

    Built in Angstrom: in metres the volume (~1e-25 m^3) squared underflows float32, and so would the
    gradient.
    """
    xp = geometry._xp(cell_lengths, cell_angles)
    cell = xp.concatenate([xp.asarray(cell_lengths) * 1e10, xp.asarray(cell_angles)])
    return crystal.lattice_from_reciprocal(crystal.default_reciprocal(cell), cell[:3]) * 1e-10


def cell_from_lattice(lattice) -> Tuple[np.ndarray, np.ndarray]:
    """(lengths [3] m, angles [3] rad) of lattice rows a, b, c (NumPy, float64)."""
    lat = np.asarray(lattice, np.float64)
    lengths = np.linalg.norm(lat, axis=1)
    pairs = ((1, 2), (2, 0), (0, 1))                                     # alpha, beta, gamma
    angles = np.array([np.arctan2(np.linalg.norm(np.cross(lat[i], lat[j])), np.dot(lat[i], lat[j]))
                       for i, j in pairs])
    return lengths, angles


def to_params(template: Template, physical: Physical) -> Params:
    """Kernel parameters from physical ones (pure; differentiable in every field of ``physical``).

    The result has the floating dtype of ``physical.distance``; the template's arrays are cast to it.
    """
    dtype = jnp.asarray(physical.distance).dtype

    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    base = jax.tree_util.tree_map(cast, template.base)
    ph = jax.tree_util.tree_map(cast, physical)
    u = rotvec_matrix(ph.rotvec) @ geometry.xyz_matrix(ph.misset) @ cast(template.orientation)
    lattice = cell_lattice(ph.cell_lengths, ph.cell_angles) @ u.T
    angles = ph.mosaic_spread * cast(template.mosaic_unit_angles)
    umats = jax.vmap(geometry.axis_matrix)(cast(template.mosaic_axes), angles)
    lambdas = ph.wavelength * (1.0 + ph.bandwidth * cast(template.dispersion_offsets))
    return base.replace(
        lattice=lattice, ncells=ph.ncells, phi0=ph.phi0, phistep=ph.osc / template.config.phisteps,
        mosaic_umats=umats, distance=ph.distance, beam_center=ph.beam_center,
        detector_rotations=ph.detector_rotations, twotheta=ph.twotheta, source_lambda=lambdas, kahn=ph.kahn,
        fluence=ph.fluence, default_F=ph.default_F,
        F_grid=ph.F_grid if ph.F_grid is not None else base.F_grid)


def _axis_angle(umat):
    """Unit axis [3] and angle in [0, pi] of a rotation matrix (the identity gives (x, 0))."""
    u = np.asarray(umat, np.float64)
    w = np.array([u[2, 1] - u[1, 2], u[0, 2] - u[2, 0], u[1, 0] - u[0, 1]])   # 2 sin(t) v
    angle = np.arctan2(0.5 * np.linalg.norm(w), 0.5 * (np.trace(u) - 1.0))
    if angle == 0.0:
        return np.array([1.0, 0.0, 0.0]), 0.0
    if angle < 0.5 * np.pi:
        return w / np.linalg.norm(w), float(angle)
    # near pi the antisymmetric part vanishes: read the axis off the symmetric part (1 - cos t) v v^T
    vv = 0.5 * (u + u.T) - np.cos(angle) * np.eye(3)
    i = int(np.argmax(np.diag(vv)))
    v = vv[i] / np.sqrt(vv[i, i])
    return (v if np.dot(v, w) >= 0 else -v), float(angle)


def _mosaic_template(umats, spread, seed):
    tol = 1e-9 if np.asarray(umats).dtype == np.float64 else 1e-5
    umats = np.asarray(umats, np.float64)
    n = umats.shape[0]
    if seed is not None or (spread == 0.0 and n > 1):
        gen = spread if spread > 0.0 else 1.0
        axes, angles = rng_mod.mosaic_axes_angles(
            gen, n, rng_mod.DEFAULT_MOSAIC_IDUM if seed is None else seed)
        unit = angles / gen
    else:
        pairs = [_axis_angle(u) for u in umats]
        axes = np.array([p[0] for p in pairs]).reshape(n, 3)
        angles = np.array([p[1] for p in pairs])
        unit = angles / spread if spread > 0.0 else np.zeros(n)
    rebuilt = np.stack([np.asarray(geometry.axis_matrix(a, w * spread)) for a, w in zip(axes, unit)])
    if not np.allclose(rebuilt, umats, rtol=0.0, atol=tol):
        raise ValueError("the mosaic matrices are not the generator's draws for this mosaic_spread and "
                         "mosaic_seed (or not rotations at all)")
    return axes, unit


def from_params(config: SimConfig, params: Params, *, mosaic_spread: Optional[float] = None,
                wavelength: Optional[float] = None, mosaic_seed: Optional[int] = None) -> Tuple[Template, Physical]:
    """Split kernel parameters into a :class:`Template` and the :class:`Physical` that rebuilds them.

    Args:
      config, params: a simulation (e.g. from :func:`jaxbragg.cli.resolve.resolve`).
      mosaic_spread: the spread [rad] the mosaic matrices were drawn with (may be left out for a crystal
        with one mosaic domain, whose spread is 0).
      wavelength: nominal wavelength [m]; by default the middle of the sources' wavelength range.
      mosaic_seed: the generator's seed (C idum). With it, the axes and angles are the generator's own
        draws; without it they are read off the matrices (identical for angles below pi). With a zero
        spread and several domains the unit-spread draws of this seed (default: the reference's) are
        stored, so the spread can grow from 0.

    Returns:
      ``(template, physical)`` with ``to_params(template, physical)`` equal to ``params`` to rounding;
      ``physical`` has the floating dtype of ``params.pixel_size``.
    """
    if mosaic_spread is None:
        if np.shape(params.mosaic_umats)[0] != 1:
            raise ValueError("from_params: mosaic_spread [rad] is needed with several mosaic domains")
        mosaic_spread = 0.0
    # Python lists and scalars are accepted for every field
    params = jax.tree_util.tree_map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), params,
                                    is_leaf=lambda x: isinstance(x, (list, tuple)))
    dtype = np.asarray(params.pixel_size).dtype
    if not np.issubdtype(dtype, np.floating):
        dtype = np.float64
    lattice = np.asarray(params.lattice, np.float64)
    lengths, angles = cell_from_lattice(lattice)
    orientation = np.linalg.solve(cell_lattice(lengths, angles), lattice).T
    axes, unit = _mosaic_template(params.mosaic_umats, float(mosaic_spread), mosaic_seed)
    lam = np.asarray(params.source_lambda, np.float64)
    if np.all(lam == lam[0]):
        lam0, bandwidth, offsets = lam[0], 0.0, np.zeros_like(lam)
    else:
        lam0 = float(wavelength) if wavelength is not None else 0.5 * (lam.min() + lam.max())
        bandwidth = (lam.max() - lam.min()) / lam0
        offsets = (lam / lam0 - 1.0) / bandwidth
    template = Template(config=config, base=params, orientation=orientation, mosaic_axes=axes,
                        mosaic_unit_angles=unit, dispersion_offsets=offsets)
    arr = lambda x: np.asarray(x, dtype)
    physical = Physical(
        cell_lengths=arr(lengths), cell_angles=arr(angles), misset=arr(np.zeros(3)), rotvec=arr(np.zeros(3)),
        phi0=arr(params.phi0), osc=arr(np.asarray(params.phistep, np.float64) * config.phisteps),
        mosaic_spread=arr(mosaic_spread), ncells=arr(params.ncells), distance=arr(params.distance),
        beam_center=arr(params.beam_center), detector_rotations=arr(params.detector_rotations),
        twotheta=arr(params.twotheta), wavelength=arr(lam0), bandwidth=arr(bandwidth), kahn=arr(params.kahn),
        fluence=arr(params.fluence), default_F=arr(params.default_F),
        F_grid=None if params.F_grid is None else arr(params.F_grid))
    return template, physical


def from_setup(setup) -> Tuple[Template, Physical]:
    """:func:`from_params` for a :class:`jaxbragg.cli.resolve.Setup` (a resolved command line)."""
    return from_params(setup.config, setup.params, mosaic_spread=setup.info["mosaic_spread"],
                       wavelength=setup.info["lambda0"], mosaic_seed=setup.info.get("mosaic_seed"))


def from_experiment(experiment, execution=None) -> Tuple[Template, Physical]:
    """:func:`from_params` for a :class:`jaxbragg.Experiment` (its lowering, spread, wavelength and seed)."""
    config, params = experiment.lower(execution)
    c = experiment.crystal
    seed = None if c.mosaic_domains == 1 else (
        rng_mod.DEFAULT_MOSAIC_IDUM if c.mosaic_seed is None else -int(c.mosaic_seed))
    return from_params(config, params, mosaic_spread=float(c.mosaic_spread),
                       wavelength=float(experiment.beam.wavelength), mosaic_seed=seed)


def astype(tree, dtype):
    """``tree`` (a Physical, Template or Params) with its floating arrays cast to ``dtype``."""
    def cast(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree_util.tree_map(cast, tree)


def stack(physicals: Sequence[Physical]) -> Physical:
    """Stack Physicals along a new leading axis, for ``jax.vmap(lambda p: render(template, p))``."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *physicals)


def render(template: Template, physical: Physical):
    """Image [spixels, fpixels] of ``physical`` (un-jitted; vmap- and grad-able)."""
    return sim.render(template.config, to_params(template, physical))


def render_pixels(template: Template, physical: Physical, spix, fpix):
    """Photon counts [N] of the pixels ``(spix[i], fpix[i])`` (un-jitted; see ``simulate.render_pixels``)."""
    return sim.render_pixels(template.config, to_params(template, physical), spix, fpix)


_render_jit = EntryJit(render)
_render_pixels_jit = EntryJit(render_pixels)


def simulate(template: Template, physical: Physical):
    """Jitted :func:`render`: one compilation per (config, shapes, dtypes)."""
    return _render_jit(template, strong_types(physical))


def simulate_pixels(template: Template, physical: Physical, spix, fpix):
    """Jitted :func:`render_pixels`: one compilation per (config, number of pixels)."""
    return _render_pixels_jit(template, strong_types(physical), jnp.asarray(spix, jnp.int32),
                              jnp.asarray(fpix, jnp.int32))
