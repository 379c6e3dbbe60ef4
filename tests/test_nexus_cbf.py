"""NeXus/NXmx and miniCBF output: files read back with ``nxmx`` (the reader DIALS uses), h5py and fabio.

Expected values come from the reference: the SMV header nanoBragg wrote for the ``noisefile_seed`` golden
case (``DIALS_ORIGIN``, distance, wavelength, beam centre) and its noise image's pixels; the frame
conversion is checked against vectors worked out by hand; the series against single ``jaxbragg`` runs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import runpy
import sys

import numpy as np
import pytest

from helpers import run_cli, setup_from

GOLDEN = pathlib.Path(__file__).parent / "golden"
ROOT = pathlib.Path(__file__).parent.parent
#: dxtbx reads NeXus vectors through this matrix (McStas -> imgCIF/DIALS frame).
MCSTAS_TO_IMGCIF = np.diag([-1.0, 1.0, -1.0])


def _geometry(path):
    """(origin mm, fast, slow, pixel mm, data size, distance mm, wavelength A, beam centre px, scan deg)
    as a DIALS-like reader derives them from the file (nxmx dependency chains, imgCIF frame)."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)
    import nxmx
    with h5py.File(path, "r") as f:
        entry = nxmx.NXmx(f).entries[0]
        assert entry.definition == "NXmx"
        inst = entry.instruments[0]
        det = inst.detectors[0]
        (module,) = det.modules
        chain = nxmx.get_dependency_chain(module.fast_pixel_direction.depends_on)
        origin = MCSTAS_TO_IMGCIF @ nxmx.get_cumulative_transformation(chain)[0, :3, 3]
        scan = nxmx.get_dependency_chain(entry.samples[0].depends_on)[0]
        data = entry.data[0]
        return dict(
            origin=origin, fast=MCSTAS_TO_IMGCIF @ module.fast_pixel_direction.vector,
            slow=MCSTAS_TO_IMGCIF @ module.slow_pixel_direction.vector,
            pixel=(module.fast_pixel_direction[()].to("mm").magnitude[0],
                   module.slow_pixel_direction[()].to("mm").magnitude[0]),
            size=tuple(module.data_size), distance=det.distance.to("mm").magnitude,
            wavelength=inst.beams[0].incident_wavelength.to("angstrom").magnitude,
            center=(det.beam_center_x.magnitude, det.beam_center_y.magnitude),
            axis=MCSTAS_TO_IMGCIF @ scan.vector, angles=scan[()].to("deg").magnitude,
            increment=scan.increment_set.to("deg").magnitude, saturation=det.saturation_value,
            data=np.asarray(data[data.signal][()]))


def _pilatus(path):
    import fabio
    img = fabio.open(str(path))
    lines = img.header["_array_data.header_contents"].replace("\r", "").split("\n")
    fields = {}
    for line in lines:
        words = line[2:].split(" ", 1)
        fields[words[0]] = words[1] if len(words) > 1 else ""
    return img.data, fields


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    """The ``noisefile_seed`` golden command line with ``-nexusfile`` and ``-cbffile`` (noise is on), and
    the same with ``-nonoise`` in ``nonoise/`` (one compilation for both)."""
    from jaxbragg.cli import main
    case = GOLDEN / "noisefile_seed"
    args = json.loads((case / "case.json").read_text())["args"]
    d = tmp_path_factory.mktemp("golden_nexus")
    (d / "nonoise").mkdir()
    old = os.getcwd()
    try:
        os.chdir(d)
        assert main(args + ["-floatfile", "f.bin", "-nexusfile", "img.h5", "-cbffile", "img.cbf"]) == 0
        os.chdir(d / "nonoise")
        assert main(args + ["-floatfile", "f.bin", "-nexusfile", "n.h5", "-cbffile", "c.cbf", "-nonoise",
                            "-scale", "2", "-adc", "10"]) == 0
    finally:
        os.chdir(old)
    from jaxbragg.io import read_smv
    header, ref = read_smv(case / "noise.img")
    return d, header, ref


