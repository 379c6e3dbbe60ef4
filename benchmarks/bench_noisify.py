"""Time jaxbragg-noisify side by side with the reference noisify when NOISIFY_C_BIN is set.

Cases (all on an N x N image, default 1024^2, made by tiling the input of the golden case
``noisify_psf_gauss``; photons per pixel as nanoBragg renders them):

* ``noise``: the default calibration error (3 %) and Poisson noise, two interleaved seeds;
* ``poisson``: Poisson noise only (``-calibration 0``), one seed;
* ``readout_flicker``: flicker 2 %, calibration 3 %, read-out 3 ADU;
* ``psf_r10``: Gaussian PSF 200 um (2 pixels) at ``-psf_radius 10`` before the noise;
* ``psf_auto``: the same PSF with the automatic per-pixel radius.

For each case the command line's wall time (a fresh process, as a user runs it) and, with
``NOISIFY_C_BIN=/path/to/noisify`` (built from bl831/nanoBragg's noisify.c outside this repository), the
C's wall time, their ratio and whether the output files are identical. ``--library`` adds the model's
FFT PSF (jitted, steady state) at radius 10 on the same image, and the direct-sum port alone.

    python benchmarks/bench_noisify.py                          # 1024^2, jaxbragg only
    NOISIFY_C_BIN=/tmp/noisify python benchmarks/bench_noisify.py --size 512 --library
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT_DIR = str(Path(__file__).resolve().parent.parent)
if ROOT_DIR not in sys.path:          # run from a checkout: this tree's jaxbragg first
    sys.path.insert(0, ROOT_DIR)

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "golden_noisify" / "noisify_psf_gauss" / "in.bin"

CASES = {
    "noise": "-scale 1 -seed 5",
    "poisson": "-scale 1 -seed 5 -calibration 0",
    "readout_flicker": "-scale 2 -seed 7 -flicker 0.02 -calibration 0.03 -readout 3",
    "psf_r10": "-scale 1 -seed 5 -calibration 0 -psf gauss -psf_fwhm 200 -psf_radius 10",
    "psf_auto": "-scale 1 -seed 5 -calibration 0 -psf gauss -psf_fwhm 200",
}
OUTPUTS = ("int.img", "noise.img", "image.pgm")


def make_input(path, size):
    tile = np.fromfile(SOURCE, "<f4").reshape(128, 128)
    reps = -(-size // 128)
    np.tile(tile, (reps, reps))[:size, :size].astype("<f4").tofile(path)


def timed(cmd, cwd, env=None):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {(r.stderr or r.stdout)[-400:]}")
    return wall


def run_case(name, size, c_bin, tmp):
    args = (f"-floatfile in.bin -detpixels {size} -pixel 0.1 -distance 100 {CASES[name]} "
            "-intfile int.img -noisefile noise.img -pgmfile image.pgm -noprogress").split()
    rec = dict(case=name, size=size)
    dirs = {}
    for side in ("jaxbragg",) + (("c",) if c_bin else ()):
        d = Path(tmp) / f"{name}_{side}"
        d.mkdir()
        shutil.copy(Path(tmp) / "in.bin", d / "in.bin")
        dirs[side] = d
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rec["jaxbragg_s"] = timed([sys.executable, "-m", "jaxbragg.cli.noisify"] + args, dirs["jaxbragg"], env)
    if c_bin:
        rec["c_s"] = timed([c_bin] + [a for a in args if a != "-noprogress"], dirs["c"])
        rec["ratio_c_over_jaxbragg"] = rec["c_s"] / rec["jaxbragg_s"]
        rec["identical"] = all((dirs["c"] / f).read_bytes() == (dirs["jaxbragg"] / f).read_bytes()
                               for f in OUTPUTS)
    return rec


def library(size, tmp):
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    from jaxbragg import response, response_c
    img = np.fromfile(Path(tmp) / "in.bin", "<f4").reshape(size, size)
    counts = np.random.RandomState(0).poisson(img).astype(np.float32)
    out = {}
    for dtype in (jnp.float32, jnp.float64):
        f = jax.jit(lambda x, w: response.apply_psf(x, w, 10, "gauss"))
        x = jnp.asarray(counts, dtype)
        t0 = time.perf_counter()
        jax.block_until_ready(f(x, 2.0))
        first = time.perf_counter() - t0
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(f(x, 2.0))
            runs.append(time.perf_counter() - t0)
        out[f"fft_psf_r10_{jnp.dtype(dtype).name}"] = dict(first_s=first, steady_s=min(runs))
    t0 = time.perf_counter()
    response_c.apply_psf_c(counts, "gauss", 2.0, 10)
    out["direct_sum_port_r10_s"] = time.perf_counter() - t0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--library", action="store_true", help="also time the FFT PSF and the direct-sum port")
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ns = ap.parse_args()
    c_bin = os.environ.get("NOISIFY_C_BIN")
    meta = dict(machine=platform.machine(), cpu_count=os.cpu_count(), python=platform.python_version(),
                c=bool(c_bin))
    recs = []
    with tempfile.TemporaryDirectory() as tmp:
        make_input(Path(tmp) / "in.bin", ns.size)
        for name in ns.cases:
            rec = dict(run_case(name, ns.size, c_bin, tmp), **meta)
            recs.append(rec)
            line = f"{name:16s} {ns.size}^2  jaxbragg-noisify {rec['jaxbragg_s']:7.2f} s"
            if c_bin:
                line += (f"   C {rec['c_s']:6.2f} s   C/jaxbragg {rec['ratio_c_over_jaxbragg']:.3f}   "
                         f"identical={rec['identical']}")
            print(line, flush=True)
        if ns.library:
            lib = dict(library(ns.size, tmp), size=ns.size, **meta)
            recs.append(lib)
            print(json.dumps(lib, indent=1))
    if ns.out:
        with open(ns.out, "a") as fh:
            for rec in recs:
                fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
