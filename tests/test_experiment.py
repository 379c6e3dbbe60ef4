"""The experiment model (jaxbragg.experiment): built directly in the user's units, it gives the command
line's image for the equivalent flags (<= 1e-9 relative, float64), and composes with grad / vmap / jit.

The command line's image is its own float64 render (``prepare`` + the chunked stages it writes from);
the golden command lines come from tests/golden (their reference images are compared by test_golden).
"""
import io as _io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbragg as jb
from jaxbragg import cli
from jaxbragg.cli import flags as flags_mod

GOLDEN = Path(__file__).parent / "golden"
REL = 1e-9


def cli_image(args, cwd):
    """The command line's float64 image of ``args`` (what it writes, before the float32 file)."""
    prep = cli.prepare(list(args) + ["-nonoise", "-nopgm", "-noprogress"])
    return np.asarray(cli._render(prep.setup, False))


def golden_args(name, cwd):
    meta = json.loads((GOLDEN / name / "case.json").read_text())
    for f in meta.get("inputs", []):
        shutil.copy(GOLDEN / name / f, cwd / f)
    return list(meta["args"])


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_import_is_cheap():
    code = "import sys, jaxbragg; assert 'jax' not in sys.modules, 'jax imported'; print(jaxbragg.__all__[:1])"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_acceptance_snippet_matches_the_command_line(cwd):
    exp = jb.Experiment(
        crystal=jb.Crystal(cell=(55, 65, 75, 80, 100, 110), misset=(-15, 25, 40), N=6, default_F=100.0,
                           shape="square", fudge=1.0, mosaic_spread=0.0, mosaic_domains=1, mosaic_seed=None),
        beam=jb.Beam(wavelength=0.9, divergence=0.0, divsteps=1, dispersion=0.0, dispsteps=1),  # mrad, %
        detector=jb.Detector(pixels=160, pixel_size=0.1, distance=90.0, convention="mosflm"),
        scan=jb.Scan(phi=0.0, osc=0.0, phisteps=1),
        oversample=1)
    image = jb.simulate(exp)
    assert image.shape == (160, 160) and image.dtype == jnp.float64
    args = ["-cell", "55", "65", "75", "80", "100", "110", "-misset", "-15", "25", "40", "-N", "6",
            "-default_F", "100", "-lambda", "0.9", "-detpixels", "160", "-pixel", "0.1", "-distance", "90",
            "-oversample", "1"]
    ref = cli_image(args, cwd)
    assert float(ref.max()) > 100.0
    assert rel(image, ref) <= REL
    exp2 = jb.Experiment.from_flags(args + ["-floatfile", "x.bin", "-seed", "5", "-tile", "64", "-float32"])
    assert rel(jb.simulate(exp2), ref) <= REL
    assert not (cwd / "x.bin").exists()          # from_flags writes nothing


CASES = {
    # golden case -> the same experiment built directly
    "conv_xds_orgxy": lambda: jb.Experiment(
        jb.Crystal(cell=(50, 60, 70, 90, 90, 90), misset=(5, 10, 15), default_F=100, N=5), jb.Beam(wavelength=1.0),
        jb.Detector(pixels=(144, 112), pixel_size=0.1, distance=90, convention="xds", orgx=70.5, orgy=50.25,
                    beam_center=(3.0, 4.0))),
    "divergence_square_dispersion": lambda: jb.Experiment(
        jb.Crystal(cell=(50, 60, 70, 90, 90, 90), misset=(5, 10, 15), default_F=100, N=5),
        jb.Beam(wavelength=1.0, divergence=(3, 2), divstep=(1.4, 0.9), divsteps=3, round_div=False,
                dispersion=5, dispsteps=3),
        jb.Detector(pixels=128, pixel_size=0.1, distance=100)),
    "mosaic_domains": lambda: jb.Experiment(
        jb.Crystal(cell=(50, 60, 70, 90, 90, 90), misset=(5, 10, 15), default_F=100, N=5, mosaic_spread=0.5,
                   mosaic_domains=10, mosaic_seed=777),
        jb.Beam(wavelength=1.0), jb.Detector(pixels=128, pixel_size=0.1, distance=100)),
    "detector_thick_layers": lambda: jb.Experiment(     # the reference spaces 3 layers thick / 2 apart
        jb.Crystal(cell=(40, 50, 60, 90, 90, 90), misset=(5, 10, 15), default_F=100, N=5), jb.Beam(wavelength=1.0),
        jb.Detector(pixels=128, pixel_size=0.15, distance=60, twotheta=20, thickness=300, thicksteps=3,
                    thickstep=150, attenuation=200)),
    "hkl_interp_auto": lambda: jb.Experiment(
        jb.Crystal(cell=(40, 45, 50, 90, 90, 90), misset=(5, -3, 8), N=2, hkl="P1.hkl", interpolate=True),
        jb.Beam(wavelength=1.0), jb.Detector(pixels=128, pixel_size=0.1, distance=80)),
}


