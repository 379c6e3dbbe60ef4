"""Image statistics and output files exactly as nanoBragg.c writes them.

* float image: raw float32, fast-major.
* SMV ``-intfile``: ``value = floor(float * scale + adc + 1/2)`` clipped to [0, 65535]; ``scale`` is
  ``-scale`` or ``55000 / max`` (1 when the image is empty); ``adc`` defaults to 40.
* PGM ``-pgmfile``: ``byte = trunc(min(float * pgmscale, 255))``; ``pgmscale`` is ``-pgmscale`` or
  ``250 / (5 rmsd)`` (the int scale when rmsd is 0).
* SMV ``-noisefile``: Poisson deviates of the float image from the reference's generator seeded by
  ``-seed``, plus ``adc``, truncated; values above 65535 are clipped and counted as overloads.

Only pixels inside the ROI are converted; the rest stay 0. Statistics follow the reference: the mean and
RMS over rendered (unmasked) ROI pixels, the RMSD about that mean over every ROI pixel.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from .. import io, rng
from ..io.smv import format_g as g

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


def noise_image(image32, seed, adc, active):
    dev = rng.poisson_noise(image32, seed, active=active).astype(np.float64)
    photons = float(dev[active].sum())
    test = dev + adc
    overloads = int(np.count_nonzero(active & (test > 65535.0)))
    vals = np.where(active, np.trunc(np.clip(test, 0.0, 65535.0)), 0).astype(np.uint16)
    return vals, photons, overloads
