r"""noisify.c's detector response, ported for bit parity (NumPy, host side, outside ``jit``).

This is the reference's own algorithm, kept separate from the differentiable model of
:mod:`jaxbragg.response`. Every function here reproduces a routine of noisify.c in the C's order of
operations and precision; the golden images of ``shared/golden_companions/noisify_*`` are identical.

Draws (:func:`noise_loop_c`, :func:`readout_c`). noisify keeps two C seeds, ``seed`` (``-seed S`` gives
``-S``) and ``calib_seed`` (``-calib_seed S`` gives ``-S``, default ``123456789``), but ``ran1``'s
shuffle table and ``gaussdev``'s spare deviate are statics shared by both. Per pixel, in order:

1. flicker: ``photons *= 1 + flicker * gaussdev(&seed)`` (when ``flicker > 0``),
2. calibration: ``photons *= 1 + calibration * gaussdev(&calib_seed)`` (when ``calibration > 0``),
3. ``photons = poidev(photons, &seed)``;

then the PSF over the whole image, then per pixel ``adu += readout * gaussdev(&seed)``. With flicker on,
the calibration draw mostly takes the spare left by the flicker draw (so ``-calib_seed`` barely
matters); without it, calibration draws interleave with ``poidev``'s variable number of draws. This
module replays exactly those calls with :class:`jaxbragg.rng.CRandom` (its ``gaussdev``/``poidev``,
with ``ran1`` switched between the two seeds).

PSF (:func:`apply_psf_c`): ``apply_psf`` is a per-pixel direct sum, not a convolution. Each source
pixel with a positive value spreads ``value * kernel[dx, dy]`` over a disc of radius ``r`` (``-psf_radius``,
or per pixel from its own value when that is 0: Gaussian ``1 + ceil(sqrt(log(10 sqrt(I)) / log 16) fwhm)``,
fibre ``1 + ceil(10 g sqrt(I))``), the fraction beyond ``r`` is summed over the image and added back
uniformly, the output accumulates in float32 in source order, and a target one column past the right
edge lands on the first pixel of the next row (the C tests ``x > xpixels``). The kernel is the PSF
integrated over each pixel: Gaussian ``(erf)·(erf)`` differences, fibre ``atan`` differences of
``g / (2 pi (g^2 + r^2)^{3/2})`` with ``g = 0.652383013252053 fwhm``. The sum is vectorised over source
pixels, one kernel offset at a time in the order that keeps every target's additions in the C's order.
"""
from __future__ import annotations

import math
import struct
from typing import Callable, Optional

import numpy as np

from .rng import CRandom, poisson_noise

__all__ = ["FIBER_G", "psf_kernel_c", "apply_psf_c", "noise_loop_c", "readout_c", "adu_to_uint", "c_int",
           "TwoSeedRandom"]

#: g of the fibre PSF per unit FWHM, as noisify.c writes it (fwhm = 2 sqrt(2**(2/3) - 1) g).
FIBER_G = 0.652383013252053
INT_MIN = -(2 ** 31)
_IM = 2147483647
_AM = 1.0 / _IM
_RNMX = 1.0 - 1.2e-7
_F32 = struct.Struct("<f")


def _f32(x: float) -> float:
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:          # beyond the float32 range: the C's conversion gives +-inf
        return float(np.float32(x))


_RNMX_F32 = _f32(_RNMX)


def c_int(x: float) -> int:
    """C ``(int)x`` on x86-64: truncation; NaN and out-of-range give INT_MIN (``cvttsd2si``)."""
    if not math.isfinite(x) or not (-2147483649.0 < x < 2147483648.0):
        return INT_MIN
    return int(x)


# ----------------------------------------------------------------------------------------- draws

