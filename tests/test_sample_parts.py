"""A sample made of parts (jaxbragg.sample): a crystal plus amorphous components rendered in one call.

* Reference: an air path through the model (MOSFLM detector, the same geometry as the golden case
  nonbragg_air_path) equals nonBragg.c's float image at the golden thresholds, and the experiment's total
  is its Bragg image plus the standalone amorphous render of the same case (jaxbragg-nonbragg's own
  set-up, a separate call).
* Analytic: a flat unity profile gives r_e^2 fluence N_mol sum(polarization x solid angle) / sub-pixels,
  computed here in NumPy from the detector's lab geometry (two wavelengths count once each).
* Gradients of the detector likelihood of the PSF-blurred total in a part's thickness and scale and in
  the PSF width against central finite differences; vmap over the thickness scales the part; the worked
  example's fit (docs/examples/sample_parts.py, at 32 x 32 pixels) recovers thickness and PSF width.
* Input checks: one clear error naming the field.
"""
import io as _io
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbragg as jb
from jaxbragg import amorphous, response as R, sample
from jaxbragg.cli import nonbragg

GOLDEN = Path(__file__).parent / "golden_nonbragg" / "nonbragg_air_path"
R_E_SQR, AVOGADRO = 7.94079248018965e-30, 6.02214179e23       # the reference's constants


def metrics(ref, img):
    r, x = ref.astype(np.float64).ravel(), np.asarray(img, np.float64).ravel()
    rel = np.max(np.abs(x - r)) / np.max(np.abs(r))
    corr = np.mean((r - r.mean()) * (x - x.mean())) / (r.std() * x.std())
    return corr, rel


CRYSTAL = dict(cell=(60, 60, 60), default_F=1000, N=10, misset=(10, 20, 30))


@pytest.fixture(scope="module")
def air_case():
    """nonbragg_air_path's geometry as an Experiment: 128^2 MOSFLM, 0.1 mm pixels at 100 mm, 1.2 A.

    nonBragg's default beam centre ((detsize - px)/2, (detsize + px)/2) = (6.35, 6.45) mm along (fast,
    slow) is MOSFLM's (X, Y) = (6.4, 6.3) mm (X along slow, both with the half-pixel shift). The case's
    ``-thickness 10 -samplesize 0.1`` ends with a 0.1 mm thick slab (flags act in order, as in the C)."""
    meta = json.loads((GOLDEN / "case.json").read_text())
    part = jb.Amorphous(str(GOLDEN / "air.stol"), thickness_mm=0.1, width=0.1, height=0.1, density=1.2e-3,
                        molecular_weight=29)
    exp = jb.Experiment(jb.Crystal(**CRYSTAL), jb.Beam(wavelength=1.2, fluence=1e24),
                        jb.Detector(pixels=128, pixel_size=0.1, distance=100, beam_center=(6.4, 6.3)),
                        parts=(part,))
    total, bragg, parts = jb.simulate_parts(exp)
    return meta, exp, np.asarray(total), np.asarray(bragg), np.asarray(parts)


def test_air_part_through_the_model_matches_nonbragg_c(air_case):
    meta, exp, total, bragg, parts = air_case
    ref = np.load(GOLDEN / "float.npz")["image"]
    assert parts.shape == (1, 128, 128)
    corr, rel = metrics(ref, parts[0])
    assert corr >= 0.99999 and rel <= 1e-6, (corr, rel)
    corr, rel = metrics(ref, total - bragg)
    assert corr >= 0.99999 and rel <= 1e-6, (corr, rel)
    assert bragg.max() > 1.0                              # the crystal's spots are in the total


def test_total_is_bragg_plus_the_standalone_renders(air_case, tmp_path, monkeypatch):
    meta, exp, total, bragg, parts = air_case
    # the Bragg image of the same experiment without parts: the unchanged kernel path, bit for bit
    alone = np.asarray(jb.simulate(exp.replace(parts=())))
    np.testing.assert_array_equal(alone, bragg)
    # the amorphous image from jaxbragg-nonbragg's own set-up of the golden command line
    monkeypatch.chdir(GOLDEN)
    parsed, warn = nonbragg.parse([a for a in meta["args"] if a != "-noprogress"])
    setup = nonbragg.resolve(parsed, warn)
    standalone = np.asarray(amorphous.amorphous_image(setup.config, setup.params))
    np.testing.assert_allclose(total, alone + standalone, rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(jb.simulate(exp)), total, rtol=1e-15, atol=0)
    # simulate_pixels picks the same values
    s, f = np.array([3, 64, 100]), np.array([5, 64, 20])
    np.testing.assert_allclose(np.asarray(jb.simulate_pixels(exp, s, f)), total[s, f], rtol=1e-12)


