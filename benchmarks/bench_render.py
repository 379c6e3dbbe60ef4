"""Time jaxbragg on the golden perf cases (and the reference C side by side when NB_C_BIN is set).

For each case and dtype it records: the first call (compile + run), the steady-state run (median of
--repeat warm calls), pixel-samples per second, and the peak resident memory of this process. With
NB_C_BIN=/path/to/nanoBragg the reference is run on the same command line (OMP_NUM_THREADS = core count
unless already set) and the ratio C_time / jaxbragg_time is printed. Results are appended as JSON lines.

    python benchmarks/bench_render.py                       # perf_heavy_512 and its 1024^2 variant
    python benchmarks/bench_render.py --cases perf_512 --dtypes float64 --repeat 5 --out results.jsonl
"""
import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxbragg.cli.flags import parse  # noqa: E402
from jaxbragg.cli.resolve import resolve  # noqa: E402
from jaxbragg.simulate import simulate  # noqa: E402

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


def case_args(name):
    if name.endswith("_1024"):
        args = json.loads((GOLDEN / name[:-5] / "case.json").read_text())["args"]
        i = args.index("-detpixels")
        return args[:i + 1] + ["1024"] + args[i + 2:]
    return json.loads((GOLDEN / name / "case.json").read_text())["args"]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_jax(args, dtype, repeat):
    setup = resolve(parse(args))
    params = setup.params
    cfg = setup.config if dtype == "float64" else dataclasses.replace(setup.config, precision="float32")
    t0 = time.perf_counter()
    jax.block_until_ready(simulate(cfg, params))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(simulate(cfg, params))
        runs.append(time.perf_counter() - t0)
    samples = cfg.fpixels * cfg.spixels * cfg.samples_per_pixel
    steady = float(np.median(runs))
    return dict(first_call_s=first, steady_s=steady, pixel_samples=samples,
                samples_per_s=samples / steady, samples_per_pixel=cfg.samples_per_pixel)


def time_c(binary, args):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([binary, *args, "-floatfile", "c.bin", "-nonoise", "-nopgm", "-noprogress"], cwd=tmp,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0, env["OMP_NUM_THREADS"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=["perf_heavy_512", "perf_heavy_512_1024"])
    ap.add_argument("--dtypes", nargs="*", default=["float64", "float32"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results.jsonl")
    ns = ap.parse_args()
    c_bin = os.environ.get("NB_C_BIN")
    for name in ns.cases:
        args = case_args(name)
        c_time = None
        if c_bin:
            c_time, threads = time_c(c_bin, args)
            print(f"{name}: reference C {c_time:.3f} s (OMP_NUM_THREADS={threads})")
        for dtype in ns.dtypes:
            rec = dict(case=name, dtype=dtype, device=str(jax.devices()[0]), backend=jax.default_backend(),
                       cpu_count=os.cpu_count(), machine=platform.machine(), jax=jax.__version__,
                       **time_jax(args, dtype, ns.repeat), peak_rss_mb=peak_rss_mb())
            if c_time is not None:
                rec.update(c_time_s=c_time, speedup_vs_c=c_time / rec["steady_s"])
            print(f"{name} {dtype}: first {rec['first_call_s']:.2f} s, steady {rec['steady_s']:.3f} s, "
                  f"{rec['samples_per_s'] / 1e6:.1f} M pixel-samples/s, peak RSS {rec['peak_rss_mb']:.0f} MB"
                  + (f", {rec['speedup_vs_c']:.2f}x the C" if c_time is not None else ""))
            with open(ns.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    sys.exit(main())
