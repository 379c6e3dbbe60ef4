"""Reliability fuzzing: what the command lines do to the paths they are given and to signals.

The classes of failure this covers, each generically (every output flag, every input kind, every text
reader), from seeded random choices so CI sees the same cases on every run:

* output paths of every kind: a symlink (written through, the link kept), a dangling symlink, a
  character device (written through, never replaced), a FIFO, a directory, and the same file as one of
  the run's inputs (by name, through a symlink, through ``..``, through a hard link);
* input paths that could hang or flood a run: FIFOs, ``/dev/zero``, directories;
* LF, CRLF and CR-only line endings for every text reader;
* SMV pixel types for ``-img``/``-mask``;
* signals (SIGINT, SIGTERM) at seeded random moments, start-up included, for ``jaxbragg`` and
  ``jaxbragg-series``; a full standard output;
* input files that change between two runs of one series.

Subprocesses pay about a second of JAX import each, so they run concurrently in batches.
"""
from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxbragg import io as jio
from jaxbragg.cli import prepare
from jaxbragg.errors import InputError
from jaxbragg.io import _common

from helpers import run_cli

SEED = 20261202
BASE = ["-cell", "50", "60", "70", "90", "95", "100", "-default_F", "100", "-N", "3", "-lambda", "1",
        "-distance", "100", "-detpixels", "8", "-pixel", "0.4", "-oversample", "1", "-noprogress"]
OUTPUT_FLAGS = ("-floatfile", "-intfile", "-pgmfile", "-noisefile", "-pngfile")
MEMORY = 8 * 10 ** 9


def smv(data, type_name="unsigned_short", dtype="<u2", extra=""):
    slow, fast = data.shape
    head = (f"{{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE={type_name};\nSIZE1={fast};\n"
            f"SIZE2={slow};\nPIXEL_SIZE=0.4;\nDISTANCE=100;\nWAVELENGTH=1;\nBEAM_CENTER_X=1.6;\n"
            f"BEAM_CENTER_Y=1.6;\n{extra}}}\f")
    return head.encode().ljust(512, b" ") + np.ascontiguousarray(data, dtype).tobytes()


def make_inputs(d):
    """One valid file for every input flag of jaxbragg, in directory ``d``."""
    (d / "P1.hkl").write_text("0 0 1 100\n1 0 0 50\n0 1 0 70\n-1 2 3 20\n")
    (d / "A.mat").write_text("0.0200 0 0\n0 0.0166 0\n0 0 0.0142\n")
    (d / "src.txt").write_text("# x y z weight lambda\n-10 0 0 1 1e-10\n-10 0.001 0 1 1e-10\n")
    (d / "mask.img").write_bytes(smv(np.ones((8, 8))))
    (d / "head.img").write_bytes(smv(np.zeros((8, 8))))
    return {"-hkl": "P1.hkl", "-mat": "A.mat", "-sourcefile": "src.txt", "-mask": "mask.img", "-img": "head.img"}


def with_input(flag, name):
    base = list(BASE)
    if flag == "-mat":            # the matrix replaces the cell
        i = base.index("-cell")
        del base[i:i + 7]
    return base + [flag, name]


def refused(argv, *words):
    with pytest.raises(InputError) as e:
        prepare(argv, available=MEMORY, detect=False)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


# ------------------------------------------------------------------------------------------------
# output paths
# ------------------------------------------------------------------------------------------------

def test_outputs_write_through_links_and_devices_and_keep_them(cwd, capsys):
    """Every output flag, each at a (seeded) random kind of path that must be written through."""
    rnd = random.Random(SEED)
    (cwd / "real").mkdir()
    kinds = ["link", "dangling", "device", "plain", "deep-link"]
    argv, checks = list(BASE) + ["-seed", "3"], []
    for flag in OUTPUT_FLAGS:
        kind = rnd.choice(kinds)
        stem = flag[1:]
        if kind == "link":
            (cwd / "real" / stem).write_bytes(b"stale")
            os.symlink(f"real/{stem}", cwd / f"{stem}.lnk")
            argv += [flag, f"{stem}.lnk"]
        elif kind == "dangling":
            os.symlink(f"real/{stem}.new", cwd / f"{stem}.lnk")
            argv += [flag, f"{stem}.lnk"]
        elif kind == "deep-link":       # a link to a link
            (cwd / "real" / stem).write_bytes(b"stale")
            os.symlink(f"real/{stem}", cwd / f"{stem}.l1")
            os.symlink(f"{stem}.l1", cwd / f"{stem}.lnk")
            argv += [flag, f"{stem}.lnk"]
        elif kind == "device":
            argv += [flag, os.devnull]
        else:
            argv += [flag, stem]
        checks.append((flag, kind, stem))
    before_null = os.stat(os.devnull)
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    after_null = os.lstat(os.devnull)
    assert stat.S_ISCHR(after_null.st_mode) and after_null.st_rdev == before_null.st_rdev
    for flag, kind, stem in checks:
        if kind in ("link", "deep-link", "dangling"):
            assert os.path.islink(cwd / f"{stem}.lnk"), (flag, kind)
            target = cwd / "real" / (stem if kind != "dangling" else f"{stem}.new")
            data = target.read_bytes()
            assert data != b"stale" and len(data) > 64, (flag, kind)
        elif kind == "plain":
            assert (cwd / stem).stat().st_size > 64
    assert not [n for n in os.listdir(cwd) if n.endswith(".tmp")]
    assert not [n for n in os.listdir(cwd / "real") if n.endswith(".tmp")]