def test_nexus_geometry_and_data_equal_the_reference(golden_run):
    d, header, ref = golden_run
    g = _geometry(d / "img.h5")
    o = [float(x) for x in header["DIALS_ORIGIN"].split(",")]
    np.testing.assert_allclose(g["origin"], o, rtol=1e-5, atol=1e-4)          # %g in the reference header
    np.testing.assert_allclose(g["fast"], [1, 0, 0], atol=1e-15)               # MOSFLM fdet (0,0,1) -> +x_D
    np.testing.assert_allclose(g["slow"], [0, -1, 0], atol=1e-15)              # sdet (0,-1,0) -> -y_D
    px = float(header["PIXEL_SIZE"])
    assert g["pixel"] == pytest.approx((px, px)) and g["size"] == (64, 64)
    assert g["distance"] == pytest.approx(float(header["DISTANCE"]))
    assert g["wavelength"] == pytest.approx(float(header["WAVELENGTH"]))
    # beam centre in pixels from the first pixel's corner: DENZO_Y_BEAM is Fbeam, DENZO_X_BEAM Sbeam (mm)
    np.testing.assert_allclose(g["center"], (float(header["DENZO_Y_BEAM"]) / px,
                                             float(header["DENZO_X_BEAM"]) / px), rtol=1e-5)
    np.testing.assert_allclose(g["axis"], [1, 0, 0], atol=1e-15)               # MOSFLM spindle z_M -> x_D
    assert g["angles"].tolist() == [float(header["OSC_START"])] and g["increment"] == float(header["OSC_RANGE"])
    assert g["saturation"] == 65535
    assert g["data"].shape == (1, 64, 64) and g["data"].dtype == np.uint16
    np.testing.assert_array_equal(g["data"][0], ref)          # the reference's noise image, pixel for pixel


def test_nexus_is_eiger_compressed(golden_run):
    import h5py
    import hdf5plugin  # noqa: F401
    with h5py.File(golden_run[0] / "img.h5", "r") as f:
        ds = f["/entry/data/data"]
        assert "32008" in ds._filters                          # bitshuffle (hdf5plugin), LZ4 inside
        assert ds._filters["32008"][4] == 2                    # bitshuffle's compression: 2 = LZ4
        assert ds.chunks == (1, 64, 64)
        assert f["/entry/instrument/detector/underload_value"][()] == -1


def test_cbf_header_and_data_equal_the_reference(golden_run):
    d, header, ref = golden_run
    data, fields = _pilatus(d / "img.cbf")
    assert data.dtype == np.int32
    np.testing.assert_array_equal(data, ref.astype(np.int32))
    px = float(header["PIXEL_SIZE"])
    assert fields["Pixel_size"] == f"{px * 1000:g}e-6 m x {px * 1000:g}e-6 m"
    assert float(fields["Wavelength"].split()[0]) == pytest.approx(float(header["WAVELENGTH"]))
    assert float(fields["Detector_distance"].split()[0]) == pytest.approx(float(header["DISTANCE"]) / 1000)
    bx, by = (float(v) for v in fields["Beam_xy"].split(")")[0].strip("(").split(","))
    assert (bx, by) == pytest.approx((float(header["DENZO_Y_BEAM"]) / px, float(header["DENZO_X_BEAM"]) / px),
                                     abs=1e-3)
    assert float(fields["Start_angle"].split()[0]) == float(header["OSC_START"])
    assert float(fields["Angle_increment"].split()[0]) == float(header["OSC_RANGE"])
    assert fields["Detector:"].startswith("jaxbragg")


