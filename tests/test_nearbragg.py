"""nearBragg: the explicit-scatterer renderer (jaxbragg.nearbragg), its atom reader and its command line.

* golden: the six nearBragg.c images in tests/golden_nearbragg (correlation >= 0.99999, max|diff|/max|ref|
  <= 1e-6; float64 reproduces them bit for bit today);
* physics: a lattice of points far from the source against nanoBragg's square-crystal image; one scatterer
  against the polarization x solid-angle pattern computed here in NumPy; a source moved away converges to
  the plane-wave image; gradients against central finite differences;
* the memory plan of a 10^4-scatterer, 512^2 render (compiled, not run), tiling invariance, vmap;
* the atom-file reader (LF, CRLF, CR-only, defaults, errors) and the command line's input rules.
"""
import io as _io
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import nearbragg as nb
from jaxbragg.cli import nearbragg as cli
from jaxbragg.errors import InputError
from jaxbragg.io.atoms import parse_atoms, read_atoms

GOLDEN = Path(__file__).parent / "golden_nearbragg"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def _metrics(ref, img):
    r, x = ref.astype(np.float64).ravel(), img.astype(np.float64).ravel()
    rel = np.max(np.abs(x - r)) / np.max(np.abs(r))
    corr = np.mean((r - r.mean()) * (x - x.mean())) / (r.std() * x.std())
    return corr, rel


def _run(args):
    out = _io.StringIO()
    rc = cli.run(list(args), out=out, err=_io.StringIO())
    return rc, out.getvalue()


# ---- golden ------------------------------------------------------------------------------------------

def test_golden_cases_present():
    assert len(CASES) == 6


@pytest.mark.parametrize("name", CASES)
def test_golden_image(name, tmp_path, monkeypatch):
    meta = json.loads((GOLDEN / name / "case.json").read_text())
    for f in meta["inputs"]:
        shutil.copy(GOLDEN / name / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    rc, _ = _run(meta["args"] + ["-floatfile", "out.bin"])
    assert rc == 0
    img = np.fromfile(tmp_path / "out.bin", dtype="<f4").reshape(meta["spixels"], meta["fpixels"])
    ref = np.load(GOLDEN / name / "float.npz")["image"]
    corr, rel = _metrics(ref, img)
    print(f"{name}: corr={corr:.12f} rel={rel:.3e}")
    assert corr >= 0.99999 and rel <= 1e-6, (corr, rel)


# ---- physics -----------------------------------------------------------------------------------------

def _lattice(cell_vectors, n):
    idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3) - (n - 1) / 2.0
    return idx @ np.asarray(cell_vectors)


def test_lattice_far_from_source_matches_nanobragg_square_crystal():
    """5x5x5 points on a 30 A cubic cell, plane wave, against nanoBragg's -N 5 square crystal with F = 1.

    The far-field lattice factor drops the path's second-order term |x|^2 / (2 R lambda) ~ 3e-6 cycles for
    this 60 A object at 100 mm: measured max|diff|/max = 1.8e-7 (asserted <= 1e-6)."""
    from helpers import setup_from
    from jaxbragg.simulate import simulate
    n_pix = 48
    s = setup_from(f"-cell 30 30 30 90 90 90 -N 5 -default_F 1 -lambda 1 -distance 100 -pixel 0.1 "
                   f"-detpixels {n_pix} -nopolar -oversample 1")
    ref = np.asarray(simulate(s.config, s.params))
    pos = _lattice(s.info["lattice"], 5)
    atoms = nb.Scatterers(pos, np.ones(len(pos)), np.zeros(len(pos)), np.zeros(len(pos)))
    exp = nb.experiment(fpixels=n_pix, spixels=n_pix, pixel=1e-4, distance=s.info["close_distance"],
                        fdet=s.info["fdet"], sdet=s.info["sdet"], odet=s.info["odet"], pix0=s.info["pix0"])
    img = np.asarray(nb.render(nb.NearConfig(n_pix, n_pix, far_source=True), atoms, exp))
    corr, rel = _metrics(ref, img)
    assert ref.max() > 100 * np.median(ref)          # Bragg spots on the detector
    assert rel <= 1e-6 and corr > 0.999999, (rel, corr)