def test_flat_profile_gives_solid_angle_times_polarization():
    o, kahn, px, d, (X, Y) = 2, 0.6, 0.2e-3, 0.05, (0.7, 1.1)          # X, Y: MOSFLM beam centre [mm]
    part = jb.Amorphous("unity", thickness=50, width=0.2, height=0.3, density=1.0, molecular_weight=18)
    exp = jb.Experiment(jb.Crystal(cell=(50, 50, 50), default_F=0.0),
                        jb.Beam(wavelength=1.0, fluence=1e24, polarization=kahn, dispersion=10, dispsteps=2),
                        jb.Detector(pixels=(9, 7), pixel_size=0.2, distance=50, beam_center=(X, Y)),
                        oversample=o, parts=(part,))
    total = np.asarray(sample.parts_image(exp))             # the part alone, lowered through the model
    # lab position of sub-pixel centres: (d, Sbeam - s, f - Fbeam), Fbeam = Y + px/2, Sbeam = X + px/2
    fbeam, sbeam = Y * 1e-3 + px / 2, X * 1e-3 + px / 2
    S, F = np.meshgrid((np.arange(7 * o) + 0.5) * px / o, (np.arange(9 * o) + 0.5) * px / o, indexing="ij")
    pos = np.stack([np.full(S.shape, d), sbeam - S, F - fbeam], axis=-1)
    r = np.linalg.norm(pos, axis=-1)
    u = pos / r[..., None]
    omega = px * px * d / r ** 3
    polar = 0.5 * (1 + u[..., 0] ** 2 - kahn * (u[..., 2] ** 2 - u[..., 1] ** 2))
    per_pixel = (polar * omega).reshape(7, o, 9, o).sum(axis=(1, 3)) / (o * o)
    n_mol = 50e-6 * 0.2e-3 * 0.3e-3 * 1e6 * AVOGADRO / 18.0
    np.testing.assert_allclose(total, R_E_SQR * 1e24 * n_mol * per_pixel, rtol=1e-12)


