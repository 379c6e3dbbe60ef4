"""Image statistics and output files exactly as nanoBragg.c writes them.

* float image: raw float32, fast-major.
* SMV ``-intfile``: ``value = floor(float * scale + adc + 1/2)`` clipped to [0, 65535]; ``scale`` is
  ``-scale`` or ``55000 / max`` (1 when the image is empty); ``adc`` defaults to 40.
* PGM ``-pgmfile``: ``byte = trunc(min(float * pgmscale, 255))``; ``pgmscale`` is ``-pgmscale`` or
  ``250 / (5 rmsd)`` (the int scale when rmsd is 0).
* SMV ``-noisefile``: Poisson deviates of the float image from the reference's generator seeded by
  ``-seed`` (or, with ``-noise_jax``, from ``jax.random.poisson``), plus ``adc``, truncated; values above
  65535 are clipped and counted as overloads (:mod:`jaxbragg.noise`).
* PNG ``-pngfile`` (jaxbragg only): 8-bit grey ``round(255 * sqrt(min(I / W, 1)))`` with the white level
  ``W`` the 99.9th percentile of the rendered ROI pixels (see :func:`png_image`).

Only pixels inside the ROI are converted; the rest stay 0. Statistics follow the reference: the mean and
RMS over rendered (unmasked) ROI pixels, the RMSD about that mean over every ROI pixel.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Tuple

import numpy as np

from .. import io, noise
from ..io.smv import format_g as g

def panel_path(path: str, k: int, n: int) -> str:
    """The file of panel ``k`` of an ``n``-panel detector for an output named ``path``: ``NAME_pKK.EXT``
    (:func:`jaxbragg.io.naming.panel_path`, the one naming rule of every one-image output format)."""
    from ..io.naming import panel_path as rule
    return rule(path, k, n)


DEFAULT_NAMES = {"float": "floatimage.bin", "int": "intimage.img", "pgm": "image.pgm",
                 "noise": "noiseimage.img"}


def statistics(image32: np.ndarray, roi: Tuple[int, int, int, int], mask) -> Dict[str, float]:
    f0, f1, s0, s1 = roi
    win = image32[s0:s1 + 1, f0:f1 + 1].astype(np.float64)
    rendered = np.ones(win.shape, bool) if mask is None else np.asarray(mask)[s0:s1 + 1, f0:f1 + 1] != 0
    vals = win[rendered]
    n = vals.size if vals.size > 0 else 1
    mean = vals.sum() / n
    rms = math.sqrt((vals ** 2).sum() / (n - 1 if n > 1 else 1))
    m = win.size if win.size > 1 else 2
    rmsd = math.sqrt(((win - mean) ** 2).sum() / (m - 1))
    flat = int(np.argmax(np.where(rendered, win, -np.inf))) if vals.size else 0
    return dict(max=float(vals.max()) if vals.size else 0.0, argmax=(s0 + flat // win.shape[1],
                f0 + flat % win.shape[1]), mean=mean, rms=rms, rmsd=rmsd)


def roi_mask(shape, roi) -> np.ndarray:
    f0, f1, s0, s1 = roi
    m = np.zeros(shape, bool)
    m[s0:s1 + 1, f0:f1 + 1] = True
    return m


def header_items(info, adc) -> List[tuple]:
    """SMV header items in the reference's order (values in mm, Angstrom, degrees) plus ADC_OFFSET."""
    px, ds = info["pixel"], info["detsize_s"]
    fb, sb = info["Fbeam"], info["Sbeam"]
    o = info["dials_origin"]
    return [
        ("PIXEL_SIZE", g(px * 1000.0)), ("DISTANCE", g(info["distance"] * 1000.0)),
        ("WAVELENGTH", g(info["lambda0"] * 1e10)),
        ("BEAM_CENTER_X", g(info["Xbeam"] * 1000.0)), ("BEAM_CENTER_Y", g(info["Ybeam"] * 1000)),
        ("ADXV_CENTER_X", g(fb * 1000.0)), ("ADXV_CENTER_Y", g((ds - sb) * 1000)),
        ("MOSFLM_CENTER_X", g((sb - 0.5 * px) * 1000.0)), ("MOSFLM_CENTER_Y", g((fb - 0.5 * px) * 1000)),
        ("DENZO_X_BEAM", g(sb * 1000.0)), ("DENZO_Y_BEAM", g(fb * 1000)),
        ("DIALS_ORIGIN", f"{g(o[0])},{g(o[1])},{g(o[2])}", io.UNTERMINATED),
        ("XDS_ORGX", g(info["ORGX"])), ("XDS_ORGY", g(info["ORGY"])),
        ("CLOSE_DISTANCE", g(info["close_distance"] * 1000.0)),
        ("PHI", g(info["phi0"] * 180.0 / math.pi)), ("OSC_START", g(info["phi0"] * 180.0 / math.pi)),
        ("OSC_RANGE", g(info["osc"] * 180.0 / math.pi)),
        ("TWOTHETA", g(info["twotheta"] * 180.0 / math.pi)),
        ("DETECTOR_SN", "000"), ("BEAMLINE", "fake"), ("ADC_OFFSET", g(adc)),
    ]


