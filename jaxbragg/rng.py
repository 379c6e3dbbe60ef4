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
* ``mosaic_rotation_umat(float mosaicity, double umat[9], long *idum)`` --
  random rotation about a random axis by ``mosaicity * (1 - r^2)^(1/3)``.
* ``umat2misset(double umat[9], double *missets)`` -- rotation matrix to
  XYZ missetting angles.

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
from typing import Optional, Tuple

import numpy as np

__all__ = [
    "CRandom",
    "gammln",
    "idum_from_cli",
    "mosaic_rotation_umat",
    "umat2misset",
    "mosaic_umats",
    "mosaic_axes_angles",
    "random_misset",
    "random_misset_umat",
    "poisson_noise",
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


# ---------------------------------------------------------------------------
# orientation helpers
# ---------------------------------------------------------------------------

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


def mosaic_rotation_umat(mosaicity: float, rng: CRandom) -> np.ndarray:
    """C ``mosaic_rotation_umat``: random rotation on a cap of size ``mosaicity``.

    Args:
        mosaicity: cap size in radians; narrowed to float32 like the C's
            ``float`` parameter (90.0 covers the full sphere).
        rng: generator; consumes three ``ran1`` draws.

    Returns:
        (3, 3) float64 rotation matrix, row-major like the C's ``umat[9]``.
    """
    m = _f32(mosaicity)
    r1 = 2.0 * rng.ran1() - 1.0
    r2 = 2.0 * rng.ran1() - 1.0
    r3 = 2.0 * rng.ran1() - 1.0

    xyrad = math.sqrt(1.0 - r2 * r2)
    rot = _f32(m * powf(1.0 - r3 * r3, _THIRD_F32))

    v1 = xyrad * math.sin(math.pi * r1)
    v2 = xyrad * math.cos(math.pi * r1)
    v3 = r2

    c = math.cos(rot)
    omc = 1.0 - c
    s = math.sin(rot)
    a = omc * v1
    ab = a * v2
    sv3 = s * v3
    ac = a * v3
    sv2 = s * v2
    bc = omc * v2 * v3
    sv1 = s * v1
    return np.array(
        [
            [c + omc * (v1 * v1), ab - sv3, ac + sv2],
            [ab + sv3, c + omc * (v2 * v2), bc - sv1],
            [ac - sv2, bc + sv1, c + omc * (v3 * v3)],
        ],
        dtype=np.float64,
    )


def _unit_rows(r):
    out = []
    norms = []
    for x, y, z in r:
        m = math.sqrt(x * x + y * y + z * z)
        norms.append(m)
        if m > 0:
            x, y, z = x / m, y / m, z / m
        out.append([x, y, z])
    return out, norms


def _cross_unit(p, q):
    x = p[1] * q[2] - p[2] * q[1]
    y = p[2] * q[0] - p[0] * q[2]
    z = p[0] * q[1] - p[1] * q[0]
    m = math.sqrt(x * x + y * y + z * z)
    if m > 0:
        x, y, z = x / m, y / m, z / m
    return [x, y, z]


def umat2misset(umat) -> Tuple[float, float, float]:
    """C ``umat2misset``: rotation matrix to missetting angles (rotx, roty, rotz), radians."""
    u = np.asarray(umat, dtype=np.float64).reshape(3, 3)
    rows = [[float(v) for v in row] for row in u]
    rows, (mx, my, mz) = _unit_rows(rows)

    if mx >= 0 and my <= 0 and mz <= 0:
        rows[1] = [0.0, 1.0, 0.0]
        rows[2] = [0.0, 0.0, 1.0]
    if mx <= 0 and my >= 0 and mz <= 0:
        rows[0] = [1.0, 0.0, 0.0]
        rows[2] = [0.0, 0.0, 1.0]
    if mx <= 0 and my <= 0 and mz >= 0:
        rows[0] = [1.0, 0.0, 0.0]
        rows[1] = [0.0, 1.0, 0.0]

    # two passes of filling in missing rows from the other two
    for _ in range(2):
        xcy = _cross_unit(rows[0], rows[1])
        ycz = _cross_unit(rows[1], rows[2])
        zcx = _cross_unit(rows[2], rows[0])
        if mx <= 0:
            rows[0] = ycz
        if my <= 0:
            rows[1] = zcx
        if mz <= 0:
            rows[2] = xcy

    rows, _ = _unit_rows(rows)
    (uxx, uxy, _uxz), (uyx, uyy, _uyz), (uzx, uzy, uzz) = rows

    if uzx * uzx < 1.0:
        rotx = math.atan2(uzy, uzz)
        roty = math.atan2(-uzx, math.sqrt(uzy * uzy + uzz * uzz))
        rotz = math.atan2(uyx, uxx)
    else:
        rotx = math.atan2(1, 1) * 4
        roty = math.atan2(1, 1) * 2
        rotz = math.atan2(uxy, -uyy)
    return rotx, roty, rotz


def _prepare(seed: Optional[int], rng: Optional[CRandom]) -> CRandom:
    if rng is None:
        rng = CRandom(DEFAULT_MOSAIC_IDUM if seed is None else seed)
    elif seed is not None:
        rng.reseed(seed)
    return rng


def mosaic_umats(
    spread_rad: float,
    n_domains: int,
    seed: Optional[int] = DEFAULT_MOSAIC_IDUM,
    rng: Optional[CRandom] = None,
) -> np.ndarray:
    """The C's mosaic-domain loop.

    Args:
        spread_rad: mosaic spread in radians (``-mosaic`` degrees / RTD, a
            double in the C, narrowed to float32 at the call).
        n_domains: number of domains (>= 1).
        seed: C idum (``-mosaic_seed S`` gives ``-S``; default -12345678).
            ``None`` with ``rng`` given keeps ``rng.idum``.
        rng: optional shared :class:`CRandom` (statics shared like the C);
            its ``idum`` is left advanced.

    Returns:
        (n_domains, 3, 3) float64; domain 0 is the identity (its three draws
        are still consumed, as in the C).
    """
    rng = _prepare(seed, rng)
    n = int(n_domains)
    out = np.empty((n, 3, 3), dtype=np.float64)
    for d in range(n):
        out[d] = mosaic_rotation_umat(spread_rad, rng)
        if d == 0:
            out[0] = np.eye(3)
    return out


def random_misset_umat(seed: Optional[int], rng: Optional[CRandom] = None) -> np.ndarray:
    """The umat drawn by ``-misset random`` (``mosaic_rotation_umat(90.0, ...)``)."""
    rng = _prepare(seed, rng)
    return mosaic_rotation_umat(90.0, rng)


def random_misset(seed: Optional[int], rng: Optional[CRandom] = None) -> Tuple[float, float, float]:
    """The C's ``-misset random`` angles (rotx, roty, rotz) in radians.

    The cap size 90.0 is used as radians by the C (i.e. many full turns),
    which still yields a rotation about a uniformly random axis.

    Args:
        seed: C idum (``-misset_seed S`` gives ``-S``).
        rng: optional shared :class:`CRandom`.
    """
    return umat2misset(random_misset_umat(seed, rng))


# ---------------------------------------------------------------------------
# Poisson noise
# ---------------------------------------------------------------------------

class _BufferedRan1:
    """ran1 deviates served from blocks generated ahead by a CRandom.

    ``finish()`` rewinds the generator to the last block's start and replays
    exactly the consumed draws, so its state matches the C afterwards.
    """

    __slots__ = ("gen", "block", "buf", "pos", "snap")

    def __init__(self, gen: CRandom, block: int = 1 << 15):
        self.gen = gen
        self.block = block
        self.buf: list = []
        self.pos = 0
        self.snap = None

    def refill(self) -> None:
        g = self.gen
        self.snap = (g.idum, g.iy, list(g.iv))
        self.buf = _iy_to_uniform(g.ran1_ints(self.block)).tolist()
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
    rng: Optional[CRandom] = None,
    active=None,
) -> np.ndarray:
    """The C's noise loop: ``poidev(pixel, &seed)`` for every pixel in order.

    Args:
        image: photon image (any shape), taken in C order, i.e. the C's
            ``imgidx`` order (slow-major, fast-minor). Values are narrowed to
            float32 like the C's ``floatimage``.
        seed: C idum (``-seed S`` gives ``-S``). ``None`` with ``rng`` given
            keeps ``rng.idum``.
        rng: optional shared :class:`CRandom`; on return its state (idum,
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
        distance of the threshold, so results equal :meth:`CRandom.poidev`
        bit for bit; the other branches call the scalar port.
    """
    if rng is None:
        rng = CRandom(-1 if seed is None else seed)
    elif seed is not None:
        rng.reseed(seed)

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
    f32 = _f32
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
                    g = f32(_exp(-xm))
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
                res[i] = _poidev(rng, xm, stream)
                oldm, g = rng.oldm, rng.g
                buf, pos, nbuf = stream.buf, stream.pos, len(stream.buf)
        out[start:stop] = res

    stream.pos = pos
    stream.finish()
    rng.oldm, rng.g = oldm, g
    return out.reshape(shape)