def test_every_output_to_every_kind_of_device_link_and_dir(cwd, capsys):
    """Refused kinds of output path: a FIFO, a directory, a path through a missing directory, a name the
    file system cannot hold (before anything is rendered), for every output flag."""
    os.mkfifo(cwd / "fifo")
    (cwd / "adir").mkdir()
    os.symlink("adir", cwd / "dirlink")
    for flag in OUTPUT_FLAGS:
        for name, words in (("fifo", ["fifo", "FIFO"]), ("adir", ["adir", "directory"]),
                            ("dirlink", ["dirlink", "directory"]), ("nodir/x.bin", ["nodir/x.bin"]),
                            ("y" * 300, ["longer than this file system allows"])):
            refused(BASE + [flag, name], *words)
    # a 250-byte name is legal: it renders and is written (its temporary name must fit too)
    long = "z" * 250
    rc, out, err = run_cli(BASE + ["-floatfile", long, "-nonoise", "-nopgm"], capsys)
    assert rc == 0, err
    assert (cwd / long).stat().st_size == 4 * 64
    assert stat.S_ISFIFO(os.lstat(cwd / "fifo").st_mode)


def test_outputs_may_not_be_inputs(cwd):
    """Every output flag naming every kind of input, directly, via '..', via a symlink, via a hard link:
    refused before rendering, naming both flags; the input is untouched."""
    inputs = make_inputs(cwd)
    (cwd / "sub").mkdir()
    rnd = random.Random(SEED)
    for flag, name in inputs.items():
        os.symlink(name, cwd / f"{name}.lnk")
        os.link(cwd / name, cwd / f"{name}.hard")
        for spelling in (name, f"sub/../{name}", f"./{name}.lnk", f"{name}.hard", str(cwd / name)):
            out_flag = rnd.choice(OUTPUT_FLAGS)
            refused(with_input(flag, name) + [out_flag, spelling], out_flag, flag)
    before = {n: (cwd / n).read_bytes() for n in inputs.values()}
    # the structure-factor cache read when there is no -hkl is an input too
    jio.write_fdump("Fdump.bin", jio.read_structure_factors("P1.hkl", 0.0))
    refused(BASE + ["-floatfile", "Fdump.bin"], "-floatfile", "structure-factor cache")
    # and -dump (written when -hkl is read) may not name an input either
    refused(with_input("-hkl", "P1.hkl") + ["-dump", "A.mat"] + ["-mat", "A.mat"], "-dump", "-mat")
    assert {n: (cwd / n).read_bytes() for n in inputs.values()} == before


# ------------------------------------------------------------------------------------------------
# inputs that could hang or flood
# ------------------------------------------------------------------------------------------------

def test_inputs_must_be_regular_files(cwd):
    """Every input flag at a FIFO (no writer: opening it would block), /dev/zero (endless), a directory:
    refused at once, naming the file."""
    make_inputs(cwd)
    os.mkfifo(cwd / "fifo")
    (cwd / "adir").mkdir()
    t0 = time.monotonic()
    for flag in ("-hkl", "-mat", "-sourcefile", "-mask", "-img"):
        for name, words in (("fifo", ["FIFO"]), ("/dev/zero", ["character device"]), ("adir", ["directory"])):
            refused(with_input(flag, name), name, *words)
    assert time.monotonic() - t0 < 60          # nothing blocked (a hang would stop the suite here)


