"""Multi-panel detectors, DIALS experiment lists (.expt) and per-panel output files.

Expected values come from the reference (the golden image of ``cubic_basic``), from single-panel renders
of the command line with the same explicit geometry, from finite differences and from geometry worked
out by hand from the hand-written ``tests/data/cubic_basic.expt`` (its experiment 0 is the
``cubic_basic`` command line in the DIALS frame: origin (-6.5, 6.5, -100) mm = nanoBragg's pix0
(100, 6.5, -6.5) mm of a MOSFLM detector at 100 mm with 128 pixels of 0.1 mm; experiment 1 is a
two-panel detector under a two-level hierarchy).
"""
from __future__ import annotations

import json
import math
import runpy
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbragg as jb
from jaxbragg.cli import main
from jaxbragg.cli.outputs import panel_path
from jaxbragg.panels import from_dials, to_dials

HERE = Path(__file__).parent
EXPT = HERE / "data" / "cubic_basic.expt"
GOLDEN = HERE / "golden" / "cubic_basic"

# two 12 x 8 panels side by side with a gap, lab frame of nanoBragg (MOSFLM: beam along +x), mm
FDET, SDET, ODET = (0.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)
PIX0 = [(60.0, 1.2, -1.6), (60.0, 1.2, 0.2)]
XTAL = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-N", "3", "-oversample", "1"]


def crystal():
    return jb.Crystal((50.0, 50.0, 50.0), N=3, default_F=100.0)


def panel(pix0, **kw):
    return jb.Panel((12, 8), 0.1, convention="custom", fdet=FDET, sdet=SDET, odet=ODET, pix0=pix0, **kw)


@pytest.fixture(scope="module")
def two_panel():
    return jb.Experiment(crystal(), detector=jb.Detector.from_panels(*(panel(p) for p in PIX0)))


def rz(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def cli(argv, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    return main(list(argv) + ["-noprogress", "-nopgm", "-nonoise"])


# ------------------------------------------------------------------------------------------------
# multi-panel rendering
# ------------------------------------------------------------------------------------------------

def test_two_panels_equal_two_single_panel_command_lines(two_panel, tmp_path, monkeypatch):
    images = jb.simulate(two_panel)
    assert isinstance(images, tuple) and len(images) == 2
    stacked = np.asarray(jb.simulate_panels(two_panel))
    assert stacked.shape == (2, 8, 12)
    for k, p0 in enumerate(PIX0):
        vec = lambda flag, v: [flag, *(repr(float(x)) for x in v)]
        argv = (XTAL + ["-detpixels_f", "12", "-detpixels_s", "8", "-pixel", "0.1"] + vec("-fdet_vector", FDET)
                + vec("-sdet_vector", SDET) + vec("-odet_vector", ODET)
                + vec("-pix0_vector", np.array(p0) / 1000.0) + ["-floatfile", f"p{k}.bin"])
        assert cli(argv, tmp_path, monkeypatch) == 0
        ref = np.fromfile(tmp_path / f"p{k}.bin", "<f4").reshape(8, 12).astype(np.float64)
        assert ref.max() > 0
        np.testing.assert_allclose(np.asarray(images[k]), ref, rtol=1e-6, atol=1e-6 * ref.max())
        np.testing.assert_array_equal(stacked[k], np.asarray(images[k]))


def test_panels_of_different_shapes_come_back_in_order(two_panel):
    small = jb.Panel((10, 6), 0.1, convention="custom", fdet=FDET, sdet=SDET, odet=ODET, pix0=PIX0[0])
    mixed = two_panel.replace(detector=jb.Detector.from_panels(two_panel.detector.panels[0], small,
                                                               two_panel.detector.panels[1]))
    images = jb.simulate(mixed)
    assert [im.shape for im in images] == [(8, 12), (6, 10), (8, 12)]
    ref = jb.simulate(two_panel)
    # the small panel shares panel 0's corner and axes: its image is panel 0's top-left corner
    np.testing.assert_allclose(np.asarray(images[1]), np.asarray(ref[0])[:6, :10], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(images[2]), np.asarray(ref[1]), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="differ"):
        jb.simulate_panels(mixed)


def test_whole_detector_shift_and_rotation_move_every_panel(two_panel):
    shift = np.array([0.5, -0.3, 0.2])            # mm
    moved = two_panel.replace(detector=jb.Detector.from_panels(*two_panel.detector.panels, shift=shift,
                                                               rotation=(0.0, 0.0, 3.0)))
    R = rz(3.0)     # about lab z, then the shift: r -> R r + shift
    by_hand = jb.Detector.from_panels(*(jb.Panel((12, 8), 0.1, convention="custom", fdet=R @ FDET, sdet=R @ SDET,
                                                 odet=R @ ODET, pix0=R @ np.array(p) + shift) for p in PIX0))
    expected = jb.simulate_panels(two_panel.replace(detector=by_hand))
    got = jb.simulate_panels(moved)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-12, atol=1e-12 * float(expected.max()))
    frames = jb.panel_frames(moved)
    np.testing.assert_allclose(frames[1]["origin"], (R @ np.array(PIX0[1]) + shift) / 1000.0, rtol=1e-14)
    np.testing.assert_allclose(frames[1]["fast"], R @ FDET, atol=1e-15)


def test_grad_of_a_panel_origin_matches_finite_differences_and_the_shift_moves_every_panel(two_panel):
    w = jnp.asarray(np.random.default_rng(3).uniform(0.5, 1.5, (2, 8, 12)))

    def loss(p0, p1, shift):
        exp = two_panel.set("detector.panels.0.pix0", p0).set("detector.panels.1.pix0", p1)
        return jnp.sum(w * jb.simulate_panels(exp.set("detector.shift", shift)))

    x0 = [jnp.asarray(p.pix0) for p in two_panel.detector.panels] + [jnp.zeros(3)]
    grads = [np.asarray(g) for g in jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*x0)]
    value = loss          # un-jitted: reuses the compiled render of the fixture's configuration
    h = 2e-7      # m
    fd = np.array([(float(value(x0[0], x0[1].at[i].add(h), x0[2])) - float(value(x0[0], x0[1].at[i].add(-h), x0[2])))
                   / (2 * h) for i in range(3)])
    scale = np.max(np.abs(fd))
    assert scale > 0
    np.testing.assert_allclose(grads[1], fd, rtol=1e-6, atol=1e-6 * scale)
    # every panel's origin moves with the shift: d/dshift = sum over panels of d/dpix0
    np.testing.assert_allclose(grads[2], grads[0] + grads[1], rtol=1e-10, atol=1e-12 * scale)