def mosaic_axes_angles(
    spread_rad: float,
    n_domains: int,
    seed: Optional[int] = DEFAULT_MOSAIC_IDUM,
    rng: Optional[CRandom] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Axis and angle of each domain of :func:`mosaic_umats`, from the same draws.

    ``mosaic_rotation_umat`` builds a Rodrigues rotation about the unit axis
    ``v = (sqrt(1 - r2^2) sin(pi r1), sqrt(1 - r2^2) cos(pi r1), r2)`` by
    ``rot = mosaicity * (1 - r3^2)^(1/3)`` (float32, as in the C). Returning
    ``(v, rot)`` instead of the matrix lets a caller rescale every domain's
    angle, i.e. treat the spread as a continuous parameter with the domain
    directions fixed by the seed (``jaxbragg.parameters``).

    Args:
        spread_rad, n_domains, seed, rng: as for :func:`mosaic_umats`.

    Returns:
        ``(axes, angles)``: (n_domains, 3) unit axes and (n_domains,) angles
        in radians, float64. Domain 0 gets angle 0 (the C forces it to the
        identity); its axis is the one drawn.
    """
    rng = _prepare(seed, rng)
    n = int(n_domains)
    m = _f32(spread_rad)
    axes = np.empty((n, 3), dtype=np.float64)
    angles = np.empty(n, dtype=np.float64)
    for d in range(n):
        r1 = 2.0 * rng.ran1() - 1.0
        r2 = 2.0 * rng.ran1() - 1.0
        r3 = 2.0 * rng.ran1() - 1.0
        xyrad = math.sqrt(1.0 - r2 * r2)
        axes[d] = (xyrad * math.sin(math.pi * r1), xyrad * math.cos(math.pi * r1), r2)
        angles[d] = _f32(m * powf(1.0 - r3 * r3, _THIRD_F32))
    angles[0] = 0.0
    return axes, angles
