"""Lattice (crystal-shape) factors F_latt for a crystal of Na x Nb x Nc unit cells.

Corresponds to the ``xtal_shape`` branch of the nanoBragg.c inner loop and its helpers ``sincg``/``sinc3``.
With fractional Miller indices ``(h, k, l)``, nearest integers ``(h0, k0, l0)`` and ``N = (Na, Nb, Nc)``:

* square (parallelepiped): ``F = prod_i sincg(pi h_i, N_i)``, ``sincg(x, N) = sin(N x) / sin(x)``
  (``N`` at ``x = 0``); an axis with ``N_i <= 1`` contributes 1. Only ``F^2`` reaches the image, so we
  evaluate the equivalent ``|sin(pi N d) / sin(pi d)|`` on the reduced index ``d = h - round(h)`` (equal to
  the reference's value up to its sign, which ``F^2`` does not see), reducing ``N d`` once more so both sines
  are odd Taylor polynomials on ``[-pi/2, pi/2]``: no general range reduction, ~2 ulp accuracy in float64
  and float32 alike even for large ``h`` and ``N``, and a smooth, periodic extension to non-integer ``N``.
* round (ellipsoid): ``F = Na Nb Nc 0.723601254558268 sinc3(pi sqrt(fudge sum_i (h_i - h0_i)^2 N_i^2))`` with
  ``sinc3(x) = 3 (sin x / x - cos x) / x^2`` (1 at 0).
* gauss: ``F = Na Nb Nc exp(-fudge r*^2 / 0.63)``.
* tophat: ``F = Na Nb Nc`` where ``fudge r*^2 < 0.3969``, else 0.

For gauss and tophat ``r*^2 = |dh a* + dk b* + dl c*|^2 (Na Nb Nc)^2`` uses the phi = 0, mosaic-free
reciprocal vectors in 1/Angstrom, exactly as the reference does (a dimensional convention of the reference,
kept so that its images are reproduced).

Everything is written for one sample (scalars or any broadcastable shape) and is differentiable; the
removable singularities are guarded with ``where`` so gradients stay finite at integer indices.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SHAPES = ("square", "round", "gauss", "tophat")
_ROUND_NORM = 0.723601254558268


def sincg(x, n):
    """Grating function ``sin(n x) / sin(x)``, equal to ``n`` at ``x = 0`` (C ``sincg``)."""
    zero = x == 0.0
    xs = jnp.where(zero, 1.0, x)
    return jnp.where(zero, n, jnp.sin(xs * n) / jnp.sin(xs))


def sinc3(x):
    """Sphere transform ``3 (sin x / x - cos x) / x^2``, equal to 1 at ``x = 0`` (C ``sinc3``)."""
    zero = x == 0.0
    xs = jnp.where(zero, 1.0, x)
    return jnp.where(zero, 1.0, 3.0 * (jnp.sin(xs) / xs - jnp.cos(xs)) / (xs * xs))


# sin(pi r) = r * sum_k C_k (r^2)^k on |r| <= 1/2, for the reduced arguments of the lattice factor.
# float64: the polynomial of degree 8 in s = r^2 interpolating sin(pi sqrt(s)) / sqrt(s) at the 9
# Chebyshev nodes of [0, 1/4] (computed with 40-digit arithmetic): 3e-19 relative error, where a Taylor
# series needs 11 terms for the same
_SIN_PI = (3.141592653589793, -5.167712780049969, 2.5501640398773007, -0.5992645293189447,
           0.0821458865731029, -0.007370430505916944, 0.0004662998161898394, -2.1903497074626018e-05,
           7.697826768224191e-07)
# float32: degree 4 in s, fitted for minimax *relative* error (Lawson's iteration on 4001 points):
# 5.3e-9, far below float32 rounding; evaluated in float32 it errs by <= 1.8e-7, as 7 Taylor terms did
_SIN_PI_F32 = (3.1415926369104676, -5.16770968530328, 2.5500697302054447, -0.5982421310313284,
               0.0775603685550898)


def _even_series(r, coeffs):
    """``sum_k coeffs[k] r^(2k)`` by Horner's rule in ``r^2``."""
    s = r * r
    acc = jnp.full_like(r, coeffs[-1])
    for c in coeffs[-2::-1]:
        acc = acc * s + c
    return acc


def sin_pi(r):
    """``sin(pi r)`` for ``|r| <= 1/2`` by a Horner-evaluated odd polynomial (5 terms for float32)."""
    return r * _even_series(r, _SIN_PI if jnp.result_type(r) == jnp.float64 else _SIN_PI_F32)


def _limit(d):
    """Where ``d`` is so small that we take the ``d -> 0`` limit ``sincg = N``.

    sincg(pi d, N) = N (1 - (N^2 - 1) pi^2 d^2 / 6 + ...) equals N to far below an ulp there, and the
    product of three denominators (~(pi d)^3) stays clear of the subnormals that XLA:CPU flushes to zero
    (in float32 that flush turned the direct-beam pixel, d ~ 1e-15, into 0 / 0 = NaN).
    """
    tiny = 2.0 ** -300 if jnp.result_type(d) == jnp.float64 else 2.0 ** -40
    return jnp.abs(d) < tiny


