"""Bit-faithful port of the random-number routines of the reference nanoBragg.c.

The reference C program draws every random quantity it needs from a small
family of Numerical-Recipes style routines:

* ``ran1(long *idum)`` -- Park & Miller minimal-standard LCG (Schrage's method)
  with a 32-entry Bays-Durham shuffle table. The shuffle table ``iv`` and the
  last output ``iy`` are *static*, i.e. shared by every caller in the process,
  while the LCG state ``idum`` belongs to the caller. The table is reloaded
  whenever ``*idum <= 0`` (or before the very first call); a non-positive
  ``idum`` is replaced by ``max(1, -idum)`` at that moment.
* ``gaussdev(long *idum)`` -- polar Box-Muller normal deviate, with the static
  spare deviate (``iset``/``gset``).
* ``poidev(float xm, long *idum)`` -- Poisson deviate: product of uniforms for
  ``xm < 12``, Lorentzian rejection for ``12 <= xm <= 1e6`` and
  ``xm + sqrt(xm) * gaussdev`` above 1e6. Its cache (``oldm``, ``g``, ``sq``,
  ``alxm``) is static.
* ``gammln(float xx)`` -- Lanczos log-gamma, evaluated in double, returned as
  float.
* ``powf`` -- libm's single-precision power (used by the orientation draws).

Layout: this module is the generator itself. The draws built on it live next
to their physics: the mosaic-domain and random-misset orientations
(``mosaic_rotation_umat``, ``umat2misset``, ...) in :mod:`jaxbragg.orientation`,
the C's noise loop (``poisson_noise``) in :mod:`jaxbragg.noise`; both names stay
importable from here.

float32 behaviour:
    Most of these routines return C ``float`` and keep several intermediates
    in ``float`` variables, so the exact bit patterns depend on where the C
    rounds to single precision. This port reproduces each rounding point:

    * ``ran1`` computes ``AM * iy`` in double and rounds it to float32 (the
      ``temp`` variable); the cap test against ``RNMX = 1 - 1.2e-7`` is done
      in double and the cap itself is returned as float32.
    * In ``gaussdev``/``poidev`` every expression whose operands are all
      ``float`` is evaluated in single precision (x86-64 SSE,
      ``FLT_EVAL_METHOD == 0``, no FMA contraction), while any expression that
      touches a double constant or a libm double function (``exp``, ``log``,
      ``tan``, ``sqrt``) is evaluated in double and rounded when it is stored
      into a ``float`` variable. ``xm`` itself is a float parameter.
    * ``gammln`` takes a float argument (``em + 1.0`` is computed in double and
      narrowed at the call), works in double and narrows its result.
    * ``mosaic_rotation_umat`` receives ``mosaicity`` as float; the random
      deviates ``r = 2*ran1 - 1`` are double, but the rotation angle is
      ``mosaicity * powf((float)(1 - r3*r3), (float)(1/3))`` in single
      precision, then widened to double for the matrix algebra.

    Single-precision results of ``+ - * /`` and ``sqrt`` on float32 operands
    are obtained by evaluating in Python double and rounding once to float32,
    which is exact for these operations (double has more than 2*24+2 bits).
    The transcendental functions come from Python's ``math`` module, i.e. the
    platform libm that the C program also links against, and ``powf`` is
    called from that libm through ``ctypes`` (numpy's float32 power differs
    from glibc's ``powf`` in the last bit for ~15% of arguments). Parity is
    therefore bit-exact on glibc/x86-64 for a C binary built without
    ``-ffast-math`` or FMA contraction.

All scalars handed back by the float-returning routines are Python floats
holding exactly representable float32 values.

This module runs outside ``jit``; it is a host-side setup step (orientation
matrices, missetting angles) or post-processing (Poisson noise).

Seeds:
    Every ``seed`` argument below is the C ``idum`` value itself. The C's
    command line negates its argument, so ``-seed S``, ``-mosaic_seed S`` and
    ``-misset_seed S`` all become ``idum = -S`` (see :func:`idum_from_cli`).
    The default mosaic idum is ``-12345678``; the defaults of ``seed`` and
    ``misset_seed`` are ``-time(NULL)`` in the C (note that ``-seed`` does not
    change the misset default).
"""

