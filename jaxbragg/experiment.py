"""The experiment model: a crystal in a beam in front of a detector, described in the field's units.

``Experiment(crystal=Crystal(...), beam=Beam(...), detector=Detector(...), scan=Scan(...))`` is what a
Python user builds; :func:`simulate` renders it with the kernel of :mod:`jaxbragg.simulate`.

Units at construction (converted to SI once, in ``__init__``): Angstrom for cell edges, wavelengths and
``dmin``; millimetres for detector lengths (pixel size, distance, beam centre, ``pix0``) and for crystal and
beam sizes (as ``-xtalsize``/``-beamsize``); degrees for angles; mrad for divergence; percent for
dispersion; micrometres for sensor thickness, attenuation depth and the water droplet; photons/m^2 for
fluence. Every stored field is SI (metres, radians, fractions); specs/model.md lists them all.

Each class is a pytree. Its *array leaves* are the physical parameters (cell lengths and angles,
orientation, mosaic spread, distance, beam centre, wavelength, fluence, F, ...), so ``jax.grad``,
``jax.vmap`` and ``jax.jit`` compose with :func:`simulate`; its *static* fields are the choices that set a
shape or a branch (step counts, pixel counts, convention, pivot, crystal shape, flags). ``replace`` swaps
stored (SI) fields without any check, for use under transformations; :func:`stack` stacks experiments
that share their static fields, for ``jax.vmap``.

Plausibility is checked on the concrete values given to a constructor, never inside traced code: a
non-positive or non-finite length or wavelength raises ``ValueError`` naming the field and its unit; a
distance outside 1 mm - 50 m, a wavelength outside 0.01 - 100 A or a cell edge outside 1 - 10,000 A
warns (:class:`PlausibilityWarning`).

There are no hidden rules: the model uses what it is given. The reference's implicit choices are fields
with the reference's defaults (the convention's pivot and beam centre, the c* construction of a cell, the
phi carry-over, source weights not counting). The command line's own rules (``-dispsteps`` rounding, the
convention forcing the pivot, ``./Fdump.bin`` without ``-hkl``, ...) are applied by
:func:`Experiment.from_flags` while translating (:mod:`jaxbragg.cli.resolve`).

Lowering: :meth:`Experiment.lower` builds the kernel's ``(SimConfig, Params)``. With concrete values it
runs in NumPy float64 through the same builders as the command line (:mod:`jaxbragg.detector`,
:mod:`jaxbragg.crystal`, :mod:`jaxbragg.beam`); with traced values in ``jax.numpy``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import beam as beam_mod
from . import crystal as crystal_mod
from . import detector as det_mod
from . import geometry, lattice, rng
from .errors import PhysicsError
from .simulate import Params, SimConfig

RTD = 180.0 / math.pi
#: The reference's default fluence [photons/m^2].
DEFAULT_FLUENCE = 125932015286227086360700780544.0


class PlausibilityWarning(UserWarning):
    """A value that is possible but probably a unit mistake (e.g. a distance of 0.1 mm)."""


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------

def _floats(name, value, n=None, unit=""):
    """``value`` as a float64 array (``n`` values, or a scalar), finite; ValueError naming the field."""
    arr = np.asarray(value, dtype=np.float64)
    if n is not None:
        arr = arr.reshape(-1)
        if arr.size != n:
            raise ValueError(f"{name}: expected {n} values{f' [{unit}]' if unit else ''}, got {arr.size}")
    elif arr.ndim != 0:
        raise ValueError(f"{name}: expected one number{f' [{unit}]' if unit else ''}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: must be finite, got {value!r}{f' {unit}' if unit else ''}")
    return arr


def _positive(name, value, unit, n=None):
    arr = _floats(name, value, n, unit)
    if not np.all(arr > 0):
        raise ValueError(f"{name}: must be positive, got {value!r} {unit}")
    return arr


def _plausible(name, value, low, high, unit, hint=""):
    v = np.asarray(value)
    if np.any(v < low) or np.any(v > high):
        warnings.warn(f"{name}: {value!r} {unit} is outside the plausible range {low:g} - {high:g} {unit}"
                      + (f" ({hint})" if hint else ""), PlausibilityWarning, stacklevel=4)


def _count(name, value, low=1):
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _pair(value):
    """An int/float or a pair -> a pair."""
    if np.ndim(value) == 0:
        return (value, value)
    v = tuple(value)
    if len(v) != 2:
        raise ValueError(f"expected one value or a pair, got {value!r}")
    return v


def _unit_vector(name, value):
    v = _floats(name, value, 3)
    if not np.any(v):
        raise ValueError(f"{name}: the vector must be non-zero")
    return geometry.unitize_safe(v)


def _tuple3(v):
    return None if v is None else tuple(float(x) for x in np.asarray(v, float).reshape(3))


def _is_traced(x) -> bool:
    return isinstance(x, jax.Array)


def _xp(*xs):
    return jnp if any(_is_traced(x) for x in jax.tree_util.tree_leaves(xs)) else np


class _Node:
    """Base of the model's classes: a frozen pytree with array leaves ``_leaves`` and static ``_static``."""

    _leaves: tuple = ()
    _static: tuple = ()

    def tree_flatten(self):
        return (tuple(getattr(self, n) for n in self._leaves), tuple(getattr(self, n) for n in self._static))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls._si(**dict(zip(cls._leaves, children)), **dict(zip(cls._static, aux)))

    @classmethod
    def _si(cls, **fields):
        """Build from stored (SI) fields directly: no unit conversion, no check."""
        obj = object.__new__(cls)
        missing = set(cls._leaves + cls._static) - set(fields)
        if missing:
            raise TypeError(f"{cls.__name__}: missing fields {sorted(missing)}")
        for name, value in fields.items():
            object.__setattr__(obj, name, value)
        return obj

    def _set(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"{type(self).__name__} is immutable; use .replace({name}=...)")

    def replace(self, **changes):
        """A copy with stored (SI) fields replaced, unchecked (for use under ``jit``/``grad``/``vmap``)."""
        unknown = set(changes) - set(self._leaves + self._static)
        if unknown:
            raise TypeError(f"{type(self).__name__}.replace: unknown fields {sorted(unknown)}")
        fields = {n: getattr(self, n) for n in self._leaves + self._static}
        fields.update(changes)
        return type(self)._si(**fields)

    def __repr__(self):
        def short(v):
            if isinstance(v, (np.ndarray, jax.Array)):
                return f"array{tuple(v.shape)}" if v.size > 6 else np.array2string(np.asarray(v), precision=6)
            return repr(v)
        body = ", ".join(f"{n}={short(getattr(self, n, None))}" for n in self._leaves + self._static)
        return f"{type(self).__name__}({body})"


