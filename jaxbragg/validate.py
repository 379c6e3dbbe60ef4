"""Physical validity of a ``(SimConfig, Params)`` pair, checked on concrete values before any tracing.

:func:`validate` raises :class:`jaxbragg.errors.PhysicsError` naming the offending parameter when the
inputs describe no experiment the model can render, instead of letting them turn into NaN pixels deep in
a jitted kernel:

* a shape that disagrees with the config (e.g. ``source_dirs`` rows vs ``SimConfig.sources``);
* a NaN or infinite value in any leaf (structure factors and mask included);
* a lattice with (numerically) zero cell volume;
* ``ncells`` <= 0; a wavelength <= 0; a zero source direction; ``pixel_size`` <= 0; a negative
  ``fluence``; a negative ``thickstep`` or ``mu`` on a thick sensor;
* a zero basis vector, beam, spindle or (with polarization) polarization axis, or ``fdet`` parallel to
  ``sdet``;
* a detector whose (rotated, not two-theta-swung) normal is perpendicular to the beam when the beam pivot
  or a curved detector needs the distance along the beam;
* a flat detector whose plane passes through or behind the sample (``close_distance`` <= 0).

Leaves that are JAX tracers (inside ``jit``, ``grad`` or ``vmap``) are skipped: only what is concrete is
checked, so calling :func:`validate` is always safe and costs O(size of the parameters) NumPy work.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .errors import PhysicsError

__all__ = ["validate", "PhysicsError"]

#: |det(lattice)| / (|a| |b| |c|) below this is a zero cell volume (1 for a rectangular cell).
VOLUME_TOLERANCE = 1e-9
#: |beam . odet| below this is a detector parallel to the beam (cos 90 deg is 6e-17, not 0).
PARALLEL_TOLERANCE = 1e-9


def _concrete(x) -> Optional[np.ndarray]:
    """``x`` as a float64/bool NumPy array, or None for a tracer or a missing leaf."""
    if x is None:
        return None
    try:
        from jax.core import Tracer
        if isinstance(x, Tracer):
            return None
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(x)
    return arr if arr.dtype == bool else arr.astype(np.float64, copy=False)


def _shape(name, arr, expect):
    if arr is not None and arr.shape != tuple(expect):
        raise PhysicsError(name, f"has shape {arr.shape}, expected {tuple(expect)}")


def _nonzero(name, v, what="vector"):
    if v is not None and not float(np.linalg.norm(v)) > 0.0:
        raise PhysicsError(name, f"the {what} must be non-zero")


def validate(config, params) -> None:
    """Check ``params`` (a :class:`jaxbragg.simulate.Params`) against ``config`` and physics.

    Raises:
      PhysicsError: the first problem found; ``.param`` names the field, the message starts with it.
    """
    p = params
    from .simulate import PARAM_RANK          # the Params fields, defined once
    leaves = {name: _concrete(getattr(p, name)) for name in p.keys()} if hasattr(p, "keys") else \
        {name: _concrete(getattr(p, name, None)) for name in PARAM_RANK}
    g = leaves.get

    for field in ("fpixels", "spixels", "oversample", "phisteps", "mosaic_domains", "sources", "thicksteps"):
        value = getattr(config, field)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise PhysicsError(f"SimConfig.{field}", f"must be a positive integer, got {value!r}")

    # shapes
    for name in ("lattice",):
        _shape(name, g(name), (3, 3))
    for name in ("ncells", "spindle", "fdet", "sdet", "odet", "beam", "detector_rotations", "twotheta_axis",
                 "polar_vector"):
        _shape(name, g(name), (3,))
    for name in ("fudge", "phi0", "phistep", "default_F", "twotheta", "distance", "pixel_size", "fluence",
                 "kahn", "water_size", "dmin", "thickstep", "mu"):
        _shape(name, g(name), ())
    _shape("beam_center", g("beam_center"), (2,))
    _shape("mosaic_umats", g("mosaic_umats"), (config.mosaic_domains, 3, 3))
    _shape("source_dirs", g("source_dirs"), (config.sources, 3))
    _shape("source_lambda", g("source_lambda"), (config.sources,))
    if config.explicit_pix0:
        if getattr(p, "pix0", None) is None:
            raise PhysicsError("pix0", "is required with SimConfig.explicit_pix0")
        _shape("pix0", g("pix0"), (3,))
    if config.use_mask:
        if getattr(p, "mask", None) is None:
            raise PhysicsError("mask", "is required with SimConfig.use_mask")
        _shape("mask", g("mask"), (config.spixels, config.fpixels))
    if config.hkl_min is not None:
        if getattr(p, "F_grid", None) is None:
            raise PhysicsError("F_grid", "is required when SimConfig.hkl_min is set")
        if g("F_grid") is not None and g("F_grid").ndim != 3:
            raise PhysicsError("F_grid", f"must be a 3-D array, got shape {g('F_grid').shape}")

    # finiteness
    for name, arr in leaves.items():
        if arr is not None and arr.dtype != bool and not np.all(np.isfinite(arr)):
            raise PhysicsError(name, "contains NaN or infinite values")

    # crystal
    lat = g("lattice")
    if lat is not None:
        norms = np.linalg.norm(lat, axis=1)
        if not np.all(norms > 0):
            raise PhysicsError("lattice", "a cell edge has zero length")
        det = float(np.linalg.det(lat))
        if not abs(det) > VOLUME_TOLERANCE * float(np.prod(norms)):
            raise PhysicsError("lattice", f"zero cell volume (det = {det:g} m^3): the cell edges are coplanar")
    nc = g("ncells")
    if nc is not None and not np.all(nc > 0):
        raise PhysicsError("ncells", f"the number of unit cells must be positive, got {nc.tolist()}")

    # beam
    lam = g("source_lambda")
    if lam is not None and not np.all(lam > 0):
        raise PhysicsError("source_lambda", f"wavelengths must be positive, got {float(lam.min()):g} m")
    dirs = g("source_dirs")
    if dirs is not None and not np.all(np.linalg.norm(dirs, axis=-1) > 0):
        raise PhysicsError("source_dirs", "a source direction is the zero vector")
    flu = g("fluence")
    if flu is not None and float(flu) < 0:
        raise PhysicsError("fluence", f"must not be negative, got {float(flu):g} photons/m^2")
    _nonzero("beam", g("beam"))
    _nonzero("spindle", g("spindle"), "rotation axis")
    if config.polarization:
        _nonzero("polar_vector", g("polar_vector"), "polarization axis")

    # detector
    px = g("pixel_size")
    if px is not None and not float(px) > 0:
        raise PhysicsError("pixel_size", f"must be positive, got {float(px):g} m")
    for name in ("fdet", "sdet", "odet"):
        _nonzero(name, g(name))
    f, s = g("fdet"), g("sdet")
    if f is not None and s is not None:
        cross = float(np.linalg.norm(np.cross(f, s)))
        if not cross > PARALLEL_TOLERANCE * float(np.linalg.norm(f) * np.linalg.norm(s)):
            raise PhysicsError("sdet", "fdet and sdet are parallel: the detector has no area")
    if config.thick_sensor:
        for name in ("thickstep", "mu"):
            if g(name) is not None and float(g(name)) < 0:
                raise PhysicsError(name, f"must not be negative on a thick sensor, got {float(g(name)):g}")
    _check_placement(config, leaves)


def _unit(v):
    return v / np.linalg.norm(v)


def _check_placement(config, leaves) -> None:
    names = ("fdet", "sdet", "odet", "beam", "detector_rotations", "twotheta_axis", "twotheta",
             "beam_center", "distance")
    if any(leaves.get(n) is None for n in names) or (config.explicit_pix0 and leaves.get("pix0") is None):
        return      # something is traced: nothing more to check here
    from . import detector, geometry
    beam = _unit(leaves["beam"])
    odet = _unit(leaves["odet"])
    ratio = float(np.dot(beam, np.asarray(geometry.rotate_xyz(odet, leaves["detector_rotations"]))))
    uses_ratio = config.curved or (config.pivot == "beam" and not config.explicit_pix0)
    if uses_ratio and abs(ratio) < PARALLEL_TOLERANCE:
        raise PhysicsError("odet", "the detector is parallel to the beam (beam . rotated odet = 0), so the "
                                   "distance along the beam is undefined")
    axis = leaves["twotheta_axis"]
    tt = float(leaves["twotheta"])
    if tt != 0.0 and not float(np.linalg.norm(axis)) > 0:
        raise PhysicsError("twotheta_axis", "the two-theta axis must be non-zero when twotheta != 0")
    frame = detector.place_detector(
        _unit(leaves["fdet"]), _unit(leaves["sdet"]), odet, beam, leaves["detector_rotations"],
        _unit(axis) if float(np.linalg.norm(axis)) > 0 else axis, tt, config.pivot, leaves["beam_center"],
        leaves["distance"], leaves.get("pix0") if config.explicit_pix0 else None)
    problem = placement_problem(frame, beam, float(leaves["distance"]), config.curved)
    if problem:
        raise PhysicsError("twotheta" if tt != 0.0 else "detector_rotations", problem)
    if config.curved:
        return
    close = float(frame["close_distance"])
    if not (math.isfinite(close) and close > 0):
        raise PhysicsError("distance", f"the detector plane passes through or behind the sample "
                                       f"(close distance {close:g} m)")


def placement_problem(frame, beam, distance: float, curved: bool) -> Optional[str]:
    """Why a placed detector (``frame`` of :func:`jaxbragg.detector.place_detector`, after two-theta and
    every rotation) lies along the beam, or None: its plane through the sample (close distance within
    ``PARALLEL_TOLERANCE`` of the requested ``distance``), or a flat plane parallel to the beam (|cos| of
    beam and normal below ``PARALLEL_TOLERANCE``). Relative tolerances: cos(90 deg) is 6e-17 and
    89.9999999999 deg leaves 1e-13 m, not an exact zero. A curved detector (a sphere about the sample)
    may face any way."""
    close = float(frame["close_distance"])
    if distance != 0.0 and abs(close) <= PARALLEL_TOLERANCE * abs(distance):
        return f"the detector plane passes through the sample (close distance {close:.3g} m)"
    odet = np.asarray(frame["odet"], float)
    b = np.asarray(beam, float)
    cos = float(np.dot(b, odet) / (np.linalg.norm(b) * np.linalg.norm(odet)))
    if not curved and abs(cos) < PARALLEL_TOLERANCE:
        return "the detector is edge-on to the beam (its plane is parallel to the beam direction)"
    return None


def cell_angles_problem(angles) -> Optional[str]:
    """Why three cell angles (radians) cannot belong to any real cell, or None when they can.

    Three edge directions exist with these mutual angles only when the metric's determinant
    ``1 - cos^2 al - cos^2 be - cos^2 ga + 2 cos al cos be cos ga`` is positive: each angle below 180 deg,
    below the sum of the other two, and the three together below 360 deg. (The reference's volume takes
    the absolute value of that quantity, so such a cell renders from a lattice that cannot exist.)
    """
    al, be, ga = (float(x) for x in angles)
    deg = [x * 180.0 / math.pi for x in (al, be, ga)]
    shown = " ".join(f"{d:g}" for d in deg)
    if not all(0.0 < x < math.pi for x in (al, be, ga)):
        return f"cell angles {shown} deg: each must lie strictly between 0 and 180 deg"
    ca, cb, cg = math.cos(al), math.cos(be), math.cos(ga)
    gram = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    if not gram > -1e-12:    # a flat cell (gram ~ 0, e.g. 120 120 120) is the volume check's to report
        return (f"cell angles {shown} deg cannot form a cell (each angle must be less than the sum of "
                f"the other two, and the three together less than 360 deg)")
    return None
