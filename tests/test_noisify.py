"""jaxbragg-noisify and the detector response: C parity, PSF properties, gradients, noise statistics.

Parity: every stored reference output of noisify.c (tests/golden_noisify, see its README) must come out
identical byte for byte, and the printout line for line. The vectorised parts of the port are checked
against literal transcriptions of the C loops on small images (the draw order with two seeds, the
per-source PSF sum), so a change in the vectorisation cannot hide behind the six cases.
"""
import io as _io
import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import response as R
from jaxbragg import response_c as rc
from jaxbragg.cli import noisify as cli
from jaxbragg.rng import CRandom

GOLDEN = Path(__file__).parent / "golden_noisify"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())

# compiled once per configuration (eager dispatch of the FFT and its gradient is far slower)
_psf = jax.jit(R.apply_psf, static_argnums=(2, 3, 4, 5))
_kernel = jax.jit(R.psf_kernel, static_argnums=(1, 2, 3))
_nll = jax.jit(R.poisson_gaussian_nll, static_argnums=(5,))


# ------------------------------------------------------------------------------------ C parity

@pytest.mark.parametrize("name", CASES)
def test_golden_outputs_identical(name, tmp_path, monkeypatch):
    meta = json.loads((GOLDEN / name / "case.json").read_text())
    for f in meta["inputs"]:
        shutil.copy(GOLDEN / name / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    out = _io.StringIO()
    assert cli.run(list(meta["args"]), out=out, err=_io.StringIO()) == 0
    for fname in meta["outputs"].values():
        assert (tmp_path / fname).read_bytes() == (GOLDEN / name / fname).read_bytes(), fname
    # the printout: the C's lines after its banner, except the time-based seed when none is given
    ours = out.getvalue().splitlines()[1:]
    theirs = (GOLDEN / name / "stdout.txt").read_text().splitlines()[1:]
    keep = (lambda s: not s.startswith("  seed:")) if "-seed" not in meta["args"] else (lambda s: True)
    assert [s for s in ours if keep(s)] == [s for s in theirs if keep(s)]


def _replay_two_seeds(img, seed, calib_seed, flicker, calibration):
    """The C's noise loop with one CRandom and the idum swapped per call (no shortcuts)."""
    r = CRandom(seed)
    ids = [seed, calib_seed]

    def call(s, fn, *a):
        r.idum = ids[s]
        v = fn(*a)
        ids[s] = r.idum
        return v
    out = []
    for p in np.asarray(img, np.float32).ravel().astype(np.float64):
        if flicker > 0:
            p *= 1.0 + flicker * call(0, r.gaussdev)
        if calibration > 0:
            p *= 1.0 + calibration * call(1, r.gaussdev)
        out.append(call(0, r.poidev, p))
    r.idum = ids[0]
    return np.asarray(out, np.float32), r, ids[1]


@pytest.mark.parametrize("flicker,calibration,calib_seed", [(0.0, 0.05, 123456789), (0.1, 0.0, -3),
                                                             (0.05, 0.2, -7), (0.0, 0.0, 5)])
def test_noise_loop_follows_the_c_draw_order(flicker, calibration, calib_seed):
    rs = np.random.RandomState(1)
    # every poidev branch: product of uniforms (< 12), rejection (12 .. 1e6), Gaussian (> 1e6), zero
    img = np.concatenate([rs.exponential(2.0, 150), rs.uniform(12, 400, 60), [0.0, 0.0, 3e6, 2e7],
                          rs.exponential(1.0, 83)]).astype(np.float32)
    want, ref, want_calib = _replay_two_seeds(img, -17, calib_seed, flicker, calibration)
    rng = CRandom(-17)
    got, calib = rc.noise_loop_c(img, -17, calib_seed, flicker, calibration, rng=rng)
    np.testing.assert_array_equal(got, want)
    assert calib == want_calib
    assert (rng.idum, rng.iy, rng.iv, rng.iset, rng.gset) == (ref.idum, ref.iy, ref.iv, ref.iset, ref.gset)
    # the read-out draws continue the same stream, spare deviate included
    n = 1001
    want_read = np.array([ref.gaussdev() for _ in range(n)], np.float32)
    np.testing.assert_array_equal(rc.readout_c(n, rng), want_read)
    assert (rng.idum, rng.iy, rng.iset, rng.gset) == (ref.idum, ref.iy, ref.iset, ref.gset)


def _apply_psf_literal(img, kind, fwhm, user_radius):
    """noisify.c's apply_psf transcribed loop by loop (float32 accumulation, source order)."""
    yp, xp = img.shape
    a = img.ravel()
    pixels = a.size
    g = fwhm * rc.FIBER_G
    maxw = max(xp, yp)
    big = user_radius
    if big <= 0:
        mx = max(float(a.max()), 0.0)
        lost = math.sqrt(mx) / 10.0
        if kind == "gauss":
            big = rc.c_int(1 + math.ceil(math.sqrt(-math.log(lost / mx) / math.log(4) / 2) * fwhm))
        else:
            big = rc.c_int(1 + math.ceil(g * (mx / lost)))
        big = big or 1
    big = min(big, maxw)
    kern = rc.psf_kernel_c(kind, fwhm, big)
    out = np.zeros(pixels + 10, np.float32)
    total = 0.0
    for i in range(pixels):
        x0, y0 = i % xp, i // xp
        v = float(a[i])
        if v <= 0.0:
            continue
        r = user_radius if user_radius != 0 else rc._auto_radius(kind, v, fwhm, g)
        r = min(r or 1, maxw)
        if kind == "gauss":
            total += v * math.exp(-math.log(16) * (r / fwhm) ** 2)
        else:
            total += v * g / math.sqrt(g * g + r * r)
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                k = kern[dy + big, dx + big]
                if k == 0.0 or dx * dx + dy * dy > r * r:
                    continue
                x, y = x0 + dx, y0 + dy
                if x < 0 or x > xp or y < 0 or y > yp:
                    continue
                j = y * xp + x
                if j < 0 or j > pixels:
                    continue
                out[j] = np.float32(float(out[j]) + v * k)
    return (out[:pixels].astype(np.float64) + total / pixels).astype(np.float32).reshape(yp, xp)


@pytest.mark.parametrize("kind,fwhm,radius", [("gauss", 1.3, 0), ("fiber", 0.7, 0), ("gauss", 2.0, 6),
                                              ("fiber", 1.1, 5), ("gauss", 0.9, 2)])
def test_psf_direct_sum_matches_the_c_loops(kind, fwhm, radius):
    rs = np.random.RandomState(2)
    # 11 wide: radius 6 reaches past half the width (equal flat offsets) and spills past the right edge
    img = (rs.poisson(4.0, (9, 11)) * (rs.rand(9, 11) < 0.7)).astype(np.float32)
    img[4, 10] = 300.0
    img[0, 0] = 0.004                       # below 0.01: the C's NaN radius, renders nothing
    np.testing.assert_array_equal(rc.apply_psf_c(img, kind, fwhm, radius),
                                  _apply_psf_literal(img, kind, fwhm, radius))


def test_c_integer_conversions():
    adu = np.array([-3.7, -70000.5, -1e10, 70000.9, 12.9, np.inf, -np.inf])
    assert rc.adu_to_uint(adu, 32).tolist() == [4294967293, 4294897296, 2884901888, 70000, 12, 0, 0]
    assert rc.adu_to_uint(adu, 16).tolist() == [65533, 61072, 0, 4464, 12, 0, 0]


# ------------------------------------------------------------------------------------- the PSF

def _sources(n=64):
    rs = np.random.RandomState(0)
    img = (rs.poisson(3.0, (n, n)) * (rs.rand(n, n) < 0.6)).astype(np.float32)
    img[n // 2, n // 2] = 5000.0
    return img


@pytest.mark.parametrize("kind,fwhm,radius", [("gauss", 2.5, 6), ("fiber", 1.5, 6), ("fiber", 0.8, 10)])
def test_fft_psf_agrees_with_the_direct_sum_at_fixed_radius(kind, fwhm, radius):
    img = _sources()
    c = rc.apply_psf_c(img, kind, fwhm, radius)
    m = np.asarray(_psf(jnp.asarray(img, jnp.float64), fwhm, radius, kind, "uniform", True))
    inner = (slice(radius, -radius), slice(radius, -radius))
    # measured 2.4e-7 (gauss) and 2.0e-7 (fiber): the C's float32 accumulation
    assert np.max(np.abs(c[inner] - m[inner])) / np.max(c) < 5e-7
    # the edges differ (the C's spill past the right edge), by far more than rounding
    assert np.max(np.abs(c - m)) / np.max(c) > 1e-4


@pytest.mark.parametrize("kind,fwhm,radius,tol_c", [("gauss", 2.5, 6, 1e-5), ("fiber", 1.5, 6, 1e-3)])
def test_psf_conserves_photons_away_from_the_edges(kind, fwhm, radius, tol_c):
    one = np.zeros((48, 48), np.float32)
    one[20, 25] = 1000.0
    # the C's rule: disc kernel plus its analytic tail added back (fibre: the two differ by 7e-4)
    c_sum = rc.apply_psf_c(one, kind, fwhm, radius).astype(np.float64).sum() / 1000.0
    assert abs(c_sum - 1.0) < tol_c
    assert abs(c_sum - 1.0) > 1e-7 or kind == "gauss"
    m = _psf(jnp.asarray(one, jnp.float64), fwhm, radius, kind, "renormalize", True)
    assert float(jnp.sum(m)) / 1000.0 == pytest.approx(1.0, abs=1e-12)
    # a kernel radius of 30 holds the Gaussian whole: no renormalisation needed
    if kind == "gauss":
        k = _kernel(fwhm, 20, kind, False)
        assert float(jnp.sum(k)) == pytest.approx(1.0, abs=1e-12)


def test_model_kernels_equal_the_c_kernels():
    for kind, fwhm in (("gauss", 1.7), ("fiber", 0.9)):
        np.testing.assert_allclose(np.asarray(_kernel(jnp.float64(fwhm), 7, kind, True)),
                                   rc.psf_kernel_c(kind, fwhm, 7), rtol=1e-12, atol=1e-15)


def _fd(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("kind", ["gauss", "fiber"])
def test_psf_gradient_in_the_width_matches_finite_differences(kind):
    img = jnp.asarray(_sources(24), jnp.float64)
    w = jnp.asarray(np.random.RandomState(3).rand(24, 24))

    @jax.jit
    def f(fwhm):
        return jnp.sum(w * R.apply_psf(img, fwhm, 5, kind, lost="uniform"))
    g = float(jax.jit(jax.grad(f))(jnp.float64(1.8)))
    fd = float(_fd(f, jnp.float64(1.8), 1e-5))
    assert g == pytest.approx(fd, rel=1e-6)
    assert abs(g) > 1.0


def test_gradients_of_the_likelihood_in_gain_and_width():
    lam = jnp.asarray(_sources(20), jnp.float64) * 0.2 + 2.0
    y = jnp.asarray(np.random.RandomState(4).poisson(np.asarray(lam)) * 2.0 + 10.0 +
                    np.random.RandomState(5).normal(0, 1.5, lam.shape))

    @jax.jit
    def nll(p):
        mu = R.apply_psf(lam, p[0], 4, "gauss", lost="renormalize")
        return R.poisson_gaussian_nll(y, mu, gain=p[1], adc=10.0, readout=1.5)
    p = jnp.array([1.2, 1.9])
    g = np.asarray(jax.jit(jax.grad(nll))(p))
    for i in range(2):
        e = jnp.zeros(2).at[i].set(1e-5)
        assert g[i] == pytest.approx(float((nll(p + e) - nll(p - e)) / 2e-5), rel=1e-6)


# ------------------------------------------------------------------------ noise and likelihood

def test_jax_noise_has_the_right_mean_and_variance():
    lam, gain, adc, sd, calib = 20.0, 2.0, 10.0, 3.0, 0.05
    img = jnp.full((256, 256), lam)
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    shots = jax.jit(jax.vmap(lambda k: R.detector_image(k, img, R.Response(gain=gain, adc=adc, readout=sd),
                                                        bits=None)))
    y = np.asarray(shots(keys))                     # 4 shots x 65536 pixels
    n = y.size
    mean_want, var_want = gain * lam + adc, gain ** 2 * lam + sd ** 2
    assert abs(y.mean() - mean_want) < 4 * math.sqrt(var_want / n)
    assert abs(y.var() / var_want - 1.0) < 6 * math.sqrt(2.0 / n)
    assert not np.array_equal(y[0], y[1])           # one independent shot per key
    # per-shot flicker: mean 1, rms = flicker
    f = np.asarray(jax.vmap(lambda k: R.flicker_factor(k, 0.1, jnp.float64))(jax.random.split(keys[0], 4000)))
    assert abs(f.mean() - 1.0) < 4 * 0.1 / math.sqrt(f.size)
    assert abs(f.std() / 0.1 - 1.0) < 4 * math.sqrt(2.0 / f.size)
    # the calibration map: fixed per key, mean 1, rms = calibration
    c = np.asarray(R.calibration_map(jax.random.PRNGKey(1), (300, 300), calib, jnp.float64))
    assert abs(c.mean() - 1.0) < 4 * calib / 300
    assert abs(c.std() / calib - 1.0) < 4 * math.sqrt(2.0 / c.size)
    np.testing.assert_array_equal(c, np.asarray(R.calibration_map(jax.random.PRNGKey(1), (300, 300), calib,
                                                                  jnp.float64)))


def test_shifted_poisson_is_exact_without_readout_and_fits_the_gain():
    y = jnp.array([0.0, 1.0, 4.0, 12.0, 60.0])
    mu = jnp.array([0.3, 1.5, 3.0, 11.0, 58.0])
    want = -jnp.sum(jax.scipy.stats.poisson.logpmf(y, mu))
    assert float(R.poisson_gaussian_nll(y * 2.0 + 40.0, mu, gain=2.0, adc=40.0)) == \
        pytest.approx(float(want) + 5 * math.log(2.0), rel=1e-12)
    # simulated data: the NLL's minimum in the gain lies at the true gain
    rs = np.random.RandomState(8)
    lam = rs.uniform(2, 50, 20000)
    obs = jnp.asarray(2.5 * rs.poisson(lam) + 40.0 + rs.normal(0, 2.0, lam.size))
    grid = np.linspace(2.3, 2.7, 41)
    for method in ("shifted_poisson", "gaussian"):
        vals = [float(_nll(obs, jnp.asarray(lam), g, 40.0, 2.0, method)) for g in grid]
        assert abs(grid[int(np.argmin(vals))] - 2.5) <= 0.02, method


def test_detector_loss_plugs_into_the_fit_objective():
    loss = R.detector_nll(gain=2.0, adc=10.0, readout=1.0)
    mu = jnp.array([1.0, 5.0, 30.0])
    assert np.allclose(loss.expected(mu), 2.0 * mu + 10.0)
    assert float(loss(mu, loss.expected(mu))) < float(loss(mu * 1.3, loss.expected(mu)))


# ----------------------------------------------------------------------------- command line

def _main(argv, capsys):
    rc_ = cli.main(list(argv))
    cap = capsys.readouterr()
    return rc_, cap.out, cap.err


@pytest.mark.parametrize("args,needle", [
    (["-floatfile", "in.bin", "-bits", "8"], "-bits"),
    (["-floatfile", "in.bin", "-psf", "lorentz"], "-psf"),
    (["-floatfile", "in.bin", "-detpixels", "100"], "in.bin"),
    (["-floatfile", "in.bin", "-intfile", "in.bin"], "in.bin"),
    (["-floatfile", "in.bin", "-scale"], "-scale"),
    (["-floatfile", "in.bin", "-seed", "1.5"], "-seed"),
    (["-floatfile", "in.bin", "-sclae", "2"], "-scale"),
    (["-floatfile", "missing.bin"], "missing.bin"),
    (["-floatfile", "in.bin", "-header", "in.bin"], "-header"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, cwd, capsys):
    np.zeros((16, 16), "<f4").tofile(cwd / "in.bin")
    code, out, err = _main(args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err
    assert sorted(p.name for p in cwd.iterdir()) == ["in.bin"]          # nothing written


def test_nonoise_and_header_copy(cwd, capsys):
    src = GOLDEN / "noisify_psf_gauss"
    shutil.copy(src / "in.bin", cwd / "in.bin")
    shutil.copy(src / "int.img", cwd / "hdr.img")
    code, out, _ = _main(["-floatfile", "in.bin", "-header", "hdr.img", "-nonoise", "-bits", "32",
                          "-intfile", "a.img", "-nopgm", "-scale", "3", "-adc", "0"], capsys)
    assert code == 0
    blob = (cwd / "a.img").read_bytes()
    head = (src / "int.img").read_bytes()[:512]
    assert blob[:512] == head and len(blob) == 512 + 4 * 128 * 128
    photons = (cli.DEFAULT_FLUENCE * cli.R_E_SQR * 3.0 * np.fromfile(cwd / "in.bin", "<f4").astype(np.float64))
    want = np.minimum(photons.astype(np.float32).astype(np.float64), 65535.0)
    np.testing.assert_array_equal(np.frombuffer(blob[512:], "<u4"), np.trunc(want).astype(np.uint32))
    assert not (cwd / "noiseimage.img").exists() and not (cwd / "image.pgm").exists()


def test_fit_with_the_detector_likelihood_recovers_the_distance():
    from jaxbragg import fit as F
    from jaxbragg import parameters as P
    from helpers import setup_from
    setup = setup_from("-cell 30 32 34 88 92 91 -misset 10 20 30 -default_F 100 -N 5 -lambda 1.0 "
                       "-distance 40 -detpixels 32 -pixel 0.5 -oversample 1 -fluence 1e30")
    template, truth = P.from_setup(setup)
    expected = np.asarray(P.simulate(template, truth))
    rs = np.random.RandomState(11)
    adu = 2.5 * rs.poisson(expected) + 10.0 + rs.normal(0.0, 1.5, expected.shape)    # ADU, not photons
    start = truth.replace(distance=truth.distance + 3e-4)
    result = F.fit(template, start, adu, ["distance"], loss=R.detector_nll(2.5, 10.0, 1.5), maxiter=60)
    assert result.converged, result.message
    err = abs(float(result.physical.distance - truth.distance))
    sigma = float(np.asarray(result.uncertainties["distance"]))
    assert err < 0.05e-3 and 0 < sigma and err < 5 * sigma
    assert abs(float(start.distance - truth.distance)) > 20 * sigma      # the start was far off