def _register(cls):
    return jax.tree_util.register_pytree_node_class(cls)


# ---------------------------------------------------------------------------------------------------
# crystal
# ---------------------------------------------------------------------------------------------------

@_register
class Crystal(_Node):
    """The crystal: unit cell (or MOSFLM matrix), orientation, size, shape, mosaicity, structure factors.

    Args:
      cell: ``(a, b, c, alpha, beta, gamma)`` [A, deg], or ``(a, b, c)`` for right angles.
      A: MOSFLM orientation matrix [3, 3] (rows ``a*, b*, c*`` times the wavelength, dimensionless, as in a
        ``-mat`` file), instead of or with ``cell`` (with both, the edges keep the cell's lengths, as the
        reference does). See :meth:`from_matfile`.
      misset: rotations about lab x, then y, then z [deg] applied to the reciprocal vectors, or
        ``"random"`` (needs ``misset_seed``).
      misset_seed: seed of the random misset (as ``-misset_seed``).
      N: unit cells per axis, an int or ``(Na, Nb, Nc)``.
      size: crystal size [mm], one value or three (along a, b, c); gives ``N = ceil(size / edge)`` and
        overrides ``N`` (needs ``cell``).
      default_F: structure factor of every reflection not in ``hkl``.
      hkl: structure factors: a path (``.hkl``, Fdump, ``.mtz``, ``.cif``) or an array [nh, nk, nl] with
        ``hkl_origin = (hmin, kmin, lmin)``.
      shape: ``"square"`` (parallelepiped), ``"round"``, ``"gauss"`` or ``"tophat"``.
      fudge: shape-factor width multiplier (``-fudge``).
      mosaic_spread: isotropic mosaic spread [deg].
      mosaic_domains: number of mosaic domains (domain 0 is unrotated).
      mosaic_seed: seed of the domain draws (as ``-mosaic_seed``); ``None`` is the reference's fixed default.
      interpolate: tricubic interpolation of ``hkl`` between Bragg peaks.
      cell_rule: ``"reference"`` builds the cell's default orientation with nanoBragg's ``c*_z`` (the
        command line's, slightly off the requested angles for oblique cells); ``"exact"`` with the exact
        reciprocal basis (see specs/deviations.md).

    Stored fields (SI): ``cell_lengths`` [3] m, ``cell_angles`` [3] rad, ``A`` [3, 3] or None, ``misset``
    [3] rad, ``rotvec`` [3] rad (an extra rotation ``exp([r]x)`` after the misset, zero; for fitting),
    ``ncells`` [3], ``fudge``, ``default_F``, ``mosaic_spread`` rad, ``mosaic_axes`` [M, 3] and
    ``mosaic_unit_angles`` [M] (the seed's draws; domain m is a rotation by ``spread * unit_angle`` about
    its axis), ``F`` [nh, nk, nl] or None; static ``shape``, ``mosaic_domains``, ``mosaic_seed``,
    ``hkl_origin``, ``interpolate``, ``cell_rule``.
    """

    _leaves = ("cell_lengths", "cell_angles", "A", "misset", "rotvec", "ncells", "fudge", "default_F",
               "mosaic_spread", "mosaic_axes", "mosaic_unit_angles", "F")
    _static = ("shape", "mosaic_domains", "mosaic_seed", "hkl_origin", "interpolate", "cell_rule")

    def __init__(self, cell=None, *, A=None, misset=(0.0, 0.0, 0.0), misset_seed=None, N=1, size=None,
                 default_F=0.0, hkl=None, hkl_origin=None, shape="square", fudge=1.0, mosaic_spread=0.0,
                 mosaic_domains=1, mosaic_seed=None, interpolate=False, cell_rule="reference"):
        lengths = angles = None
        if cell is None and A is None:
            raise ValueError("Crystal: give cell=(a, b, c, alpha, beta, gamma) [A, deg] or a MOSFLM matrix A")
        if cell is not None:
            c = _floats("Crystal.cell", cell, None if np.ndim(cell) == 0 else np.size(cell), "A, deg").reshape(-1)
            if c.size == 3:
                c = np.concatenate([c, [90.0, 90.0, 90.0]])
            if c.size != 6:
                raise ValueError(f"Crystal.cell: expected (a, b, c) or (a, b, c, alpha, beta, gamma), got {cell!r}")
            if not np.all(c[:3] > 0):
                raise ValueError(f"Crystal.cell: edges must be positive, got {tuple(c[:3])} A")
            if not (np.all(c[:3] >= 1e-5) and np.all(c[:3] <= 1e10)):
                raise ValueError(f"Crystal.cell: edges must lie between {1e-5:g} and {1e10:g} A, got {tuple(c[:3])} A")
            _plausible("Crystal.cell", tuple(c[:3]), 1.0, 10000.0, "A", "cell edges are in Angstrom")
            if not np.all((c[3:] > 0) & (c[3:] < 180)):
                raise ValueError(f"Crystal.cell: angles must lie between 0 and 180 deg, got {tuple(c[3:])}")
            angles = c[3:] / RTD
            from .validate import cell_angles_problem
            impossible = cell_angles_problem(angles)
            if impossible:
                raise ValueError(f"Crystal.cell: {impossible}")
            if not float(crystal_mod.cell_volume(np.concatenate([[1.0, 1.0, 1.0], angles]))) > 1e-6:
                raise ValueError(f"Crystal.cell: the angles {tuple(c[3:])} deg give a zero cell volume")
            lengths = c[:3] * 1e-10
        if A is not None:
            A = _floats("Crystal.A", A, 9).reshape(3, 3)
            if not abs(np.linalg.det(A)) > 0:
                raise ValueError("Crystal.A: the matrix is singular")
        if isinstance(misset, str):
            if misset != "random":
                raise ValueError(f"Crystal.misset: expected three angles [deg] or 'random', got {misset!r}")
            if misset_seed is None:
                raise ValueError("Crystal.misset='random' needs misset_seed (an integer)")
            misset = np.array(rng.random_misset(-int(misset_seed)))
        else:
            misset = _floats("Crystal.misset", misset, 3, "deg") / RTD
        n = np.asarray(N, float).reshape(-1)
        n = np.repeat(n, 3) if n.size == 1 else n
        ncells = _positive("Crystal.N", n, "unit cells", 3)
        if size is not None:
            if lengths is None:
                raise ValueError("Crystal.size: needs cell= (give N for a crystal from a matrix)")
            s = _positive("Crystal.size", np.repeat(np.asarray(size, float).reshape(-1), 3)[:3]
                          if np.size(size) == 1 else size, "mm", 3) / 1000.0
            ncells = np.maximum(np.ceil(s / lengths), 1.0)
        if shape not in lattice.SHAPES:
            raise ValueError(f"Crystal.shape: expected one of {lattice.SHAPES}, got {shape!r}")
        F, origin = None, None
        if hkl is not None:
            if isinstance(hkl, (str, os.PathLike)):
                from . import io
                grid = io.read_structure_factors(hkl, float(default_F))
                F, origin = np.asarray(grid.F, np.float64), (grid.hmin, grid.kmin, grid.lmin)
            else:
                if hkl_origin is None:
                    raise ValueError("Crystal.hkl: an array needs hkl_origin=(hmin, kmin, lmin)")
                F = np.asarray(hkl, np.float64)
                if F.ndim != 3 or not np.all(np.isfinite(F)):
                    raise ValueError("Crystal.hkl: expected a finite [nh, nk, nl] array of amplitudes")
                origin = tuple(int(i) for i in hkl_origin)
        spread = _floats("Crystal.mosaic_spread", mosaic_spread, None, "deg")
        if spread < 0:
            raise ValueError(f"Crystal.mosaic_spread: must not be negative, got {mosaic_spread!r} deg")
        domains = _count("Crystal.mosaic_domains", mosaic_domains)
        axes, unit = mosaic_draws(float(spread / RTD), domains, mosaic_seed)
        if cell_rule not in ("reference", "exact"):
            raise ValueError(f"Crystal.cell_rule: expected 'reference' or 'exact', got {cell_rule!r}")
        self._set(cell_lengths=lengths, cell_angles=angles, A=A, misset=np.asarray(misset, float),
                  rotvec=np.zeros(3), ncells=ncells, fudge=_floats("Crystal.fudge", fudge),
                  default_F=_floats("Crystal.default_F", default_F), mosaic_spread=spread / RTD,
                  mosaic_axes=axes, mosaic_unit_angles=unit, F=F, shape=shape, mosaic_domains=domains,
                  mosaic_seed=None if mosaic_seed is None else int(mosaic_seed), hkl_origin=origin,
                  interpolate=bool(interpolate) and F is not None, cell_rule=cell_rule)

    @classmethod
    def from_matfile(cls, path, **kwargs):
        """A crystal oriented by a MOSFLM ``.mat`` file (``-mat``); other arguments as for :class:`Crystal`."""
        from . import io
        return cls(A=io.read_mat(path), **kwargs)

    def lattice(self, wavelength):
        """Lattice rows a, b, c [3, 3] in metres at phi = 0 (misset and ``rotvec`` applied)."""
        xp = _xp(self.cell_lengths, self.cell_angles, self.A, self.misset, wavelength)
        if self.A is not None:
            recip = xp.asarray(self.A) / wavelength
        else:
            cell = xp.concatenate([xp.asarray(self.cell_lengths) * 1e10, xp.asarray(self.cell_angles)])
            build = (crystal_mod.reference_default_reciprocal if self.cell_rule == "reference"
                     else crystal_mod.default_reciprocal)
            recip = build(cell) * 1e10
        lat = crystal_mod.oriented_lattice(recip, self.misset, self.cell_lengths)
        if _is_traced(self.rotvec) or np.any(self.rotvec):
            from .parameters import rotvec_matrix
            lat = lat @ rotvec_matrix(self.rotvec).T
        return lat

    def mosaic_umats(self):
        """Mosaic-domain rotation matrices [M, 3, 3]."""
        angles = self.mosaic_spread * self.mosaic_unit_angles
        if _xp(self.mosaic_spread, self.mosaic_axes, self.mosaic_unit_angles) is np:
            return np.stack([geometry.axis_matrix(a, w) for a, w in zip(self.mosaic_axes, angles)])
        return jax.vmap(geometry.axis_matrix)(jnp.asarray(self.mosaic_axes), angles)