def _single_scatterer_expected(n, pixel, distance, occ, kahn, source_distance=None):
    """NumPy, from first principles: the default detector (fast = +z, slow = -y, normal = +x, beam centre
    ((n-1) p / 2, (n+1) p / 2)), pixel centres, Omega = p^2 d / R^3, Kahn factor with E along z."""
    xb, yb = (n * pixel - pixel) / 2.0, (n * pixel + pixel) / 2.0
    f = (np.arange(n) + 0.5) * pixel
    S, F = np.meshgrid(f, f, indexing="ij")
    pos = np.stack([np.full_like(F, distance), yb - S, F - xb], -1)
    R = np.linalg.norm(pos, axis=-1)
    omega = pixel ** 2 * distance / R ** 3
    u = pos / R[..., None]
    polar = 0.5 * (1.0 + u[..., 0] ** 2 - kahn * (u[..., 2] ** 2 - u[..., 1] ** 2))
    scale = 1.0 if source_distance is None else 1.0 / source_distance ** 2
    return occ ** 2 * omega * polar * nb.FLUENCE * nb.R_E_SQR * scale


def test_single_scatterer_is_polarization_times_solid_angle():
    n, pixel, distance = 16, 2e-3, 0.05                  # wide angles: 2theta up to ~24 degrees
    atoms = nb.Scatterers(np.zeros((1, 3)), np.array([1.7]), np.zeros(1), np.zeros(1))
    exp = nb.experiment(fpixels=n, spixels=n, pixel=pixel, distance=distance, kahn=0.8,
                        source_distance=0.5)
    img = np.asarray(nb.render(nb.NearConfig(n, n, polarization=True), atoms, exp))
    want = _single_scatterer_expected(n, pixel, distance, 1.7, 0.8, 0.5)     # spherical wave from 0.5 m
    np.testing.assert_allclose(img, want, rtol=1e-12)
    assert img.max() / img.min() > 1.2                    # the pattern is not flat


def test_far_source_limit():
    """Moving the source away converges to the plane-wave image (times the 1/D^2 of the spherical wave):
    the near-field term (object size)^2 / (D lambda) falls tenfold per decade of D."""
    rng = np.random.default_rng(3)
    pos = rng.uniform(-200e-10, 200e-10, (40, 3))
    atoms = nb.Scatterers(pos, np.ones(40), np.zeros(40), np.zeros(40))
    n = 24
    base = dict(fpixels=n, spixels=n, pixel=0.4e-3, distance=0.1)
    far = np.asarray(nb.render(nb.NearConfig(n, n, far_source=True), atoms, nb.experiment(**base)))
    cfg = nb.NearConfig(n, n)
    errs = []
    for d in (1e-5, 1e-4, 1e-3, 1e-2):
        img = np.asarray(nb.render(cfg, atoms, nb.experiment(source_distance=d, **base))) * d * d
        errs.append(np.abs(img - far).max() / far.max())
    assert errs[0] > 0.1                     # 10 um from a 400 A object: strongly near-field
    for a, b in zip(errs, errs[1:]):
        assert b < a / 5, errs
    assert errs[-1] < 1e-3, errs


def _small_problem():
    rng = np.random.default_rng(7)
    pos = rng.uniform(-20e-10, 20e-10, (12, 3))
    atoms = nb.Scatterers(jnp.asarray(pos), jnp.asarray(rng.uniform(0.5, 2, 12)),
                          jnp.asarray(rng.uniform(0, 30, 12)), jnp.asarray(rng.uniform(-1, 1, 12)))
    # a 1 mm detector distance keeps the phases ~6e7 rad, so finite differences are not rounding noise
    exp = nb.experiment(fpixels=6, spixels=6, pixel=0.1e-3, distance=1e-3, source_distance=2e-3,
                        wavelength_factors=(0.99, 1.01))
    return atoms, exp


