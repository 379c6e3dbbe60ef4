"""Hardening: regressions found by fuzzing, resource limits, validation, interrupts and determinism.

* every command line the fuzzer (tests/test_fuzz.py) found crashing, hanging, allocating without bound or
  producing a NaN geometry is kept here with the flag its message must name;
* the memory estimator and planner (:mod:`jaxbragg.resources`) and ``-max_memory_gb``;
* :func:`jaxbragg.validate.validate` on physically invalid parameters (and its silence under tracing);
* Ctrl-C / SIGTERM during a render: exit 130 / 143, one line, no output or temporary file;
* determinism: the same command gives bit-identical files across runs, tile sizes and chunked renders.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io as _io
import os
import select
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbragg.cli as cli
from jaxbragg import resources
from jaxbragg.cli import main, prepare, run
from jaxbragg.errors import InputError, PhysicsError, ResourceError
from jaxbragg.validate import validate

from helpers import setup_from

BASE = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-N", "5", "-detpixels", "8"]
MEMORY = 8 * 10 ** 9


def smv(n=4, extra=""):
    head = (f"{{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1={n};\n"
            f"SIZE2={n};\nPIXEL_SIZE=0.1;\nDISTANCE=100;\n{extra}}}\f")
    return head.encode().ljust(512, b" ") + np.ones(n * n, "<u2").tobytes()


def run_main(argv):
    out, err = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------------
# regressions: each used to crash (C = exception), hang (H), allocate without bound (M), yield a
# non-finite or degenerate set-up (N) or silently misread a value (S)
# ------------------------------------------------------------------------------------------------

REGRESSIONS = [
    ("C lambda-zero", ["-lambda", "0"], "-lambda"),
    ("C cell-huge", ["-cell", "1e300"], "-cell"),
    ("N cell-flat", ["-cell", "50", "50", "50", "120", "120", "120"], "-cell"),
    ("C xtalsize-huge", ["-xtalsize", "1e308"], "-xtal"),
    ("C osc-over-phistep", ["-osc", "1e308", "-phistep", "1e-300"], "-osc"),
    ("C hdivrange-over-step", ["-hdivrange", "1e300", "-hdivstep", "1e-300"], "-hdivrange"),
    ("C mosaic-seed-huge", ["-mosaic_seed", "1e300", "-mosaic", "1", "-mosaic_domains", "2"], "-mosaic_seed"),
    ("C mosaic-spread-huge", ["-mosaic", "1.7976931348623157e308"], "-mosaic"),
    ("C distance-tiny", ["-distance", "1e-300"], "-oversample"),
    ("C Na-huge", ["-Na", "1e308"], "-Na"),
    ("C curved-at-zero", ["-curved_det", "-distance", "0"], "-distance"),
    ("C img-nan-pixel", ["-img", "nanpix.img"], "nanpix.img"),
    ("H mosaic-domains", ["-mosaic_domains", "100000000", "-mosaic", "1"], "-mosaic_domains"),
    ("H divsteps", ["-divsteps", "1e9"], "-divsteps"),
    ("H divsteps-1000", ["-divsteps", "1000"], "-divsteps"),
    ("M oversample", ["-oversample", "100000"], "-oversample"),
    ("M N-huge", ["-N", "1e30"], "-N"),
    ("M phisteps", ["-phisteps", "1000000000000"], "-phisteps"),
    ("M thicksteps", ["-detector_thick", "100", "-thicksteps", "1000000000"], "-detector_thicksteps"),
    ("N parallel-axes", ["-fdet_vector", "0", "0", "1", "-sdet_vector", "0", "0", "1"], "-fdet_vector"),
    ("N zero-polar", ["-polar_vector", "0", "0", "0"], "-polar_vector"),
    ("N zero-twotheta-axis", ["-twotheta_axis", "0", "0", "0", "-twotheta", "10"], "-twotheta_axis"),
    ("N fluence-inf", ["-flux", "1e300", "-beamsize", "1e-300"], "-flux"),
    ("N fdump-nan", ["-dump", "nan.fdump"], "nan.fdump"),
    ("N Nb-overflow", ["-Nb", "4.5e206", "-oversample", "1"], "-Nb"),
    ("S hkl-takes-a-flag", ["-hkl", "-default_F", "100"], "-hkl"),
    ("S digit-separator", ["-distance", "1_000"], "-distance"),
    ("S seed-out-of-int", ["-seed", "1e300"], "-seed"),
    ("S img-zero-pixel", ["-img", "zeropix.img"], "zeropix.img"),
    ("S energy-negative", ["-energy", "-5"], "-energy"),
    ("S stray-value", ["-nonoise", "12"], "-nonoise"),
    ("S same-output-twice", ["-floatfile", "x.bin", "-intfile", "x.bin"], "-intfile"),
]


@pytest.mark.parametrize("argv,flag", [c[1:] for c in REGRESSIONS], ids=[c[0] for c in REGRESSIONS])
def test_fuzz_regressions(cwd, argv, flag):
    (cwd / "nanpix.img").write_bytes(smv(extra="PIXEL_SIZE=nan;\n"))
    (cwd / "zeropix.img").write_bytes(smv(extra="PIXEL_SIZE=0;\n"))
    (cwd / "nan.fdump").write_bytes(b"0 0 0 0 0 0\n\f" + np.full(8, np.nan, "<f8").tobytes())
    base = [a for a in BASE if a not in ("-default_F", "100")] if argv[0] == "-dump" else BASE
    t0 = time.perf_counter()
    with pytest.raises(InputError) as e:
        prepare(base + argv, available=MEMORY, detect=False)
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert flag in msg and "\n" not in msg, msg


def test_sourcefile_errors_name_the_line(cwd):
    (cwd / "zero.src").write_text("-10 0 0 1 1e-10\n\n0 0 0 1 1e-10\n")
    (cwd / "neg.src").write_text("# comment\n-10 0 0 1 -1e-10\n")
    for name, line in (("zero.src", 3), ("neg.src", 2)):
        with pytest.raises(InputError, match=f"{name}: line {line}: "):
            prepare(BASE + ["-sourcefile", name], available=MEMORY, detect=False)


def test_chunked_interpolated_render_matches_unchunked(cwd, monkeypatch):
    """Large jobs render in chunks; with interpolation each chunk is a tuple (used to crash)."""
    (cwd / "t.hkl").write_text("1 1 1 100\n0 0 0 50\n-1 2 3 30\n2 2 2 10\n")
    argv = ["-cell", "50", "60", "70", "80", "90", "100", "-hkl", "t.hkl", "-default_F", "10", "-N", "2",
            "-detpixels", "16", "-nopgm", "-nonoise", "-noprogress"]
    assert run(argv + ["-floatfile", "one.bin"], out=_io.StringIO()) == 0
    monkeypatch.setattr(cli, "PROGRESS_MIN_WORK", 10)
    assert run(argv + ["-floatfile", "chunked.bin"], out=_io.StringIO(), err=_io.StringIO()) == 0
    assert (cwd / "one.bin").read_bytes() == (cwd / "chunked.bin").read_bytes()


def test_overflowing_image_is_refused_before_writing(cwd):
    rc, out, err = run_main(BASE + ["-Nb", "1e8", "-Na", "1e8", "-Nc", "1e8", "-fluence", "1e300",
                                    "-oversample", "1", "-detpixels", "4"])
    assert rc == 2 and "rendered image" in err and len(err.splitlines()) == 1
    assert os.listdir(cwd) == []


# ------------------------------------------------------------------------------------------------
# input files: each broken file is one line naming the file (and line), exit 2, nothing written
# ------------------------------------------------------------------------------------------------

BROKEN_FILES = [
    ("-hkl", "trunc.hkl", b"0 0 0 10\n1 1", "line 2"),
    ("-hkl", "empty.hkl", b"", "no reflections"),
    ("-hkl", "garbage.hkl", bytes(range(256)), "line 3"),    # bytes 10 (LF) and 13 (CR) each end a line
    ("-hkl", "cols.hkl", b"0 0 0 10\n1 2 3\n", "line 2"),
    ("-hkl", "latin1.hkl", b"0 0 0 10\n1 1 1 \xe9\n", "line 2"),
    ("-hkl", "huge.hkl", b"0 0 0 1\n1 1 1 2\n100000 0 0 1\n0 100000 0 1\n0 0 100000 1\n", "line 3"),
    ("-hkl", "bigindex.hkl", b"0 0 0 1\n0 0 9999999999 1\n", "line 2"),
    ("-mat", "singular.mat", b"1 0 0\n2 0 0\n0 0 1\n", "singular"),
    ("-mat", "text.mat", b"1 0 0\n0 x 0\n0 0 1\n", "line 2"),
    ("-img", "lying.img", smv(extra="SIZE1=100000;\nSIZE2=100000;\n"), "truncated"),
    ("-img", "header.img", smv().replace(b"HEADER_BYTES=512", b"HEADER_BYTES=99999"), "HEADER_BYTES"),
    ("-mask", "negsize.img", smv(extra="SIZE1=-4;\n"), "SIZE1"),
    ("-sourcefile", "rows.src", b"-10 0 0 1 1e-10\n-10 abc 0\n", "line 2"),
    ("-sourcefile", "inf.src", b"-10 0 inf\n", "line 1"),
]


@pytest.mark.parametrize("flag,name,data,words", BROKEN_FILES, ids=[c[1] for c in BROKEN_FILES])
def test_broken_input_files(cwd, flag, name, data, words):
    (cwd / name).write_bytes(data)
    rc, out, err = run_main(BASE + [flag, name])
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and name in lines[0] and words in lines[0], lines
    assert "Traceback" not in err and "rendered" not in out
    assert sorted(os.listdir(cwd)) == [name]


# ------------------------------------------------------------------------------------------------
# resources
# ------------------------------------------------------------------------------------------------

def test_estimate_follows_the_kernel_tile():
    from jaxbragg.simulate import _choose_tile
    cfg = setup_from(BASE + ["-oversample", "4", "-phisteps", "3", "-osc", "1"]).config
    est = resources.estimate_memory(cfg, outputs=["noise", "pgm"])
    assert est.tile_pixels == _choose_tile(cfg, 64)
    assert est.kernel_bytes == est.tile_pixels * cfg.samples_per_pixel * resources.BYTES_PER_SAMPLE
    assert est.image_bytes == 64 * (resources.RENDER_BYTES_PER_PIXEL + 48 + 12)
    assert est.total_bytes > resources.OVERHEAD_BYTES


def test_available_memory_is_detected():
    avail = resources.available_memory()
    assert avail is None or avail > 0
    if sys.platform.startswith("linux"):
        assert avail is not None


def test_plan_shrinks_the_tile_when_memory_is_short():
    from jaxbragg.simulate import _choose_tile
    cfg = setup_from(BASE + ["-detpixels", "256", "-oversample", "8", "-phisteps", "4", "-osc", "1"]).config
    spp = cfg.samples_per_pixel
    est = resources.estimate_memory(cfg)
    fixed = est.total_bytes - est.kernel_bytes
    # room for about 100 pixels of tile
    avail = int((fixed + 100 * spp * resources.BYTES_PER_SAMPLE) / resources.USABLE_FRACTION) + 1
    new, est2, note = resources.plan_memory(cfg, available=avail, detect=False)
    assert note is None and new.sample_budget < cfg.sample_budget
    assert _choose_tile(new, 256 * 256) == 96 and est2.tile_pixels == 96
    assert est2.total_bytes <= avail * resources.USABLE_FRACTION
    # an explicit -tile is reduced with a note
    tiled = dataclasses.replace(cfg, tile_pixels=4096)
    new, _, note = resources.plan_memory(tiled, available=avail, detect=False, names=resources.CLI_NAMES)
    assert new.tile_pixels == 96 and "-tile 4096 reduced to 96" in note
    # plenty of memory: unchanged
    assert resources.plan_memory(cfg, available=10 ** 12, detect=False)[0] is cfg


def test_plan_refuses_what_cannot_fit(cwd):
    cfg = setup_from(BASE + ["-oversample", "100", "-phisteps", "1000", "-osc", "1"]).config   # 1e7 samples
    with pytest.raises(ResourceError, match="-oversample") as e:
        resources.plan_memory(cfg, available=4 * 10 ** 9, detect=False, names=resources.CLI_NAMES)
    assert "samples per pixel" in str(e.value) and "-max_memory_gb" in str(e.value)
    big = setup_from(BASE + ["-detpixels", "16000"]).config
    with pytest.raises(ResourceError, match="-detpixels"):
        resources.plan_memory(big, available=4 * 10 ** 9, detect=False, names=resources.CLI_NAMES)
    # accelerator: the kernel must fit the device, the image the host
    with pytest.raises(ResourceError, match="device memory"):
        resources.plan_memory(cfg, available=10 ** 12, device=10 ** 9, detect=False)


def test_sample_count_caps():
    assert resources.check_sample_counts(10, 10, 10, 10, 10) == 10 ** 6
    with pytest.raises(ResourceError, match="samples per pixel"):
        resources.check_sample_counts(10 ** 3, 10 ** 3)
    with pytest.raises(ResourceError, match="mosaic_domains"):
        resources.check_sample_counts(mosaic_domains=resources.MAX_SETUP_COUNT + 1)
    with pytest.raises(ResourceError, match="positive"):
        resources.check_sample_counts(phisteps=0)


def test_max_memory_gb_flag(cwd):
    rc, out, err = run_main(BASE + ["-max_memory_gb", "0.2"])
    assert rc == 2 and len(err.splitlines()) == 1
    assert "not enough memory" in err and "-max_memory_gb" in err
    assert os.listdir(cwd) == [] and out == ""
    rc, out, err = run_main(BASE + ["-max_memory_gb", "-1"])
    assert rc == 2 and "-max_memory_gb" in err
    rc, _, err = run_main(BASE + ["-max_memory_gb", "2", "-nopgm", "-nonoise"])
    assert rc == 0, err


def test_huge_detector_refused_without_allocating(cwd):
    t0 = time.perf_counter()
    rc, out, err = run_main(BASE + ["-detpixels", "16000", "-max_memory_gb", "4"])
    assert time.perf_counter() - t0 < 20
    assert rc == 2 and "-detpixels" in err and "not enough memory" in err, err
    assert os.listdir(cwd) == []


def test_reduced_budget_renders_the_same_image():
    from jaxbragg.simulate import simulate
    s = setup_from(BASE + ["-oversample", "2", "-mosaic", "0.5", "-mosaic_domains", "3", "-misset", "10", "20",
                           "30"])
    small = dataclasses.replace(s.config, sample_budget=16 * s.config.samples_per_pixel)
    a = np.asarray(simulate(s.config, s.params))
    b = np.asarray(simulate(small, s.params))
    assert np.array_equal(a, b) and a.max() > 0


# ------------------------------------------------------------------------------------------------
# validation of the library inputs
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good():
    s = setup_from(BASE)
    return s.config, s.params


def test_validate_accepts_a_valid_setup(good):
    validate(*good)


@pytest.mark.parametrize("field,value,words", [
    ("lattice", np.array([[5e-9, 0, 0], [0, 5e-9, 0], [5e-9, 5e-9, 0]]), "zero cell volume"),
    ("source_lambda", np.array([0.0]), "positive"),
    ("source_lambda", np.array([-1e-10]), "positive"),
    ("odet", np.array([0.0, 1.0, 0.0]), "parallel to the beam"),
    ("fluence", np.array(np.nan), "NaN"),
    ("ncells", np.array([5.0, 0.0, 5.0]), "positive"),
    ("pixel_size", np.array(0.0), "positive"),
    ("fdet", np.array([0.0, 0.0, 0.0]), "non-zero"),
    ("sdet", np.array([0.0, 0.0, 1.0]), "parallel"),
    ("distance", np.array(-0.1), "behind"),
    ("source_dirs", np.zeros((1, 3)), "zero"),
    ("mosaic_umats", np.zeros((2, 3, 3)), "shape"),
])
def test_validate_rejects(good, field, value, words):
    cfg, params = good
    bad = params.replace(**{field: value})
    with pytest.raises(PhysicsError) as e:
        validate(cfg, bad)
    assert e.value.param == field and str(e.value).startswith(field) and words in str(e.value), str(e.value)
    assert isinstance(e.value, InputError)


def test_validate_skips_traced_leaves(good):
    cfg, params = good

    @jax.jit
    def f(lam):
        p = params.replace(source_lambda=lam)
        validate(cfg, p)            # traced: nothing to check, must not raise or concretize
        return p.source_lambda * 2

    assert float(f(jnp.array([-1.0]))[0]) == -2.0
    with pytest.raises(PhysicsError):
        validate(cfg, params.replace(source_lambda=jnp.array([-1.0])))


# ------------------------------------------------------------------------------------------------
# interrupts
# ------------------------------------------------------------------------------------------------

def _env():
    env = dict(os.environ)
    env.pop("JAXBRAGG_DEBUG", None)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


# about 2.6e9 pixel-samples: tens of seconds, rendered in 20 chunks of about a second
LONG = ["-cell", "50", "60", "70", "80", "90", "100", "-default_F", "100", "-N", "5", "-detpixels", "512",
        "-oversample", "10", "-phisteps", "10", "-osc", "1", "-mosaic", "0.5", "-mosaic_domains", "10",
        "-noprogress", "-pngfile", "p.png", "-seed", "3"]


def _interrupt(tmp_path, sig):
    p = subprocess.Popen([sys.executable, "-m", "jaxbragg"] + LONG, cwd=tmp_path, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        seen = b""
        while b"steps per pixel" not in seen:      # the summary is flushed just before the render
            assert time.monotonic() < deadline and p.poll() is None, seen
            if select.select([p.stdout], [], [], 1.0)[0]:
                seen += os.read(p.stdout.fileno(), 65536)
        time.sleep(1.0)
        assert p.poll() is None, "the render finished before the signal"
        p.send_signal(sig)
        t0 = time.monotonic()
        out, err = p.communicate(timeout=120)
        assert time.monotonic() - t0 < 30, "the interrupt was not honoured promptly"
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, (seen + out).decode(), err.decode()


def test_ctrl_c_leaves_no_files(tmp_path):
    rc, out, err = _interrupt(tmp_path, signal.SIGINT)
    assert rc == 130, (out, err)
    assert err.strip().splitlines() == ["jaxbragg: interrupted; no output written"], err
    assert os.listdir(tmp_path) == []


def test_sigterm_leaves_no_files(tmp_path):
    rc, out, err = _interrupt(tmp_path, signal.SIGTERM)
    assert rc == 143, (out, err)
    assert err.strip().splitlines() == ["jaxbragg: terminated; no output written"], err
    assert os.listdir(tmp_path) == []


def test_interrupt_while_writing_removes_every_staged_file(cwd, monkeypatch):
    from jaxbragg.io import _common
    real = _common.stage
    calls = []

    def flaky(path, chunks):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, chunks)

    monkeypatch.setattr(_common, "stage", flaky)
    rc, out, err = run_main(BASE)
    assert rc == 130 and err.splitlines() == ["jaxbragg: interrupted; no output written"]
    assert len(calls) == 3 and os.listdir(cwd) == []


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------

DETERMINISM = {
    "mosaic-misset-noise": ["-cell", "50", "60", "70", "80", "90", "100", "-default_F", "100", "-N", "3",
                            "-detpixels", "12", "-pixel", "0.5", "-mosaic", "0.5", "-mosaic_domains", "3",
                            "-misset", "random", "-misset_seed", "5", "-mosaic_seed", "6", "-osc", "1",
                            "-phisteps", "2", "-oversample", "2", "-seed", "11"],
    "interpolated-omega": ["-cell", "50", "60", "70", "80", "90", "100", "-hkl", "t.hkl", "-default_F", "10",
                           "-N", "2", "-detpixels", "11", "-pixel", "0.5", "-oversample", "2",
                           "-oversample_omega", "-divergence", "1", "-divsteps", "2", "-seed", "4"],
    "roi-mask-carryover-sensor": ["-mask", "mask.img", "-cell", "40", "-default_F", "50", "-N", "4",
                                  "-roi", "1", "6", "2", "7", "-phi", "-1", "-osc", "2", "-phisteps", "2",
                                  "-phi_carryover", "-detector_thick", "300", "-detector_thicksteps", "2",
                                  "-seed", "9"],
}


def _outputs(prefix):
    return ["-floatfile", f"{prefix}.bin", "-intfile", f"{prefix}.img", "-noisefile", f"{prefix}.noise",
            "-pgmfile", f"{prefix}.pgm", "-dump", f"{prefix}.fdump"]


@pytest.mark.parametrize("name", sorted(DETERMINISM))
def test_bit_identical_across_runs_and_tiles(cwd, monkeypatch, name):
    (cwd / "t.hkl").write_text("1 1 1 100\n0 0 0 50\n-1 2 3 30\n2 2 2 10\n")
    (cwd / "mask.img").write_bytes(smv(n=9).replace(b"\x01\x00" * 9, b"\x00\x00" * 9, 1))
    argv = DETERMINISM[name]
    runs = {"a": [], "b": [], "t16": ["-tile", "16"], "t37": ["-tile", "37"], "t1000": ["-tile", "1000"]}
    for prefix, extra in runs.items():
        assert run(argv + extra + _outputs(prefix), out=_io.StringIO()) == 0
    monkeypatch.setattr(cli, "PROGRESS_MIN_WORK", 10)     # the chunked render path
    assert run(argv + _outputs("chunked"), out=_io.StringIO(), err=_io.StringIO()) == 0
    for ext in ("bin", "img", "noise", "pgm"):
        ref = (cwd / f"a.{ext}").read_bytes()
        assert len(ref) > 0
        for prefix in list(runs)[1:] + ["chunked"]:
            assert (cwd / f"{prefix}.{ext}").read_bytes() == ref, (name, prefix, ext)
    assert np.fromfile(cwd / "a.bin", "<f4").max() > 0


def test_bit_identical_in_a_fresh_process(cwd):
    argv = DETERMINISM["mosaic-misset-noise"] + ["-noise_jax"]
    assert run(argv + _outputs("here"), out=_io.StringIO()) == 0
    p = subprocess.run([sys.executable, "-m", "jaxbragg"] + argv + _outputs("there") + ["-tile", "48"],
                       cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    for ext in ("bin", "img", "noise", "pgm"):
        assert (cwd / f"here.{ext}").read_bytes() == (cwd / f"there.{ext}").read_bytes(), ext


# golden command lines that between them exercise every per-pixel branch of the kernel
TILE_CASES = ["oversample2_polar_thick", "curved_det", "hkl_interp_auto", "fluence_water_roi", "mask",
              "img_header", "divergence_square_dispersion", "mosaic_domains"]


@pytest.mark.parametrize("name", TILE_CASES)
def test_golden_command_lines_are_tile_invariant(name):
    import json
    from pathlib import Path
    from jaxbragg.simulate import simulate
    case = Path(__file__).parent / "golden" / name
    s = setup_from(json.loads((case / "case.json").read_text())["args"], str(case))
    whole = s.config.fpixels * s.config.spixels
    for precision in (None, "float32"):
        cfg = dataclasses.replace(s.config, precision=precision)
        a, b = (np.asarray(simulate(dataclasses.replace(cfg, tile_pixels=t), s.params)) for t in (16, whole))
        assert a.max() > 0
        np.testing.assert_array_equal(a, b, err_msg=str(precision))


@pytest.mark.parametrize("precision", [None, "float32"])
@pytest.mark.parametrize("extra", [["-divergence", "1", "-divsteps", "2"],
                                   ["-phi", "0", "-osc", "1", "-phisteps", "3", "-water", "50",
                                    "-roi", "2", "13", "1", "14"]])
def test_tile_invariance_several_sources_and_one_tile(precision, extra):
    # once a counter-example: several sources (or phi steps), a 16-pixel tile against a tile holding the
    # whole image. XLA:CPU contracts a * b + c into an FMA where both land in one kernel, and kernels are
    # cut differently in a tile loop and in a one-tile image; geometry.mul pins those roundings
    from jaxbragg.simulate import simulate
    s = setup_from(["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-N", "5", "-detpixels",
                    "16", *extra])
    cfg = dataclasses.replace(s.config, precision=precision)
    images = [np.asarray(simulate(dataclasses.replace(cfg, tile_pixels=t), s.params)) for t in (16, 96, 256)]
    assert images[0].max() > 0
    for other in images[1:]:
        np.testing.assert_array_equal(other, images[0])
