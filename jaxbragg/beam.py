"""Incident beam: sources (divergence x dispersion grid or a source list), polarization, fluence, water.

Corresponds to the source-generation block of nanoBragg.c ``main``, its ``polarization_factor`` routine and
the fluence / water-background set-up.

* A source is a unit vector ``s`` pointing from the sample towards the source and a wavelength ``lambda``;
  the incident direction is ``-s``.
* Divergence grid: ``hdiv_i = i hdivstep - hdivrange/2`` (``i < hdivsteps``), likewise ``vdiv``; with round
  divergence a grid point is dropped when
  ``4 [(h^2 - hstep^2/4 (1 - hsteps mod 2)) / hrange^2 + (v^2 - vstep^2/4 (1 - vsteps mod 2)) / vrange^2] > 1.1``.
  The source vector ``-beam`` is rotated by ``vdiv`` about the polarization axis, then by ``hdiv`` about
  ``beam x polar``. Each grid point gets ``dispsteps`` wavelengths
  ``lambda0 (1 + j dispstep - dispersion/2)``.
* Kahn polarization factor (``K`` = Kahn factor, ``2theta`` between incident and diffracted, ``psi`` the
  azimuth of the diffracted ray about the incident beam measured from the E vector):
  ``P = (1 + cos^2 2theta - K cos(2 psi) sin^2 2theta) / 2``, evaluated as
  ``(1 + cos^2 2theta - K (x^2 - y^2)) / 2`` with ``x, y`` the diffracted components along E and B.
* Fluence from flux: ``fluence = flux * exposure / beamsize^2`` [photons/m^2].
* Water background (per pixel, before the final scale): ``I_bg = F_w^2 r_e^2 fluence size^3 1e6 N_A / MW_w``
  with ``F_w = 2.57``, ``MW_w = 18``; the reference multiplies it by ``r_e^2 fluence`` a second time at the
  end, and so do we.
"""
from __future__ import annotations

import numpy as np

from . import geometry

R_E_SQR = 7.94079248018965e-30       # Thomson cross-section r_e^2 [m^2], the reference's value
AVOGADRO = 6.02214179e23             # the reference's value
WATER_F = 2.57
WATER_MW = 18.0
SOURCE_DISTANCE = 10.0               # metres; only the direction matters


def polarization_factor(kahn, incident, diffracted, axis):
    """Kahn polarization factor for unit ``incident`` and ``diffracted`` [..., 3] and E-axis ``axis`` [3].

    The reference computes ``psi = -atan2(y, x)`` with ``x, y`` the components of the diffracted ray along
    the incident E and B directions, then ``cos(2 psi) sin^2(2theta)``. Since ``x^2 + y^2 = sin^2(2theta)``
    that product is exactly ``x^2 - y^2``, which we use: the same value (to rounding) without the
    ``atan2(0, 0)`` whose derivative is NaN on the direct beam.
    """
    cos2t = geometry.dot(incident, diffracted)
    b_in = geometry.unitize(geometry.cross(axis, incident))
    e_in = geometry.unitize(geometry.cross(incident, b_in))
    x = geometry.dot(diffracted, e_in)
    y = geometry.dot(diffracted, b_in)
    mul = geometry.mul
    return 0.5 * (1.0 + mul(cos2t, cos2t) - mul(kahn, mul(x, x) - mul(y, y)))


def water_background(fluence, water_size):
    """Water background term ``I_bg`` added to every pixel's photon sum (see module docstring)."""
    return WATER_F ** 2 * R_E_SQR * fluence * water_size ** 3 * 1e6 * AVOGADRO / WATER_MW


def divergence_grid(hdivrange, hdivstep, hdivsteps, vdivrange, vdivstep, vdivsteps, round_div):
    """(hdiv, vdiv) pairs [n, 2] in radians, in the reference's loop order (NumPy, set-up time)."""
    out = []
    for i in range(hdivsteps):
        for j in range(vdivsteps):
            h = np.float64(hdivstep) * i - hdivrange / 2.0
            v = np.float64(vdivstep) * j - vdivrange / 2.0
            if round_div:
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = (h * h - hdivstep * hdivstep / 4.0 * (1 - hdivsteps % 2)) / np.float64(hdivrange) / hdivrange
                    t += (v * v - vdivstep * vdivstep / 4.0 * (1 - vdivsteps % 2)) / np.float64(vdivrange) / vdivrange
                if t * 4.0 > 1.1:   # NaN (zero range) compares False: the point is kept, as in the C
                    continue
            out.append((h, v))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def make_sources(beam, polar, lambda0, div, dispersion, dispstep, dispsteps):
    """Source directions [n, 3] (unit, sample -> source) and wavelengths [n] from a divergence grid.

    Args:
      beam: [3] unit beam direction; polar: [3] unit polarization (E) axis.
      lambda0: central wavelength [m].
      div: [n_div, 2] (hdiv, vdiv) radians from :func:`divergence_grid`.
      dispersion, dispstep: fractional bandwidth and step; dispsteps: number of wavelengths.
    """
    beam = np.asarray(beam, dtype=np.float64)
    polar = np.asarray(polar, dtype=np.float64)
    vert = np.asarray(geometry.unitize(np.cross(beam, polar)))
    dirs, lams = [], []
    for h, v in div:
        vec = -SOURCE_DISTANCE * beam
        vec = np.asarray(geometry.rotate_axis(vec, polar, v))
        vec = np.asarray(geometry.rotate_axis(vec, vert, h))
        for j in range(dispsteps):
            dirs.append(vec)
            lams.append(lambda0 * (1.0 + dispstep * j - dispersion / 2.0))
    dirs = np.array(dirs, dtype=np.float64).reshape(-1, 3)
    return np.asarray(geometry.unitize(dirs)), np.array(lams, dtype=np.float64)