# ------------------------------------------------------------------------------------------------
# DIALS experiment lists
# ------------------------------------------------------------------------------------------------

def test_expt_of_a_golden_geometry_renders_the_golden_image(tmp_path, monkeypatch):
    shutil.copy(EXPT, tmp_path / "in.expt")
    assert cli(["-expt", "in.expt", "-N", "5", "-default_F", "100", "-oversample", "1", "-floatfile", "out.bin"],
               tmp_path, monkeypatch) == 0
    img = np.fromfile(tmp_path / "out.bin", "<f4").reshape(128, 128).astype(np.float64)
    ref = np.load(GOLDEN / "float.npz")["image"].astype(np.float64)
    assert np.max(np.abs(img - ref)) / np.max(ref) <= 1e-6


def test_expt_experiment_lowers_to_the_golden_command_line_inputs():
    exp = jb.Experiment.from_expt(EXPT, N=5, default_F=100.0)
    cfg, p = exp.lower()
    golden = json.loads((GOLDEN / "case.json").read_text())["args"]
    ref_cfg, ref = jb.Experiment.from_flags(golden).lower()
    assert (cfg.fpixels, cfg.spixels) == (128, 128)
    frame_ref = jb.simulate.detector_frame(ref_cfg, ref)
    frame = jb.simulate.detector_frame(cfg, p)
    np.testing.assert_allclose(frame["pix0"], [0.1, 0.0065, -0.0065], rtol=1e-14)     # by hand, see top
    for key in ("pix0", "fdet", "sdet", "odet"):
        np.testing.assert_allclose(frame[key], frame_ref[key], atol=1e-15)
    np.testing.assert_allclose(p.lattice, np.eye(3) * 50e-10, atol=1e-22)
    np.testing.assert_allclose(p.source_dirs[0], [-1.0, 0.0, 0.0], atol=1e-15)   # towards the source
    assert float(p.kahn) == 0.0                                                  # 2 * 0.5 - 1
    np.testing.assert_allclose(p.spindle, [0.0, 0.0, 1.0], atol=1e-15)


def test_expt_hierarchy_is_flattened_and_converted():
    m = jb.io.read_expt(EXPT, index=1)
    # D: origin (1, 2, -150), fast +y, slow -x, normal +z; Q at (0.5, 0, 0) in D; panels at (-20, 10, 0)
    # and (0, 10, 0) in Q with fast +x, slow -y in Q (worked out by hand)
    np.testing.assert_allclose(m.panels[0].origin, [-9.0, -17.5, -150.0], atol=1e-12)
    np.testing.assert_allclose(m.panels[1].origin, [-9.0, 2.5, -150.0], atol=1e-12)
    for p in m.panels:
        np.testing.assert_allclose(p.fast, [0.0, 1.0, 0.0], atol=1e-15)
        np.testing.assert_allclose(p.slow, [1.0, 0.0, 0.0], atol=1e-15)
    assert m.metadata["materials"] == ["Si", "Si"] and m.metadata["panel_names"] == ["A", "B"]
    exp = jb.Experiment.from_expt(EXPT, index=1, N=3, default_F=10.0)
    frames = jb.panel_frames(exp)
    for f, p in zip(frames, m.panels):          # back in the DIALS frame: the file's geometry
        np.testing.assert_allclose(to_dials(f["origin"]) * 1000.0, p.origin, atol=1e-12)
        np.testing.assert_allclose(to_dials(f["fast"]), p.fast, atol=1e-15)
        np.testing.assert_allclose(to_dials(f["slow"]), p.slow, atol=1e-15)
        assert f["pixels"] == (12, 8) and float(f["pixel_size"]) == 0.1e-3
    q = exp.detector.panels[0]
    assert float(q.thickstep) == pytest.approx(450e-6, rel=1e-14)      # 0.45 mm in one layer
    assert float(q.mu) == pytest.approx(3900.0, rel=1e-14)             # 3.9 / mm
    assert float(exp.beam.kahn) == pytest.approx(0.998, rel=1e-14)     # 2 * 0.999 - 1
    assert float(exp.beam.wavelength) == pytest.approx(1.3e-10, rel=1e-14)
    np.testing.assert_allclose(from_dials([0.0, 0.0, -1.0]), [1.0, 0.0, 0.0])