from __future__ import annotations

import math
import struct
from typing import Optional

import numpy as np

__all__ = [
    "CRandom",
    "gammln",
    "idum_from_cli",
    "generator",
    "powf",
    "DEFAULT_MOSAIC_IDUM",
]

# ran1 constants (Park-Miller minimal standard with Schrage factorisation).
IA = 16807
IM = 2147483647
AM = 1.0 / IM
IQ = 127773
IR = 2836
NTAB = 32
NDIV = 1 + (IM - 1) // NTAB
EPS = 1.2e-7
RNMX = 1.0 - EPS

DEFAULT_MOSAIC_IDUM = -12345678

_F32 = struct.Struct("<f")
_pack = _F32.pack
_unpack = _F32.unpack


def _f32(x: float) -> float:
    """Round a Python float to the nearest float32, returned as a Python float."""
    try:
        return _unpack(_pack(x))[0]
    except OverflowError:  # beyond float32 range: C conversion gives +-inf
        return float(np.float32(x))


RNMX_F32 = _f32(RNMX)

# Lanczos coefficients used by gammln.
_GAMMLN_COF = (
    76.18009172947146,
    -86.50532032941677,
    24.01409824083091,
    -1.231739572450155,
    0.1208650973866179e-2,
    -0.5395239384953e-5,
)


def gammln(xx: float) -> float:
    """C ``gammln``: ln(Gamma(xx)) for a float argument, float result."""
    x = _f32(xx)
    y = x
    tmp = x + 5.5
    tmp -= (x + 0.5) * math.log(tmp)
    ser = 1.000000000190015
    for c in _GAMMLN_COF:
        y += 1.0
        ser += c / y
    return _f32(-tmp + math.log(2.5066282746310005 * ser / x))


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncation toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def idum_from_cli(value) -> int:
    """Map a command-line seed (``-seed S`` etc.) to the C's idum (``-atoi(S)``)."""
    return -int(value)