_COS_PI = tuple((-1) ** k * math.pi ** (2 * k) / math.factorial(2 * k) for k in range(11))


def cos_pi(r):
    """``cos(pi r)`` for ``|r| <= 1/2`` by an even polynomial (used by the derivative of :func:`sin_pi`)."""
    return _even_series(r, _COS_PI if jnp.result_type(r) == jnp.float64 else _COS_PI[:8])


@jax.custom_jvp
def _sincg_parts(h, n):
    """Numerator and denominator of ``|sin(pi n h) / sin(pi h)|`` up to a common sign, on reduced arguments.

    With ``d = h - round(h)`` and ``u = n d``: ``num = sin(pi (u - round(u)))``, ``den = sin(pi d)``; the ratio
    is the reference's ``sincg(pi h, n)`` up to a sign (irrelevant: only ``F_latt^2`` is used). At ``d = 0``
    it is ``n / 1``, and so where :func:`_limit` holds.
    """
    d = h - jnp.round(h)
    u = n * d
    zero = _limit(d)
    num = jnp.where(zero, n, sin_pi(u - jnp.round(u)))
    den = jnp.where(zero, 1.0, sin_pi(d))
    return num, den


@_sincg_parts.defjvp
def _sincg_parts_jvp(primals, tangents):
    # analytic derivatives (num = sin(pi r), r = N d - round(N d); den = sin(pi d)): a few multiplies
    # per sample instead of differentiating the Horner chains, which keeps reverse mode cheap
    h, n = primals
    dh, dn = tangents
    d = h - jnp.round(h)
    u = n * d
    r = u - jnp.round(u)
    zero = _limit(d)
    num = jnp.where(zero, n, sin_pi(r))
    den = jnp.where(zero, 1.0, sin_pi(d))
    dnum = jnp.where(zero, dn, jnp.pi * cos_pi(r) * (n * dh + d * dn))
    dden = jnp.where(zero, 0.0, jnp.pi * cos_pi(jnp.where(zero, 0.0, d)) * dh)
    return (num, den), (dnum, dden)


def sincg_reduced(h, n):
    """``sin(pi n h) / sin(pi h)`` up to a sign, evaluated on the reduced index (see module docstring)."""
    num, den = _sincg_parts(h, n)
    return num / den


def _safe_sqrt(x):
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def lattice_factor(hkl, ncells, fudge, recip_A, shape):
    """Lattice factor for fractional indices ``hkl`` (see :func:`lattice_factor_reduced` for the arguments).

    Every shape depends on ``hkl`` only through the reduced index ``d = h - ceil(h - 1/2)``.
    """
    comps = list(hkl) if isinstance(hkl, (list, tuple)) else [hkl[..., i] for i in range(3)]
    return lattice_factor_reduced([x - jnp.ceil(x - 0.5) for x in comps], ncells, fudge, recip_A, shape)


def lattice_factor_reduced(dhkl, ncells, fudge, recip_A, shape):
    """Lattice factor for fractional indices.

    Args:
      dhkl: reduced indices ``h - h0`` in [-1/2, 1/2], a sequence (dh, dk, dl) of equally shaped arrays.
      ncells: [3] (Na, Nb, Nc), may be non-integer.
      fudge: scalar shape fudge factor (round, gauss, tophat).
      recip_A: [3, 3] rows a*, b*, c* in 1/Angstrom (used by gauss and tophat only).
      shape: one of ``SHAPES`` (static).

    Returns:
      F_latt [...].
    """
    comps = list(dhkl)
    if shape == "square":
        num = den = 1.0
        for i in range(3):
            n_i, d_i = _sincg_parts(comps[i], ncells[i])
            flat = ncells[i] <= 1.0
            num = num * jnp.where(flat, 1.0, n_i)
            den = den * jnp.where(flat, 1.0, d_i)
        return num / den
    dh = comps
    nprod = ncells[0] * ncells[1] * ncells[2]
    if shape == "round":
        hrad_sqr = sum(dh[i] * dh[i] * ncells[i] * ncells[i] for i in range(3))
        return nprod * _ROUND_NORM * sinc3(jnp.pi * _safe_sqrt(hrad_sqr * fudge))
    dstar = [dh[0] * recip_A[0, j] + dh[1] * recip_A[1, j] + dh[2] * recip_A[2, j] for j in range(3)]
    rad_star_sqr = (dstar[0] ** 2 + dstar[1] ** 2 + dstar[2] ** 2) * nprod * nprod
    if shape == "gauss":
        return nprod * jnp.exp(-(rad_star_sqr / 0.63 * fudge))
    if shape == "tophat":
        return jnp.where(rad_star_sqr * fudge < 0.3969, nprod, 0.0)
    raise ValueError(f"unknown crystal shape {shape!r}; expected one of {SHAPES}")