RENDERED = ("conv_xds_orgxy", "divergence_square_dispersion", "mosaic_domains")


@pytest.mark.parametrize("name", RENDERED)
def test_model_and_from_flags_match_the_command_line(name, cwd):
    args = golden_args(name, cwd)
    ref = cli_image(args, cwd)
    assert rel(jb.simulate(CASES[name]()), ref) <= REL
    assert rel(jb.simulate(jb.Experiment.from_flags(args)), ref) <= REL


def assert_same_inputs(cfg, params, setup, tol):
    ref_cfg, ref = setup.config, setup.params
    assert cfg == ref_cfg
    for key in ref.keys():
        a, b = getattr(params, key), getattr(ref, key)
        assert (a is None) == (b is None), key
        if b is not None and np.size(b):
            b = np.asarray(b, np.float64)
            scale = max(float(np.max(np.abs(b))), 1e-300)
            assert float(np.max(np.abs(np.asarray(a, np.float64) - b))) <= tol * scale, key


@pytest.mark.parametrize("name", sorted(CASES))
def test_direct_model_lowers_to_the_command_line_inputs(name, cwd):
    from jaxbragg.cli.resolve import translate
    tr = translate(golden_args(name, cwd))
    assert_same_inputs(*CASES[name]().lower(tr.run.execution), tr.setup, 1e-13)


def test_from_flags_lowers_to_the_command_line_inputs_for_every_golden_case(tmp_path, monkeypatch):
    from jaxbragg.cli.resolve import translate
    names = [c["name"] for c in json.loads((GOLDEN / "index.json").read_text())["cases"]]
    assert len(names) == 46
    for name in names:
        cwd = tmp_path / name
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        tr = translate(golden_args(name, cwd), str(cwd))
        assert_same_inputs(*tr.experiment.lower(tr.run.execution), tr.setup, 1e-15)


def small(**detector):
    return jb.Experiment(jb.Crystal(cell=(30, 40, 50, 90, 90, 90), misset=(10, 20, 30), N=3, default_F=50),
                         jb.Beam(wavelength=1.2),
                         jb.Detector(pixels=24, pixel_size=0.4, distance=60, **detector))


def test_grad_wrt_distance_matches_finite_differences():
    exp = small()
    d0 = float(exp.detector.distance)

    def total(d):
        return jnp.sum(jb.simulate(exp.set("detector.distance", d)))

    g = jax.grad(total)(jnp.asarray(d0))
    h = 1e-6
    fd = (total(jnp.asarray(d0 + h)) - total(jnp.asarray(d0 - h))) / (2 * h)
    assert float(fd) != 0.0
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-5)


def test_vmap_over_orientations_equals_a_loop():
    exp = small()
    missets = jnp.asarray(np.deg2rad([[10, 20, 30], [0, 0, 0], [40, -5, 12]]), jnp.float64)
    stacked = jb.stack([exp.set("crystal.misset", m) for m in missets])   # a batch of experiments
    batch = jax.vmap(jb.simulate)(stacked)
    loop = [jb.simulate(jb.Experiment(jb.Crystal(cell=(30, 40, 50, 90, 90, 90), misset=m, N=3, default_F=50),
                                      jb.Beam(wavelength=1.2), jb.Detector(pixels=24, pixel_size=0.4, distance=60)))
            for m in ([10, 20, 30], [0, 0, 0], [40, -5, 12])]
    for b, one in zip(batch, loop):
        assert rel(b, one) <= 1e-12
    assert rel(loop[0], loop[2]) > 0.1            # the orientations give different images


def test_jit_of_the_whole_experiment():
    exp = small()
    assert rel(jax.jit(jb.simulate)(exp), jb.simulate(exp)) <= 1e-12