class TwoSeedRandom(CRandom):
    """:class:`jaxbragg.rng.CRandom` whose ``ran1`` draws from one of two caller-owned seeds.

    The shuffle table, ``gaussdev``'s spare and ``poidev``'s cache stay shared, as the statics of the C.
    Set :attr:`stream` (0 = ``seed``, 1 = ``calib_seed``) before each call; :attr:`idums` holds both
    seeds' current values.
    """

    def __init__(self, seed: int, calib_seed: int):
        super().__init__(seed)
        self.idums = [int(seed), int(calib_seed)]
        self.stream = 0

    def ran1(self) -> float:
        s = self.stream
        idum = self.idums[s]
        iy = self.iy
        if 0 < idum < _IM and iy:          # the common case: no table reload, plain LCG step
            idum = idum * 16807 % _IM
            iv = self.iv
            j = iy >> 26                   # iy // NDIV, NDIV = 2**26
            self.iy = iy = iv[j]
            iv[j] = idum
            self.idums[s] = idum
            temp = _F32.unpack(_F32.pack(_AM * iy))[0]
            return _RNMX_F32 if temp > _RNMX else temp
        self.idum = idum                   # first draw of a seed: the C's reload rules
        value = CRandom.ran1(self)
        self.idums[s] = self.idum
        return value


def noise_loop_c(photons, seed: int, calib_seed: int, flicker: float, calibration: float,
                 rng: Optional[CRandom] = None, progress: Optional[Callable[[int], None]] = None):
    """noisify's per-pixel loop: flicker, calibration, Poisson, in the C's order of draws.

    Args:
        photons: expected photons per pixel (float32 values, C order = slow-major).
        seed, calib_seed: the C idums (``-seed S`` gives ``-S``; the calibration default is 123456789).
        flicker, calibration: the fractional noise levels (``-flicker``, ``-calibration``); 0 skips the draw.
        rng: generator carrying the statics (a fresh one when None); on return it holds the C's state
            after the loop, with ``rng.idum`` the ``seed`` stream (the readout draws continue from it).
        progress: called with the number of pixels done, now and then.

    Returns:
        ``(counts, calib_idum)``: float32 Poisson deviates shaped like ``photons`` and the final
        ``calib_seed`` idum.
    """
    img = np.asarray(photons, dtype=np.float32)
    if rng is None:
        rng = CRandom(seed)
    else:
        rng.idum = int(seed)
    if not flicker > 0.0 and not calibration > 0.0:
        # one stream only: the blocked single-seed loop of jaxbragg.rng, called on consecutive parts
        # of the image (the generator carries over, so this equals one call) to report progress
        flat = img.ravel()
        out = np.empty(flat.size, dtype=np.float32)
        step = 1 << 18
        for start in range(0, flat.size, step):
            out[start:start + step] = poisson_noise(flat[start:start + step], None, rng=rng)
            if progress is not None:
                progress(min(start + step, flat.size))
        return out.reshape(img.shape), int(calib_seed)
    two = TwoSeedRandom(seed, calib_seed)
    _copy_statics(rng, two)
    flat = img.ravel().astype(np.float64).tolist()
    out = _two_stream_loop(flat, float(flicker), float(calibration), two, progress)
    _copy_statics(two, rng)
    rng.idum = two.idums[0]
    return np.asarray(out, dtype=np.float32).reshape(img.shape), two.idums[1]


_LCG_BLOCK = 1 << 14
_POWERS = []


def _lcg_block(idum: int, n: int) -> np.ndarray:
    """The next ``n`` states of the minimal-standard LCG after ``idum`` (0 < idum < IM), vectorised:
    ``idum * 16807**(k+1) mod IM`` (Schrage's method computes exactly this product modulo IM)."""
    if not _POWERS or len(_POWERS[0]) < n:
        pw = np.empty(n, dtype=np.int64)
        pw[0] = 16807
        k = 1
        while k < n:
            m = min(k, n - k)
            pw[k:k + m] = (pw[:m] * pw[k - 1]) % _IM      # 16807**(j+1) * 16807**k, below 2**62
            k += m
        _POWERS[:] = [pw]
    return (idum * _POWERS[0][:n]) % _IM


def _uniform(iy: np.ndarray) -> np.ndarray:
    t = (_AM * iy.astype(np.float64)).astype(np.float32).astype(np.float64)
    return np.where(t > _RNMX, _RNMX_F32, t)