def mosaic_draws(spread_rad: float, domains: int, seed: Optional[int]):
    """Axes [M, 3] and unit angles [M] of the mosaic domains of the reference's generator (seed as
    ``-mosaic_seed``; None: its fixed default), so that domain m is ``R(axis_m, spread * unit_m)``."""
    if domains == 1:
        return np.array([[1.0, 0.0, 0.0]]), np.zeros(1)
    gen = spread_rad if spread_rad > 0.0 else 1.0
    idum = rng.DEFAULT_MOSAIC_IDUM if seed is None else -int(seed)
    axes, angles = rng.mosaic_axes_angles(gen, domains, idum)
    return axes, angles / gen


# ---------------------------------------------------------------------------------------------------
# beam
# ---------------------------------------------------------------------------------------------------

@_register
class Beam(_Node):
    """The incident beam: wavelength, fluence, polarization, divergence, dispersion or explicit sources.

    Args:
      wavelength: [A] (default 1). ``energy`` [eV] instead.
      fluence: [photons/m^2] (default the reference's 1.26e29); or ``flux`` [photons/s] with ``exposure``
        [s] (default 1) and ``beamsize`` [mm] (default 0.1): ``fluence = flux * exposure / beamsize^2``.
      polarization: Kahn factor (default 0, unpolarized); ``None`` switches the polarization factor off.
      polar_vector, direction: E-vector and beam direction [3] (default: the detector convention's).
      divergence: full angular range [mrad], one value or (horizontal, vertical); ``divsteps`` grid points
        per axis (int or pair); ``divstep`` [mrad] (default ``range / (steps - 1)``); ``round_div`` drops
        the grid's corners as the reference does.
      dispersion: full spectral range [%] of ``dispsteps`` wavelengths, ``dispstep`` [%] apart (default
        ``dispersion / (dispsteps - 1)``): ``lambda_j = wavelength (1 + j dispstep - dispersion / 2)``.
      sources: [S, 3] vectors from the sample towards each source (any length) instead of the grid, with
        ``source_wavelengths`` [A] (default ``wavelength``) and ``source_weights`` (stored; the reference
        ignores them, so does the model: ``weights_count=True`` is refused until the kernel weights sources).
    """

    _leaves = ("wavelength", "fluence", "kahn", "dispersion", "dispstep", "source_vectors",
               "source_wavelengths")
    _static = ("polarized", "divergence", "divstep", "divsteps", "dispsteps", "round_div", "direction",
               "polar_vector", "source_weights", "weights_count")

    def __init__(self, wavelength=1.0, *, energy=None, fluence=None, flux=None, exposure=1.0, beamsize=0.1,
                 polarization=0.0, polar_vector=None, direction=None, divergence=0.0, divsteps=1,
                 divstep=None, round_div=True, dispersion=0.0, dispsteps=1, dispstep=None, sources=None,
                 source_wavelengths=None, source_weights=None, weights_count=False):
        if energy is not None:
            lam = 12398.42 / _positive("Beam.energy", energy, "eV") / 1.0e10
        else:
            lam = _positive("Beam.wavelength", wavelength, "A") / 1.0e10
        _plausible("Beam.wavelength", float(lam * 1e10), 0.01, 100.0, "A", "wavelengths are in Angstrom")
        if flux is not None:
            size = _positive("Beam.beamsize", beamsize, "mm") / 1000
            fl = _floats("Beam.flux", flux) * _floats("Beam.exposure", exposure) / size / size
        else:
            fl = _floats("Beam.fluence", DEFAULT_FLUENCE if fluence is None else fluence)
        if fl < 0:
            raise ValueError(f"Beam.fluence: must not be negative, got {float(fl):g} photons/m^2")
        hrange, vrange = (_floats("Beam.divergence", d, None, "mrad") / 1000.0 for d in _pair(divergence))
        hsteps, vsteps = (_count("Beam.divsteps", s) for s in _pair(divsteps))
        if divstep is None:
            hstep = hrange / (hsteps - 1) if hsteps > 1 else 0.0
            vstep = vrange / (vsteps - 1) if vsteps > 1 else 0.0
        else:
            hstep, vstep = (_floats("Beam.divstep", d, None, "mrad") / 1000.0 for d in _pair(divstep))
        div, step, steps = (float(hrange), float(vrange)), (float(hstep), float(vstep)), (hsteps, vsteps)
        if hsteps == 1 or hrange <= 0 or hstep <= 0:
            div, step, steps = (0.0, div[1]), (0.0, step[1]), (1, steps[1])
        if vsteps == 1 or vrange <= 0 or vstep <= 0:
            div, step, steps = (div[0], 0.0), (step[0], 0.0), (steps[0], 1)
        dsteps = _count("Beam.dispsteps", dispsteps)
        disp = _floats("Beam.dispersion", dispersion, None, "%") / 100.0
        dstep = (disp / (dsteps - 1) if dsteps > 1 else np.float64(0.0)) if dispstep is None else \
            _floats("Beam.dispstep", dispstep, None, "%") / 100.0
        if dsteps == 1:
            if disp != 0.0:
                warnings.warn("Beam.dispersion: one wavelength (dispsteps=1) ignores the dispersion",
                              PlausibilityWarning, stacklevel=2)
            disp, dstep = np.float64(0.0), np.float64(0.0)
        vectors = waves = weights = None
        if sources is not None:
            vectors = _floats("Beam.sources", sources).reshape(-1, 3)
            if not np.all(np.any(vectors != 0, axis=1)):
                raise ValueError("Beam.sources: a source sits at the sample position (0 0 0)")
            if source_wavelengths is None:
                waves = np.full(len(vectors), lam)
            else:
                waves = _positive("Beam.source_wavelengths", source_wavelengths, "A", len(vectors)) / 1.0e10
            if source_weights is not None:
                weights = tuple(float(w) for w in _floats("Beam.source_weights", source_weights, len(vectors)))
        if weights_count:
            raise NotImplementedError("Beam.weights_count=True: the kernel does not weight sources yet "
                                      "(the reference ignores the weights too)")
        self._set(wavelength=np.asarray(lam, float), fluence=np.asarray(fl, float),
                  kahn=np.asarray(0.0 if polarization is None else _floats("Beam.polarization", polarization)),
                  dispersion=np.asarray(disp, float), dispstep=np.asarray(dstep, float), source_vectors=vectors,
                  source_wavelengths=waves, polarized=polarization is not None, divergence=div, divstep=step,
                  divsteps=steps, dispsteps=dsteps, round_div=bool(round_div),
                  direction=None if direction is None else _tuple3(_unit_vector("Beam.direction", direction)),
                  polar_vector=None if polar_vector is None else
                  _tuple3(_unit_vector("Beam.polar_vector", polar_vector)),
                  source_weights=weights, weights_count=False)

    def sources(self, direction, polar):
        """(directions [S, 3] unit sample->source, wavelengths [S] m) given the beam and E vectors."""
        if self.source_vectors is not None:
            if _is_traced(self.source_vectors):
                return geometry.unitize(self.source_vectors), self.source_wavelengths
            return geometry.unitize_safe(self.source_vectors), self.source_wavelengths
        div = beam_mod.divergence_grid(self.divergence[0], self.divstep[0], self.divsteps[0],
                                       self.divergence[1], self.divstep[1], self.divsteps[1], self.round_div)
        dirs, _ = beam_mod.make_sources(direction, polar, 1.0, div, 0.0, 0.0, 1)
        xp = _xp(self.wavelength, self.dispersion, self.dispstep)
        j = np.arange(self.dispsteps, dtype=np.float64)
        lams = self.wavelength * (1.0 + self.dispstep * j - self.dispersion / 2.0)
        return np.repeat(dirs, self.dispsteps, axis=0), xp.tile(lams, len(div))