def test_input_size_limit(tmp_path):
    big = tmp_path / "big.hkl"
    with open(big, "wb") as f:
        f.truncate(_common.MAX_TEXT_BYTES + 1)     # sparse: costs no disk
    with pytest.raises(InputError, match="limit"):
        jio.read_hkl(big)


# ------------------------------------------------------------------------------------------------
# line endings
# ------------------------------------------------------------------------------------------------

TEXTS = {
    "hkl": ("# comment\n0 0 1 100\n1 0 0 50.5\n\n-1 2 3 20\n", lambda p: jio.read_hkl(p)),
    "mat": ("0.0200 0 0\n0 0.0166 0\n0 0 0.0142\n", lambda p: jio.read_mat(p)),
    "source": ("# x y z w l\n-10 0 0 1 1e-10\n-10 0.001 0 1 1e-10\n", lambda p: jio.read_sourcefile(p)),
}


def _same(a, b):
    if hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            _same(getattr(a, name), getattr(b, name))
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, np.asarray(b))
    else:
        assert a == b


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_every_text_reader_reads_lf_crlf_and_cr_alike(tmp_path, kind):
    text, read = TEXTS[kind]
    results = {}
    for ending in ("\n", "\r\n", "\r"):
        path = tmp_path / f"{kind}{len(ending)}{ending == chr(13)}.txt"
        path.write_bytes(text.replace("\n", ending).encode())
        results[repr(ending)] = read(path)
    ref = results["'\\n'"]
    for key, value in results.items():
        _same(value, ref)
    if kind == "hkl":       # the CR file is not one line: all three reflections are there
        assert ref.count == 3
    # a malformed line is named by the same number whatever the line ending
    for ending in ("\n", "\r\n", "\r"):
        path = tmp_path / f"bad{len(ending)}.txt"
        broken = (text.splitlines()[0] + "\nxyz garbage here\n" + "\n".join(text.splitlines()[1:]) + "\n")
        path.write_bytes(broken.replace("\n", ending).encode())
        with pytest.raises(InputError) as e:
            read(path)
        assert "line 2" in str(e.value), (ending, str(e.value))


def test_cr_only_hkl_through_the_command_line(cwd):
    (cwd / "mac.hkl").write_bytes(b"0 0 1 100\r1 0 0 50\r0 1 0 70\r")
    setup = prepare(BASE + ["-hkl", "mac.hkl"], available=MEMORY, detect=False).setup
    assert setup.info["hkl_count"] == 3


# ------------------------------------------------------------------------------------------------
# SMV pixel types
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_name, dtype", [("unsigned_short", "<u2"), ("signed_short", "<i2"),
                                              ("unsigned_long", "<u4"), ("signed_long", "<i4"),
                                              ("float", "<f4"), ("double", "<f8")])
def test_smv_types_are_honoured(tmp_path, type_name, dtype):
    rnd = np.random.default_rng(SEED)
    data = (rnd.random((5, 7)) * 1000).astype(dtype)
    if type_name == "signed_short":
        data[0, 0] = -123
    path = tmp_path / "t.img"
    path.write_bytes(smv(data, type_name, dtype))
    header, back = jio.read_smv(path)
    np.testing.assert_array_equal(back, data)


def test_float_mask_and_unknown_types(cwd):
    mask = np.zeros((8, 8), np.float32)
    mask[2:5, 1:7] = 0.5                 # a float mask: as 16-bit words these would be read wrongly
    (cwd / "fmask.img").write_bytes(smv(mask, "float", "<f4"))
    setup = prepare(BASE + ["-mask", "fmask.img"], available=MEMORY, detect=False).setup
    np.testing.assert_array_equal(np.asarray(setup.params.mask), mask != 0)
    for bad in ("mad", "unsigned_char", "bogus"):
        (cwd / "bad.img").write_bytes(smv(np.ones((8, 8)), bad))
        for flag in ("-mask", "-img"):
            refused(BASE + [flag, "bad.img"], "bad.img", "TYPE")


# ------------------------------------------------------------------------------------------------
# signals and standard streams (subprocesses, run concurrently)
# ------------------------------------------------------------------------------------------------

LONG = ["-cell", "50", "60", "70", "90", "95", "100", "-default_F", "100", "-N", "6", "-lambda", "1",
        "-distance", "80", "-detpixels", "256", "-pixel", "0.1", "-oversample", "6", "-phisteps", "4",
        "-osc", "1", "-mosaic", "0.3", "-mosaic_domains", "4", "-noprogress"]


