r"""A sample made of parts: the crystal plus amorphous components (solvent, an air path, an ice layer).

``Experiment(crystal=..., parts=(Amorphous("water", thickness=10), Amorphous("air", thickness_mm=50,
density=1.2e-3, molecular_weight=29)))`` holds the crystal and any number of amorphous parts;
:func:`jaxbragg.simulate` renders the sum

.. math::

    I = I_\mathrm{Bragg} + \sum_j s_j\, I_\mathrm{amorphous}(\mathrm{part}_j),

with :math:`I_\mathrm{amorphous}` nonBragg's image (:mod:`jaxbragg.amorphous`): ``r_e^2 fluence
N_mol sum(sign(F) F^2 P Omega) / steps``, ``N_mol = thickness width height density N_A / M``, and
:math:`s_j` the part's ``scale``. :func:`simulate_parts` returns the Bragg image and every part's image
as well.

Geometry and beam come from the experiment, once: :func:`lower_part` maps the kernel inputs
``(SimConfig, Params)`` of :meth:`Experiment.lower` (detector basis, rotations, two-theta, pivot, beam
centre, distance, ``pix0``, pixel size, sources, polarization, fluence, sub-pixels, ROI) onto
:class:`~jaxbragg.amorphous.AmorphousConfig` / :class:`~jaxbragg.amorphous.AmorphousParams`, and the
amorphous kernel places the detector with the same :func:`jaxbragg.detector.place_detector`. Where the
two programs differ the part follows nonBragg (specs/model.md, "Amorphous parts"): its solid angle and
polarization are evaluated for every sub-pixel and source (nanoBragg's once-per-pixel caches are not
used), and a thick sensor's absorption is not modelled (refused). The detector mask applies to the parts
too.

Units at construction: ``thickness`` [um] (or ``thickness_mm`` [mm], for an air path), ``width`` and
``height`` of the illuminated cross-section [mm], ``density`` [g/cm^3], ``molecular_weight`` [g/mol]; SI
inside (m, kg/m^3, kg/mol, sin(theta)/lambda in 1/m). Every number is a pytree leaf (differentiable,
vmap-able); the interpolation rule and the profile's name are static.
"""
from __future__ import annotations

from typing import Optional, Tuple

import jax.numpy as jnp
import numpy as np

from . import amorphous
from .experiment import _floats, _plausible, _positive, _register, _Node

__all__ = ["Amorphous", "lower_part", "render_parts", "simulate_parts", "parts_image"]


@_register
class Amorphous(_Node):
    """An amorphous part of the sample: a slab of liquid, gas or ice in the beam.

    Args:
      profile: structure-factor profile F(sin(theta)/lambda): a shipped name (``"water"``, ``"air"``,
        ``"ice"``, ``"nanoice"``, ``"shortwater"``, ``"unity"``), a ``.stol`` path, or a
        :class:`jaxbragg.amorphous.Profile`.
      thickness: slab thickness along the beam [um] (default 100, nonBragg's 0.1 mm); or
        ``thickness_mm`` [mm] (e.g. an air path), not both.
      width, height: illuminated cross-section [mm] (default 0.1 each, nonBragg's sample and beam size).
      density: [g/cm^3] (default 1, nonBragg's: water). molecular_weight: [g/mol] (default 18).
      scale: multiplier of the part's image (default 1; a fit parameter).
      interpolation: ``"polint"`` (the reference's 4-point rule, float64; default) or ``"pchip"``
        (monotone, non-negative, smooth: better for fits).
      profile_units: the first column of a ``.stol`` file: ``"stol"``, ``"4stol"`` or ``"Q"``.

    Stored fields (SI): ``thickness``, ``width``, ``height`` m, ``density`` kg/m^3, ``molar_mass``
    kg/mol, ``scale``, ``stol`` [N] 1/m, ``F`` [N], ``F_low``/``F_high`` (values beyond the table, or
    None for ``F[0]``/``F[-1]``); static ``interpolation`` and ``profile`` (the name or path given).
    """

    _leaves = ("thickness", "width", "height", "density", "molar_mass", "scale", "stol", "F", "F_low",
               "F_high")
    _static = ("interpolation", "profile")

    def __init__(self, profile="water", *, thickness=None, thickness_mm=None, width=0.1, height=0.1,
                 density=1.0, molecular_weight=18.0, scale=1.0, interpolation="polint", profile_units="stol"):
        if isinstance(profile, amorphous.Profile):
            prof, label = profile, None
        else:
            prof, label = amorphous.load_profile(profile, units=profile_units), str(profile)
        if thickness is not None and thickness_mm is not None:
            raise ValueError("Amorphous: give thickness [um] or thickness_mm [mm], not both")
        if thickness_mm is not None:
            t = _floats("Amorphous.thickness_mm", thickness_mm, None, "mm") / 1e3
        else:
            t = _floats("Amorphous.thickness", 100.0 if thickness is None else thickness, None, "um") / 1e6
        if t < 0:
            raise ValueError(f"Amorphous.thickness: must not be negative, got {float(t) * 1e6:g} um")
        rho = _positive("Amorphous.density", density, "g/cm^3")
        _plausible("Amorphous.density", float(rho), 1e-5, 25.0, "g/cm^3", "densities are in g/cm^3")
        mw = _positive("Amorphous.molecular_weight", molecular_weight, "g/mol")
        if interpolation not in ("polint", "pchip"):
            raise ValueError(f"Amorphous.interpolation: expected 'polint' or 'pchip', got {interpolation!r}")
        stol = _floats("Amorphous.profile stol", prof.stol, np.size(prof.stol), "1/m")
        F = _floats("Amorphous.profile F", prof.F, stol.size)
        if stol.size < 2 or not np.all(np.diff(stol) > 0):
            raise ValueError("Amorphous.profile: needs two or more points with increasing sin(theta)/lambda")
        self._set(thickness=np.asarray(t, float),
                  width=_positive("Amorphous.width", width, "mm") / 1e3,
                  height=_positive("Amorphous.height", height, "mm") / 1e3,
                  density=rho * 1e3, molar_mass=mw / 1e3, scale=_floats("Amorphous.scale", scale),
                  stol=stol, F=F,
                  F_low=None if prof.F_low == F[0] else np.asarray(prof.F_low, float),
                  F_high=None if prof.F_high == F[-1] else np.asarray(prof.F_high, float),
                  interpolation=interpolation, profile=label)