# ---------------------------------------------------------------------------------------------------
# detector
# ---------------------------------------------------------------------------------------------------

@_register
class Panel(_Node):
    """One flat (or curved) pixel array; :class:`Detector` takes the same arguments and builds one.

    Args:
      pixels: pixel count, an int or ``(fast, slow)`` (default 1024).
      pixel_size: [mm] (default 0.1).
      distance: sample to beam spot along the beam [mm] (default 100); or ``close_distance`` [mm], sample
        to detector plane (as ``-close_distance``; wins when given).
      convention: ``"mosflm"`` (default), ``"denzo"``, ``"adxv"``, ``"xds"``, ``"dials"`` or ``"custom"``
        (own vectors ``fdet``, ``sdet``, ``odet``, ``twotheta_axis``, and on the beam and scan).
      beam_center: ``(X, Y)`` [mm] as that convention's ``-Xbeam/-Ybeam`` mean (MOSFLM: X along slow, with
        the half-pixel shift; default: the convention's centre).
      orgx, orgy: XDS/DIALS origin [pixels] (as ``-ORGX/-ORGY``): the sample-pivot point.
      pivot: ``"beam"`` or ``"sample"`` (default: the convention's: beam for MOSFLM/DENZO/ADXV/CUSTOM,
        sample for XDS/DIALS).
      rotations: detector rotations about lab x, y, z [deg]; ``twotheta`` [deg] about ``twotheta_axis``.
      pix0: explicit position of the first pixel's corner [mm] (overrides the pivot placement).
      curved, point_pixel: curved detector; solid angle without obliquity.
      thickness: sensor thickness [um] in ``thicksteps`` layers ``thickstep`` [um] apart (default
        ``thickness / thicksteps``); ``attenuation``: attenuation depth [um] (default: the thickness, as
        the reference) or ``"inf"``.
      roi: ``(xmin, xmax, ymin, ymax)`` inclusive pixel window; mask: [slow, fast] array or SMV path
        (zero pixels are skipped).
    """

    _leaves = ("pixel_size", "distance", "beam_center", "close_center", "rotations", "twotheta", "fdet",
               "sdet", "odet", "twotheta_axis", "pix0", "thickstep", "mu", "mask")
    _static = ("fpixels", "spixels", "convention", "pivot", "distance_is_close", "curved", "point_pixel",
               "thicksteps", "thick_sensor", "roi")

    def __init__(self, pixels=1024, pixel_size=0.1, distance=None, *, close_distance=None, convention="mosflm",
                 beam_center=None, orgx=None, orgy=None, pivot=None, rotations=(0.0, 0.0, 0.0), twotheta=0.0,
                 twotheta_axis=None, fdet=None, sdet=None, odet=None, pix0=None, curved=False, point_pixel=False,
                 thickness=0.0, thicksteps=1, thickstep=None, attenuation=None, roi=None, mask=None):
        nf, ns = (_count("Detector.pixels", p) for p in _pair(pixels))
        px = _positive("Detector.pixel_size", pixel_size, "mm") / 1000.0
        _plausible("Detector.pixel_size", float(px * 1000), 0.001, 10.0, "mm", "pixel sizes are in mm")
        if convention not in det_mod.CONVENTIONS and convention != "custom":
            raise ValueError(f"Detector.convention: expected one of {sorted(det_mod.CONVENTIONS) + ['custom']}, "
                             f"got {convention!r}")
        if close_distance is not None:
            d, is_close = _positive("Detector.close_distance", close_distance, "mm") / 1000.0, True
        else:
            d, is_close = _positive("Detector.distance", 100.0 if distance is None else distance, "mm") / 1000.0, False
        _plausible("Detector.distance", float(d * 1000), 1.0, 50000.0, "mm", "distances are in mm")
        table = det_mod.convention_vectors(convention)
        given = dict(fdet=fdet, sdet=sdet, odet=odet, twotheta_axis=twotheta_axis)
        if convention != "custom":
            for name, v in given.items():
                if v is not None:
                    raise ValueError(f"Detector.{name}: the {convention} convention fixes the vectors; "
                                     f"use convention='custom'")
        f0 = table[1] if fdet is None else _unit_vector("Detector.fdet", fdet)
        s0 = table[2] if sdet is None else _unit_vector("Detector.sdet", sdet)
        if float(np.linalg.norm(np.cross(f0, s0))) < 1e-9:
            raise ValueError("Detector.fdet/sdet: the fast and slow axes are parallel")
        if odet is not None:
            o0 = _unit_vector("Detector.odet", odet)
        elif convention == "custom":
            o0 = geometry.unitize_safe(np.cross(f0, s0))
        else:
            o0 = table[3]
        tt_axis = table[4] if twotheta_axis is None else _unit_vector("Detector.twotheta_axis", twotheta_axis)
        if pivot is None:
            pivot = det_mod.CONVENTION_PIVOT.get(convention, "beam")
        if pivot not in ("beam", "sample"):
            raise ValueError(f"Detector.pivot: expected 'beam' or 'sample', got {pivot!r}")
        nan = math.nan
        close = det_mod.close_point(nan if orgx is None else float(orgx), nan if orgy is None else float(orgy),
                                    px * nf, px * ns, px)
        if beam_center is None:
            center = det_mod.default_beam_center(convention, px * nf, px * ns, px, close)
        else:
            center = tuple(_floats("Detector.beam_center", beam_center, 2, "mm") / 1000.0)
        thick = _floats("Detector.thickness", thickness, None, "um") * 1e-6
        if thick < 0:
            raise ValueError(f"Detector.thickness: must not be negative, got {thickness!r} um")
        layers = _count("Detector.thicksteps", thicksteps)
        step = thick / layers if thickstep is None else _floats("Detector.thickstep", thickstep, None, "um") * 1e-6
        if attenuation is None:
            mu = 1.0 / thick if thick > 0 else 0.0
        elif isinstance(attenuation, str) and attenuation.startswith("inf"):
            mu = 0.0
        else:
            mu = 1.0 / (_positive("Detector.attenuation", attenuation, "um") * 1e-6)
        if roi is not None:
            roi = tuple(int(r) for r in roi)
            if len(roi) != 4 or roi[0] > roi[1] or roi[2] > roi[3]:
                raise ValueError("Detector.roi: expected (xmin, xmax, ymin, ymax) with min <= max")
        if mask is not None:
            if isinstance(mask, (str, os.PathLike)):
                from . import io
                mask = io.read_smv(mask)[1]
            mask = (np.asarray(mask) != 0).astype(np.float64)
            if mask.shape != (ns, nf):
                raise ValueError(f"Detector.mask: shape {mask.shape} is not (slow, fast) = {(ns, nf)}")
        self._set(pixel_size=np.asarray(px, float), distance=np.asarray(d, float),
                  beam_center=np.asarray(center, float), close_center=np.asarray(close, float),
                  rotations=_floats("Detector.rotations", rotations, 3, "deg") / RTD,
                  twotheta=_floats("Detector.twotheta", twotheta, None, "deg") / RTD, fdet=f0, sdet=s0, odet=o0,
                  twotheta_axis=tt_axis,
                  pix0=None if pix0 is None else _floats("Detector.pix0", pix0, 3, "mm") / 1000.0,
                  thickstep=np.asarray(step, float), mu=np.asarray(mu, float), mask=mask, fpixels=nf,
                  spixels=ns, convention=convention, pivot=pivot, distance_is_close=is_close,
                  curved=bool(curved), point_pixel=bool(point_pixel), thicksteps=layers,
                  thick_sensor=bool(thick > 0), roi=roi)

    def pivot_point(self):
        """The pivot point [2] m: (Fbeam, Sbeam) for the beam pivot, (Fclose, Sclose) for the sample one."""
        xp = _xp(self.beam_center, self.pixel_size, self.close_center)
        if self.pivot == "beam":
            return xp.stack(det_mod.beam_pivot_point(self.convention, self.beam_center,
                                                     self.pixel_size * self.spixels, self.pixel_size))
        return xp.asarray(self.beam_center if self.convention == "custom" else self.close_center)