def _env():
    env = dict(os.environ)
    env.pop("JAXBRAGG_DEBUG", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


PROGRAMS = {
    "jaxbragg": [sys.executable, "-m", "jaxbragg"],
    "jaxbragg-series": [sys.executable, "-c", "from jaxbragg._entry import series; series()"],
}


def _command(prog, d):
    if prog == "jaxbragg":
        return PROGRAMS[prog] + LONG + ["-floatfile", "f.bin", "-intfile", "i.img", "-noisefile", "n.img",
                                        "-nopgm"]
    return PROGRAMS[prog] + ["rotation", "--frames", "6", "--osc", "1", "--prefix", "r", "--batch", "1",
                             "--"] + LONG[:-8] + ["-noprogress"]


def _clean(d, rc, prog):
    names = sorted(os.listdir(d))
    assert not [n for n in names if n.endswith(".tmp")], names
    if prog == "jaxbragg":
        assert names in ([], ["f.bin", "i.img", "n.img"]), (rc, names)
        assert (names != []) == (rc == 0), (rc, names)


def _program_started(p, limit=120.0):
    """The moment the program's own code began: when the process first catches SIGTERM (its entry point
    installs that handler before importing anything heavy). Before it, CPython is still starting (its
    site import), which no Python program can guard. Linux: /proc/PID/status SigCgt."""
    t_end = time.monotonic() + limit
    while time.monotonic() < t_end and p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            caught = 0
        if caught & (1 << (signal.SIGTERM - 1)):
            return time.monotonic()
        time.sleep(0.002)
    return time.monotonic()


def test_signals_at_random_moments(tmp_path):
    """SIGINT or SIGTERM at a seeded random moment (from the program's first instruction, through the
    imports and the set-up, to the end of the render)
    for both programs: one line naming the program, status 130/143 (or 0 when the run finished
    first), never a traceback, and no partial or temporary file."""
    rnd = random.Random(SEED)
    runs, outcomes = [], []
    for k in range(8):
        prog = "jaxbragg" if k % 2 == 0 else "jaxbragg-series"
        sig = rnd.choice([signal.SIGINT, signal.SIGTERM])
        delay = rnd.choice([rnd.uniform(0.0, 0.3), rnd.uniform(0.3, 1.5), rnd.uniform(1.5, 6.0)])
        d = tmp_path / f"run{k}"
        d.mkdir()
        runs.append((prog, sig, delay, d))
    for batch in (runs[:4], runs[4:]):
        procs = []
        for prog, sig, delay, d in batch:
            p = subprocess.Popen(_command(prog, d), cwd=d, env=_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
            procs.append((p, prog, sig, delay, d))
        started = {p.pid: _program_started(p) for p, *_ in procs}
        pending = sorted(procs, key=lambda x: started[x[0].pid] + x[3])
        for p, prog, sig, delay, d in pending:
            time.sleep(max(0.0, started[p.pid] + delay - time.monotonic()))
            if p.poll() is None:
                p.send_signal(sig)
        for p, prog, sig, delay, d in procs:
            _, err = p.communicate(timeout=300)
            err = err.decode()
            code = 130 if sig == signal.SIGINT else 143
            assert p.returncode in (0, code), (prog, sig, delay, p.returncode, err)
            outcomes.append(p.returncode)
            assert "Traceback" not in err, err
            if p.returncode == code:
                lines = err.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), (prog, delay, err)
                assert ("terminated" if sig == signal.SIGTERM else "interrupted") in lines[0]
            _clean(d, p.returncode, prog)
    assert sum(rc != 0 for rc in outcomes) >= 4, outcomes      # most runs were really interrupted


def test_full_stdout_is_an_ordinary_error(tmp_path):
    with open("/dev/full", "w") as full:
        p = subprocess.run(PROGRAMS["jaxbragg"] + BASE + ["-floatfile", "f.bin"], cwd=tmp_path, env=_env(),
                           stdout=full, stderr=subprocess.PIPE, timeout=300)
    err = p.stderr.decode()
    assert p.returncode == 2 and err.strip().splitlines() == [
        "jaxbragg: error: cannot write to standard output: No space left on device"], err
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# input files that change between two runs of one series
# ------------------------------------------------------------------------------------------------

def test_series_refuses_to_resume_after_any_input_changed(cwd, capsys):
    """For each input kind, a seeded random edit between a first run and its resumption is refused,
    naming the flag and file; the untouched inputs of the same series resume."""
    from jaxbragg import series
    inputs = make_inputs(cwd)
    rnd = random.Random(SEED)
    flags = [x for f in ("-hkl", "-sourcefile", "-mask") for x in (f, inputs[f])]
    argv = ["rotation", "--frames", "1", "--osc", "1", "--prefix", "r", "--", *BASE, *flags]
    assert series.main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    more = ["rotation", "--frames", "2"] + argv[3:]
    for flag in ("-hkl", "-sourcefile", "-mask"):
        path = cwd / inputs[flag]
        original = path.read_bytes()
        k = rnd.randrange(len(original) - 1)
        if flag == "-mask":
            k = 512 + rnd.randrange(len(original) - 512)       # a pixel, not the header
        path.write_bytes(original[:k] + bytes([original[k] ^ 1]) + original[k + 1:])
        rc = series.main(more)
        err = capsys.readouterr().err
        assert rc == 2 and "input files changed" in err and f"{flag} {inputs[flag]}" in err, (flag, err)
        assert sorted(os.listdir(cwd)).count("r_00002.img") == 0
        path.write_bytes(original)
    assert series.main(more) == 0
    assert "1 already done; rendering 1" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# geometry that cannot render
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, words", [
    (["-twotheta", "90"], ["-twotheta", "passes through the sample"]),              # beam pivot (MOSFLM)
    (["-twotheta", "89.9999999999"], ["-twotheta", "passes through the sample"]),   # a rounding leftover
    (["-twotheta", "90", "-xds"], ["-twotheta", "edge-on"]),                        # sample pivot
    (["-twotheta", "-90", "-dials"], ["-twotheta", "edge-on"]),
    (["-detector_roty", "90"], ["-detector_rot", "parallel"]),
])
def test_edge_on_detector_is_refused_naming_the_flag(cwd, extra, words):
    msg = refused(BASE + extra, *words)
    assert "oversample" not in msg