def test_units_and_plausibility_checks():
    with pytest.raises(ValueError, match=r"Beam.wavelength: must be positive.*A"):
        jb.Beam(wavelength=-1.0)
    with pytest.raises(ValueError, match=r"Detector.distance: must be finite"):
        jb.Detector(distance=float("nan"))
    with pytest.raises(ValueError, match=r"Crystal.cell: edges must be positive"):
        jb.Crystal(cell=(0, 10, 10, 90, 90, 90))
    with pytest.raises(ValueError, match=r"Crystal.misset='random' needs misset_seed"):
        jb.Crystal(cell=(10, 10, 10), misset="random")
    with pytest.warns(jb.PlausibilityWarning, match=r"Detector.distance.*mm"):
        jb.Detector(distance=0.1)                   # metres typed for mm
    with pytest.warns(jb.PlausibilityWarning, match=r"Beam.wavelength"):
        jb.Beam(wavelength=1e-10)                   # metres typed for Angstrom
    with pytest.raises(ValueError, match=r"Crystal.cell: edges must lie between 1e-05 and 1e\+10 A"):
        jb.Crystal(cell=(5e-9, 5e-9, 5e-9))         # metres typed for Angstrom: no crystal is that small
    with pytest.warns(jb.PlausibilityWarning, match=r"Crystal.cell.*1 - 10000 A"):
        jb.Crystal(cell=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"Scan.spindle_axis: the mosflm convention fixes it"):
        jb.Experiment(jb.Crystal(cell=(10, 10, 10)), scan=jb.Scan(spindle_axis=(0, 1, 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exp = jb.Experiment(jb.Crystal(cell=[50, 60, 70, 90, 90, 90], N=[2, 3, 4], misset=[1, 2, 3]),
                            jb.Beam(wavelength=1), jb.Detector(pixels=[20, 10], beam_center=[1, 2]))
    # SI inside: mm -> m, deg -> rad, A -> m; MOSFLM beam centre (X, Y) -> (Fbeam, Sbeam) = (Y, X) + px/2
    p = exp.detector.panel
    assert (p.fpixels, p.spixels) == (20, 10)
    np.testing.assert_allclose(exp.crystal.ncells, [2, 3, 4])
    np.testing.assert_allclose(exp.crystal.misset, np.deg2rad([1, 2, 3]))
    np.testing.assert_allclose(exp.beam.wavelength, 1e-10)
    cfg, params = exp.lower()
    np.testing.assert_allclose(params.beam_center, [2e-3 + 0.5e-4, 1e-3 + 0.5e-4], rtol=1e-15)
    np.testing.assert_allclose(params.distance, 0.1)
    np.testing.assert_allclose(np.linalg.norm(params.lattice, axis=1), [50e-10, 60e-10, 70e-10], rtol=1e-15)


def test_from_flags_keeps_execution_apart_and_applies_the_flag_rules(cwd):
    from jaxbragg.cli.resolve import translate
    args = ["-cell", "50", "50", "50", "-default_F", "1", "-N", "2", "-detpixels", "32", "-xds", "-distance", "80",
            "-dispersion", "2", "-dispsteps", "1", "-roi", "1", "5", "2", "6", "-intfile", "a.img", "-tile", "16",
            "-float32", "-nonoise"]
    tr = translate(args)
    exp = tr.experiment
    assert tr.run.outputs["int"] == "a.img" and tr.run.options["noise"] is False
    assert tr.run.execution == jb.Execution(tile_pixels=16, precision="float32")
    panel = exp.detector.panel
    assert panel.pivot == "sample" and panel.roi == (1, 5, 2, 6)          # XDS forces the sample pivot
    assert exp.beam.dispsteps == 2                                          # -dispsteps 1 becomes 2
    np.testing.assert_allclose(exp.beam.dispstep, 0.02)


def test_parameters_from_experiment_and_from_params_fixes():
    from jaxbragg import parameters
    exp = small()
    cfg, params = exp.lower()
    template, physical = parameters.from_params(cfg, params)                # one domain: no mosaic_spread
    np.testing.assert_allclose(parameters.to_params(template, physical).lattice, params.lattice, rtol=1e-12)
    template, physical = parameters.from_params(cfg, params.replace(ncells=[3.0, 3.0, 3.0]))   # a list
    np.testing.assert_allclose(physical.ncells, [3, 3, 3])
    t2, p2 = parameters.from_experiment(exp)
    np.testing.assert_allclose(p2.distance, 0.06)


def test_help_version_and_spellings(capsys):
    for flag in ("-h", "-help", "--help"):
        assert cli.main([flag]) == 0
        out = capsys.readouterr().out
        for name in flags_mod.FLAGS:
            assert name in out, name
        assert "[mm]" in out and "[A]" in out and "Crystal:" in out and "Outputs:" in out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jaxbragg {jb.__version__}"
    parsed = flags_mod.parse(["-matrix", "A.mat", "-detector_absorb", "inf", "-adcoffset", "10"])
    assert parsed == [("-mat", ("A.mat",)), ("-detector_abs", ("inf",)), ("-adc", (10.0,))]
    for wrong, meant in (("-hdiv", "-hdivrange"), ("-xdet_vector", "-fdet_vector")):
        assert cli.main(["-cell", "10", "10", "10", wrong, "1"]) == 2
        err = capsys.readouterr().err
        assert f"unknown flag '{wrong}'" in err and meant in err


def test_tutorial_runs(tmp_path, monkeypatch):
    script = Path(__file__).parent.parent / "docs" / "examples" / "tutorial.py"
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__main__"}
    exec(compile(script.read_text(), str(script), "exec"), ns)
    assert ns["checks_passed"]