def int_image(image32, scale, adc, active) -> np.ndarray:
    test = image32.astype(np.float64) * scale + adc
    test = np.clip(test, 0.0, 65535.0)
    vals = np.floor((test + 0.5).astype(np.float32)).astype(np.uint16)
    return np.where(active, vals, 0).astype(np.uint16)


def pgm_image(image32, scale, active) -> np.ndarray:
    test = np.minimum(image32.astype(np.float64) * scale, 255.0)
    return np.where(active, np.trunc(np.maximum(test, 0.0)), 0).astype(np.uint8)


def noise_image(image32, seed, adc, active, use_jax: bool = False):
    """``(counts uint16, photons drawn, overloads)`` of the noise image.

    ``seed`` is the C idum (``-seed S`` gives ``-S``). The default draws the reference's numbers
    (:func:`jaxbragg.noise.poisson_noise_c`); ``use_jax`` draws from ``jax.random.poisson`` with the key
    :func:`jaxbragg.noise.key_from_seed` of ``S`` (same distribution, different numbers).
    """
    if use_jax:
        import jax
        fn = jax.jit(noise.poisson_noise_jax)
        dev = np.asarray(fn(noise.key_from_seed(-seed), image32, active), dtype=np.float64)
    else:
        dev = noise.poisson_noise_c(image32, seed, active=active).astype(np.float64)
    photons = float(dev[active].sum())
    vals, overloads = noise.to_counts(dev, adc, active)
    return vals, photons, overloads


#: Fraction of rendered ROI pixels at or below the PNG preview's white level.
PNG_WHITE_PERCENTILE = 99.9


def png_white_level(image32, roi, mask) -> float:
    """The PNG preview's white level: the 99.9th percentile of the rendered ROI pixels.

    Falls back to the maximum when that percentile is not positive (a few bright pixels on a zero
    background), and to 1 for an image with nothing positive in it.
    """
    f0, f1, s0, s1 = roi
    win = np.asarray(image32, np.float64)[s0:s1 + 1, f0:f1 + 1]
    if mask is not None:
        win = win[np.asarray(mask)[s0:s1 + 1, f0:f1 + 1] != 0]
    vals = win[np.isfinite(win)].ravel()
    if vals.size == 0:
        return 1.0
    white = float(np.percentile(vals, PNG_WHITE_PERCENTILE))
    if not white > 0.0:
        white = float(vals.max())
    return white if white > 0.0 else 1.0


def png_image(image32, white, active) -> np.ndarray:
    """8-bit preview: ``round(255 * sqrt(clip(I / white, 0, 1)))``; 0 outside ``active``.

    The square root is the Poisson variance-stabilising transform: photon noise of the same size in
    bright and faint regions maps to about the same number of grey levels, so weak features (diffuse
    scattering, spot tails) stay visible while spots up to ``white`` keep their contrast.
    """
    x = np.nan_to_num(np.asarray(image32, np.float64) / float(white), nan=0.0, posinf=1.0, neginf=0.0)
    grey = np.rint(255.0 * np.sqrt(np.clip(x, 0.0, 1.0)))
    return np.where(active, grey, 0).astype(np.uint8)