class CRandom:
    """One C process' worth of random-generator state.

    Holds the statics of ``ran1`` (shuffle table ``iv`` and ``iy``), of
    ``gaussdev`` (``iset``/``gset``) and of ``poidev`` (``oldm``, ``g``,
    ``sq``, ``alxm``), plus the current LCG state :attr:`idum`.

    The C keeps one ``long`` seed variable per use (misset, mosaic, noise) but
    shares the statics; to replay a whole C run with one object, assign
    :attr:`idum` before each phase (or use :meth:`reseed`) and read it back
    afterwards. With the usual negative seeds the shuffle table is reloaded
    at the start of each phase, so a fresh object per phase is equivalent.

    Args:
        idum: initial C idum value (non-positive forces a table reload on the
            next draw, as in the C).

    Attributes:
        idum: the caller-owned C seed/LCG state (``long``).
        iv, iy: ran1's static shuffle table (32 ints) and last output.
        iset, gset: gaussdev's static spare-deviate flag and value.
        oldm, g, sq, alxm: poidev's static cache (float32 values).
    """

    def __init__(self, idum: int = -1):
        self.idum = int(idum)
        self.iy = 0
        self.iv = [0] * NTAB
        # gaussdev statics
        self.iset = 0
        self.gset = 0.0
        # poidev statics
        self.oldm = -1.0
        self.g = 0.0
        self.sq = 0.0
        self.alxm = 0.0

    def reseed(self, idum: int) -> "CRandom":
        """Set the caller-owned idum (statics are kept, like in the C)."""
        self.idum = int(idum)
        return self

    # ------------------------------------------------------------------ ran1
    def _load_table(self) -> None:
        idum = self.idum
        idum = 1 if -idum < 1 else -idum
        iv = self.iv
        for j in range(NTAB + 7, -1, -1):
            k = _cdiv(idum, IQ)
            idum = IA * (idum - k * IQ) - IR * k
            if idum < 0:
                idum += IM
            if j < NTAB:
                iv[j] = idum
        self.iy = iv[0]
        self.idum = idum

    def _step(self) -> int:
        """One LCG + shuffle step on an already loaded table; returns iy."""
        idum = self.idum
        k = _cdiv(idum, IQ)
        idum = IA * (idum - k * IQ) - IR * k
        if idum < 0:
            idum += IM
        self.idum = idum
        j = _cdiv(self.iy, NDIV)
        iy = self.iv[j]
        self.iv[j] = idum
        self.iy = iy
        return iy

    def ran1(self) -> float:
        """C ``ran1``: uniform deviate in (0, 1), float32 value."""
        if self.idum <= 0 or not self.iy:
            self._load_table()
        temp = _f32(AM * self._step())
        if temp > RNMX:
            return RNMX_F32
        return temp

    def ran1_ints(self, n: int) -> np.ndarray:
        """Advance ran1 ``n`` times, returning the raw ``iy`` integers (int64).

        Equivalent to ``n`` calls of :meth:`ran1` (state included); use
        :func:`_iy_to_uniform` to turn them into the float32 deviates.
        """
        n = int(n)
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        if self.idum <= 0 or not self.iy:
            self._load_table()
        idum, iy = self.idum, self.iy
        if not (0 < idum < IM and 0 < iy < IM):
            # unusual user-supplied state: use the general scalar path
            out = np.empty(n, dtype=np.int64)
            for i in range(n):
                if i and (self.idum <= 0 or not self.iy):
                    self._load_table()
                out[i] = self._step()
            return out
        iv = self.iv
        out = [0] * n
        for i in range(n):
            k = idum // IQ
            idum = IA * (idum - k * IQ) - IR * k
            if idum < 0:
                idum += IM
            j = iy // NDIV
            iy = iv[j]
            iv[j] = idum
            out[i] = iy
        self.idum, self.iy = idum, iy
        return np.asarray(out, dtype=np.int64)

    def ran1_array(self, n: int) -> np.ndarray:
        """``n`` consecutive :meth:`ran1` values as a float32 array."""
        return _iy_to_uniform(self.ran1_ints(n)).astype(np.float32)

    # -------------------------------------------------------------- gaussdev
    def gaussdev(self) -> float:
        """C ``gaussdev``: unit normal deviate (float32), with static spare."""
        return _gaussdev(self, self.ran1)

    # ---------------------------------------------------------------- poidev
    def poidev(self, xm: float) -> float:
        """C ``poidev``: Poisson deviate of mean ``xm`` (float32 in and out)."""
        return _poidev(self, xm, self.ran1)