@_register
class Detector(_Node):
    """The detector: a tuple of :class:`Panel` s and a whole-detector motion.

    ``Detector(**panel_arguments)`` builds one panel; ``Detector.from_panels(p1, p2, ..., shift=,
    rotation=)`` several. ``shift`` [mm, 3] and ``rotation`` [deg, 3] (about lab x, then y, then z, about
    the sample) move every placed panel together: ``r -> R r + shift`` (stored as ``shift`` [m] and
    ``rotation`` [rad]; default zero, which leaves every panel exactly as placed). See docs/detectors.md.
    """

    _leaves = ("panels", "shift", "rotation")
    _static = ()

    def __init__(self, pixels=1024, pixel_size=0.1, distance=None, **kwargs):
        self._set(panels=(Panel(pixels, pixel_size, distance, **kwargs),), shift=np.zeros(3),
                  rotation=np.zeros(3))

    @classmethod
    def _si(cls, **fields):
        fields.setdefault("shift", np.zeros(3))
        fields.setdefault("rotation", np.zeros(3))
        return super()._si(**fields)

    @classmethod
    def from_panels(cls, *panels, shift=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0)):
        if not panels or not all(isinstance(p, Panel) for p in panels):
            raise ValueError("Detector.from_panels: expected one or more Panel objects")
        return cls._si(panels=tuple(panels), shift=_floats("Detector.shift", shift, 3, "mm") / 1000.0,
                       rotation=_floats("Detector.rotation", rotation, 3, "deg") / RTD)

    @property
    def panel(self) -> Panel:
        """The only panel (ValueError with several)."""
        if len(self.panels) != 1:
            raise NotImplementedError(f"this detector has {len(self.panels)} panels: use detector.panels[k] "
                                      f"(jaxbragg.simulate renders them all)")
        return self.panels[0]

    def moved(self) -> bool:
        """Whether the whole-detector shift/rotation may move the panels (traced or non-zero)."""
        return any(_is_traced(x) or bool(np.any(np.asarray(x) != 0)) for x in (self.shift, self.rotation))

    def __getattr__(self, name):        # the one panel's fields, for convenience
        if name.startswith("_") or name in ("panels", "shift", "rotation"):
            raise AttributeError(name)
        return getattr(self.panel, name)