def test_expt_command_line_flags_override_the_file_and_panels_get_their_own_files(tmp_path, monkeypatch):
    shutil.copy(EXPT, tmp_path / "in.expt")
    argv = ["-expt", "in.expt", "-expt_index", "1", "-N", "3", "-default_F", "10", "-lambda", "1.1",
            "-detector_thick", "0", "-oversample", "1", "-floatfile", "img.bin", "-intfile", "img.img",
            "-pngfile", "img.png", "-cbffile", "img.cbf", "-nexusfile", "img.h5"]
    assert cli(argv, tmp_path, monkeypatch) == 0
    for name in ("img_p00.bin", "img_p01.bin", "img_p00.img", "img_p01.img", "img_p00.png", "img_p01.png",
                 "img_p00.cbf", "img_p01.cbf", "img.h5"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "img.bin").exists() and not (tmp_path / "img.cbf").exists()
    # detector files: one miniCBF per panel, one NeXus file with a module per panel (data one below the other)
    import fabio
    import h5py
    import hdf5plugin  # noqa: F401  (the bitshuffle filter)
    counts = [jb.io.read_smv(tmp_path / f"img_p{k:02d}.img")[1] for k in range(2)]
    assert max(float(c.max()) for c in counts) > 0
    for k in range(2):
        np.testing.assert_array_equal(fabio.open(str(tmp_path / f"img_p{k:02d}.cbf")).data, counts[k])
    with h5py.File(tmp_path / "img.h5", "r") as f:
        np.testing.assert_array_equal(f["/entry/data/data"][0], np.vstack(counts))
        det = f["/entry/instrument/detector"]
        assert sorted(k for k in det if k.startswith("module")) == ["module_p00", "module_p01"]
        assert list(det["module_p01/data_origin"][()]) == [8, 0]
    exp = jb.Experiment.from_expt(EXPT, index=1, N=3, default_F=10.0, wavelength=1.1)
    assert exp.detector.panels[0].thick_sensor          # the file's sensor, switched off by the flag:
    no_sensor = [p.replace(thick_sensor=False, thickstep=np.float64(0.0)) for p in exp.detector.panels]
    mine = jb.simulate_panels(exp.replace(detector=jb.Detector.from_panels(*no_sensor)))
    assert float(mine.max()) > 0
    for k in range(2):
        ref = np.fromfile(tmp_path / f"img_p{k:02d}.bin", "<f4").reshape(8, 12).astype(np.float64)
        np.testing.assert_allclose(np.asarray(mine[k]), ref, rtol=1e-6, atol=1e-6 * ref.max())


def test_panel_path_naming_rule():
    assert panel_path("out/img.bin", 0, 1) == "out/img.bin"
    assert panel_path("out/img.bin", 3, 4) == "out/img_p03.bin"
    assert panel_path("a.b/noext", 1, 2) == "a.b/noext_p01"
    assert panel_path("x.img", 7, 120) == "x_p007.img"


@pytest.mark.parametrize("doc, field", [
    ("not json", "not a JSON"),
    ({"experiment": [{"beam": 0, "detector": 0}], "beam": [{"direction": [0, 0, 1]}],
      "detector": [{"panels": [{"origin": [0, 0, -100], "fast_axis": [1, 0, 0], "slow_axis": [0, -1, 0],
                                "image_size": [4, 4], "pixel_size": [0.1, 0.1]}]}]}, "beam.wavelength is missing"),
    ({"experiment": [{"beam": 0, "detector": 3}], "beam": [{}], "detector": []}, "experiment[0].detector = 3"),
])
def test_bad_expt_file_is_one_line_and_exit_2(doc, field, tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.expt").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    assert cli(["-expt", "bad.expt", "-default_F", "1", "-floatfile", "o.bin"], tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.expt" in err[0] and field in err[0], err
    assert not (tmp_path / "o.bin").exists()


def test_docs_example_script_runs_small(tmp_path, monkeypatch):
    script = HERE.parent / "docs" / "examples" / "multipanel.py"
    out = tmp_path / "mp.png"
    monkeypatch.setattr(sys, "argv", [str(script), "--pixels", "12", "--out", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
