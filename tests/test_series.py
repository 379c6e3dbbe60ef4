"""``jaxbragg-series``: file names, per-frame headers, equality with single ``jaxbragg`` runs, resuming,
interruption, and one-line errors with exit status 2.

Everything runs in-process through :func:`jaxbragg.series.main` except one subprocess case proving that no
traceback reaches the user. All cases share one tiny crystal and detector so they share compilations.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxbragg import batch, cli, series
from jaxbragg.io import read_smv

FLAGS = ["-cell", "50", "60", "70", "90", "90", "90", "-default_F", "100", "-N", "5", "-detpixels", "16",
         "-distance", "100", "-lambda", "1", "-oversample", "1"]
ROT = ["rotation", "--frames", "4", "--start-phi", "-1.5", "--osc", "0.5", "--prefix", "rot"]


def run(argv, capsys):
    rc = series.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def listing(path):
    return sorted(os.listdir(path))


def test_rotation_frames_match_single_runs(cwd, capsys):
    rc, out, err = run(ROT + ["--", *FLAGS], capsys)
    assert rc == 0, err
    assert listing(cwd) == ["rot.series.json", "rot_00001.img", "rot_00002.img", "rot_00003.img",
                            "rot_00004.img"]
    assert "100% done" in err                  # progress on stderr (not a terminal: plain lines)
    for k in range(4):
        header, _ = read_smv(cwd / f"rot_{k + 1:05d}.img")
        assert float(header["PHI"]) == float(header["OSC_START"]) == pytest.approx(-1.5 + 0.5 * k)
        assert float(header["OSC_RANGE"]) == 0.5
    # frame 3 is byte for byte what jaxbragg writes for its phi window
    assert cli.main(FLAGS + ["-phi", repr(-1.5 + 0.5 * 2), "-osc", "0.5", "-intfile", "one.img",
                             "-floatfile", "one.bin", "-nonoise", "-nopgm"]) == 0
    capsys.readouterr()
    assert (cwd / "one.img").read_bytes() == (cwd / "rot_00003.img").read_bytes()


def test_shots_sidecars_reproduce_each_shot(cwd, capsys):
    flags = FLAGS + ["-misset", "10", "20", "30"]
    rc, out, err = run(["shots", "--count", "3", "--seed", "4", "--prefix", "shot", "--format", "float",
                        "--", *flags], capsys)
    assert rc == 0, err
    images = [np.fromfile(cwd / f"shot_{k:05d}.bin", "<f4") for k in (1, 2, 3)]
    assert not np.array_equal(images[0], images[1])
    side = json.loads((cwd / "shot_00002.json").read_text())
    assert side["shot"] == 2 and side["seed"] == 4 and side["file"] == "shot_00002.bin"
    np.testing.assert_allclose(side["umat"], batch.random_orientations(4, 3)[1], rtol=0, atol=0)
    # the recorded misset angles (replacing the command's -misset) give the same image
    argv = FLAGS + ["-misset", *map(repr, side["misset_deg"]), "-floatfile", "one.bin", "-nonoise",
                    "-nopgm", "-intfile", "one.img"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    one = np.fromfile(cwd / "one.bin", "<f4")
    np.testing.assert_allclose(one, images[1], rtol=1e-6, atol=1e-6 * one.max())


def test_resume_renders_only_missing_or_broken_files(cwd, capsys):
    rc, _, err = run(ROT + ["--", *FLAGS], capsys)
    assert rc == 0, err
    before = {n: (cwd / n).read_bytes() for n in listing(cwd)}
    (cwd / "rot_00002.img").unlink()
    (cwd / "rot_00004.img").write_bytes(before["rot_00004.img"][:600])   # e.g. copied half-way
    stamp = os.stat(cwd / "rot_00001.img").st_mtime_ns
    rc, out, err = run(ROT + ["--", *FLAGS], capsys)
    assert rc == 0, err
    assert "2 already done; rendering 2" in out
    assert [ln for ln in out.splitlines() if ln.startswith("writing")] == ["writing rot_00002.img",
                                                                          "writing rot_00004.img"]
    assert os.stat(cwd / "rot_00001.img").st_mtime_ns == stamp
    assert {n: (cwd / n).read_bytes() for n in listing(cwd)} == before
    rc, out, _ = run(ROT + ["--", *FLAGS], capsys)
    assert rc == 0 and "nothing to render" in out
    # extending the series renders only the new frame
    rc, out, _ = run([a if a != "4" else "5" for a in ROT] + ["--", *FLAGS], capsys)
    assert rc == 0 and "rendering 1 " in out and os.path.exists(cwd / "rot_00005.img")


def test_interrupted_run_leaves_complete_files_and_resumes(cwd, capsys, monkeypatch):
    # one call renders one image per device (--batch 1 is rounded up to the device count), so the series
    # has three calls' worth of images whatever the host's device count, and the second call is interrupted
    import jax
    per_call = jax.device_count()
    argv = ["shots", "--count", str(3 * per_call), "--seed", "1", "--prefix", "s", "--batch", "1", "--", *FLAGS]
    real = batch.render_sharded
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(batch, "render_sharded", flaky)
    rc, out, err = run(argv, capsys)
    assert rc == 130 and f"interrupted after writing {per_call} of {3 * per_call} files" in err
    first = sorted([f"s_{k:05d}.img" for k in range(1, per_call + 1)] + [f"s_{k:05d}.json" for k in range(1, per_call + 1)])
    assert listing(cwd) == ["s.series.json"] + first     # no partial files
    monkeypatch.setattr(batch, "render_sharded", real)
    rc, out, err = run(argv, capsys)
    assert rc == 0 and f"{per_call} already done; rendering {2 * per_call}" in out
    resumed = {n: (cwd / n).read_bytes() for n in listing(cwd)}
    rc, _, _ = run(argv[:-len(FLAGS) - 1] + ["--overwrite", "--", *FLAGS], capsys)
    assert rc == 0
    assert {n: (cwd / n).read_bytes() for n in listing(cwd)} == resumed


def test_resume_refuses_an_edited_input_file(cwd, capsys):
    """The manifest keeps a digest of every input file: editing the -hkl file between an interrupted
    run and its resumption would mix frames of two structures."""
    (cwd / "P1.hkl").write_text("0 0 1 100\n1 0 0 50\n")
    argv = ["rotation", "--frames", "1", "--osc", "1", "--prefix", "r", "--", *FLAGS, "-hkl", "P1.hkl"]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    more = ["rotation", "--frames", "2", "--osc", "1", "--prefix", "r", "--", *FLAGS, "-hkl", "P1.hkl"]
    (cwd / "P1.hkl").write_text("0 0 1 100\n1 0 0 60\n")
    before = listing(cwd)
    rc, out, err = run(more, capsys)
    assert rc == 2 and "input files changed" in err and "-hkl P1.hkl" in err, err
    assert listing(cwd) == before
    (cwd / "P1.hkl").write_text("0 0 1 100\n1 0 0 50\n")          # restored: the series resumes
    rc, out, err = run(more, capsys)
    assert rc == 0 and "1 already done; rendering 1" in out, err


def test_series_refuses_to_overwrite_its_input(cwd, capsys):
    (cwd / "r_00001.img").write_bytes(b"not an image")
    argv = ["rotation", "--frames", "1", "--osc", "1", "--prefix", "r", "--", *FLAGS, "-mask", "r_00001.img"]
    rc, out, err = run(argv, capsys)
    assert rc == 2 and err.startswith("jaxbragg-series: error: ")
    assert (cwd / "r_00001.img").read_bytes() == b"not an image"


@pytest.mark.parametrize("argv, message", [
    (ROT + FLAGS, "expected '--'"),
    (ROT + ["--", *FLAGS, "-bogus"], "unknown flag"),
    (ROT + ["--", *FLAGS, "-phi", "3"], "-phi: a rotation series takes --start-phi and --osc"),
    (ROT + ["--", *FLAGS, "-floatfile", "x.bin"], "-floatfile: jaxbragg-series names its files"),
    (["rotation", "--frames", "2", "--osc", "0", "--prefix", "r", "--", *FLAGS], "--osc: "),
    (["rotation", "--frames", "0", "--osc", "1", "--prefix", "r", "--", *FLAGS], "--frames"),
    (["rotation", "--frames", "1000000000000", "--osc", "1", "--prefix", "r", "--", *FLAGS], "--frames: "),
    (["shots", "--count", "100000", "--prefix", "s", "--digits", "4", "--", *FLAGS], "--count/--digits"),
    (["shots", "--count", "2", "--seed", "-3", "--prefix", "s", "--", *FLAGS], "--seed: must be >= 0"),
    (["shots", "--count", "2", "--prefix", "nodir/s", "--", *FLAGS], "does not exist"),
    (["shots", "--count", "2", "--prefix", "s", "--pixel-split", "3", "--", *FLAGS], "--pixel-split"),
    (["stills", "--count", "2"], "invalid choice"),
    (["shots", "--count", "2", "--prefix", "s", "--", "-default_F", "1"], "no unit cell"),
])
def test_errors_are_one_line_exit_2_and_write_nothing(cwd, capsys, argv, message):
    rc, out, err = run(argv, capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("jaxbragg-series: error: ") and message in err, err
    assert listing(cwd) == []


def test_resuming_with_other_settings_is_refused(cwd, capsys):
    assert run(ROT + ["--", *FLAGS], capsys)[0] == 0
    rc, _, err = run(ROT + ["--", *FLAGS, "-N", "6"], capsys)
    assert rc == 2 and "different settings (flags)" in err and err.count("\n") == 1


def test_subprocess_usage_and_error(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxbragg.series"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "usage: jaxbragg-series rotation" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "jaxbragg.series", "shots", "--count", "x", "--", *FLAGS],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