# ---------------------------------------------------------------------------------------------------
# scan, execution, experiment
# ---------------------------------------------------------------------------------------------------

@_register
class Scan(_Node):
    """The spindle rotation during the exposure.

    Args:
      phi: start angle [deg]; osc: total range [deg] in ``phisteps`` steps of ``phistep`` [deg] (default
        ``osc / phisteps``); spindle_axis: [3] (default: the convention's);
      carryover: reproduce the reference's phi = 0 lattice carry-over (C-parity option; off).
    """

    _leaves = ("phi0", "phistep", "spindle")
    _static = ("phisteps", "carryover")

    def __init__(self, phi=0.0, osc=0.0, phisteps=1, *, phistep=None, spindle_axis=None, carryover=False):
        steps = _count("Scan.phisteps", phisteps)
        if phistep is None:
            step = _floats("Scan.osc", osc, None, "deg") / RTD / steps
        else:
            step = _floats("Scan.phistep", phistep, None, "deg") / RTD
        self._set(phi0=_floats("Scan.phi", phi, None, "deg") / RTD, phistep=np.asarray(step, float),
                  spindle=None if spindle_axis is None else _unit_vector("Scan.spindle_axis", spindle_axis),
                  phisteps=steps, carryover=bool(carryover))


@dataclasses.dataclass(frozen=True)
class Execution:
    """How to compute, not what: tile size (pixels per tile, None: from ``sample_budget``), the
    pixel-samples held in memory at once, and ``precision="float32"`` for the mixed-precision kernel."""
    tile_pixels: Optional[int] = None
    sample_budget: int = 1 << 20
    precision: Optional[str] = None


#: Where each kernel parameter comes from in the model (for error messages).
_PARAM_FIELDS = {
    "lattice": "Crystal.cell/A/misset", "ncells": "Crystal.N/size", "fudge": "Crystal.fudge",
    "spindle": "Scan.spindle_axis", "phi0": "Scan.phi", "phistep": "Scan.osc/phistep",
    "mosaic_umats": "Crystal.mosaic_spread", "default_F": "Crystal.default_F", "fdet": "Detector.fdet",
    "sdet": "Detector.sdet", "odet": "Detector.odet", "beam": "Beam.direction",
    "detector_rotations": "Detector.rotations", "twotheta_axis": "Detector.twotheta_axis",
    "twotheta": "Detector.twotheta", "beam_center": "Detector.beam_center/orgx/orgy",
    "distance": "Detector.distance/close_distance", "pixel_size": "Detector.pixel_size",
    "source_dirs": "Beam.sources/divergence", "source_lambda": "Beam.wavelength/dispersion",
    "fluence": "Beam.fluence", "kahn": "Beam.polarization", "polar_vector": "Beam.polar_vector",
    "water_size": "Experiment.water", "dmin": "Experiment.dmin", "thickstep": "Detector.thickness",
    "mu": "Detector.attenuation", "F_grid": "Crystal.hkl", "pix0": "Detector.pix0", "mask": "Detector.mask",
}