def lower_part(config, params, part: Amorphous
               ) -> Tuple[amorphous.AmorphousConfig, amorphous.AmorphousParams]:
    """The amorphous kernel's inputs for ``part`` in the experiment lowered to ``(config, params)``
    (a :class:`~jaxbragg.simulate.SimConfig` and :class:`~jaxbragg.simulate.Params`): the one mapping of
    the experiment's detector and beam onto :mod:`jaxbragg.amorphous`.

    Every source counts once (weights 1, as in the Bragg term: the model does not weight sources).
    """
    if config.thick_sensor:
        raise NotImplementedError("Amorphous parts: a thick sensor (Detector.thickness > 0) is not modelled "
                                  "for amorphous scattering; use a thin detector")
    acfg = amorphous.AmorphousConfig(
        fpixels=config.fpixels, spixels=config.spixels, oversample=config.oversample, sources=config.sources,
        pivot=config.pivot, curved=config.curved, point_pixel=config.point_pixel,
        polarization=config.polarization, interpolation=part.interpolation, roi=config.roi,
        tile_pixels=config.tile_pixels, sample_budget=config.sample_budget)
    f = jnp.asarray
    ap = amorphous.AmorphousParams(
        fdet=f(params.fdet), sdet=f(params.sdet), odet=f(params.odet), beam=f(params.beam),
        detector_rotations=f(params.detector_rotations), twotheta_axis=f(params.twotheta_axis),
        twotheta=f(params.twotheta), beam_center=f(params.beam_center), distance=f(params.distance),
        pixel_size=f(params.pixel_size), source_dirs=f(params.source_dirs),
        source_lambda=f(params.source_lambda), source_weights=jnp.ones(np.shape(params.source_lambda),
                                                                       f(params.source_lambda).dtype),
        polar_vector=f(params.polar_vector), kahn=f(params.kahn), fluence=f(params.fluence),
        thickness=f(part.thickness), width=f(part.width), height=f(part.height), density=f(part.density),
        molar_mass=f(part.molar_mass), stol=f(part.stol), F=f(part.F),
        F_low=None if part.F_low is None else f(part.F_low),
        F_high=None if part.F_high is None else f(part.F_high),
        pix0=f(params.pix0) if config.explicit_pix0 else None)
    return acfg, ap


def _images(config, params, parts, render):
    """Each part's image (scale and detector mask applied), a list of [spixels, fpixels]."""
    out = []
    for part in parts:                      # parts differ in profile length: one kernel each
        image = part.scale * render(*lower_part(config, params, part))
        out.append(image * (params.mask != 0) if config.use_mask else image)
    return out


def render_parts(config, params, parts):
    """Images [n_parts, spixels, fpixels] of ``parts`` (photons/pixel, scale applied) for the lowered
    experiment ``(config, params)``; plain function (compose with ``grad``/``vmap``/``jit``)."""
    images = _images(config, params, parts, amorphous.render)
    if not images:
        return jnp.zeros((0, config.spixels, config.fpixels), jnp.asarray(params.pixel_size).dtype)
    return jnp.stack(images)


def parts_image(experiment, execution=None, lowered: Optional[tuple] = None):
    """The sum of the amorphous parts' images [spixels, fpixels] (jitted renders; zeros without parts).

    ``lowered``: the experiment's ``(SimConfig, Params)`` when the caller has them already."""
    config, params = experiment.lower(execution) if lowered is None else lowered
    images = _images(config, params, experiment.parts, amorphous.amorphous_image)
    if not images:
        return jnp.zeros((config.spixels, config.fpixels), jnp.asarray(params.pixel_size).dtype)
    return sum(images[1:], images[0])


def simulate_parts(experiment, execution=None):
    """Render ``experiment`` part by part: ``(total, bragg, parts)``, with ``bragg`` the crystal's image,
    ``parts`` [n_parts, spixels, fpixels] each amorphous part's (scale applied) and ``total`` their sum
    (what :func:`jaxbragg.simulate` returns).

    Each render is jitted (the Bragg kernel once per static configuration, each part's kernel once per
    profile length and interpolation); composes with ``jax.grad``/``jax.vmap`` over the experiment.
    """
    from . import simulate as sim
    config, params = experiment.lower(execution)
    bragg = sim.simulate(config, params)
    images = _images(config, params, experiment.parts, amorphous.amorphous_image)
    if not images:
        return bragg, bragg, jnp.zeros((0,) + bragg.shape, bragg.dtype)
    return bragg + sum(images[1:], images[0]), bragg, jnp.stack(images)
