r"""Photon-counting noise for rendered images, and the conversion to detector counts.

The renderer returns the expected number of photons :math:`\lambda_i` in each pixel :math:`i`. A
measured image draws an independent Poisson count in every pixel,

.. math::

    N_i \sim \mathrm{Poisson}(\lambda_i), \qquad
    P(N_i = k) = \frac{\lambda_i^k e^{-\lambda_i}}{k!}, \qquad
    \mathrm{E}[N_i] = \mathrm{Var}[N_i] = \lambda_i ,

and the detector stores it as an unsigned 16-bit value

.. math::

    c_i = \big\lfloor \min\!\big(\max(N_i + \mathrm{adc},\ 0),\ 65535\big) \big\rfloor ,

where ``adc`` is the offset added by the read-out (``-adc``, default 40). A pixel with
:math:`N_i + \mathrm{adc} > 65535` is an *overload*: it is stored as 65535 and counted.

Two generators are provided:

* :func:`poisson_noise_c` reproduces nanoBragg.c bit for bit (its ``ran1``/``poidev`` port in
  :mod:`jaxbragg.rng`). The C draws the pixels one after the other from a single stream: for
  :math:`\lambda < 12` it multiplies uniforms until the product falls to :math:`e^{-\lambda}`; for
  :math:`12 \le \lambda \le 10^6` it uses rejection from a Lorentzian; above :math:`10^6` it takes
  :math:`\lambda + \sqrt{\lambda}\,g` with a Gaussian deviate :math:`g`. This is a host loop in Python
  (NumPy in and out, about one second per million low-count pixels) and cannot run under ``jit``.
* :func:`poisson_noise_jax` draws from ``jax.random.poisson``: the same distribution, but **not** the
  same numbers as the C. It is a pure function of a JAX key, so it runs on an accelerator and composes
  with ``jit`` and ``vmap`` (for example one noisy copy per key over a batch of keys).

:func:`to_counts` applies the offset, the clip and the truncation above to either kind of deviate.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import rng as _rng

__all__ = ["poisson_noise_c", "poisson_noise_jax", "to_counts", "key_from_seed", "MAX_COUNT"]

#: The largest value an unsigned 16-bit SMV pixel can hold.
MAX_COUNT = 65535


def poisson_noise_c(image, seed: int, active=None) -> np.ndarray:
    """Poisson deviates of ``image`` drawn exactly as nanoBragg.c draws them.

    Args:
        image: expected photons per pixel, any shape; read in C order (slow-major) and narrowed to
            float32, as the C's ``floatimage``.
        seed: the C's ``idum``: ``-seed S`` on the command line gives ``-S``
            (:func:`jaxbragg.rng.idum_from_cli`).
        active: optional boolean mask shaped like ``image``. Pixels where it is False (outside the
            ROI in the C) draw nothing and come back as 0, so the stream stays aligned with the C.

    Returns:
        float32 NumPy array shaped like ``image`` with the raw deviates (no offset, no clip).
    """
    return _rng.poisson_noise(np.asarray(image), seed, active=active)


def key_from_seed(seed: int):
    """A ``jax.random`` key from a command-line ``-seed`` value (taken modulo 2**32)."""
    import jax
    return jax.random.PRNGKey(int(seed) % (1 << 32))


def poisson_noise_jax(key, image, active=None):
    """Poisson deviates of ``image`` from ``jax.random.poisson`` (fast; not the C's numbers).

    Args:
        key: a ``jax.random`` key (e.g. from :func:`key_from_seed`).
        image: expected photons per pixel, any shape. Negative and NaN values are treated as 0
            (the C's ``poidev`` also returns 0 for a negative mean).
        active: optional boolean mask broadcastable to ``image``; deviates outside it are 0.

    Returns:
        A JAX array shaped like ``image`` holding whole numbers in ``image``'s floating dtype
        (float32 for integer input).

    Traceable: use it under ``jax.jit`` and ``jax.vmap`` (e.g. ``vmap`` over a batch of keys).
    """
    import jax
    import jax.numpy as jnp
    lam = jnp.asarray(image)
    dtype = jnp.result_type(lam.dtype, jnp.float32)
    lam = lam.astype(dtype)
    lam = jnp.where(lam > 0, lam, jnp.zeros((), dtype))   # also maps NaN to 0
    counts = jax.random.poisson(key, lam, shape=lam.shape).astype(dtype)
    if active is not None:
        counts = jnp.where(jnp.asarray(active, bool), counts, jnp.zeros((), dtype))
    return counts


def to_counts(photons, adc: float, active=None) -> Tuple[np.ndarray, int]:
    """Detector counts from photon deviates: add ``adc``, clip to [0, 65535], truncate.

    Args:
        photons: deviates (NumPy or JAX array, any shape), e.g. from :func:`poisson_noise_c` or
            :func:`poisson_noise_jax`.
        adc: offset added to every pixel (``-adc``).
        active: optional boolean mask; pixels outside it are 0 and never count as overloads.

    Returns:
        ``(counts, overloads)``: a uint16 NumPy array shaped like ``photons``, and the number of
        pixels whose ``photons + adc`` exceeded 65535. A NaN deviate gives 0.
    """
    test = np.asarray(photons, dtype=np.float64) + float(adc)
    over = test > MAX_COUNT
    vals = np.trunc(np.clip(np.nan_to_num(test, nan=0.0), 0.0, float(MAX_COUNT)))
    if active is not None:
        act = np.broadcast_to(np.asarray(active, bool), test.shape)
        over &= act
        vals = np.where(act, vals, 0.0)
    return vals.astype(np.uint16), int(np.count_nonzero(over))