def test_gradients_against_finite_differences():
    """d(loss)/d(positions, occupancy, B, wavelength, distance, two-theta, beam centre) against a 4-point
    central difference (agreement measured 5e-7 .. 3e-5; asserted 1e-4)."""
    atoms, exp = _small_problem()
    cfg = nb.NearConfig(6, 6)
    weights = np.random.default_rng(1).uniform(0, 1, (6, 6))

    def replaced(positions, occ, b, lam, dist, two, center):
        return (atoms._replace(positions=positions, occupancy=occ, b_factor=b),
                exp._replace(wavelength=lam, distance=dist, twotheta=two, beam_center=center))

    def loss(*args):
        return jnp.sum(nb.render(cfg, *replaced(*args)) * weights) * 1e6

    def loss_np(*args):                        # the forward image of the compiled top-level render
        a, e = replaced(*args)
        return np.sum(np.asarray(nb.render(cfg, a, jax.tree_util.tree_map(np.asarray, e))) * weights) * 1e6

    args = (atoms.positions, atoms.occupancy, atoms.b_factor, jnp.asarray(exp.wavelength),
            jnp.asarray(exp.distance), jnp.asarray(0.02), jnp.asarray(exp.beam_center))
    grads = jax.jit(jax.grad(loss, argnums=tuple(range(7))))(*args)
    # steps that move the phase *differences* between scatterers by ~0.01-0.04 rad (a common phase has no
    # effect; absolute phases here are ~2e8 rad, whose rounding stays ~1e-6 of such a change); the
    # 4-point stencil's truncation error is then ~(0.04)^4
    steps = (3e-13, 1e-5, 1e-3, 2e-14, 3e-8, 1e-4, 1e-7)
    checks = [(3, ()), (4, ()), (5, ()), (6, (0,)), (6, (1,)), (1, (2,)), (2, (5,)), (0, (0, 0)),
              (0, (3, 1)), (0, (7, 2))]
    for which, index in checks:
        h = steps[which]

        def at(t):
            moved = list(args)
            moved[which] = args[which].at[index].add(t)
            return loss_np(*moved)

        fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
        g = grads[which][index]
        assert abs(g - fd) <= 1e-4 * abs(g), (which, index, g, fd)


def test_tiling_does_not_change_the_image_and_vmap_matches_a_loop():
    atoms, exp = _small_problem()
    cfg = nb.NearConfig(6, 6)                 # the configuration of the gradient test: compiled once
    tiny = nb.NearConfig(6, 6, tiling=nb.Tiling(atom_chunk=5, budget=64))
    a, b = np.asarray(nb.render(cfg, atoms, exp)), np.asarray(nb.render(tiny, atoms, exp))
    np.testing.assert_allclose(b, a, rtol=1e-12)
    batch = jax.tree_util.tree_map(lambda x: jnp.stack([x, x * 1.0, x]), atoms)
    batch = batch._replace(positions=batch.positions.at[1].multiply(1.05))
    stacked = np.asarray(jax.vmap(lambda s: nb.render(cfg, s, exp))(batch))
    for k in range(3):
        one = jax.tree_util.tree_map(lambda x: x[k], batch)
        np.testing.assert_allclose(stacked[k], np.asarray(nb.render(cfg, one, exp)), rtol=1e-12)
    assert not np.allclose(stacked[0], stacked[1])


def test_memory_bounded_for_1e4_scatterers_on_512_squared():
    """Compile (not run) a 512^2 render of 10^4 scatterers: its temporaries stay far below the
    pixels x scatterers product (2.6e9 values, 21 GB in float64): 39 MiB measured, 128 MiB asserted."""
    n_atoms, n = 10_000, 512
    cfg = nb.NearConfig(n, n)
    atoms = jax.ShapeDtypeStruct((n_atoms, 3), jnp.float64)
    vec = jax.ShapeDtypeStruct((n_atoms,), jnp.float64)
    exp = nb.experiment(fpixels=n, spixels=n)
    exp_spec = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float64), exp)
    compiled = jax.jit(nb.render, static_argnums=0).lower(cfg, nb.Scatterers(atoms, vec, vec, vec),
                                                          exp_spec).compile()
    mem = compiled.memory_analysis()
    if mem is None:
        pytest.skip("this backend reports no memory analysis")
    assert mem.temp_size_in_bytes < 128 * 2 ** 20, mem.temp_size_in_bytes     # measured: 39 MiB
    tile, chunk = cfg.tiling.plan(n * n, 1, n_atoms)
    assert tile * chunk <= cfg.tiling.budget


