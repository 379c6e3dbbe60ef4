"""Command-line behaviour: errors are one line + exit 2 + no files; valid runs write the reference's files.

Most cases call :func:`jaxbragg.cli.main` in-process (fast); a few run the real ``jaxbragg`` /
``python -m jaxbragg`` in a subprocess to prove that no traceback reaches the user.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxbragg.cli import main
from helpers import run_cli

# a tiny, fast crystal + detector; every valid run below starts from it
BASE = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-N", "5",
        "-detpixels", "8", "-seed", "7"]
NPIX = 8 * 8
DEFAULT_FILES = {"floatimage.bin", "intimage.img", "image.pgm", "noiseimage.img"}


def listing(path):
    """Every entry in *path*, hidden (temporary) files included."""
    return set(os.listdir(path))


def write_smv(path, n=8):
    header = (f"{{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\n"
              f"SIZE1={n};\nSIZE2={n};\nPIXEL_SIZE=0.1;\nDISTANCE=100;\n}}\f")
    data = header.encode().ljust(512, b" ") + np.ones(n * n, "<u2").tobytes()
    path.write_bytes(data)


# ------------------------------------------------------------------------------------------------
# bad input: exactly one stderr line naming the culprit, status 2, nothing written
# ------------------------------------------------------------------------------------------------

def _bad_files(d):
    (d / "bad.hkl").write_text("0 0 1 100\n1 0 abc 50\n")
    (d / "empty.hkl").write_text("")
    (d / "bad.mat").write_text("1 2\n")
    (d / "bad.src").write_text("junk 0 0\n")
    (d / "bad.img").write_text("not an smv image")
    (d / "adir").mkdir()


BAD_CASES = [
    # (id, argv, words that must appear in the message)
    ("missing-value", BASE + ["-distance"], ["-distance"]),
    ("missing-value-flag-follows", ["-distance", "-N", "5"] + BASE, ["-distance"]),
    ("missing-string", BASE + ["-hkl"], ["-hkl"]),
    ("non-numeric", BASE + ["-distance", "abc"], ["-distance", "abc"]),
    ("nan", BASE + ["-distance", "nan"], ["-distance", "finite"]),
    ("inf", BASE + ["-distance", "inf"], ["-distance", "finite"]),
    ("minus-inf", BASE + ["-distance", "-inf"], ["-distance"]),
    ("nan-in-vector", BASE + ["-beam_vector", "1", "nan", "0"], ["-beam_vector"]),
    ("nan-in-cell", ["-cell", "50", "nan"] + BASE[7:], ["-cell"]),
    ("non-integer", BASE + ["-mosaic_domains", "2.5"], ["-mosaic_domains"]),
    ("unknown-flag", BASE + ["-distanse", "100"], ["-distanse", "-distance"]),
    ("bare-word", BASE + ["bogus"], ["bogus"]),
    ("stray-number", BASE + ["-nonoise", "12"], ["12"]),
    ("zero-pixel", BASE + ["-pixel", "0"], ["-pixel"]),
    ("negative-pixel", BASE + ["-pixel", "-0.1"], ["-pixel"]),
    ("zero-detpixels", BASE + ["-detpixels", "0"], ["-detpixels"]),
    ("zero-detpixels-s", BASE + ["-detpixels_s", "0"], ["-detpixels_s"]),
    ("negative-detpixels", BASE + ["-detpixels", "-3"], ["-detpixels"]),
    ("no-cell", ["-default_F", "100", "-detpixels", "8"], ["-cell", "-mat"]),
    ("no-F", ["-cell", "50", "-detpixels", "8"], ["-hkl", "-default_F"]),
    ("missing-hkl", BASE + ["-hkl", "nope.hkl"], ["nope.hkl"]),
    ("hkl-is-dir", BASE + ["-hkl", "adir"], ["adir"]),
    ("malformed-hkl", BASE + ["-hkl", "bad.hkl"], ["bad.hkl", "line 2"]),
    ("empty-hkl", BASE + ["-hkl", "empty.hkl"], ["empty.hkl"]),
    ("missing-mat", ["-mat", "nope.mat"] + BASE[7:], ["nope.mat"]),
    ("malformed-mat", ["-mat", "bad.mat"] + BASE[7:], ["bad.mat"]),
    ("missing-sourcefile", BASE + ["-sourcefile", "nope.txt"], ["nope.txt"]),
    ("malformed-sourcefile", BASE + ["-sourcefile", "bad.src"], ["bad.src"]),
    ("missing-img", BASE + ["-img", "nope.img"], ["nope.img"]),
    ("malformed-img", BASE + ["-img", "bad.img"], ["bad.img"]),
    ("missing-mask", BASE + ["-mask", "nope.img"], ["nope.img"]),
    ("malformed-mask", BASE + ["-mask", "bad.img"], ["bad.img"]),
    ("parallel-custom", BASE + ["-beam_vector", "1", "0", "0", "-odet_vector", "0", "1", "0"],
     ["parallel"]),
    ("parallel-rotated", BASE + ["-detector_roty", "90"], ["parallel"]),
    ("roi-min-gt-max", BASE + ["-roi", "5", "2", "0", "7"], ["-roi"]),
    ("roi-slow-min-gt-max", BASE + ["-roi", "0", "7", "6", "1"], ["-roi"]),
    ("roi-off-detector", BASE + ["-roi", "20", "30", "20", "30"], ["-roi"]),
    ("pivot-word", BASE + ["-pivot", "middle"], ["-pivot", "middle"]),
    ("energy-zero", BASE + ["-energy", "0"], ["-energy"]),
    ("tile-zero", BASE + ["-tile", "0"], ["-tile"]),
    ("behind-sample", BASE + ["-close_distance", "-50"], ["-distance"]),
    ("floatfile-no-dir", BASE + ["-floatfile", "nodir/out.bin"], ["nodir/out.bin"]),
    ("intfile-no-dir", BASE + ["-intfile", "nodir/out.img"], ["nodir/out.img"]),
    ("pgmfile-no-dir", BASE + ["-pgmfile", "nodir/out.pgm"], ["nodir/out.pgm"]),
    ("noisefile-no-dir", BASE + ["-noisefile", "nodir/out.img"], ["nodir/out.img"]),
    ("output-is-dir", BASE + ["-floatfile", "adir"], ["adir"]),
]


@pytest.mark.parametrize("argv,words", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_input(cwd, capsys, argv, words):
    _bad_files(cwd)
    before = listing(cwd)
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxbragg: error: ")
    assert "Traceback" not in err + out
    for w in words:
        assert w in lines[0], (w, lines[0])
    # nothing was rendered, nothing written (no partial or hidden temporary files either)
    assert "rendered" not in out
    assert listing(cwd) == before
    assert listing(cwd / "adir") == set()


def test_output_dir_checked_before_rendering(cwd, capsys):
    rc, out, err = run_cli(BASE + ["-noisefile", "missing/dir/noise.img"], capsys)
    assert rc == 2 and "missing/dir/noise.img" in err
    assert out == ""            # reported before the summary, let alone the simulation
    assert listing(cwd) == set()


def test_no_fdump_fallback_when_absent(cwd, capsys):
    # without -hkl and -default_F, an Fdump.bin in the cwd would be used; none is there -> error
    assert not (cwd / "Fdump.bin").exists()
    rc, _, err = run_cli(["-cell", "50", "-detpixels", "8"], capsys)
    assert rc == 2 and "structure factors" in err


def test_no_args_usage_in_process(capsys):
    rc, out, err = run_cli([], capsys)
    assert rc == 2
    assert "usage" in err.lower() and out == ""


# ------------------------------------------------------------------------------------------------
# valid runs
# ------------------------------------------------------------------------------------------------

def test_default_outputs(cwd, capsys):
    rc, out, err = run_cli(BASE, capsys)
    assert rc == 0, err
    assert listing(cwd) == DEFAULT_FILES            # exactly these, no temporary leftovers
    assert (cwd / "floatimage.bin").stat().st_size == 4 * NPIX
    assert (cwd / "intimage.img").stat().st_size == 512 + 2 * NPIX
    assert (cwd / "noiseimage.img").stat().st_size == 512 + 2 * NPIX
    pgm = (cwd / "image.pgm").read_bytes()
    assert pgm.startswith(b"P5") and len(pgm) > NPIX
    img = np.fromfile(cwd / "floatimage.bin", "<f4").reshape(8, 8)
    assert np.all(np.isfinite(img)) and img.max() > 0
    for name in DEFAULT_FILES:
        assert f"writing {name}" in out
    assert (cwd / "intimage.img").read_bytes().startswith(b"{")


def test_nopgm_nonoise_and_names(cwd, capsys):
    rc, out, err = run_cli(BASE + ["-nopgm", "-nonoise", "-floatfile", "f.bin", "-intfile", "i.img"], capsys)
    assert rc == 0, err
    assert listing(cwd) == {"f.bin", "i.img"}
    assert (cwd / "f.bin").stat().st_size == 4 * NPIX
    assert (cwd / "i.img").stat().st_size == 512 + 2 * NPIX
    assert "writing f.bin" in out


def test_output_into_subdirectory(cwd, capsys):
    (cwd / "sub").mkdir()
    rc, _, err = run_cli(BASE + ["-nopgm", "-floatfile", "sub/f.bin", "-noisefile", "sub/n.img"], capsys)
    assert rc == 0, err
    assert listing(cwd / "sub") == {"f.bin", "n.img"}


def test_roi_leaves_outside_zero(cwd, capsys):
    rc, _, err = run_cli(BASE + ["-roi", "2", "4", "1", "5", "-floatfile", "r.bin", "-intfile", "r.img",
                                 "-noisefile", "n.img", "-pgmfile", "r.pgm"], capsys)
    assert rc == 0, err
    img = np.fromfile(cwd / "r.bin", "<f4").reshape(8, 8)       # [slow, fast]
    inside = np.zeros((8, 8), bool)
    inside[1:6, 2:5] = True
    assert np.all(img[~inside] == 0)
    assert np.all(img[inside] > 0)
    for name in ("r.img", "n.img"):
        smv = np.frombuffer((cwd / name).read_bytes()[512:], "<u2").reshape(8, 8)
        assert np.all(smv[~inside] == 0) and np.all(smv[inside] > 0)
    pgm = np.frombuffer((cwd / "r.pgm").read_bytes()[-NPIX:], np.uint8).reshape(8, 8)
    assert np.all(pgm[~inside] == 0)


def test_roi_clipped_to_detector(cwd, capsys):
    rc, _, err = run_cli(BASE + ["-roi", "0", "100", "0", "100", "-nopgm", "-nonoise"], capsys)
    assert rc == 0, err
    assert (cwd / "floatimage.bin").stat().st_size == 4 * NPIX


def test_mask_header_run(cwd, capsys):
    write_smv(cwd / "mask.img")
    rc, _, err = run_cli(["-mask", "mask.img"] + BASE + ["-nopgm", "-nonoise"], capsys)
    assert rc == 0, err
    assert (cwd / "floatimage.bin").stat().st_size == 4 * NPIX


def test_determinism_same_seed(cwd, capsys):
    argv = BASE + ["-mosaic", "0.5", "-mosaic_domains", "2", "-nopgm"]
    rc1, _, _ = run_cli(argv + ["-floatfile", "a.bin", "-noisefile", "a.img", "-intfile", "ai.img"], capsys)
    rc2, _, _ = run_cli(argv + ["-floatfile", "b.bin", "-noisefile", "b.img", "-intfile", "bi.img"], capsys)
    assert rc1 == rc2 == 0
    assert (cwd / "a.bin").read_bytes() == (cwd / "b.bin").read_bytes()
    assert (cwd / "a.img").read_bytes() == (cwd / "b.img").read_bytes()
    assert (cwd / "ai.img").read_bytes() == (cwd / "bi.img").read_bytes()
    # a different seed changes the noise image but not the float image
    rc3, _, _ = run_cli(argv + ["-seed", "8", "-floatfile", "c.bin", "-noisefile", "c.img"], capsys)
    assert rc3 == 0
    assert (cwd / "c.bin").read_bytes() == (cwd / "a.bin").read_bytes()
    assert (cwd / "c.img").read_bytes() != (cwd / "a.img").read_bytes()


def test_tile_size_bit_identical(cwd, capsys):
    argv = ["-cell", "50", "60", "70", "80", "90", "100", "-default_F", "100", "-N", "3", "-detpixels", "12",
            "-pixel", "0.5", "-mosaic", "0.5", "-mosaic_domains", "3", "-osc", "1", "-phisteps", "2",
            "-oversample", "2", "-misset", "10", "20", "30", "-nopgm", "-nonoise", "-seed", "1"]
    assert run_cli(argv + ["-floatfile", "default.bin"], capsys)[0] == 0
    assert run_cli(argv + ["-tile", "7", "-floatfile", "tile7.bin"], capsys)[0] == 0
    a = (cwd / "default.bin").read_bytes()
    assert len(a) == 4 * 144
    assert a == (cwd / "tile7.bin").read_bytes()
    assert np.fromfile(cwd / "default.bin", "<f4").max() > 0


def test_demo(cwd, capsys):
    rc, out, err = run_cli(["-demo", "-nopgm", "-nonoise"], capsys)
    assert rc == 0, err
    assert "jaxbragg_demo.bin" in out
    assert (cwd / "jaxbragg_demo.bin").stat().st_size == 4 * 256 * 256
    assert not (cwd / "floatimage.bin").exists()
    assert np.fromfile(cwd / "jaxbragg_demo.bin", "<f4").max() > 0


# ------------------------------------------------------------------------------------------------
# the real entry points, in a subprocess
# ------------------------------------------------------------------------------------------------

def _env():
    env = dict(os.environ)
    env.pop("JAXBRAGG_DEBUG", None)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _console_script():
    exe = shutil.which("jaxbragg")
    if exe is None:
        cand = os.path.join(os.path.dirname(sys.executable), "jaxbragg")
        exe = cand if os.path.exists(cand) else None
    if exe is None:
        pytest.skip("jaxbragg console script not installed")
    return exe


def test_console_script_no_args_prints_usage(tmp_path):
    p = subprocess.run([_console_script()], cwd=tmp_path, capture_output=True, text=True, env=_env(),
                       timeout=120)
    assert p.returncode == 2
    assert "usage" in p.stderr.lower()
    assert "Traceback" not in p.stderr
    assert os.listdir(tmp_path) == []


def test_console_script_bad_flag_no_traceback(tmp_path):
    p = subprocess.run([_console_script()] + BASE + ["-distanse", "100"], cwd=tmp_path, capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert "-distance" in p.stderr and "Traceback" not in p.stderr
    assert os.listdir(tmp_path) == []


def test_python_m_bad_file_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "jaxbragg"] + BASE + ["-hkl", "missing.hkl"], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1
    assert "missing.hkl" in p.stderr and "Traceback" not in p.stderr
    assert os.listdir(tmp_path) == []


def test_python_m_valid_run(tmp_path):
    p = subprocess.run([sys.executable, "-m", "jaxbragg"] + BASE + ["-nopgm", "-floatfile", "m.bin"],
                       cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert set(os.listdir(tmp_path)) == {"m.bin", "intimage.img", "noiseimage.img"}
    assert (tmp_path / "m.bin").stat().st_size == 4 * NPIX


def test_hkl_run_writes_the_reference_fdump_and_a_later_run_reuses_it(tmp_path, monkeypatch):
    import io as _io
    import json
    import shutil
    from pathlib import Path

    from jaxbragg.cli import run
    golden = Path(__file__).parent / "golden"
    args = json.loads((golden / "hkl_nearest" / "case.json").read_text())["args"]
    shutil.copy(golden / "hkl_nearest" / "P1.hkl", tmp_path / "P1.hkl")
    monkeypatch.chdir(tmp_path)
    assert run(args + ["-floatfile", "first.bin", "-nonoise"], out=_io.StringIO()) == 0
    # the reference wrote tests/golden/fdump/Fdump.bin from the same P1.hkl
    assert (tmp_path / "Fdump.bin").read_bytes() == (golden / "fdump" / "Fdump.bin").read_bytes()
    i = args.index("-hkl")
    without_hkl = args[:i] + args[i + 2:]
    out = _io.StringIO()
    assert run(without_hkl + ["-floatfile", "second.bin", "-nonoise"], out=out) == 0
    assert "cache" in out.getvalue()
    assert (tmp_path / "first.bin").read_bytes() == (tmp_path / "second.bin").read_bytes()


def test_compiled_stages_are_reused_across_processes(tmp_path):
    """A second process loads the stages the first one compiled (jaxbragg.cli.stages) and writes the same
    bytes; a damaged stage file is ignored and replaced; JAXBRAGG_CACHE_DIR=off uses no cache at all."""
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "jaxbragg"] + BASE + ["-nopgm", "-nonoise"]

    def run_in(name, cache_dir):
        d = tmp_path / name
        d.mkdir()
        env = dict(_env(), JAXBRAGG_CACHE_DIR=str(cache_dir))
        p = subprocess.run(argv + ["-floatfile", "f.bin"], cwd=d, capture_output=True, text=True, env=env,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        return (d / "f.bin").read_bytes()

    first = run_in("a", cache)
    stages = sorted((cache / "stages").glob("*.xla"))
    assert [s.name.split("-")[0] for s in stages] == ["finish", "values"]
    stamps = [s.stat().st_mtime_ns for s in stages]
    assert run_in("b", cache) == first
    assert [s.stat().st_mtime_ns for s in stages] == stamps        # loaded, not rewritten
    stages[1].write_bytes(b"not an executable")
    assert run_in("c", cache) == first
    assert stages[1].read_bytes() != b"not an executable"           # compiled again and replaced
    assert run_in("d", "off") == first
    assert not (tmp_path / "off").exists() and not (tmp_path / "d" / "off").exists()


@pytest.mark.parametrize("unbuffered", [True, False])
def test_closed_stdout_pipe(tmp_path, unbuffered):
    """`jaxbragg ... | head`: when the reader goes away the run stops like the reference killed by SIGPIPE
    (status 141), with no traceback, no error line and no files, whether Python buffers standard output
    or not (the summary is flushed before rendering)."""
    env = _env()
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    p = subprocess.Popen([sys.executable, "-m", "jaxbragg"] + BASE + ["-nopgm", "-floatfile", "f.bin"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()
    err = p.stderr.read().decode()
    code = p.wait(timeout=300)
    assert err == ""
    assert code == 141 and os.listdir(tmp_path) == []


def test_stage_file_written_after_a_compilation_cache_hit_still_runs(tmp_path):
    """Regression: with the compilation cache warm and the stage files gone, the stage was compiled
    from the cache, and XLA:CPU serialized that executable without its kernels; the next run failed
    with 'Function ... not found'."""
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "jaxbragg"] + BASE + ["-nopgm", "-nonoise", "-floatfile", "f.bin"]
    env = dict(_env(), JAXBRAGG_CACHE_DIR=str(cache))
    outputs = []
    for i in range(3):
        if i == 1:
            shutil.rmtree(cache / "stages")
        d = tmp_path / str(i)
        d.mkdir()
        p = subprocess.run(argv, cwd=d, capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        outputs.append((d / "f.bin").read_bytes())
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


def test_stage_that_loads_but_fails_to_run_is_replaced(tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp
    from jaxbragg.cli import stages

    class Broken:
        def __call__(self, *args):
            raise RuntimeError("Function fusion not found")

    def double(k, tree):
        return tree["x"] * k

    monkeypatch.setattr(stages, "_STAGE_DIR", str(tmp_path))
    leaves, treedef = jax.tree_util.tree_flatten({"x": jnp.arange(3.0)})
    assert list(np.asarray(stages.call("t", double, (2.0,), treedef, leaves))) == [0.0, 2.0, 4.0]
    (stage,) = tmp_path.glob("t-*.xla")
    stages._LOADED.clear()
    stage.write_bytes(b"stale")
    monkeypatch.setattr(stages, "_load", lambda path, key: Broken())
    assert list(np.asarray(stages.call("t", double, (2.0,), treedef, leaves))) == [0.0, 2.0, 4.0]
    assert stage.read_bytes() != b"stale"


def test_stage_file_of_another_key_is_not_loaded(tmp_path, monkeypatch):
    """A stage file is trusted by the key it carries, not by its name: a stage compiled for another
    configuration, renamed to this configuration's file name, must not be used."""
    import jax
    import jax.numpy as jnp
    from jaxbragg.cli import stages

    def scale(k, tree):
        return tree["x"] * k

    monkeypatch.setattr(stages, "_STAGE_DIR", str(tmp_path))
    leaves, treedef = jax.tree_util.tree_flatten({"x": jnp.arange(3.0)})
    stages._LOADED.clear()
    assert list(np.asarray(stages.call("t", scale, (3.0,), treedef, leaves))) == [0.0, 3.0, 6.0]
    (three,) = tmp_path.glob("t-*.xla")
    key_two = stages._key("t", (2.0,), treedef, [np.asarray(x) for x in leaves])
    three.rename(tmp_path / f"t-{key_two}.xla")          # the x3 stage now sits under the x2 key
    stages._LOADED.clear()
    assert list(np.asarray(stages.call("t", scale, (2.0,), treedef, leaves))) == [0.0, 2.0, 4.0]