@_register
class Experiment(_Node):
    """A complete simulation: crystal, beam, detector, scan and the sampling of each pixel.

    Args:
      crystal, beam, detector, scan: the parts (defaults: ``Beam()``, ``Detector()``, ``Scan()``).
      oversample: sub-pixels per pixel edge (default 1; the reference's automatic choice is a command-line
        rule, see :func:`recommended_oversample`).
      oversample_thick, oversample_polar, oversample_omega: recompute those factors per sub-pixel.
      water: water droplet size [um] around the crystal (background); dmin: resolution cut [A] (0: none).
      parts: amorphous parts of the sample (:class:`jaxbragg.sample.Amorphous`: solvent, an air path, ...),
        rendered with the crystal and added to its image (default none).
    """

    _leaves = ("crystal", "beam", "detector", "scan", "water", "dmin", "parts")
    _static = ("oversample", "oversample_thick", "oversample_polar", "oversample_omega", "has_water")

    def __init__(self, crystal: Crystal, beam: Optional[Beam] = None, detector: Optional[Detector] = None,
                 scan: Optional[Scan] = None, *, oversample=1, oversample_thick=False, oversample_polar=False,
                 oversample_omega=False, water=0.0, dmin=0.0, parts=()):
        beam = Beam() if beam is None else beam
        detector = Detector() if detector is None else detector
        scan = Scan() if scan is None else scan
        for name, part, cls in (("crystal", crystal, Crystal), ("beam", beam, Beam),
                                ("detector", detector, Detector), ("scan", scan, Scan)):
            if not isinstance(part, cls):
                raise TypeError(f"Experiment.{name}: expected a jaxbragg.{cls.__name__}, got {type(part).__name__}")
        conv = detector.panels[0].convention
        if conv != "custom":
            for name, v in (("Beam.direction", beam.direction), ("Beam.polar_vector", beam.polar_vector),
                            ("Scan.spindle_axis", scan.spindle)):
                if v is not None:
                    raise ValueError(f"{name}: the {conv} convention fixes it; use Detector(convention='custom')")
        from .sample import Amorphous
        parts = (parts,) if isinstance(parts, Amorphous) else tuple(parts)
        for part in parts:
            if not isinstance(part, Amorphous):
                raise TypeError(f"Experiment.parts: expected jaxbragg.Amorphous parts, got {type(part).__name__}")
        w = _floats("Experiment.water", water, None, "um") / 1e6
        dm = _floats("Experiment.dmin", dmin, None, "A") * 1e-10
        self._set(crystal=crystal, beam=beam, detector=detector, scan=scan, water=w, dmin=dm, parts=parts,
                  oversample=_count("Experiment.oversample", oversample), oversample_thick=bool(oversample_thick),
                  oversample_polar=bool(oversample_polar), oversample_omega=bool(oversample_omega),
                  has_water=bool(w != 0.0))

    @classmethod
    def _si(cls, **fields):
        fields.setdefault("parts", ())        # an experiment without amorphous parts
        return super()._si(**fields)

    def set(self, path: str, value) -> "Experiment":
        """A copy with one stored (SI) field replaced, named ``"part.field"`` (``"detector.distance"``
        sets the field of the detector's first panel, ``"detector.panels.K.pix0"`` that of panel K,
        ``"detector.shift"``/``"detector.rotation"`` the whole-detector motion, ``"parts.0.thickness"`` a field
        of the first amorphous part; :mod:`jaxbragg.paths`), unchecked: the way to put a traced value into an
        experiment, e.g. ``jax.grad(lambda d: jb.simulate(exp.set("detector.distance", d)).sum())``."""
        from .paths import set_path          # dotted paths and aliases (jaxbragg/paths.py)
        return set_path(self, path, value)

    @classmethod
    def from_flags(cls, argv: Sequence[str], cwd: str = ".") -> "Experiment":
        """The experiment of a ``jaxbragg`` command line (the CLI's own translation, with the reference's
        rules). Output and execution flags are accepted and left out (see
        :func:`jaxbragg.cli.resolve.translate`, which also returns them); nothing is written."""
        from .cli.resolve import translate
        return translate(list(argv), cwd).experiment

    @classmethod
    def from_expt(cls, path, index: int = 0, **kwargs) -> "Experiment":
        """The experiment ``index`` of a DIALS experiment list (``.expt``); keyword arguments give what the
        file lacks (``N``, ``default_F``, ``hkl``, ``fluence``, ...): see
        :func:`jaxbragg.io.dials.experiment_from_expt` and docs/detectors.md."""
        from .io.dials import experiment_from_expt
        return experiment_from_expt(path, index, **kwargs)

    def vectors(self):
        """(beam, polar, spindle) [3] unit vectors in use (the convention's unless given)."""
        table = det_mod.convention_vectors(self.detector.panels[0].convention)
        beam = table[0] if self.beam.direction is None else np.array(self.beam.direction)
        polar = table[5] if self.beam.polar_vector is None else np.array(self.beam.polar_vector)
        spindle = table[6] if self.scan.spindle is None else self.scan.spindle
        return beam, polar, spindle

    def lower(self, execution: Optional[Execution] = None, panel_index: Optional[int] = None):
        """The kernel inputs ``(SimConfig, Params)`` of this experiment (see module docstring); of panel
        ``panel_index`` for a multi-panel detector (None: the only panel). A moved detector
        (:meth:`Detector.moved`) lowers to the panel's placed frame with an explicit origin."""
        ex = Execution() if execution is None else execution
        c, b, sc = self.crystal, self.beam, self.scan
        panel = self.detector.panel if panel_index is None else self.detector.panels[panel_index]
        beam_v, polar_v, spindle = self.vectors()
        dirs, lams = b.sources(beam_v, polar_v)
        distance, close = det_mod.detector_distance(beam_v, panel.odet, panel.rotations,
                                                    None if panel.distance_is_close else panel.distance,
                                                    panel.distance if panel.distance_is_close else None)
        roi = panel.roi
        cfg = SimConfig(
            fpixels=panel.fpixels, spixels=panel.spixels, oversample=self.oversample, phisteps=sc.phisteps,
            mosaic_domains=c.mosaic_domains, sources=int(np.shape(lams)[0]), thicksteps=panel.thicksteps,
            shape=c.shape, pivot=panel.pivot, explicit_pix0=panel.pix0 is not None, curved=panel.curved,
            point_pixel=panel.point_pixel, polarization=b.polarized, thick_sensor=panel.thick_sensor,
            water=self.has_water, oversample_thick=self.oversample_thick, oversample_polar=self.oversample_polar,
            oversample_omega=self.oversample_omega, phi_carryover=sc.carryover, roi=roi,
            hkl_min=c.hkl_origin if c.F is not None else None, interpolate=c.interpolate,
            use_mask=panel.mask is not None, tile_pixels=ex.tile_pixels, sample_budget=ex.sample_budget,
            precision=ex.precision)

        def arr(x):
            return x if _is_traced(x) else np.asarray(x, np.float64)

        params = Params(
            lattice=arr(c.lattice(b.wavelength)), ncells=arr(c.ncells), fudge=arr(c.fudge), spindle=arr(spindle),
            phi0=arr(sc.phi0), phistep=arr(sc.phistep), mosaic_umats=arr(c.mosaic_umats()),
            default_F=arr(c.default_F), fdet=arr(panel.fdet), sdet=arr(panel.sdet), odet=arr(panel.odet),
            beam=arr(beam_v), detector_rotations=arr(panel.rotations), twotheta_axis=arr(panel.twotheta_axis),
            twotheta=arr(panel.twotheta), beam_center=arr(panel.pivot_point()),
            distance=arr(distance if panel.pivot == "beam" else close), pixel_size=arr(panel.pixel_size),
            source_dirs=arr(dirs), source_lambda=arr(lams), fluence=arr(b.fluence), kahn=arr(b.kahn),
            polar_vector=arr(polar_v), water_size=arr(self.water), dmin=arr(self.dmin),
            thickstep=arr(panel.thickstep), mu=arr(panel.mu), F_grid=None if c.F is None else arr(c.F),
            pix0=None if panel.pix0 is None else arr(panel.pix0),
            mask=None if panel.mask is None else arr(panel.mask))
        if self.detector.moved():
            from .panels import move_detector
            cfg, params = move_detector(cfg, params, self.detector.shift, self.detector.rotation)
        if roi is not None and (roi[1] < 0 or roi[3] < 0 or roi[0] > cfg.fpixels - 1 or roi[2] > cfg.spixels - 1):
            raise ValueError(f"Detector.roi: the window {roi} lies outside the {cfg.fpixels}x{cfg.spixels}-pixel "
                             f"detector")
        from . import resources
        from .validate import validate
        resources.check_sample_counts(cfg.oversample, cfg.phisteps, cfg.mosaic_domains, cfg.sources,
                                      cfg.thicksteps)
        try:
            validate(cfg, params)
        except PhysicsError as e:
            raise ValueError(f"{_PARAM_FIELDS.get(e.param, e.param)}: {e.detail}") from e
        return cfg, params


