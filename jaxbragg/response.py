r"""The detector response as pure JAX functions: PSF, gain, offset, calibration, flicker, noise, likelihood.

A detector turns the expected photons per pixel :math:`\lambda_i` (what :func:`jaxbragg.simulate.simulate`
renders) into a recorded image in ADU. The model follows the order of noisify.c:

.. math::

    \lambda'_i = \lambda_i\,(1 + \sigma_f\,\epsilon)\,(1 + \sigma_c\,c_i), \qquad
    N_i \sim \mathrm{Poisson}(\lambda'_i), \qquad
    M = K * N, \qquad
    y_i = g\,M_i + a + \sigma_r\,\eta_i ,

with a per-shot flicker deviate :math:`\epsilon`, a static per-pixel calibration map :math:`c_i`, the
point-spread function :math:`K` (Gaussian or fibre-optic, integrated over each pixel), the gain
:math:`g` (ADU/photon), the ADC offset :math:`a` (ADU) and read-out noise :math:`\sigma_r\eta_i` (ADU);
:math:`\epsilon, c_i, \eta_i` are unit normal deviates.

PSF kernels (``fwhm`` in pixels, offsets :math:`(d_x, d_y)` in pixels, the PSF integrated over the pixel):

* Gaussian: :math:`K = \tfrac14\,[E(d_x+\tfrac12) - E(d_x-\tfrac12)]\,[E(d_y+\tfrac12) - E(d_y-\tfrac12)]`,
  :math:`E(u) = \mathrm{erf}(u\sqrt{\ln 16}/\mathrm{fwhm})`;
* fibre: the pixel integral of :math:`g / (2\pi (g^2 + r^2)^{3/2})`, i.e. the corner differences of
  :math:`F(x, y) = \arctan(x y / (g \sqrt{g^2 + x^2 + y^2})) / 2\pi`, :math:`g = 0.652383013252053\,\mathrm{fwhm}`.

Both can be cut to the disc :math:`d_x^2 + d_y^2 \le r^2` as noisify does; the fraction beyond the radius
(Gaussian :math:`e^{-\ln 16\,r^2/\mathrm{fwhm}^2}`, fibre :math:`g/\sqrt{g^2 + r^2}`, noisify's formulas)
can be added back uniformly over the image (``lost="uniform"``, noisify's rule), renormalised into the
kernel (``lost="renormalize"``) or dropped (``lost="none"``). :func:`apply_psf` convolves by FFT with zero
padding (a linear convolution, photons leave at the edges): differentiable in ``fwhm``, any radius, jit
and vmap-able. It agrees with noisify's per-pixel direct sum where that reduces to a convolution (a fixed
``-psf_radius``, targets away from the edges; see specs/noisify.md for the measured agreement). The
bit-exact port of the C, with its own rules, is :mod:`jaxbragg.response_c`.

Likelihood (:func:`poisson_gaussian_nll`). The exact law of :math:`y = g N + a + \sigma_r \eta` is a
Poisson mixture of Gaussians, a sum over :math:`N`. The usual approximation (Snyder, Hammoud & White,
J. Opt. Soc. Am. A 10, 1014, 1993) shifts the observation so that a Poisson law matches its first two
moments: :math:`x_i = (y_i - a)/g + \sigma_r^2/g^2 \sim \mathrm{Poisson}(\mu_i + \sigma_r^2/g^2)`,
:math:`\mu_i` the expected photons. It is exact for :math:`\sigma_r = 0` and good once
:math:`\sigma_r/g \gtrsim 1` or :math:`\mu \gtrsim 10`; ``method="gaussian"`` uses the moment-matched
normal law instead (mean :math:`g\mu + a`, variance :math:`g^2\mu + \sigma_r^2`). Both ignore the
correlation between neighbours that a PSF applied after photon counting introduces.

Everything here is a plain function of arrays (``jit`` is the caller's); shapes are static arguments
(``radius``, ``kind``). Keys are ``jax.random`` keys; the model's calibration map has its own key, so it
is independent of the shot noise (in noisify the two seeds share generator state; see specs/noisify.md).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.scipy.special import erf, gammaln

from .noise import poisson_noise_jax

__all__ = ["FIBER_G", "psf_kernel", "tail_fraction", "convolve_fft", "apply_psf", "calibration_map",
           "flicker_factor", "poisson", "readout_noise", "to_adu", "quantize", "Response",
           "expected_adu", "detector_image", "poisson_gaussian_nll", "DetectorNLL", "detector_nll"]

#: Fibre PSF ``g`` per unit FWHM (noisify.c's constant).
FIBER_G = 0.652383013252053
_SQRT_LN16 = math.sqrt(math.log(16.0))


def psf_kernel(fwhm, radius: int, kind: str = "gauss", disc: bool = True):
    """The PSF integrated over each pixel, ``[2r+1, 2r+1]`` indexed ``[dy + r, dx + r]``.

    Args:
      fwhm: full width at half maximum in pixels (traced; differentiable).
      radius: half-width ``r`` in pixels (static).
      kind: ``"gauss"`` or ``"fiber"`` (static).
      disc: zero the entries outside ``dx^2 + dy^2 <= r^2`` (noisify's cut).
    """
    r = int(radius)
    fwhm = jnp.asarray(fwhm)
    dtype = jnp.result_type(fwhm.dtype, jnp.float32)
    d = jnp.arange(-r, r + 1, dtype=dtype)
    if kind == "gauss":
        s = _SQRT_LN16 / fwhm
        one = 0.5 * (erf((d + 0.5) * s) - erf((d - 0.5) * s))     # 1-D pixel integrals, sum 1
        k = one[:, None] * one[None, :]
    elif kind == "fiber":
        g = FIBER_G * fwhm
        c = jnp.arange(-r, r + 2, dtype=dtype) - 0.5
        X, Y = c[None, :], c[:, None]
        F = jnp.arctan(X * Y / (g * jnp.sqrt(g * g + X * X + Y * Y))) / (2.0 * math.pi)
        k = F[1:, 1:] - F[:-1, 1:] - F[1:, :-1] + F[:-1, :-1]
    else:
        raise ValueError(f"unknown PSF kind {kind!r}; expected 'gauss' or 'fiber'")
    if disc:
        k = jnp.where(d[:, None] ** 2 + d[None, :] ** 2 <= r * r, k, 0.0)
    return k


def tail_fraction(fwhm, radius: int, kind: str = "gauss"):
    """Fraction of a unit source noisify counts as lost beyond ``radius`` (its formulas, not the kernel's sum)."""
    fwhm = jnp.asarray(fwhm)
    if kind == "gauss":
        return jnp.exp(-math.log(16.0) * (radius / fwhm) ** 2)
    g = FIBER_G * fwhm
    return g / jnp.sqrt(g * g + radius * radius)


def convolve_fft(image, kernel):
    """Linear (zero-padded) 2-D convolution ``out[y, x] = sum k[dy, dx] image[y - dy, x - dx]``, same shape.

    The kernel is centred (odd sizes); photons that would land outside the image are lost.
    """
    image = jnp.asarray(image)
    kh, kw = kernel.shape
    h, w = image.shape[-2:]
    fh, fw = h + kh - 1, w + kw - 1
    spec = jnp.fft.rfft2(image, s=(fh, fw)) * jnp.fft.rfft2(kernel, s=(fh, fw))
    full = jnp.fft.irfft2(spec, s=(fh, fw))
    ry, rx = kh // 2, kw // 2
    return full[..., ry:ry + h, rx:rx + w].astype(image.dtype)


def apply_psf(image, fwhm, radius: int, kind: str = "gauss", lost: str = "uniform", disc: bool = True):
    """Blur ``image`` [..., H, W] by the PSF (FFT convolution).

    Args:
      image: photons per pixel.
      fwhm: PSF FWHM in pixels (differentiable).
      radius: kernel half-width in pixels (static; any size).
      kind: ``"gauss"`` or ``"fiber"``.
      lost: what happens to the fraction beyond ``radius``: ``"uniform"`` (noisify: its total, by
        :func:`tail_fraction`, spread evenly over the image), ``"renormalize"`` (the kernel is scaled to
        sum 1) or ``"none"``.
      disc: cut the kernel to a disc (noisify) rather than a square.
    """
    image = jnp.asarray(image)
    k = psf_kernel(fwhm, radius, kind, disc).astype(image.dtype)
    if lost == "renormalize":
        k = k / jnp.sum(k)
    out = convolve_fft(image, k)
    if lost == "uniform":
        n = image.shape[-1] * image.shape[-2]
        total = jnp.sum(jnp.where(image > 0, image, 0.0), axis=(-2, -1), keepdims=True)
        out = out + (total * tail_fraction(fwhm, radius, kind) / n).astype(image.dtype)
    elif lost not in ("none", "renormalize"):
        raise ValueError(f"unknown lost={lost!r}; expected 'uniform', 'renormalize' or 'none'")
    return out


def calibration_map(key, shape, sigma, dtype=jnp.float32):
    """Static per-pixel gain error ``1 + sigma * N(0, 1)`` (a detector property: keep its key fixed)."""
    return 1.0 + sigma * jax.random.normal(key, shape, dtype)


def flicker_factor(key, sigma, dtype=jnp.float32):
    """Per-shot source intensity factor ``1 + sigma * N(0, 1)`` (a scalar; noisify draws one per pixel)."""
    return 1.0 + sigma * jax.random.normal(key, (), dtype)


def poisson(key, lam):
    """Poisson photon counts of mean ``lam`` (``jax.random``; negative means count as 0)."""
    return poisson_noise_jax(key, lam)


def readout_noise(key, shape, sigma, dtype=jnp.float32):
    """Gaussian read-out noise in ADU."""
    return sigma * jax.random.normal(key, shape, dtype)


def to_adu(photons, gain, adc):
    """Signal in ADU: ``gain * photons + adc``."""
    return gain * photons + adc


def quantize(adu, bits: int = 16):
    """Stored pixel values: ``floor`` clipped to ``[0, 2**bits - 1]`` (32-bit: to ``2**31 - 1`` as noisify).

    Unlike the C, which wraps negative values (``(unsigned short)-3`` is 65533), the model clips at 0.
    """
    top = 65535.0 if bits == 16 else 2147483647.0
    return jnp.floor(jnp.clip(adu, 0.0, top))


class Response(NamedTuple):
    """Detector-response parameters (a pytree of arrays: every field can be traced and differentiated).

    Units: ``fwhm`` pixels, ``gain`` ADU/photon, ``adc`` ADU, ``readout`` ADU (rms), ``flicker`` and
    ``calibration`` fractional rms, ``scale`` photons per input unit.
    """
    fwhm: float = 0.0
    gain: float = 1.0
    adc: float = 40.0
    readout: float = 0.0
    flicker: float = 0.0
    calibration: float = 0.0
    scale: float = 1.0


def expected_adu(photons, resp: Response, radius: int = 0, kind: str = "gauss", calib=None,
                 lost: str = "uniform"):
    """The noise-free mean image in ADU: ``gain * PSF(scale * calib * photons) + adc``.

    ``radius = 0`` (or ``resp.fwhm`` of 0 with a radius) skips the PSF; ``calib`` is a calibration map
    (e.g. from :func:`calibration_map`) or None.
    """
    lam = resp.scale * jnp.asarray(photons)
    if calib is not None:
        lam = lam * calib
    if radius > 0:
        lam = apply_psf(lam, resp.fwhm, radius, kind, lost)
    return to_adu(lam, resp.gain, resp.adc)


def detector_image(key, photons, resp: Response, radius: int = 0, kind: str = "gauss",
                   calib_key=None, lost: str = "uniform", bits: Optional[int] = 16,
                   flicker_per_pixel: bool = False):
    """One simulated detector image in noisify's order: flicker, calibration, Poisson, PSF, gain/offset,
    read-out noise, then (``bits`` not None) quantisation.

    Args:
      key: ``jax.random`` key of this shot (flicker, Poisson, read-out).
      photons: expected photons per pixel [..., H, W] (before ``resp.scale``).
      resp: :class:`Response` parameters.
      radius, kind, lost: PSF (``radius = 0``: none).
      calib_key: key of the detector's calibration map (fixed across shots); None: no calibration error.
      bits: 16 or 32 to return stored integers (as floats), None for the continuous ADU values.
      flicker_per_pixel: draw the flicker factor for every pixel, as noisify does, instead of once per
        shot (a fluctuation of the source, the model's default).

    Traceable; ``vmap`` over keys gives a stack of shots.
    """
    k_flick, k_poi, k_read = jax.random.split(key, 3)
    lam = resp.scale * jnp.asarray(photons)
    dtype = jnp.result_type(lam.dtype, jnp.float32)
    if flicker_per_pixel:
        lam = lam.astype(dtype) * (1.0 + resp.flicker * jax.random.normal(k_flick, lam.shape, dtype))
    else:
        lam = lam.astype(dtype) * flicker_factor(k_flick, resp.flicker, dtype)
    if calib_key is not None:
        lam = lam * calibration_map(calib_key, lam.shape[-2:], resp.calibration, dtype)
    counts = poisson(k_poi, lam)
    if radius > 0:
        counts = apply_psf(counts, resp.fwhm, radius, kind, lost)
    adu = to_adu(counts, resp.gain, resp.adc) + readout_noise(k_read, counts.shape, resp.readout, dtype)
    return adu if bits is None else quantize(adu, bits)


def poisson_gaussian_nll(observed_adu, mu, gain=1.0, adc=0.0, readout=0.0, method: str = "shifted_poisson"):
    """Negative log-likelihood of an ADU image given the expected photons ``mu`` (summed over pixels).

    Args:
      observed_adu: recorded pixel values (ADU).
      mu: expected photons per pixel, after the PSF (>= 0).
      gain: ADU per photon; adc: offset (ADU); readout: read-out noise rms (ADU).
      method: ``"shifted_poisson"`` (default; Snyder et al. 1993, see the module docstring) or
        ``"gaussian"`` (moment-matched normal law).

    Returns:
      A scalar; constants that do not depend on ``mu``, ``gain``, ``adc`` or ``readout`` are kept, so
      values of different parameters compare (the shifted form includes ``log gain``, the Jacobian of
      ``x = (y - adc)/gain``).
    """
    y = jnp.asarray(observed_adu)
    mu = jnp.asarray(mu)
    if method == "shifted_poisson":
        s2 = (readout / gain) ** 2
        x = jnp.maximum((y - adc) / gain + s2, 0.0)
        m = jnp.maximum(mu + s2, 1e-30)
        return jnp.sum(m - x * jnp.log(m) + gammaln(x + 1.0) + jnp.log(jnp.abs(gain)))
    if method == "gaussian":
        var = gain * gain * jnp.maximum(mu, 0.0) + readout * readout
        var = jnp.maximum(var, 1e-30)
        r = y - (gain * mu + adc)
        return jnp.sum(0.5 * (r * r / var + jnp.log(2.0 * math.pi * var)))
    raise ValueError(f"unknown method {method!r}; expected 'shifted_poisson' or 'gaussian'")


class DetectorNLL(NamedTuple):
    """A :func:`jaxbragg.fit.fit` loss: the detector likelihood of an observed ADU image.

    ``loss(model, observed)`` with ``model`` the expected photons of the fitted pixels (background
    included) and ``observed`` their ADU values (pass an array, or an SMV path with ``adc_offset=0`` so
    that the fit does not subtract the offset); :meth:`expected` maps a model to the observation it
    predicts (used by the fit for its information matrix).
    """
    gain: float = 1.0
    adc: float = 40.0
    readout: float = 0.0
    method: str = "shifted_poisson"

    def __call__(self, model, observed):
        return poisson_gaussian_nll(observed, model, self.gain, self.adc, self.readout, self.method)

    def expected(self, model):
        return self.gain * model + self.adc


def detector_nll(gain=1.0, adc=40.0, readout=0.0, method: str = "shifted_poisson") -> DetectorNLL:
    """The fit loss for an ADU image recorded with ``gain``, ``adc`` and ``readout`` (see :class:`DetectorNLL`)."""
    return DetectorNLL(float(gain), float(adc), float(readout), method)
