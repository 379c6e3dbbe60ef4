"""Parity with the reference C program: every golden image in tests/golden (see its README.md).

Each case runs the command line in-process in a scratch directory holding the case's input files and
compares the float image with the one nanoBragg.c wrote: correlation >= 0.99999 and
max|diff| / max|ref| <= 1e-4 (the contract). The output-format cases also compare the SMV / PGM files.
"""
import io as _io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxbragg.cli import run

GOLDEN = Path(__file__).parent / "golden"
EXTRA = Path(__file__).parent / "golden_extra"     # more reference images, see its README.md
CASES = [c["name"] for c in json.loads((GOLDEN / "index.json").read_text())["cases"]]
EXTRA_CASES = [c["name"] for c in json.loads((EXTRA / "index.json").read_text())["cases"]]
CORR_MIN, REL_MAX = 0.99999, 1e-4      # the contract
REL_AIM = 1e-6                          # what we hold ourselves to (float64 runs reach <= 4e-9 today)


def metrics(ref, img):
    r, x = ref.astype(np.float64).ravel(), img.astype(np.float64).ravel()
    rel = np.max(np.abs(x - r)) / np.max(np.abs(r))
    corr = np.mean((r - r.mean()) * (x - x.mean())) / (r.std() * x.std())
    return corr, rel


def run_case(name, tmp_path, monkeypatch, extra=(), root=GOLDEN):
    meta = json.loads((root / name / "case.json").read_text())
    for f in meta.get("inputs", []):
        shutil.copy(root / name / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    args = list(meta["args"]) + ["-floatfile", "out.bin", *extra]
    if not any("noise" in key for key in meta["outputs"]):
        args.append("-nonoise")
    assert run(args, out=_io.StringIO()) == 0
    img = np.fromfile(tmp_path / "out.bin", dtype="<f4").reshape(meta["spixels"], meta["fpixels"])
    ref = np.load(root / name / "float.npz")["image"]
    return meta, ref, img


@pytest.mark.parametrize("name", CASES)
def test_golden_image(name, tmp_path, monkeypatch):
    # phi0_zero_steps is the C's own image of a phi = 0 sweep: reproduced with the C-parity option
    extra = ("-phi_carryover",) if name == "phi0_zero_steps" else ()
    meta, ref, img = run_case(name, tmp_path, monkeypatch, extra)
    corr, rel = metrics(ref, img)
    print(f"{name}: corr={corr:.9f} rel={rel:.3e}")
    assert corr >= CORR_MIN and rel <= REL_MAX, (corr, rel)
    assert rel <= REL_AIM, rel
    for key, fname in meta["outputs"].items():
        if key == "float":
            continue
        mine, theirs = (tmp_path / fname).read_bytes(), (GOLDEN / name / fname).read_bytes()
        if fname.endswith(".pgm"):
            assert mine == theirs
        else:  # SMV: identical data; header identical apart from our added ADC_OFFSET key
            assert mine[512:] == theirs[512:]
            strip = lambda b: [l for l in b[:512].split(b"\n") if not l.startswith(b"ADC_OFFSET")]
            assert [l.rstrip(b" ") for l in strip(mine)] == [l.rstrip(b" ") for l in strip(theirs)]


@pytest.mark.parametrize("name", ["mosflm_beam_close_distance", "img_header"])
def test_golden_image_float32(name, tmp_path, monkeypatch):
    """Mixed precision on the two cases with a pixel on the direct beam (q ~ 1e-15): that pixel was 0 / 0
    in float32 once XLA flushed the lattice factor's subnormal denominator to zero."""
    _, ref, img = run_case(name, tmp_path, monkeypatch, ("-float32",))
    corr, rel = metrics(ref, img)
    print(f"{name} -float32: corr={corr:.9f} rel={rel:.3e}")
    assert np.all(np.isfinite(img))
    assert corr >= CORR_MIN and rel <= 1e-5, (corr, rel)


@pytest.mark.parametrize("name", EXTRA_CASES)
def test_extra_reference_image(name, tmp_path, monkeypatch):
    meta = json.loads((EXTRA / name / "case.json").read_text())
    _, ref, img = run_case(name, tmp_path, monkeypatch, meta.get("jaxbragg_extra_args", ()), root=EXTRA)
    corr, rel = metrics(ref, img)
    print(f"{name}: corr={corr:.9f} rel={rel:.3e}")
    assert corr >= CORR_MIN and rel <= REL_AIM, (corr, rel)


def test_carryover_is_only_a_phi0_effect(tmp_path, monkeypatch):
    """With phi0 != 0 the C-parity option must change nothing; with phi0 = 0 it must (twin images)."""
    _, _, spec = run_case("phi_nonzero_phistep", tmp_path / "a" if (tmp_path / "a").mkdir() is None else 0,
                          monkeypatch)
    _, _, carried = run_case("phi_nonzero_phistep", tmp_path / "b" if (tmp_path / "b").mkdir() is None else 0,
                             monkeypatch, ("-phi_carryover",))
    np.testing.assert_array_equal(spec, carried)
    _, ref_c, _ = run_case("phi0_zero_steps", tmp_path / "c" if (tmp_path / "c").mkdir() is None else 0,
                           monkeypatch)
    ref_spec = np.load(GOLDEN / "phi0_zero_steps_spec" / "float.npz")["image"]
    assert metrics(ref_c, ref_spec)[1] > 1e-2   # the two golden twins really differ