# ---- atom files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_atom_file_line_endings_and_defaults(eol, tmp_path):
    text = eol.join(["# x y z occ B phase", "1 2 3", "", "4,5,6 0.5", "7;8:9!2 10", "  -1e1 0 .5 1 2 45"]) + eol
    path = tmp_path / "a.txt"
    path.write_bytes(text.encode())
    a = read_atoms(path)
    np.testing.assert_array_equal(a.xyz, [[1, 2, 3], [4, 5, 6], [7, 8, 9], [-10, 0, 0.5]])
    np.testing.assert_array_equal(a.occupancy, [1, 0.5, 2, 1])
    np.testing.assert_array_equal(a.b_factor, [0, 0, 10, 2])
    np.testing.assert_array_equal(a.phase_deg, [-90, -90, -90, 45])


@pytest.mark.parametrize("text, line, words", [
    ("1 2 3\n1 2\n", 2, "got 2 fields"),
    ("1 2 3\r\r1 2 x\r", 3, "z 'x' is not a number"),
    ("1 2 3 4 5 6 7\n", 1, "at most 6 fields"),
    ("1 2 nan\n", 1, "not finite"),
    ("1 2 1_0\n", 1, "not a number"),
])
def test_atom_file_errors_name_file_and_line(text, line, words):
    with pytest.raises(InputError) as e:
        parse_atoms(text, "atoms.txt")
    msg = str(e.value)
    assert msg.startswith(f"atoms.txt: line {line}: ") and words in msg and "\n" not in msg


def test_atom_file_without_scatterers():
    with pytest.raises(InputError, match="no scatterers"):
        parse_atoms("\n# nothing\n\n", "empty.txt")


# ---- command line ------------------------------------------------------------------------------------

def _atoms_here(path, n=8):
    rng = np.random.default_rng(0)
    path.write_text("".join("%.4f %.4f %.4f 1 5 10\n" % tuple(r) for r in rng.uniform(-30, 30, (n, 3))))