@pytest.fixture(scope="module")
def example():
    """docs/examples/sample_parts.py as a module (its experiment at 32 x 32 pixels is shared below)."""
    import importlib.util
    path = Path(__file__).parent.parent / "docs" / "examples" / "sample_parts.py"
    spec = importlib.util.spec_from_file_location("sample_parts_example", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    return ex


@pytest.fixture(scope="module")
def small(example):
    """Crystal + water (pchip) + air (polint) on 32 x 32 pixels, and its images."""
    exp = example.experiment(32)
    total, bragg, parts = (np.asarray(a) for a in jb.simulate_parts(exp))
    return exp, total, bragg, parts


def _fd(f, x, rel=1e-5):
    h = rel * abs(x)
    return (f(x + h) - f(x - h)) / (2 * h)


def test_gradients_in_thickness_scale_and_psf_width_match_finite_differences(small):
    """What a fit of the parts and the PSF differentiates: the detector likelihood of the blurred total."""
    exp, total, bragg, parts = small
    obs = jnp.asarray(np.random.default_rng(2).poisson(np.asarray(
        R.apply_psf(jnp.asarray(total), 1.5, 4, lost="renormalize"))) * 2.0 + 40.0)

    def nll(t, s, fwhm):
        e = exp.set("parts.0.thickness", t).set("parts.1.scale", s)
        mu = R.apply_psf(jb.simulate(e), fwhm, 4, lost="renormalize")
        return R.poisson_gaussian_nll(obs, mu, gain=2.0, adc=40.0, readout=1.0)

    vg = jax.jit(jax.value_and_grad(nll, argnums=(0, 1, 2)))
    x0 = (jnp.float64(1.3e-6), jnp.float64(0.8), jnp.float64(1.3))
    value, grads = vg(*x0)
    mu = R.apply_psf(jnp.asarray(bragg + 1.3 * parts[0] + 0.8 * parts[1]), 1.3, 4, lost="renormalize")
    assert float(value) == pytest.approx(float(R.poisson_gaussian_nll(obs, mu, 2.0, 40.0, 1.0)), rel=1e-12)
    for i in range(3):
        def f(v, i=i):
            args = list(x0)
            args[i] = jnp.float64(v)
            return float(vg(*args)[0])
        assert float(grads[i]) == pytest.approx(_fd(f, float(x0[i])), rel=1e-5), i
        assert abs(float(grads[i])) > 0.0


def test_vmap_over_thickness_scales_the_part(small):
    exp, total, bragg, parts = small
    ts = jnp.asarray([0.5e-6, 1e-6, 4.5e-6])                       # the part was rendered at 1 um
    batch = np.asarray(jax.vmap(lambda t: jb.simulate(exp.set("parts.0.thickness", t)))(ts))
    for i, t in enumerate(np.asarray(ts)):
        np.testing.assert_allclose(batch[i], bragg + parts[0] * t / 1e-6 + parts[1], rtol=1e-12)


def test_explicit_pix0_places_the_parts_like_the_crystal():
    part = jb.Amorphous("water", thickness=20)
    det = dict(pixels=8, pixel_size=0.5, distance=80)
    base = jb.Experiment(jb.Crystal(cell=(50, 50, 50), default_F=0.0), jb.Beam(), jb.Detector(**det),
                         parts=(part,))
    cfg, p = base.lower()
    from jaxbragg.simulate import detector_frame
    pix0_mm = np.asarray(detector_frame(cfg, p)["pix0"]) * 1e3
    moved = jb.Experiment(base.crystal, jb.Beam(), jb.Detector(**det, pix0=pix0_mm + [0.0, 0.0, 1.0]),
                          parts=(part,))
    a, b = (np.asarray(sample.parts_image(e)) for e in (base, moved))      # the parts only
    # pix0 one mm further along +z (= fast): the image moves two pixels towards lower fast indices
    np.testing.assert_allclose(b[:, :-2], a[:, 2:], rtol=1e-12)


@pytest.mark.parametrize("kwargs, words", [
    (dict(thickness=10, thickness_mm=1), "not both"),
    (dict(thickness=-1), "Amorphous.thickness"),
    (dict(density=0), "Amorphous.density"),
    (dict(molecular_weight=-18), "Amorphous.molecular_weight"),
    (dict(interpolation="linear"), "Amorphous.interpolation"),
    (dict(width=float("nan")), "Amorphous.width"),
])
def test_bad_part_arguments_name_the_field(kwargs, words):
    with pytest.raises(ValueError, match=words):
        jb.Amorphous("water", **kwargs)


def test_parts_must_be_amorphous_and_need_a_thin_sensor():
    with pytest.raises(TypeError, match="Experiment.parts"):
        jb.Experiment(jb.Crystal(cell=(50, 50, 50)), parts=("water",))
    with pytest.raises(jb.InputError, match="no such profile"):
        jb.Amorphous("vinegar")
    one = jb.Experiment(jb.Crystal(cell=(50, 50, 50)), parts=jb.Amorphous("water"))
    assert len(one.parts) == 1 and one.parts[0].profile == "water"
    assert one.set("parts.0", jb.Amorphous("ice")).parts[0].profile == "ice"
    assert float(one.set("parts.0.scale", 2.5).parts[0].scale) == 2.5 and float(one.parts[0].scale) == 1.0
    exp = jb.Experiment(jb.Crystal(cell=(50, 50, 50)), detector=jb.Detector(pixels=8, thickness=300),
                        parts=(jb.Amorphous("water"),))
    with pytest.raises(NotImplementedError, match="thick sensor"):
        jb.simulate(exp)


def test_worked_example_recovers_the_water_thickness_and_psf_width(example, small):
    """docs/examples/sample_parts.py at 32 x 32 pixels: the fit of one noisy image lands on the truth."""
    ex, exp = example, small[0]
    result = ex.fit_thickness_and_width(exp, ex.observe(exp), maxiter=40)
    assert result["converged"], result["message"]
    for name in ("thickness", "fwhm"):
        err, sigma = abs(result[name] - ex.TRUE[name]), result["sigma_" + name]
        assert 0 < sigma < 0.05 * ex.TRUE[name] and err < 4 * sigma, (name, result[name], sigma)
    # the start (4 um, 1 px) was far outside the errors
    assert abs(4e-6 - ex.TRUE["thickness"]) > 50 * result["sigma_thickness"]


def test_jb_fit_frees_the_parts_thickness_and_scale(small):
    """``jb.fit`` on an experiment with parts: the water thickness and the air scale come back from a
    Poisson image of the truth (started 2x and 0.5x off) within 4 sigma."""
    import warnings
    exp, total, _, _ = small
    obs = np.random.default_rng(0).poisson(total).astype(float)
    start = exp.set("parts.0.thickness", exp.parts[0].thickness * 2.0).set("parts.1.scale", 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jb.SamplingWarning)
        r = jb.fit(start, obs, free=["parts.0.thickness", "parts.1.scale"])
    for path, truth in (("parts.0.thickness", float(exp.parts[0].thickness)), ("parts.1.scale", 1.0)):
        sigma = float(r.uncertainties[path])
        assert 0.0 < sigma < 0.1 * truth, (path, sigma)
        assert abs(float(r.values[path]) - truth) < 4.0 * sigma, (path, r.values[path], truth, sigma)
