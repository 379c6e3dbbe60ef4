"""Detector placement, pixel positions, solid angle and sensor absorption.

Corresponds to the detector set-up block of nanoBragg.c ``main`` (pivot logic, ``rotate`` by
``-detector_rotx/y/z`` then ``rotate_axis`` by ``-twotheta``) and to the pixel part of its inner loop.

Frame: ``fdet``/``sdet`` are the fast/slow pixel directions, ``odet`` the detector normal (pointing away
from the sample), ``pix0`` the lab position of the corner of pixel (0, 0). A point at detector coordinates
``(F, S)`` (metres along fast/slow from the corner) and depth ``O`` into the sensor sits at
``pix0 + F fdet + S sdet + O odet``.

Placement (R = rotation about x, y, z by the detector rotations, then about the two-theta axis):

* pivot ``beam``: ``pix0 = -Fbeam fdet - Sbeam sdet + distance * beam`` with the rotated basis, so the
  direct beam stays on ``(Fbeam, Sbeam)`` at ``distance`` along the beam.
* pivot ``sample``: ``pix0 = R (-Fclose fdet0 - Sclose sdet0 + close_distance odet0)``: the detector
  swings about the sample.
* an explicit ``pix0`` overrides both (our extension; the C parses ``-pix0_vector`` and ignores it).

After placement the reference recomputes ``close_distance = pix0 . odet`` and
``distance = close_distance / (beam . Rxyz odet0)``; those are the values used by the solid angle and the
curved detector.

Per sub-pixel sample: ``omega = pixel^2 close_distance / R^3`` (``1 / R^2`` for ``point_pixel``), and for a
sensor of ``layers`` slabs of thickness ``t`` and attenuation ``mu`` the capture fraction of layer ``i`` is
``exp(-i t mu / p) - exp(-(i+1) t mu / p)`` with ``p = d . odet`` (``d`` the unit diffracted direction).
"""
from __future__ import annotations

import jax.numpy as jnp

from . import geometry
from .geometry import _xp

#: Lab vectors of each named convention (the reference's convention block):
#: beam, fdet, sdet, odet, two-theta axis, polarization (E) axis, spindle.
CONVENTIONS = {
    "mosflm": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1)),
    "denzo": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1)),
    "adxv": ((0, 0, 1), (1, 0, 0), (0, -1, 0), (0, 0, 1), (-1, 0, 0), (1, 0, 0), (1, 0, 0)),
    "xds": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 0, 0), (1, 0, 0)),
    "dials": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 1, 0)),
}
#: The CUSTOM convention starts from these (the reference's initial values: MOSFLM-like, two-theta
#: about +y); every vector can then be set on its own.
CUSTOM_START = ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 1))
#: The pivot each named convention uses (CUSTOM: whatever was asked, beam by default).
CONVENTION_PIVOT = {"mosflm": "beam", "denzo": "beam", "adxv": "beam", "xds": "sample", "dials": "sample"}


def convention_vectors(convention):
    """``(beam, fdet, sdet, odet, twotheta_axis, polar, spindle)`` [3] each, float64, of a convention."""
    import numpy as np
    table = CONVENTIONS.get(convention, CUSTOM_START)
    return tuple(np.array(v, float) for v in table)


def close_point(orgx, orgy, detsize_f, detsize_s, pixel):
    """(Fclose, Sclose) [m]: the sample-pivot point from XDS's ORGX/ORGY [pixels]; NaN means the centre
    of the detector (``detsize / 2``)."""
    import math
    f = (orgx - 0.5) * pixel if not math.isnan(orgx) else detsize_f / 2.0
    s = (orgy - 0.5) * pixel if not math.isnan(orgy) else detsize_s / 2.0
    return f, s


def default_beam_center(convention, detsize_f, detsize_s, pixel, close=None):
    """The beam centre ``(X, Y)`` [m] a convention uses when none is given (the reference's defaults).

    ADXV: the detector centre, shifted by half a pixel ``((f + px) / 2, (s - px) / 2)``; MOSFLM/DENZO:
    ``((s + px) / 2, (f + px) / 2)`` (X along slow); XDS, DIALS and CUSTOM: the close point ``close``
    (:func:`close_point`).
    """
    if convention == "adxv":
        return (detsize_f + pixel) / 2.0, (detsize_s - pixel) / 2.0
    if convention in ("mosflm", "denzo"):
        return (detsize_s + pixel) / 2.0, (detsize_f + pixel) / 2.0
    return close


def beam_pivot_point(convention, beam_center, detsize_s, pixel):
    """(Fbeam, Sbeam) [m], the direct-beam point in detector coordinates, from a convention's
    ``(X, Y)`` beam centre: ADXV ``(X, detsize_s - Y)``; MOSFLM ``(Y + px/2, X + px/2)``; DENZO
    ``(Y, X)``; XDS, DIALS, CUSTOM ``(X, Y)``. Works on NumPy or JAX values (differentiable)."""
    x, y = beam_center[0], beam_center[1]
    if convention == "adxv":
        return x, detsize_s - y
    if convention in ("mosflm", "denzo"):
        shift = 0.5 * pixel if convention == "mosflm" else 0.0
        return y + shift, x + shift
    return x, y


