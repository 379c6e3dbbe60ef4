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

* :func:`poisson_noise_c` reproduces nanoBragg.c bit for bit (:func:`poisson_noise`, the C's noise loop
  over the ``ran1``/``poidev`` port of :mod:`jaxbragg.rng`). The C draws the pixels one after the other from a single stream: for
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

__all__ = ["poisson_noise", "poisson_noise_c", "poisson_noise_jax", "to_counts", "key_from_seed", "MAX_COUNT"]

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
    return poisson_noise(np.asarray(image), seed, active=active)


# ---------------------------------------------------------------------------------------------------
# the C's noise loop, bit for bit (host side)
# ---------------------------------------------------------------------------------------------------

class _BufferedRan1:
    """ran1 deviates served from blocks generated ahead by a CRandom.

    ``finish()`` rewinds the generator to the last block's start and replays
    exactly the consumed draws, so its state matches the C afterwards.
    """

    __slots__ = ("gen", "block", "buf", "pos", "snap")

    def __init__(self, gen: _rng.CRandom, block: int = 1 << 15):
        self.gen = gen
        self.block = block
        self.buf: list = []
        self.pos = 0
        self.snap = None

    def refill(self) -> None:
        g = self.gen
        self.snap = (g.idum, g.iy, list(g.iv))
        self.buf = _rng._iy_to_uniform(g.ran1_ints(self.block)).tolist()
        self.pos = 0

    def __call__(self) -> float:
        if self.pos >= len(self.buf):
            self.refill()
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def finish(self) -> None:
        if self.snap is not None:
            g = self.gen
            g.idum, g.iy, g.iv = self.snap[0], self.snap[1], list(self.snap[2])
            g.ran1_ints(self.pos)
            self.snap = None
            self.buf, self.pos = [], 0


_NOISE_BLOCK = 1 << 16


def poisson_noise(
    image,
    seed: Optional[int],
    rng: Optional[_rng.CRandom] = None,
    active=None,
) -> np.ndarray:
    """The C's noise loop: ``poidev(pixel, &seed)`` for every pixel in order.

    Args:
        image: photon image (any shape), taken in C order, i.e. the C's
            ``imgidx`` order (slow-major, fast-minor). Values are narrowed to
            float32 like the C's ``floatimage``.
        seed: C idum (``-seed S`` gives ``-S``). ``None`` with ``rng`` given
            keeps ``rng.idum``.
        rng: optional shared :class:`~jaxbragg.rng.CRandom`; on return its state (idum,
            shuffle table and the poidev/gaussdev statics) equals the C's
            after the loop.
        active: optional boolean mask of the same size; pixels where it is
            False (outside the ROI in the C) are skipped without drawing and
            come back as 0.

    Returns:
        float32 array shaped like ``image`` holding the raw deviates (the
        caller adds ``adc_offset`` and clips at 65535).

    Note:
        Host-side Python loop, roughly 1 s per million low-count pixels. For
        ``xm < 12`` the product of uniforms is tracked in double precision and
        only re-done in exact float32 steps when it falls within rounding
        distance of the threshold, so results equal :meth:`jaxbragg.rng.CRandom.poidev`
        bit for bit; the other branches call the scalar port.
    """
    rng = _rng.generator(seed, rng, -1)

    img = np.asarray(image)
    shape = img.shape
    flat = img.astype(np.float32).ravel()
    n = flat.size
    if active is None:
        act_flat = None
    else:
        act_flat = np.asarray(active, dtype=bool).ravel()
        if act_flat.size != n:
            raise ValueError("active mask size does not match image")

    stream = _BufferedRan1(rng)
    out = np.zeros(n, dtype=np.float32)
    f32 = _rng._f32
    tol = 2.0 ** -22  # >= 4x the float32 rounding drift per multiplication
    oldm, g = rng.oldm, rng.g
    buf, pos, nbuf = stream.buf, stream.pos, len(stream.buf)

    # Python lists are fast to index but cost ~60 bytes a pixel: walk the image in blocks so a large
    # detector's noise stays within a few tens of MB
    for start in range(0, n, _NOISE_BLOCK):
        stop = min(start + _NOISE_BLOCK, n)
        vals = flat[start:stop].astype(np.float64).tolist()
        act = None if act_flat is None else act_flat[start:stop].tolist()
        res = [0.0] * (stop - start)
        for i in range(stop - start):
            if act is not None and not act[i]:
                continue
            xm = vals[i]
            if xm < 12.0:
                if xm != oldm:
                    oldm = xm
                    g = f32(_rng._exp(-xm))
                t = 1.0
                k = 0
                used = []
                while True:
                    if pos >= nbuf:
                        stream.pos = pos
                        stream.refill()
                        buf, pos, nbuf = stream.buf, 0, len(stream.buf)
                    u = buf[pos]
                    pos += 1
                    k += 1
                    t *= u
                    if t > g * (1.0 + k * tol):
                        used.append(u)
                        continue
                    if t <= g * (1.0 - k * tol):
                        break
                    # too close to call: replay this pixel in exact float32 steps
                    used.append(u)
                    tt = 1.0
                    for v in used:
                        tt = f32(tt * v)
                    while tt > g:
                        if pos >= nbuf:
                            stream.pos = pos
                            stream.refill()
                            buf, pos, nbuf = stream.buf, 0, len(stream.buf)
                        tt = f32(tt * buf[pos])
                        pos += 1
                        k += 1
                    break
                res[i] = k - 1.0
            else:
                stream.pos = pos
                rng.oldm, rng.g = oldm, g
                res[i] = _rng._poidev(rng, xm, stream)
                oldm, g = rng.oldm, rng.g
                buf, pos, nbuf = stream.buf, stream.pos, len(stream.buf)
        out[start:stop] = res

    stream.pos = pos
    stream.finish()
    rng.oldm, rng.g = oldm, g
    return out.reshape(shape)


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