def test_mcstas_rotation_by_hand():
    from jaxbragg.io.nexus import mcstas_rotation
    R = mcstas_rotation([1, 0, 0])                     # MOSFLM: (x_N, y_N, z_N) = (-z_M, y_M, x_M)
    np.testing.assert_array_equal(R, [[0, 0, -1], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(mcstas_rotation([0, 0, 1]), np.eye(3), atol=1e-15)   # XDS/DIALS/ADXV beams
    b = np.array([0.3, -0.2, 0.9]) / np.linalg.norm([0.3, -0.2, 0.9])
    R = mcstas_rotation(b)
    np.testing.assert_allclose(R @ b, [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-15)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(mcstas_rotation([-1, 0, 0]) @ [-1, 0, 0], [0, 0, 1], atol=1e-15)


@pytest.mark.parametrize("flags", [
    "-detpixels_f 24 -detpixels_s 16 -pixel 0.11 -distance 120 -detector_rotx 3 -detector_roty -4 "
    "-detector_rotz 5 -twotheta 7 -lambda 1.3",
    "-xds -detpixels_f 20 -detpixels_s 12 -ORGX 7.5 -ORGY 3.25 -distance 90 -lambda 0.9",
])
def test_nexus_geometry_equals_the_command_line(tmp_path, flags):
    """A tilted, rotated, rectangular detector: the corner, axes, pixel size and wavelength read back equal
    the command line's placed detector (the float64 set-up the CLI renders), in the DIALS frame."""
    from jaxbragg.io import nexus
    setup = setup_from("-cell 50 60 70 90 90 90 -default_F 100 -N 3 -oversample 1 -phi 3 -osc 0.5 " + flags)
    info = setup.info
    nx_setup = nexus.setup_from_experiment(setup.experiment)
    counts = np.arange(info["spixels"] * info["fpixels"], dtype=np.uint16).reshape(info["spixels"], -1)
    nexus.write_nexus(tmp_path / "g.h5", counts, nx_setup)
    g = _geometry(tmp_path / "g.h5")
    R = MCSTAS_TO_IMGCIF @ nexus.mcstas_rotation(info["beam"])    # nanoBragg frame -> DIALS frame
    np.testing.assert_allclose(g["origin"], R @ info["pix0"] * 1000, atol=1e-10)
    np.testing.assert_allclose(g["fast"], R @ info["fdet"], atol=1e-14)
    np.testing.assert_allclose(g["slow"], R @ info["sdet"], atol=1e-14)
    np.testing.assert_allclose(g["axis"], R @ info["spindle"], atol=1e-14)
    assert g["pixel"] == pytest.approx((info["pixel"] * 1000,) * 2)
    assert g["size"] == (info["spixels"], info["fpixels"])
    assert g["wavelength"] == pytest.approx(info["lambda0"] * 1e10)
    assert g["distance"] == pytest.approx(info["distance"] * 1000)
    np.testing.assert_array_equal(g["data"][0], counts)
    if "-xds" in flags:      # XDS: the beam along +z already, the frames agree up to McStas -> imgCIF
        np.testing.assert_allclose(R, MCSTAS_TO_IMGCIF, atol=1e-15)


FLAGS = ["-cell", "50", "60", "70", "90", "90", "90", "-default_F", "100", "-N", "5", "-detpixels", "16",
         "-distance", "100", "-lambda", "1", "-oversample", "1", "-noprogress"]


def test_cli_nonoise_writes_the_intfile_counts(golden_run, capsys):
    d = golden_run[0] / "nonoise"
    from jaxbragg.io import read_smv
    _, smv = read_smv(d / "intimage.img")
    np.testing.assert_array_equal(_geometry(d / "n.h5")["data"][0], smv)
    np.testing.assert_array_equal(_pilatus(d / "c.cbf")[0], smv.astype(np.int32))
    assert sorted(os.listdir(d)) == ["c.cbf", "f.bin", "intimage.img", "n.h5"]     # no noise image


@pytest.mark.parametrize("flag,module,extra", [("-nexusfile", "h5py", "h5"), ("-cbffile", "fabio", "cbf")])
def test_cli_missing_extra_is_one_line_and_no_file(cwd, capsys, monkeypatch, flag, module, extra):
    monkeypatch.setitem(sys.modules, module, None)          # import now fails as if not installed
    rc, out, err = run_cli(FLAGS + [flag, "x.out"], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(f"jaxbragg: error: {flag}: ") and f"jaxbragg[{extra}]" in err
    assert os.listdir(cwd) == []


def test_cli_bad_path_names_the_flag(cwd, capsys):
    rc, out, err = run_cli(FLAGS + ["-cbffile", str(cwd / "missing" / "x.cbf")], capsys)
    assert rc == 2 and err.startswith("jaxbragg: error: -cbffile: ") and "directory does not exist" in err
    assert os.listdir(cwd) == []


def test_series_nexus_master_data_and_resume(cwd, capsys):
    """Three frames in groups of two: two data files and a master whose virtual data set reads every
    frame, equal to the frames of the SMV series (which equal single jaxbragg runs, test_series); a
    series missing a data file (an interrupted run) renders only those frames again and links the new
    file."""
    import h5py
    from jaxbragg import series
    from jaxbragg.io import read_smv
    argv = ["rotation", "--frames", "3", "--start-phi", "1", "--osc", "0.5", "--format", "nexus",
            "--batch", "2", "--prefix", "rot", "--", *FLAGS]
    assert series.main(argv) == 0
    capsys.readouterr()
    assert sorted(os.listdir(cwd)) == ["rot.series.json", "rot_data_000001.h5", "rot_data_000002.h5",
                                       "rot_master.h5"]
    g = _geometry(cwd / "rot_master.h5")
    np.testing.assert_allclose(g["angles"], [1.0, 1.5, 2.0], atol=1e-12)
    assert g["increment"] == pytest.approx(0.5) and g["data"].shape == (3, 16, 16)
    smv = argv[:7] + ["--batch", "2", "--prefix", "smv", "--", *FLAGS]
    assert series.main(smv) == 0
    capsys.readouterr()
    for k in range(3):
        np.testing.assert_array_equal(g["data"][k], read_smv(cwd / f"smv_{k + 1:05d}.img")[1])
    with h5py.File(cwd / "rot_master.h5", "r") as f:
        assert sorted(f["/entry/data"]) == ["data", "data_000001", "data_000002"]
        assert f["/entry/data/data_000001"].shape == (2, 16, 16)
    os.remove(cwd / "rot_data_000001.h5")                    # as if that group had never been written
    assert series.main(argv) == 0
    assert "1 already done; rendering 2" in capsys.readouterr().out
    assert sorted(p for p in os.listdir(cwd) if p.startswith("rot_")) == [
        "rot_data_000002.h5", "rot_data_000003.h5", "rot_master.h5"]
    np.testing.assert_array_equal(_geometry(cwd / "rot_master.h5")["data"], g["data"])
    assert series.main(argv) == 0 and "nothing to render" in capsys.readouterr().out


def test_no_h5py_or_fabio_at_package_import():
    """The optional packages are imported inside functions only: no module of the package imports them
    at its top level (so ``import jaxbragg`` works without the extras)."""
    import ast
    optional = {"h5py", "hdf5plugin", "fabio", "nxmx"}
    for path in (ROOT / "jaxbragg").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & optional, path


def test_docs_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["file_formats_example.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "docs" / "examples" / "file_formats_example.py"), run_name="__main__")
    assert (tmp_path / "example.h5").exists() and (tmp_path / "example.cbf").exists()


def test_two_modules_of_one_detector(tmp_path):
    """The module-list API: two modules given by hand (McStas frame) come back from nxmx with their own
    corner, axes, pixel size and hyperslab of the one data array; per-panel names are ``_pNN``."""
    import h5py
    import hdf5plugin  # noqa: F401
    import nxmx
    from jaxbragg.io import naming, nexus
    c = np.cos(np.radians(20.0))
    s = np.sin(np.radians(20.0))
    given = [nexus.Module(origin=(0.010, 0.020, 0.100), fast=(-1.0, 0.0, 0.0), slow=(0.0, -1.0, 0.0),
                          pixel_size=1e-4, shape=(16, 24)),
             nexus.Module(origin=(-0.030, 0.005, 0.110), fast=(-c, 0.0, s), slow=(0.0, -1.0, 0.0),
                          pixel_size=(2e-4, 1.5e-4), shape=(8, 20))]
    mods = nexus.stack_modules([dataclasses.replace(m, name=nexus.module_name(i, 2)) for i, m in enumerate(given)])
    setup = nexus.NexusSetup(modules=mods, wavelength=1.1e-10, distance=0.1)
    assert setup.data_shape() == (24, 24)
    counts = np.arange(2 * 24 * 24, dtype=np.uint16).reshape(2, 24, 24)
    (tmp_path / "m.h5").write_bytes(nexus.nexus_bytes(counts, setup))
    with h5py.File(tmp_path / "m.h5", "r") as f:
        det = nxmx.NXmx(f).entries[0].instruments[0].detectors[0]
        by_name = {m.path.split("/")[-1]: m for m in det.modules}
        assert sorted(by_name) == ["module_p00", "module_p01"]
        for name, m, origin in (("module_p00", mods[0], given[0].origin), ("module_p01", mods[1], given[1].origin)):
            got = by_name[name]
            chain = nxmx.get_dependency_chain(got.fast_pixel_direction.depends_on)
            np.testing.assert_allclose(nxmx.get_cumulative_transformation(chain)[0, :3, 3],
                                       np.array(origin) * 1000, atol=1e-12)
            np.testing.assert_allclose(got.fast_pixel_direction.vector, m.fast, atol=1e-15)
            np.testing.assert_allclose(got.slow_pixel_direction.vector, m.slow, atol=1e-15)
            assert got.fast_pixel_direction[()].to("mm").magnitude[0] == pytest.approx(m.pixel_sizes()[0] * 1e3)
            assert got.slow_pixel_direction[()].to("mm").magnitude[0] == pytest.approx(m.pixel_sizes()[1] * 1e3)
            assert tuple(got.data_size) == m.shape
        assert tuple(by_name["module_p01"].data_origin) == (16, 0)
        np.testing.assert_array_equal(f["/entry/data/data"][()], counts)
    assert naming.panel_path("out/img.cbf", 1, 2) == "out/img_p01.cbf"
    assert naming.panel_path("img.cbf", 0, 1) == "img.cbf"
    assert nexus.module_name(0, 1) == "module"
