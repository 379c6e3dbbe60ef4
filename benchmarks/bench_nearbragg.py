"""Time jaxbragg's nearBragg renderer on 10^3 and 10^4 scatterers, side by side with the reference C when
NEARBRAGG_C_BIN is set.

For each scatterer count (a jittered cubic lattice, as in the golden case ``nearbragg_lattice_far``) and
detector size, this writes the atom file to a scratch folder and records:

* jaxbragg: first call (compile + run) and the steady-state run (best of --repeat) of
  ``jaxbragg.nearbragg.pixel_fields`` through the command line's resolver, float64, on the default backend;
  pixel x scatterer terms per second; peak resident memory;
* the C (``NEARBRAGG_C_BIN=/path/to/nearBragg``, built by you from the reference repository; nothing here
  builds it): wall time of the same command line with ``OMP_NUM_THREADS`` = core count unless set, and the
  ratio ``C time / jaxbragg time``; the float images are compared (max|diff|/max) for the record. Note the
  C's threaded loop has a race (specs/nearbragg.md): with several threads its divergence/oversample images
  differ slightly from its single-threaded ones; the plain cases benchmarked here do not use those paths.

    python benchmarks/bench_nearbragg.py --atoms 1000 10000 --pixels 128 512
    NEARBRAGG_C_BIN=$HOME/nanoBragg/nearBragg python benchmarks/bench_nearbragg.py --atoms 1000 --pixels 64

Results are appended as JSON lines to --out (default benchmarks/results_nearbragg.jsonl).
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxbragg import nearbragg as nb  # noqa: E402
from jaxbragg.cli import nearbragg as cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_atoms(path, n_atoms, seed=0):
    """A cubic lattice of ~n_atoms points, 30 A apart, jittered by 0.5 A (rounded up to a full cube)."""
    side = int(round(n_atoms ** (1.0 / 3.0)))
    idx = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = (idx - (side - 1) / 2.0) * 30.0
    pos = pos + np.random.default_rng(seed).normal(0.0, 0.5, pos.shape)
    Path(path).write_text("".join("%.4f %.4f %.4f\n" % tuple(p) for p in pos))
    return len(pos)


def args_for(n_pix):
    return ["-file", "atoms.txt", "-lambda", "1", "-distance", "100", "-pixel", f"{0.2 * 64 / n_pix:g}",
            "-detpixels", str(n_pix), "-oversample", "1", "-noprogress"]


def time_jax(args, repeat):
    setup = cli.resolve(cli.parse(args))
    fn = jax.jit(nb.pixel_fields, static_argnums=0)
    pixels = setup.config.roi_pixels()
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(setup.config, setup.scatterers, setup.experiment, pixels))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(setup.config, setup.scatterers, setup.experiment, pixels))
        runs.append(time.perf_counter() - t0)
    image = np.asarray(nb.pixel_values(setup.config, setup.experiment, nb.PixelFields(*map(np.asarray, out)),
                                       setup.steps)).reshape(setup.config.spixels, setup.config.fpixels)
    return first, min(runs), image, setup


def time_c(binary, args):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    t0 = time.perf_counter()
    subprocess.run([binary] + args + ["-floatfile", "c_float.bin", "-intfile", "c_int.img"], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0, int(env["OMP_NUM_THREADS"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--atoms", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--pixels", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_nearbragg.jsonl"))
    ns = ap.parse_args()
    binary = os.environ.get("NEARBRAGG_C_BIN")
    meta = dict(device=str(jax.devices()[0]), backend=jax.default_backend(), cpu_count=os.cpu_count(),
                machine=platform.machine(), jax=jax.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for n_atoms in ns.atoms:
            n = write_atoms("atoms.txt", n_atoms)
            for n_pix in ns.pixels:
                args = args_for(n_pix)
                first, best, image, setup = time_jax(args, ns.repeat)
                terms = n_pix * n_pix * n * setup.steps
                rec = dict(meta, atoms=n, pixels=n_pix, first_s=first, run_s=best, terms_per_s=terms / best,
                           peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
                line = (f"{n:6d} atoms {n_pix:4d}^2 px  jaxbragg first {first:7.2f} s  run {best:7.2f} s  "
                        f"{terms / best:.3g} terms/s")
                if binary:
                    c_s, threads = time_c(binary, args)
                    ref = np.fromfile("c_float.bin", "<f4").reshape(image.shape)
                    rel = float(np.abs(image.astype(np.float32) - ref).max() / np.abs(ref).max())
                    rec.update(c_s=c_s, c_threads=threads, c_over_jax=c_s / best, max_rel_diff=rel)
                    line += f"  C ({threads} threads) {c_s:7.2f} s  C/jax {c_s / best:5.2f}  rel {rel:.1e}"
                print(line, flush=True)
                with open(ns.out, "a") as f:
                    f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    sys.exit(main())