def _exp(x: float) -> float:
    """libm ``exp`` with C overflow semantics (inf instead of an exception)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _gaussdev(st: CRandom, draw) -> float:
    """gaussdev body; ``st`` carries the statics, ``draw`` yields ran1 values."""
    if st.iset == 0:
        while True:
            v1 = _f32(2.0 * draw() - 1.0)
            v2 = _f32(2.0 * draw() - 1.0)
            rsq = _f32(_f32(v1 * v1) + _f32(v2 * v2))
            if not (rsq >= 1.0 or rsq == 0.0):
                break
        fac = _f32(math.sqrt(-2.0 * math.log(rsq) / rsq))
        st.gset = _f32(v1 * fac)
        st.iset = 1
        return _f32(v2 * fac)
    st.iset = 0
    return st.gset


def _poidev(st: CRandom, xm: float, draw) -> float:
    """poidev body; ``st`` carries the statics, ``draw`` yields ran1 values."""
    xm = _f32(xm)
    if xm > 1.0e6:
        return _f32(xm + math.sqrt(xm) * _gaussdev(st, draw))
    if xm < 12.0:
        if xm != st.oldm:
            st.oldm = xm
            st.g = _f32(_exp(-xm))
        g = st.g
        em = -1.0
        t = 1.0
        while True:
            em += 1.0
            t = _f32(t * draw())
            if not t > g:
                break
        return em
    # rejection method (also reached by NaN)
    if xm != st.oldm:  # NaN never compares equal: recomputed every call, as in C
        st.oldm = xm
        st.sq = _f32(math.sqrt(2.0 * xm))
        st.alxm = _f32(math.log(xm))
        st.g = _f32(_f32(xm * st.alxm) - gammln(_f32(xm + 1.0)))
    sq, alxm, g = st.sq, st.alxm, st.g
    while True:
        while True:
            y = _f32(math.tan(math.pi * draw()))
            em = _f32(_f32(sq * y) + xm)
            if not em < 0.0:
                break
        if math.isfinite(em):
            em = float(math.floor(em))
        arg = _f32(_f32(_f32(em * alxm) - gammln(_f32(em + 1.0))) - g)
        t = _f32(0.9 * (1.0 + _f32(y * y)) * _exp(arg))
        if not draw() > t:
            break
    return em


def _iy_to_uniform(iy: np.ndarray) -> np.ndarray:
    """Map raw ran1 ``iy`` integers to the C's float32 outputs (as float64)."""
    temp = (AM * np.asarray(iy, dtype=np.float64)).astype(np.float32).astype(np.float64)
    return np.where(temp > RNMX, RNMX_F32, temp)


_THIRD_F32 = _f32(1.0 / 3.0)


def _load_powf():
    """glibc's single-precision ``powf`` via ctypes, or None if unavailable."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("m") or "libm.so.6"
        fn = ctypes.CDLL(name).powf
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float, ctypes.c_float]
        if fn(8.0, _THIRD_F32) != _f32(2.0):  # sanity check
            return None
        return fn
    except Exception:  # pragma: no cover - non-glibc platforms
        return None


_LIBM_POWF = _load_powf()


def powf(x: float, y: float) -> float:
    """C ``powf`` on float32 arguments, float32 result (as Python float).

    Uses the platform libm's ``powf`` (bit-exact with the C on the same
    libm). numpy's float32 power is *not* used: it differs from glibc in the
    last bit for roughly 15% of inputs. Without a loadable libm this falls
    back to a double-precision ``pow`` rounded to float32, which agrees with
    glibc for all but ~0.1% of inputs (1 ulp).
    """
    x = _f32(x)
    y = _f32(y)
    if _LIBM_POWF is not None:
        return float(_LIBM_POWF(x, y))
    try:
        return _f32(math.pow(x, y))
    except (ValueError, OverflowError):
        return float(np.power(np.float32(x), np.float32(y)))


def generator(seed: Optional[int], rng: Optional[CRandom], default: int) -> CRandom:
    """The generator a routine draws from: ``rng`` reseeded to ``seed`` (kept as it is when ``seed`` is
    ``None``), or a fresh :class:`CRandom` at ``seed`` (``default`` when ``None``)."""
    if rng is None:
        return CRandom(default if seed is None else seed)
    if seed is not None:
        rng.reseed(seed)
    return rng


# The orientation draws and the C-exact noise loop live in their own modules; these names stay
# importable from here for existing callers (PEP 562, resolved on first use: no import cycle).
_MOVED = {
    "mosaic_rotation_umat": "orientation", "umat2misset": "orientation", "mosaic_umats": "orientation",
    "mosaic_axes_angles": "orientation", "random_misset": "orientation", "random_misset_umat": "orientation",
    "poisson_noise": "noise",
}


def __getattr__(name):
    if name in _MOVED:
        import importlib
        return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
