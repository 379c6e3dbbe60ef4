"""nonBragg: the amorphous-scattering library (jaxbragg.amorphous) and the jaxbragg-nonbragg command line.

* Parity: every nonbragg_* reference case in tests/golden_nonbragg (float image: correlation >= 0.99999 and
  max|diff|/max|ref| <= 1e-6; the int and noise SMV files identical, headers included), and the inverse
  mode (-img/-stolout) against the C's profile file.
* Analytic: a flat profile F = 1 gives r_e^2 fluence N_mol * sum(polarization x solid angle x weight) /
  steps, computed here in NumPy from the detector geometry; both interpolants reproduce the table at its
  points and polint reproduces a cubic.
* Gradients against central finite differences (thickness, density, profile values; both interpolants).
* Command-line errors: one line, exit status 2, nothing written. One golden case is rendered in chunks
  with progress lines, as a large job is.
"""
import io as _io
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import amorphous
from jaxbragg.cli import nonbragg

GOLDEN = Path(__file__).parent / "golden_nonbragg"
CASES = [c["name"] for c in json.loads((GOLDEN / "index.json").read_text())["cases"]]
CORR_MIN, REL_MAX = 0.99999, 1e-6


def metrics(ref, img):
    r, x = ref.astype(np.float64).ravel(), img.astype(np.float64).ravel()
    rel = np.max(np.abs(x - r)) / np.max(np.abs(r))
    corr = np.mean((r - r.mean()) * (x - x.mean())) / (r.std() * x.std())
    return corr, rel


