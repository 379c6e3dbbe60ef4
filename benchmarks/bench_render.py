"""Time jaxbragg on the golden perf cases, side by side with the reference C when NB_C_BIN is set.

Modes (each appends JSON lines to --out and prints a summary):

* ``render`` (default): per case and precision, the first call (compile + run), the steady-state run
  (best of --repeat), pixel-samples per second and peak resident memory. With NB_C_BIN=/path/to/nanoBragg
  the reference runs the same command line (OMP_NUM_THREADS = core count unless set) and the ratio
  ``C time / jaxbragg time`` is printed.
* ``grad``: forward vs ``value_and_grad`` of a scalar loss over the image, and their ratio.
* ``sweep``: throughput against samples per pixel (mosaic domains x phi steps x sub-pixels on a 256^2
  detector), then ``--plot`` writes docs/images/throughput.png (needs matplotlib).
* ``cli``: wall time of the ``jaxbragg`` command on a 256^2 image, cold (empty compilation cache) and
  warm (cache filled by the previous run).

    python benchmarks/bench_render.py                                  # perf_heavy_512 (+1024^2)
    NB_C_BIN=$HOME/nanoBragg python benchmarks/bench_render.py --cases perf_512_1024 perf_heavy_512
    python benchmarks/bench_render.py --mode sweep --plot
    python benchmarks/bench_render.py --mode grad --cases perf_heavy_512_256   # the issue's 256^2 gradient
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
from jaxbragg.simulate import compiler_options, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"


def case_args(name):
    """Golden case arguments; a ``_N`` suffix after a case name renders that case on N x N pixels
    (``perf_heavy_512_1024``, ``perf_heavy_512_256``)."""
    base, size = name, None
    if not (GOLDEN / name).is_dir():
        base, _, size = name.rpartition("_")
    args = json.loads((GOLDEN / base / "case.json").read_text())["args"]
    if size is not None:
        i = args.index("-detpixels")
        args = args[:i + 1] + [size] + args[i + 2:]
    return args


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def meta():
    return dict(device=str(jax.devices()[0]), backend=jax.default_backend(), cpu_count=os.cpu_count(),
                machine=platform.machine(), jax=jax.__version__)


def best_time(fn, repeat):
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    return min(runs)


def setup_for(args, precision):
    setup = resolve(parse(args))
    cfg = setup.config if precision == "float64" else dataclasses.replace(setup.config, precision="float32")
    return cfg, setup.params


def time_render(args, precision, repeat):
    cfg, params = setup_for(args, precision)
    t0 = time.perf_counter()
    jax.block_until_ready(simulate(cfg, params))
    first = time.perf_counter() - t0
    steady = best_time(lambda: simulate(cfg, params), repeat)
    samples = cfg.fpixels * cfg.spixels * cfg.samples_per_pixel
    return dict(first_call_s=first, steady_s=steady, pixel_samples=samples, samples_per_s=samples / steady,
                samples_per_pixel=cfg.samples_per_pixel, pixels=cfg.fpixels * cfg.spixels)


def time_grad(args, precision, repeat):
    cfg, params = setup_for(args, precision)
    # both top-level jits with the options jaxbragg's own entry points use
    opts = compiler_options()
    fwd = jax.jit(lambda p: jnp.sum(simulate(cfg, p) ** 2), compiler_options=opts)
    vg = jax.jit(jax.value_and_grad(lambda p: jnp.sum(simulate(cfg, p) ** 2)), compiler_options=opts)
    jax.block_until_ready(fwd(params))
    jax.block_until_ready(vg(params))
    f, g = best_time(lambda: fwd(params), repeat), best_time(lambda: vg(params), repeat)
    return dict(forward_s=f, value_and_grad_s=g, grad_over_forward=g / f)


def time_c(binary, args):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([binary, *args, "-floatfile", "c.bin", "-nonoise", "-nopgm", "-noprogress"], cwd=tmp,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0, env["OMP_NUM_THREADS"]


def write(out, rec):
    with open(out, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def mode_render(ns):
    c_bin = os.environ.get("NB_C_BIN")
    for name in ns.cases:
        args = case_args(name)
        c_time = None
        if c_bin:
            c_time, threads = time_c(c_bin, args)
            print(f"{name}: reference C {c_time:.3f} s (OMP_NUM_THREADS={threads})")
        for precision in ns.precisions:
            rec = dict(mode="render", case=name, precision=precision, **meta(),
                       **time_render(args, precision, ns.repeat), peak_rss_mb=peak_rss_mb())
            if c_time is not None:
                rec.update(c_time_s=c_time, c_samples_per_s=rec["pixel_samples"] / c_time,
                           speedup_vs_c=c_time / rec["steady_s"])
            print(f"{name} {precision}: first {rec['first_call_s']:.2f} s, steady {rec['steady_s']:.3f} s, "
                  f"{rec['samples_per_s'] / 1e6:.1f} M pixel-samples/s, peak RSS {rec['peak_rss_mb']:.0f} MB"
                  + (f", {rec['speedup_vs_c']:.1f}x the C" if c_time is not None else ""))
            write(ns.out, rec)


def mode_grad(ns):
    for name in ns.cases:
        for precision in ns.precisions:
            rec = dict(mode="grad", case=name, precision=precision, **meta(),
                       **time_grad(case_args(name), precision, ns.repeat))
            print(f"{name} {precision}: forward {rec['forward_s']:.3f} s, value_and_grad "
                  f"{rec['value_and_grad_s']:.3f} s ({rec['grad_over_forward']:.2f}x)")
            write(ns.out, rec)


SWEEP = [(1, 1, 1), (2, 1, 1), (4, 1, 1), (4, 3, 1), (4, 3, 2), (8, 3, 2), (10, 5, 2), (10, 5, 4)]


def mode_sweep(ns):
    base = ("-cell 70 80 90 75 85 95 -misset 10 20 30 -default_F 100 -N 5 -lambda 1.0 -distance 100 "
            "-detpixels 256 -pixel 0.1 -nopgm -noprogress").split()
    for domains, phisteps, oversample in SWEEP:
        args = base + ["-mosaic", "0.3", "-mosaic_domains", str(domains), "-phi", "1", "-osc", "1",
                       "-phisteps", str(phisteps), "-oversample", str(oversample)]
        for precision in ns.precisions:
            rec = dict(mode="sweep", precision=precision, **meta(), **time_render(args, precision, ns.repeat))
            print(f"{rec['samples_per_pixel']:5d} samples/pixel {precision}: "
                  f"{rec['samples_per_s'] / 1e6:.1f} M pixel-samples/s")
            write(ns.out, rec)
    if ns.plot:
        plot(ns.out)


def plot(path, png=ROOT / "docs" / "images" / "throughput.png"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    recs = [json.loads(l) for l in open(path) if '"mode": "sweep"' in l]
    fig, ax = plt.subplots(figsize=(6, 4))
    for precision in ("float64", "float32"):
        # the latest record for each sample count (the file accumulates every run)
        latest = {r["samples_per_pixel"]: r["samples_per_s"] / 1e6 for r in recs if r["precision"] == precision}
        pts = sorted(latest.items())
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"jaxbragg {precision}")
    c = [json.loads(l) for l in open(path) if '"c_samples_per_s"' in l]
    if c:
        ax.axhline(np.median([r["c_samples_per_s"] for r in c]) / 1e6, color="gray", ls="--",
                   label="nanoBragg.c (OpenMP)")
    ax.set_xscale("log")
    ax.set_xlabel("samples per pixel")
    ax.set_ylabel("million pixel-samples / s")
    ax.set_title(f"256x256 detector, {recs[0]['cpu_count']} CPU cores" if recs else "")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def mode_cli(ns):
    args = ("-cell 50 60 70 90 90 90 -misset 5 10 15 -default_F 100 -N 5 -lambda 1 -distance 100 "
            "-detpixels 256 -pixel 0.1 -oversample 1 -nonoise -nopgm -noprogress").split()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, JAXBRAGG_CACHE_DIR=os.path.join(tmp, "cache"))
        for label in ("cold", "warm", "warm"):
            t0 = time.perf_counter()
            subprocess.run(["jaxbragg", *args, "-floatfile", "o.bin"], cwd=tmp, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            rec = dict(mode="cli", run=label, wall_s=time.perf_counter() - t0, **meta())
            print(f"jaxbragg 256x256 {label}: {rec['wall_s']:.2f} s wall")
            write(ns.out, rec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["render", "grad", "sweep", "cli"], default="render")
    ap.add_argument("--cases", nargs="*", default=["perf_heavy_512", "perf_heavy_512_1024"])
    ap.add_argument("--precisions", nargs="*", default=["float64", "float32"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plot", action="store_true", help="with --mode sweep: write docs/images/throughput.png")
    ap.add_argument("--out", default="benchmarks/results.jsonl")
    ns = ap.parse_args()
    {"render": mode_render, "grad": mode_grad, "sweep": mode_sweep, "cli": mode_cli}[ns.mode](ns)


if __name__ == "__main__":
    sys.exit(main())