def test_nearly_edge_on_detector_still_renders(cwd):
    prepare(BASE + ["-twotheta", "60"], available=MEMORY, detect=False)
    prepare(BASE + ["-twotheta", "90", "-curved_det", "-xds"], available=MEMORY, detect=False)


@pytest.mark.parametrize("angles", [("170", "170", "170"), ("100", "30", "50"), ("150", "150", "70")])
def test_impossible_cell_angles(cwd, angles):
    argv = list(BASE)
    argv[4:7] = angles
    refused(argv, "-cell", "cannot form a cell")


def test_matrix_with_huge_entries_is_not_called_singular(cwd):
    i = BASE.index("-cell")
    base = BASE[:i] + BASE[i + 7:]
    (cwd / "big.mat").write_text("1e300 0 0\n0 1e300 0\n0 0 1e300\n")
    msg = refused(base + ["-mat", "big.mat"], "-mat", "cell edges")
    assert "singular" not in msg
    (cwd / "rot.mat").write_text("1e300 1e299 0\n-1e299 1e300 0\n0 0 1e300\n")
    assert "singular" not in refused(base + ["-mat", "rot.mat"], "-mat")
    # a genuinely singular matrix of ordinary size is still reported as singular
    (cwd / "flat.mat").write_text("0.02 0 0\n0.04 0 0\n0 0 0.01\n")
    refused(base + ["-mat", "flat.mat"], "flat.mat", "singular")


def test_the_python_model_applies_the_same_geometry_rules():
    """The edge-on and impossible-cell rules are the library's (jaxbragg.validate), not only the CLI's."""
    import jaxbragg as jb
    with pytest.raises(ValueError, match="cannot form a cell"):
        jb.Crystal(cell=(50, 60, 70, 170, 170, 170), default_F=100.0)
    crystal = jb.Crystal(cell=(50, 60, 70, 90, 95, 100), N=3, default_F=100.0)
    for twotheta, words in ((90.0, "passes through the sample"), (89.9999999999, "passes through the sample")):
        exp = jb.Experiment(crystal=crystal, beam=jb.Beam(wavelength=1.0),
                            detector=jb.Detector(pixels=8, pixel_size=0.4, distance=100.0, twotheta=twotheta))
        with pytest.raises(ValueError, match=words) as e:
            exp.lower()
        assert "Detector.twotheta" in str(e.value)
    exp = jb.Experiment(crystal=crystal, beam=jb.Beam(wavelength=1.0),
                        detector=jb.Detector(pixels=8, pixel_size=0.4, distance=100.0, twotheta=60.0))
    exp.lower()