def run_case(root, tmp_path, monkeypatch, extra=(), err=None):
    meta = json.loads((root / "case.json").read_text())
    for f in meta["inputs"]:
        shutil.copy(root / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    out = _io.StringIO()
    assert nonbragg.run(list(meta["args"]) + list(extra), out=out,
                        err=_io.StringIO() if err is None else err) == 0
    return meta, out.getvalue()


#: rendered in chunks, as a large job is, with "N% done" lines (its arguments include -noprogress, so
#: -progress is added after them)
CHUNKED = "nonbragg_water_twotheta_rot"


@pytest.mark.parametrize("name", CASES)
def test_golden_case(name, tmp_path, monkeypatch):
    err = _io.StringIO()
    extra = ["-floatfile", "out.bin"]
    if name == CHUNKED:
        monkeypatch.setattr(nonbragg, "PROGRESS_MIN_WORK", 1)
        extra.append("-progress")
    meta, _ = run_case(GOLDEN / name, tmp_path, monkeypatch, extra, err)
    if name == CHUNKED:
        lines = err.getvalue().splitlines()
        assert len(lines) == nonbragg.PROGRESS_CHUNKS and lines[-1] == "100% done", lines
    img = np.fromfile(tmp_path / "out.bin", dtype="<f4").reshape(meta["spixels"], meta["fpixels"])
    ref = np.load(GOLDEN / name / "float.npz")["image"]
    corr, rel = metrics(ref, img)
    print(f"{name}: corr={corr:.12f} rel={rel:.3e}")
    assert corr >= CORR_MIN and rel <= REL_MAX, (corr, rel)
    for key, fname in meta["outputs"].items():
        if key != "float":      # SMV: pixels and header identical to the C's
            assert (tmp_path / fname).read_bytes() == (GOLDEN / name / fname).read_bytes(), fname


def test_ice_has_negative_pixels_and_pchip_does_not(tmp_path, monkeypatch):
    """The reference's 4-point polynomial through the sharp ice profile swings far outside the table (to
    about -3443 and +3527 for a table within 0..202) and sign(F) F^2 gives negative pixels: the parity
    image has them. The smooth interpolant stays within the table (see the interpolant test below), so
    its image is non-negative."""
    ref = np.load(GOLDEN / "nonbragg_ice_dispersion" / "float.npz")["image"]
    assert ref.min() < 0.0
    run_case(GOLDEN / "nonbragg_ice_dispersion", tmp_path, monkeypatch,
             ["-pchip", "-floatfile", "smooth.bin", "-nonoise", "-intfile", "i.img"])
    img = np.fromfile(tmp_path / "smooth.bin", dtype="<f4").reshape(ref.shape)
    assert img.min() >= 0.0 and img.max() > 0.0


def test_inverse_mode_matches_reference(tmp_path, monkeypatch):
    root = GOLDEN / "inverse_img_air"
    run_case(root, tmp_path, monkeypatch, ["-stolout", "mine.stol", "-floatfile", "f.bin",
                                           "-intfile", "i.img"])
    cols = lambda text: [(ln.split()[:3], ln.split()[5]) for ln in text.splitlines()]
    mine = (tmp_path / "mine.stol").read_text()
    theirs = (root / "reference.stol").read_text()
    assert len(theirs.splitlines()) == 49
    assert cols(mine) == cols(theirs)
    # the C prints uninitialised zeros for the median and MAD columns; ours are the bins' real values
    med = np.array([float(ln.split()[3]) for ln in mine.splitlines()])
    avg = np.array([float(ln.split()[1]) for ln in mine.splitlines()])
    assert np.all(np.abs(med - avg) < 0.01 * avg)


# ------------------------------------------------------------------------------------------------
# the library against values computed here

def _params(n_src=1, weights=(1.0,), kahn=0.0, profile=None, center=(0.8e-3, 1.1e-3)):
    prof = amorphous.load_profile("unity") if profile is None else profile
    f64 = lambda x: jnp.asarray(x, jnp.float64)
    lams = np.linspace(1.0e-10, 1.1e-10, n_src)
    return amorphous.AmorphousParams(
        fdet=f64([0, 0, 1]), sdet=f64([0, -1, 0]), odet=f64([1, 0, 0]), beam=f64([1, 0, 0]),
        detector_rotations=f64([0, 0, 0]), twotheta_axis=f64([0, 1, 0]), twotheta=f64(0.0),
        beam_center=f64(center), distance=f64(0.05), pixel_size=f64(0.2e-3),
        source_dirs=f64(np.tile([-1.0, 0, 0], (n_src, 1))), source_lambda=f64(lams),
        source_weights=f64(weights), polar_vector=f64([0, 0, 1]), kahn=f64(kahn), fluence=f64(1e24),
        thickness=f64(1e-4), width=f64(2e-4), height=f64(3e-4), density=f64(1000.0), molar_mass=f64(0.018),
        stol=f64(prof.stol), F=f64(prof.F))


def test_flat_profile_gives_solid_angle_times_polarization():
    o, kahn, weights = 2, 0.6, (1.0, 0.5)
    cfg = amorphous.AmorphousConfig(fpixels=9, spixels=7, oversample=o, sources=2)
    p = _params(n_src=2, weights=weights, kahn=kahn)
    img = np.asarray(amorphous.amorphous_image(cfg, p))
    # independent NumPy: pixel centres of sub-pixels, lab position (d, Ybeam - S, F - Xbeam)
    px, d, (xb, yb) = 0.2e-3, 0.05, (0.8e-3, 1.1e-3)
    sub = (np.arange(9 * o) + 0.5) * px / o
    S, F = np.meshgrid((np.arange(7 * o) + 0.5) * px / o, sub, indexing="ij")
    pos = np.stack([np.full(S.shape, d), yb - S, F - xb], axis=-1)
    r = np.linalg.norm(pos, axis=-1)
    u = pos / r[..., None]
    omega = px * px * d / r ** 3
    polar = 0.5 * (1 + u[..., 0] ** 2 - kahn * (u[..., 2] ** 2 - u[..., 1] ** 2))
    per_sub = (polar * omega).reshape(7, o, 9, o).sum(axis=(1, 3))
    n_mol = 1e-4 * 2e-4 * 3e-4 * 1e6 * 6.02214179e23 / 18.0
    expect = 7.94079248018965e-30 * 1e24 * n_mol * per_sub * sum(weights) / (2 * o * o)
    np.testing.assert_allclose(img, expect, rtol=1e-12)


def test_vmap_over_thickness_and_fluence_scales_the_image():
    """The library does not batch for you; vmap does. The image is linear in thickness and fluence."""
    cfg = amorphous.AmorphousConfig(fpixels=5, spixels=4)
    p = _params(profile=amorphous.load_profile("air"))
    t = jnp.asarray([1e-4, 2.5e-4, 4e-4])
    flu = jnp.asarray([1e24, 3e24, 0.5e24])
    batch = jax.jit(jax.vmap(lambda a, b: amorphous.render(cfg, p.replace(thickness=a, fluence=b))))(t, flu)
    one = np.asarray(batch[0])
    assert one.min() > 0.0
    for i in range(3):
        np.testing.assert_allclose(batch[i], one * float(t[i] / t[0] * flu[i] / flu[0]), rtol=1e-13)


def test_interpolants_at_table_points_and_polint_on_a_cubic():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.uniform(0.5, 1.5, 12)) * 1e8
    y = rng.uniform(0.5, 3.0, 12)
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    pchip, polint = jax.jit(amorphous.interpolate_pchip), jax.jit(amorphous.interpolate_polint)
    np.testing.assert_allclose(pchip(jx, jy, jx), y, rtol=1e-13)
    np.testing.assert_allclose(polint(jx, jy, jx), y, rtol=1e-12)
    c = lambda t: 1.0 + 0.3 * t - 0.2 * t ** 2 + 0.05 * t ** 3
    t = rng.uniform(x[2], x[-3], 50)
    got = polint(jx, jnp.asarray(c(x / 1e9)), jnp.asarray(t))
    np.testing.assert_allclose(got, c(t / 1e9), rtol=1e-10)
    # pchip stays inside the range of the two neighbouring points (so non-negative data stays so)
    t = jnp.linspace(x[0], x[-1], 2001)
    v = np.asarray(pchip(jx, jy, t))
    k = np.clip(np.searchsorted(x, np.asarray(t), side="right") - 1, 0, 10)
    lo, hi = np.minimum(y[k], y[k + 1]), np.maximum(y[k], y[k + 1])
    assert np.all(v >= lo - 1e-12) and np.all(v <= hi + 1e-12)