def detector_distance(beam, odet0, rotations, distance=None, close_distance=None):
    """(distance along the beam, close distance) [m] of a detector, the reference's bookkeeping.

    With ``close_distance`` given it wins and ``distance = close / ratio``; otherwise
    ``close = |ratio * distance|`` and ``distance = close / ratio``, where ``ratio = beam . Rxyz odet0``
    (the detector rotations, not two-theta). NumPy or JAX values.
    """
    xp = _xp(beam, odet0, rotations, distance, close_distance)
    ratio = xp.dot(beam, geometry.rotate_xyz(odet0, rotations))
    close = xp.abs(ratio * distance) if close_distance is None else close_distance
    return close / ratio, close


def place_detector(fdet0, sdet0, odet0, beam, rotations, twotheta_axis, twotheta, pivot, center,
                   distance, pix0=None):
    """Rotate the detector basis and place its origin.

    Args:
      fdet0, sdet0, odet0: [3] unrotated unit basis vectors.
      beam: [3] unit direct-beam direction (from source to sample).
      rotations: [3] detector rotations about lab x, y, z (radians).
      twotheta_axis: [3] unit axis of the two-theta swing.
      twotheta: two-theta angle (radians).
      pivot: ``"beam"`` or ``"sample"`` (static).
      center: [2] pivot point on the detector, metres: (Fbeam, Sbeam) for the beam pivot,
        (Fclose, Sclose) for the sample pivot.
      distance: metres; along the beam to the beam spot (beam pivot) or sample-to-plane distance before
        rotation (sample pivot).
      pix0: optional [3] explicit origin (overrides the pivot computation).

    Returns:
      dict with ``fdet, sdet, odet, pix0`` [3], ``close_distance`` and ``distance`` (metres, recomputed
      from the final placement like the reference does).
    """
    xp = _xp(fdet0, sdet0, odet0, beam, rotations, twotheta_axis, twotheta, center, distance, pix0)
    rot = lambda v: geometry.rotate_axis(geometry.rotate_xyz(v, rotations), twotheta_axis, twotheta)
    fdet, sdet, odet = rot(fdet0), rot(sdet0), rot(odet0)
    ratio = xp.dot(beam, geometry.rotate_xyz(odet0, rotations))
    ratio = xp.where(ratio == 0.0, xp.finfo(xp.result_type(ratio)).tiny, ratio)
    if pix0 is not None:
        origin = xp.asarray(pix0)
    elif pivot == "beam":
        origin = -center[0] * fdet - center[1] * sdet + distance * beam
    elif pivot == "sample":
        origin = rot(-center[0] * fdet0 - center[1] * sdet0 + distance * odet0)
    else:
        raise ValueError(f"pivot must be 'beam' or 'sample', got {pivot!r}")
    close = xp.dot(origin, odet)
    return dict(fdet=fdet, sdet=sdet, odet=odet, pix0=origin, close_distance=close,
                distance=close / ratio, ratio=ratio)


def beam_spot(frame, beam):
    """The reference's reported beam centre (Fbeam, Sbeam) [2] in metres, as written to image headers.

    The reference intersects the beam with the plane using ``close_distance / (beam . Rxyz odet0)``,
    i.e. ignoring the two-theta swing in the ratio; with a non-zero two-theta this differs from the true
    intersection, and we keep the reference's value because it only feeds the header.
    """
    xp = _xp(frame["pix0"], beam)
    hit = frame["close_distance"] / frame["ratio"] * beam - frame["pix0"]
    return xp.stack([xp.dot(frame["fdet"], hit), xp.dot(frame["sdet"], hit)])


def subpixel_offsets(oversample, pixel_size):
    """Centres of the ``oversample x oversample`` sub-pixels, relative to the pixel corner.

    Returns [O] offsets in metres: ``pixel/O * (i + 1/2)``.
    """
    sub = pixel_size / oversample
    return sub * jnp.arange(oversample) + sub / 2.0


def pixel_position(frame, f_coord, s_coord, depth, curved, beam):
    """Lab position [..., 3] of detector coordinates (metres) at sensor depth ``depth``.

    With ``curved`` (static) the flat position is mapped onto a sphere of radius ``distance`` the way the
    reference does it: the beam-axis point is rotated about ``sdet`` by ``y / distance`` and then about
    ``fdet`` by ``z / distance``, where ``y, z`` are the lab components of the flat position.
    """
    mul = geometry.mul
    pos = (mul(f_coord[..., None], frame["fdet"]) + mul(s_coord[..., None], frame["sdet"])
           + mul(depth[..., None], frame["odet"]) + frame["pix0"])
    if not curved:
        return pos
    d = frame["distance"]
    start = d * beam
    first = geometry.rotate_axis(start, frame["sdet"], pos[..., 1:2] / d)
    return geometry.rotate_axis(first, frame["fdet"], pos[..., 2:3] / d)


def solid_angle(airpath, close_distance, pixel_size, point_pixel):
    """Pixel solid angle [sr]: ``pixel^2 close / R^3``, or ``1 / R^2`` for a point pixel (static flag)."""
    if point_pixel:
        return 1.0 / (airpath * airpath)
    return pixel_size * pixel_size / (airpath * airpath) * close_distance / airpath


def capture_fraction(diffracted, odet, layer, thickstep, mu):
    """Fraction of photons absorbed in sensor layer ``layer`` (0-based) for unit ``diffracted`` [..., 3]."""
    parallax = geometry.dot(diffracted, odet)
    return (jnp.exp(-layer * thickstep * mu / parallax)
            - jnp.exp(-(layer + 1) * thickstep * mu / parallax))