def _refresh(iv, before, tab_u, tab_v) -> None:
    """Recompute the uniforms of the shuffle-table entries that changed since ``before``."""
    for j in range(len(iv)):
        if iv[j] != before[j]:
            t = _f32(_AM * iv[j])
            tab_u[j] = _RNMX_F32 if t > _RNMX else t
            tab_v[j] = _f32(2.0 * tab_u[j] - 1.0)


def _two_stream_loop(flat, flick, calib, two, progress):
    """The per-pixel loop of :func:`noise_loop_c` with two seeds, fast: identical draws to
    ``TwoSeedRandom`` (the tests replay it call by call). Each seed's LCG states, their float32
    uniforms and ``2u - 1`` values are computed ahead in NumPy blocks; the shuffle table carries the
    three side by side, so a draw is a few list operations. Rare branches (a seed's first draw,
    ``poidev`` at 12 photons or more) go through the ``CRandom`` methods on synchronised state.
    """
    pk, up = _F32.pack, _F32.unpack          # float32 rounding: up(pk(x))[0], inlined for speed
    exp, log, sqrt = math.exp, math.log, math.sqrt
    iv = two.iv
    tab_u = _uniform(np.asarray(iv, np.int64)).tolist()
    tab_v = [_f32(2.0 * u - 1.0) for u in tab_u]
    cur = [two.iy]
    gstate = [two.iset, two.gset]

    def make(s):
        blk = {"L": [], "U": [], "V": [], "pos": 0, "n": 0}

        def ready():
            return 0 < two.idums[s] < _IM and cur[0] != 0

        def refill():
            L = _lcg_block(two.idums[s], _LCG_BLOCK)
            U = _uniform(L)
            V = (2.0 * U - 1.0).astype(np.float32).astype(np.float64)
            blk.update(L=L.tolist(), U=U.tolist(), V=V.tolist(), pos=0, n=len(L), base=two.idums[s])

        def sync_out():          # the stream's consumed state into ``two``
            if blk["pos"]:
                two.idums[s] = blk["L"][blk["pos"] - 1]
            two.iy = cur[0]

        def realign():           # ``two`` advanced this seed: skip the block to its new state
            new, pos, L = two.idums[s], blk["pos"], blk["L"]
            if (pos and L[pos - 1] == new) or (not pos and blk.get("base") == new):
                return
            for q in range(pos, min(blk["n"], pos + 256)):
                if L[q] == new:
                    blk["pos"] = q + 1
                    return
            blk.update(L=[], U=[], V=[], pos=0, n=0)       # e.g. a table reload: start a new block

        def slow(want_v):
            sync_out()
            before = list(iv)
            two.stream = s
            u = two.ran1()       # TwoSeedRandom: the C's reload rules on the first draw of a seed
            cur[0] = two.iy
            _refresh(iv, before, tab_u, tab_v)
            realign()
            return _f32(2.0 * u - 1.0) if want_v else u

        def draw(want_v):
            pos = blk["pos"]
            if pos >= blk["n"]:
                if not ready():
                    return slow(want_v)
                sync_out()
                refill()
                pos = 0
            j = cur[0] >> 26
            cur[0] = iv[j]
            val = tab_v[j] if want_v else tab_u[j]
            iv[j] = blk["L"][pos]
            tab_u[j] = blk["U"][pos]
            tab_v[j] = blk["V"][pos]
            blk["pos"] = pos + 1
            return val
        return draw, sync_out, realign

    draw0, sync0, realign0 = make(0)
    draw1, sync1, realign1 = make(1)

    def gauss(draw):
        if gstate[0]:
            gstate[0] = 0
            return gstate[1]
        while True:
            v1 = draw(True)
            v2 = draw(True)
            rsq = up(pk(up(pk(v1 * v1))[0] + up(pk(v2 * v2))[0]))[0]
            if rsq < 1.0 and rsq != 0.0:
                break
        fac = up(pk(sqrt(-2.0 * log(rsq) / rsq)))[0]
        gstate[0], gstate[1] = 1, up(pk(v1 * fac))[0]
        return up(pk(v2 * fac))[0]

    tol = 2.0 ** -22
    oldm, gexp = two.oldm, two.g
    n = len(flat)
    out = [0.0] * n
    block = 1 << 16
    for start in range(0, n, block):
        for i in range(start, min(start + block, n)):
            p = flat[i]
            if flick > 0.0:
                p *= 1.0 + flick * gauss(draw0)
            if calib > 0.0:
                p *= 1.0 + calib * gauss(draw1)
            xm = up(pk(p))[0] if -3e38 < p < 3e38 else _f32(p)
            if xm < 12.0:
                if xm != oldm:
                    oldm = xm
                    gexp = up(pk(exp(-xm)))[0] if xm > -88.0 else _f32(exp(-xm) if xm > -709.0 else math.inf)
                # product of uniforms in double; exact float32 replay only near the threshold
                t = 1.0
                used = []
                while True:
                    u = draw0(False)
                    used.append(u)
                    t *= u
                    k = len(used)
                    if t > gexp * (1.0 + k * tol):
                        continue
                    if t <= gexp * (1.0 - k * tol):
                        break
                    tt = 1.0
                    for v in used:
                        tt = _f32(tt * v)
                    while tt > gexp:
                        u = draw0(False)
                        used.append(u)
                        tt = _f32(tt * u)
                    break
                out[i] = len(used) - 1.0
            else:
                sync0()
                sync1()
                two.iset, two.gset = gstate
                two.oldm, two.g = oldm, gexp
                before = list(iv)
                two.stream = 0
                out[i] = two.poidev(p)
                cur[0] = two.iy
                gstate[0], gstate[1] = two.iset, two.gset
                oldm, gexp = two.oldm, two.g
                _refresh(iv, before, tab_u, tab_v)
                realign0()
                realign1()
        if progress is not None:
            progress(min(start + block, n))
    sync0()
    sync1()
    two.iset, two.gset = gstate
    two.oldm, two.g = oldm, gexp
    return out