def recommended_oversample(experiment: Experiment) -> int:
    """The reference's automatic sub-pixel count: ``ceil(3 * crystal size / (lambda distance / pixel))``."""
    cfg, p = experiment.lower()
    size = float(np.max(np.linalg.norm(np.asarray(p.lattice), axis=1) * np.asarray(p.ncells)))
    frame = det_mod.place_detector(p.fdet, p.sdet, p.odet, p.beam, p.detector_rotations, p.twotheta_axis,
                                   p.twotheta, cfg.pivot, p.beam_center, p.distance, p.pix0)
    recip_px = float(experiment.beam.wavelength) * float(frame["distance"]) / float(p.pixel_size)
    return max(int(math.ceil(3.0 * size / recip_px)), 1)


def simulate(experiment: Experiment, execution: Optional[Execution] = None):
    """Render ``experiment``: the image [slow, fast] in photons per pixel (float64 when x64 is on), the
    crystal's plus its amorphous ``parts`` (:func:`jaxbragg.sample.simulate_parts` gives each alone); for a
    multi-panel detector a tuple of per-panel images (:func:`jaxbragg.panels.simulate_panels` stacks them).

    Jitted inside (one compilation per static configuration); composes with ``jax.grad``, ``jax.vmap``
    and ``jax.jit`` taken over the experiment's array leaves.
    """
    from . import simulate as sim
    if len(experiment.detector.panels) > 1:        # a tuple of per-panel images (jaxbragg.panels)
        if experiment.parts:
            raise NotImplementedError("Experiment.parts: amorphous parts render on a one-panel detector only")
        from .panels import simulate_panel_images
        return simulate_panel_images(experiment, execution)
    cfg, params = experiment.lower(execution)
    if not experiment.parts:
        return sim.simulate(cfg, params)
    from .sample import parts_image         # amorphous parts (lowered, and checked, first)
    parts = parts_image(experiment, lowered=(cfg, params))
    return sim.simulate(cfg, params) + parts


def simulate_pixels(experiment: Experiment, spix, fpix, execution: Optional[Execution] = None):
    """Photon counts [N] of the pixels ``(spix[i], fpix[i])`` only (see ``jaxbragg.simulate.render_pixels``)."""
    from . import simulate as sim
    cfg, params = experiment.lower(execution)
    values = sim.simulate_pixels(cfg, params, spix, fpix)
    if experiment.parts:                    # amorphous parts: rendered whole, then picked
        from .sample import parts_image
        values = values + parts_image(experiment, lowered=(cfg, params))[jnp.asarray(spix), jnp.asarray(fpix)]
    return values


def stack(experiments: Sequence[Experiment]) -> Experiment:
    """Stack experiments that share their static fields along a new leading axis (for ``jax.vmap``)."""
    experiments = list(experiments)
    structures = {jax.tree_util.tree_structure(e) for e in experiments}
    if len(structures) != 1:
        raise ValueError("stack: the experiments differ in a static field (step counts, pixels, convention, ...)")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *experiments)