@pytest.mark.parametrize("args, words", [
    ([], "-file: no scatterer list"),
    (["-file", "atoms.txt", "-intfile", "atoms.txt"], "-intfile atoms.txt would overwrite the input file of -file"),
    (["-file", "atoms.txt", "-floatfile", "x.bin", "-intfile", "x.bin"], "both write x.bin"),
    (["-file", "missing.txt"], "missing.txt: cannot read atom list"),
    (["-file", "atoms.txt", "-lambda", "zero"], "-lambda: expected a number"),
    (["-file", "atoms.txt", "-source_distance", "near"], "-source_distance: expected a distance"),
    (["-file", "atoms.txt", "-distanse", "5"], "did you mean -distance"),
    (["-file", "atoms.txt", "-roi", "5", "1", "0", "3"], "-roi"),
    (["-file", "atoms.txt", "-source_depth", "-2"], "-source_depth"),
    (["-file", "atoms.txt", "-detpixels", "0", "-pixel", "1e-320"], "more than 1e8 pixels"),
    (["-file", "atoms.txt", "-oversample", "20000"], "samples per pixel"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(args, words, cwd, capsys):
    _atoms_here(cwd / "atoms.txt")
    before = sorted(p.name for p in cwd.iterdir())
    rc = cli.main(["-detpixels", "4"] + args if args else args)
    err = capsys.readouterr().err
    assert rc == 2
    if args:
        assert words in err and err.count("\n") == 1, err
        assert sorted(p.name for p in cwd.iterdir()) == before
    else:
        assert "usage" in err


def test_help(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "-source_distance" in out and "-coherent" in out


def test_accumulate_and_amplitude_outputs(cwd):
    """-accumulate adds to the float image (incoherent) or to the mean amplitude (coherent: 2F, 4x the
    intensity); the SMV file holds trunc(float * 55000 / max + 40) with the C's header."""
    from jaxbragg.io.smv import read_smv
    _atoms_here(cwd / "atoms.txt")
    common = ["-file", "atoms.txt", "-detpixels", "6", "-pixel", "0.5", "-noprogress", "-roi", "1", "4", "0", "5"]
    assert _run(common + ["-floatfile", "a.bin"])[0] == 0
    one = np.fromfile("a.bin", "<f4").reshape(6, 6)
    assert _run(common + ["-floatfile", "a.bin", "-accumulate"])[0] == 0
    np.testing.assert_allclose(np.fromfile("a.bin", "<f4").reshape(6, 6), 2 * one, rtol=1e-6)
    assert np.all(one[:, [0, 5]] == 0) and np.all(one[:, 1:5] > 0)
    header, ints = read_smv("intimage.img")
    assert header["BEAMLINE"] == "fake" and header["SIZE1"] == "6"
    want = np.trunc(np.minimum(one.astype(np.float64) * (55000.0 / float(one.max())) + 40.0, 65535))
    np.testing.assert_array_equal(ints[:, 1:5], want[:, 1:5])
    coh = common + ["-coherent", "-floatfile", "c.bin"]
    assert _run(coh)[0] == 0
    c1, cos1 = np.fromfile("c.bin", "<f4"), np.fromfile("cosimage.bin", "<f4")
    assert _run(coh + ["-accumulate"])[0] == 0
    np.testing.assert_allclose(np.fromfile("cosimage.bin", "<f4"), 2 * cos1, rtol=1e-6)
    np.testing.assert_allclose(np.fromfile("c.bin", "<f4"), 4 * c1, rtol=1e-6)
    # one oversample-1 step: the coherent and incoherent images agree
    np.testing.assert_allclose(c1.reshape(6, 6), one, rtol=1e-6)


def test_roi_off_the_detector_writes_zeros(cwd):
    _atoms_here(cwd / "atoms.txt")
    assert _run(["-file", "atoms.txt", "-detpixels", "4", "-roi", "10", "20", "0", "3"])[0] == 0
    assert not np.any(np.fromfile("floatimage.bin", "<f4"))


def test_printout_and_noop_flags(cwd):
    _atoms_here(cwd / "atoms.txt")
    rc, out = _run(["-file", "atoms.txt", "-detpixels", "4", "-printout_pixel", "2", "1", "-depthstep", "3",
                    "-square_div", "-source_distance", "far"])
    assert rc == 0
    assert "-depthstep has no effect" in out and "-square_div has no effect" in out
    assert "   2    1 : stol = " in out and out.count("omega  ") == 1
    img = np.fromfile("floatimage.bin", "<f4").reshape(4, 4)
    line = [l for l in out.splitlines() if l.startswith("pixel  ")][0]
    assert float(line.split()[1]) == pytest.approx(float(img[1, 2]), rel=1e-9)


def test_progress_reports_on_large_jobs(cwd, monkeypatch):
    """A job above PROGRESS_MIN_WORK is rendered in chunks with N% lines on stderr (not a terminal); the
    image does not depend on the chunking."""
    _atoms_here(cwd / "atoms.txt")
    args = ["-file", "atoms.txt", "-detpixels", "12", "-pixel", "0.5"]
    assert _run(args + ["-floatfile", "whole.bin"])[0] == 0
    monkeypatch.setattr(cli, "PROGRESS_MIN_WORK", 1)
    err = _io.StringIO()
    assert cli.run(args + ["-floatfile", "chunked.bin"], out=_io.StringIO(), err=err) == 0
    lines = err.getvalue().splitlines()
    assert lines[-1] == "100% done" and 10 <= len(lines) <= cli.PROGRESS_CHUNKS, lines
    np.testing.assert_array_equal(np.fromfile("chunked.bin", "<f4"), np.fromfile("whole.bin", "<f4"))