def _copy_statics(src: CRandom, dst: CRandom) -> None:
    dst.iy, dst.iv = src.iy, list(src.iv)
    dst.iset, dst.gset = src.iset, src.gset
    dst.oldm, dst.g, dst.sq, dst.alxm = src.oldm, src.g, src.sq, src.alxm


def readout_c(n: int, rng: CRandom) -> np.ndarray:
    """``n`` consecutive ``gaussdev(&seed)`` values (float32), vectorised; ``rng`` is left as the C's.

    The polar Box-Muller pairs are accepted in order from blocks of ``ran1`` values; each accepted pair
    gives ``v2 * fac`` then the spare ``v1 * fac``. A spare already held by ``rng`` comes first.
    """
    n = int(n)
    out = np.empty(n, dtype=np.float32)
    done = 0
    if n and rng.iset:
        out[0] = rng.gset
        rng.iset = 0
        done = 1
    while done < n:
        need = n - done
        pairs = int((need + 1) // 2 / 0.78 * 1.02) + 16
        snap = (rng.idum, rng.iy, list(rng.iv))
        u = rng.ran1_array(2 * pairs).astype(np.float64)
        v1 = (2.0 * u[0::2] - 1.0).astype(np.float32)
        v2 = (2.0 * u[1::2] - 1.0).astype(np.float32)
        rsq = v1 * v1 + v2 * v2                  # float32 products and sum, as the C's floats
        ok = ~((rsq >= 1.0) | (rsq == 0.0))
        idx = np.flatnonzero(ok)
        take = min(len(idx), -(-need // 2))      # accepted pairs needed
        idx = idx[:take]
        r = rsq[idx].astype(np.float64)
        logs = np.array([math.log(v) for v in r.tolist()])      # libm's log, as the C
        fac = np.sqrt(-2.0 * logs / r).astype(np.float32)
        first = v2[idx] * fac                    # returned
        spare = v1[idx] * fac                    # kept in gset
        seq = np.empty(2 * take, dtype=np.float32)
        seq[0::2], seq[1::2] = first, spare
        m = min(need, 2 * take)
        out[done:done + m] = seq[:m]
        done += m
        # rewind and replay the draws actually consumed, so the generator state matches the C
        used = 2 * (int(idx[-1]) + 1) if take else 2 * pairs
        rng.idum, rng.iy, rng.iv = snap[0], snap[1], snap[2]
        rng.ran1_ints(used)
        if take:                                 # the C's gset keeps the last spare, used or not
            rng.gset = float(spare[-1])
            rng.iset = 1 if m == 2 * take - 1 else 0
    return out


def adu_to_uint(adu: np.ndarray, bits: int) -> np.ndarray:
    """C ``(unsigned int)`` / ``(unsigned short)`` of double values on x86-64 (after the caller's clamps).

    ``(unsigned int)x`` truncates to a 64-bit integer and keeps the low 32 bits; ``(unsigned short)x``
    truncates to a 32-bit integer and keeps the low 16 bits; a value out of that range (or NaN) converts
    to the "integer indefinite" 0x80...0, whose low bits are 0. So -3.7 becomes 4294967293 / 65533.
    """
    a = np.asarray(adu, dtype=np.float64)
    t = np.trunc(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0))
    if bits == 32:
        ok = np.abs(t) < 2.0 ** 63
        return np.where(ok, t, 0).astype(np.int64).astype(np.uint32)
    ok = (t >= -2.0 ** 31) & (t < 2.0 ** 31)
    return np.where(ok, t, 0).astype(np.int64).astype(np.uint16)


# ------------------------------------------------------------------------------------------- PSF

def psf_kernel_c(kind: str, fwhm_pixels: float, radius: int) -> np.ndarray:
    """The C's cached PSF kernel, ``(2r+1, 2r+1)`` float64 indexed ``[dy + r, dx + r]``.

    Each entry is the PSF integrated over a unit pixel at offset ``(dx, dy)`` (``integrate_gauss_over_pixel``
    / ``integrate_fiber_over_pixel``), 0 outside the disc ``dx^2 + dy^2 <= r^2``. libm's ``erf``/``atan``
    are called through :mod:`math` and every product is taken in the C's order, so values are bit-equal.
    """
    r = int(radius)
    d = np.arange(-r, r + 1, dtype=np.float64)
    fw = float(fwhm_pixels)
    if kind == "gauss":
        # ngauss2D_integ(x, y) = 0.125 * (erf(2 x sqrt(log 2)) * erf(y sqrt(log 16)) * sqrt(log 16 / log 2))
        pix = 1.0 / fw
        half = pix / 2.0
        x = d / fw
        sy = math.sqrt(math.log(16.0))
        c = math.sqrt(math.log(16.0) / math.log(2.0))
        ex_p = np.array([math.erf(2.0 * (v + half) * math.sqrt(math.log(2.0))) for v in x])
        ex_m = np.array([math.erf(2.0 * (v - half) * math.sqrt(math.log(2.0))) for v in x])
        ey_p = np.array([math.erf((v + half) * sy) for v in x])
        ey_m = np.array([math.erf((v - half) * sy) for v in x])

        def integ(ex, ey):   # [dy, dx] grid of 0.125 * (erf(x) * erf(y) * c)
            return 0.125 * ((ex[None, :] * ey[:, None]) * c)
        k = integ(ex_p, ey_p) - integ(ex_p, ey_m) - integ(ex_m, ey_p) + integ(ex_m, ey_m)
    elif kind == "fiber":
        g = fw * FIBER_G
        corners = np.arange(-r, r + 2, dtype=np.float64) - 0.5      # dx - 1/2 ... dx + 1/2
        gg = g * g
        F = np.array([[math.atan((X * Y) / (g * math.sqrt(gg + X * X + Y * Y))) / 2.0 / math.pi
                       for X in corners] for Y in corners])          # [Y, X]
        # F(x+, y+) - F(x+, y-) - F(x-, y+) + F(x-, y-)
        k = F[1:, 1:] - F[:-1, 1:] - F[1:, :-1] + F[:-1, :-1]
    else:
        raise ValueError(f"unknown PSF kind {kind!r}; expected 'gauss' or 'fiber'")
    dd = d[:, None] ** 2 + d[None, :] ** 2
    return np.where(dd > r * r, 0.0, k)


def _auto_radius(kind: str, value: float, fwhm: float, g: float) -> int:
    lost = math.sqrt(value) / 10.0
    if kind == "gauss":
        arg = -math.log(lost / value) / math.log(16.0)
        x = 1.0 + math.ceil(math.sqrt(arg) * fwhm) if arg >= 0.0 else math.nan
    else:
        x = 1.0 + math.ceil(g * (value / lost))
    return c_int(x)


def apply_psf_c(image, kind: str, fwhm_pixels: float, user_radius: int = 0,
                log: Callable[[str], None] = lambda s: None,
                progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """noisify.c's ``apply_psf``: the blurred float32 image (same shape).

    Args:
        image: (slow, fast) photons per pixel, narrowed to float32 like the C's ``float *``.
        kind: ``"gauss"`` or ``"fiber"``.
        fwhm_pixels: FWHM in pixels (``psf_fwhm / pixel``, a double).
        user_radius: ``-psf_radius`` (0 = automatic per pixel; negative: the C's loops render nothing
            and only the "lost" fraction is added back).
        log: receives the C's messages (auto-selected radius, lost photons), one line each.
        progress: ``progress(done, total)`` over the kernel offsets.
    """
    a2 = np.ascontiguousarray(image, dtype=np.float32)
    yp, xp = a2.shape
    a = a2.ravel()
    pixels = a.size
    fw = float(fwhm_pixels)
    g = fw * FIBER_G
    if pixels == 0 or not fw > 0.0:
        return a2.copy()
    maxwidth = max(xp, yp)
    if user_radius <= 0:
        max_i = float(np.max(a)) if pixels else 0.0
        max_i = max(max_i, 0.0)
        log(f"  maximum input photon/pixel: {max_i:g}")
        if max_i <= 0.0:
            log("WARNING: no photons, PSF skipped")
            return np.zeros_like(a2)
        lost = math.sqrt(max_i) / 10.0
        if kind == "gauss":
            arg = -math.log(lost / max_i) / math.log(4.0) / 2.0
            big = c_int(1.0 + math.ceil(math.sqrt(arg) * fw) if arg >= 0.0 else math.nan)
        else:
            big = c_int(1.0 + math.ceil(g * (max_i / lost)))
        log(f"  auto-selected psf_radius = {big} pixels")
        if big == 0:
            big = 1
    else:
        big = int(user_radius)
    big = min(big, maxwidth)

    # per-source radius and lost fraction, in source order (a cache: noise images repeat values)
    pos = np.flatnonzero(a > 0.0)
    vals = a[pos].astype(np.float64).tolist()
    radii = np.empty(len(vals), dtype=np.int64)
    lost_list = [0.0] * len(vals)
    cache = {}
    for n, v in enumerate(vals):
        hit = cache.get(v)
        if hit is None:
            if user_radius != 0:
                r = int(user_radius)
            else:
                r = _auto_radius(kind, v, fw, g)
            if r == 0:
                r = 1
            r = min(r, maxwidth)
            if kind == "gauss":
                rsq = float(r) / fw
                rsq = rsq * rsq
                lo = v * math.exp(-math.log(16.0) * rsq)
            else:
                rr = (r * r + 2 ** 31) % 2 ** 32 - 2 ** 31        # C int product (wraps)
                lo = v * g / math.sqrt(g * g + rr)
            hit = cache[v] = (r, lo)
        radii[n], lost_list[n] = hit
    total_lost = 0.0
    for lo in lost_list:
        total_lost += lo

    out = np.zeros(pixels, dtype=np.float32)
    if big > 0 and len(pos) and user_radius >= 0:
        kernel = psf_kernel_c(kind, fw, big)
        _direct_sum(a, pos, radii, kernel, big, xp, yp, out, progress)
    per_pixel = total_lost / pixels
    log(f"adding back {total_lost:g} lost photons")
    out = (out.astype(np.float64) + per_pixel).astype(np.float32)
    return out.reshape(yp, xp)


def _direct_sum(a, pos, radii, kernel, big, xp, yp, out, progress):
    """Accumulate ``out[i + dy*xp + dx] += a[i] * kernel`` exactly as the C's source-order loop.

    For one target the C adds its contributions in increasing source index ``i = j - o`` with
    ``o = dy*xp + dx``; so offsets are applied one at a time in decreasing ``o`` (ties, possible when the
    radius reaches half the width, by increasing ``dx`` as the C's ``dx``-outer loop), each as one
    vectorised float32 add over all its sources (their targets are distinct).
    """
    pixels = xp * yp
    offs = []
    for dy in range(-big, big + 1):
        for dx in range(-big, big + 1):
            k = kernel[dy + big, dx + big]
            if k == 0.0 or dx * dx + dy * dy > big * big:
                continue
            offs.append((-(dy * xp + dx), dx, dy, float(k)))
    offs.sort()
    r2 = np.where(radii > 0, radii * radii, -1)        # a negative (C: NaN) radius renders nothing
    uniform = bool(np.all(radii == big)) if len(radii) else True
    order = np.argsort(-r2, kind="stable")
    src = pos[order]
    r2s = r2[order]
    neg_r2s = -r2s
    x0s = src % xp
    y0s = src // xp
    as64 = a[src].astype(np.float64)
    dense_a = np.zeros(pixels, dtype=np.float64)
    dense_a[pos] = a[pos]
    dense_a = dense_a.reshape(yp, xp)
    out2 = out.reshape(yp, xp)
    r2img = None
    if not uniform:
        r2img = np.full(pixels, -1, dtype=np.int64)
        r2img[pos] = r2
        r2img = r2img.reshape(yp, xp)
    total = len(offs)
    for n, (_, dx, dy, k) in enumerate(offs):
        d2 = dx * dx + dy * dy
        m = int(np.searchsorted(neg_r2s, -d2, side="right"))    # sources with r^2 >= d2
        if m == 0:
            continue
        if m * 4 >= pixels:
            src_a = dense_a if uniform else np.where(r2img >= d2, dense_a, 0.0)
            _dense_pass(src_a, dx, dy, k, xp, yp, out2)
        else:
            x = x0s[:m] + dx
            y = y0s[:m] + dy
            j = y * xp + x
            ok = (x >= 0) & (x <= xp) & (y >= 0) & (y <= yp) & (j < pixels)
            jv = j[ok]
            out[jv] = (out[jv].astype(np.float64) + as64[:m][ok] * k).astype(np.float32)
        if progress is not None and ((n + 1) % max(total // 20, 1) == 0 or n == total - 1):
            progress(n + 1, total)


def _dense_pass(src_a, dx, dy, k, xp, yp, out2):
    """One kernel offset over the whole image with slices (same additions as the sparse pass)."""
    ty0, ty1 = max(0, dy), min(yp, yp + dy)
    tx0, tx1 = max(0, dx), min(xp, xp + dx)
    if ty1 > ty0 and tx1 > tx0:
        t = out2[ty0:ty1, tx0:tx1]
        s = src_a[ty0 - dy:ty1 - dy, tx0 - dx:tx1 - dx]
        out2[ty0:ty1, tx0:tx1] = (t.astype(np.float64) + s * k).astype(np.float32)
    if 1 <= dx <= xp:
        # target column x = xp (allowed by the C's x > xpixels test) is pixel (y + 1, 0); y = yp - 1
        # lands one past the image (dropped), y = yp is outside
        sx = xp - dx
        y_lo, y_hi = max(0, dy), min(yp - 1, yp + dy)          # target rows y in [y_lo, y_hi)
        if y_hi > y_lo:
            col = out2[y_lo + 1:y_hi + 1, 0]
            s = src_a[y_lo - dy:y_hi - dy, sx]
            out2[y_lo + 1:y_hi + 1, 0] = (col.astype(np.float64) + s * k).astype(np.float32)