@pytest.mark.parametrize("interp", ["polint", "pchip"])
def test_gradients_match_finite_differences(interp):
    prof = amorphous.load_profile("air")
    cfg = amorphous.AmorphousConfig(fpixels=6, spixels=5, oversample=1, sources=1, interpolation=interp)
    p0 = _params(kahn=0.3, profile=prof, center=(0.1e-3, 0.2e-3))
    p0 = p0.replace(distance=jnp.asarray(0.02))
    wts = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (5, 6)))
    idx = np.array([1, 3, 5])          # profile points the detector's stol range reaches

    def loss(thickness, density, f_sub):
        F = p0.F.at[idx].set(f_sub)
        p = p0.replace(thickness=thickness, density=density, F=F)
        return jnp.sum(wts * amorphous.render(cfg, p)) / 1e3

    args = (p0.thickness, p0.density, p0.F[idx])
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))   # one compilation for both
    grads = value_and_grad(*args)[1]
    loss = lambda *a: value_and_grad(*a)[0]
    for a, g in enumerate(grads):
        base = np.asarray(args[a], np.float64)
        fd = np.zeros(base.shape)
        for j in np.ndindex(base.shape):
            h = 1e-5 * abs(base[j])
            up, dn = base.copy(), base.copy()
            up[j] += h
            dn[j] -= h
            call = lambda v: float(loss(*[jnp.asarray(v) if b == a else args[b] for b in range(3)]))
            fd[j] = (call(up) - call(dn)) / (2 * h)
        np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-6)
        assert np.all(np.asarray(g) != 0.0)


def test_profiles_load_by_name_and_path():
    names = amorphous.profile_names()
    assert set(names) >= {"water", "air", "ice", "nanoice", "shortwater", "unity"}
    w = amorphous.load_profile("water")
    assert w.stol.size == 10000 and w.F[0] == 2.56999 and w.stol[-1] == 0.5e10
    path = GOLDEN / "nonbragg_air_path" / "air.stol"
    a = amorphous.load_profile(str(path))
    np.testing.assert_array_equal(a.F, amorphous.load_profile("air").F)
    n = amorphous.load_profile("nano-ice")          # comment lines and a third column
    assert n.stol[0] == 0.0 and n.F[0] == 1.34812 and n.stol.size == 1000
    q = amorphous.load_profile("unity", units="Q")
    np.testing.assert_allclose(q.stol, amorphous.load_profile("unity").stol / (4 * np.pi))


# ------------------------------------------------------------------------------------------------
# command-line errors

@pytest.mark.parametrize("args, words", [
    (["-distance", "100"], "-stol"),
    (["-stol", "water", "-thicknes", "1"], "unknown flag"),
    (["-stol", "water", "-distance", "abc"], "-distance"),
    (["-stol", "nosuchprofile"], "nosuchprofile"),
    (["-stol", "water.stol", "-floatfile", "water.stol"], "-stol"),
    (["-stol", "water", "-img", "missing.img"], "missing.img"),
    (["-stol", "water", "-detpixels", "32", "-roi", "40", "50", "0", "10"], "-roi"),
    (["-stol", "water", "-floatfile", "a.bin", "-noisefile", "a.bin"], "a.bin"),
])
def test_bad_input_is_one_line_and_exit_2(args, words, cwd, capsys):
    (cwd / "water.stol").write_bytes((GOLDEN / "nonbragg_water_basic" / "water.stol").read_bytes())
    before = sorted(p.name for p in cwd.iterdir())
    assert nonbragg.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err
    assert sorted(p.name for p in cwd.iterdir()) == before
    assert (cwd / "water.stol").read_bytes() == (GOLDEN / "nonbragg_water_basic" / "water.stol").read_bytes()


def test_curved_det_needs_a_following_argument():
    parsed, warnings = nonbragg.parse(["-stol", "water", "-curved_det"])
    assert [k for _, k, _ in parsed] == ["stol"] and "curved_det" in warnings[0]
    parsed, warnings = nonbragg.parse(["-curved_det", "-stol", "water"])
    assert [k for _, k, _ in parsed] == ["curved_det", "stol"] and not warnings


def test_help_lists_every_flag(capsys):
    assert nonbragg.main(["-h"]) == 0
    text = capsys.readouterr().out
    for flag in nonbragg.FLAGS:
        assert flag in text
