"""Derivative cost against the forward pass: forward, ``jax.jacfwd`` (13 scalars), ``value_and_grad`` of a
Poisson loss (all physical parameters and the structure-factor grid), and, when the fitting module's
``benchmarks/fit_cases.py`` exists, time to fit.

The model is the golden ``perf_heavy_512`` command (triclinic, 4 mosaic domains x 3 phi steps x 5
divergence sources x 2x2 sub-pixels = 240 samples per pixel) on N x N pixels, with a structure-factor
grid covering every reflection of the detector (all 100, the command's ``-default_F``, so the image is
the command's) so that the gradient includes ``F_grid``. The Jacobian is taken with respect to the
issue's 13 scalars: cell lengths (3), misset (3), distance, beam centre (2), N (3), mosaic spread.

    python benchmarks/bench_fit.py                          # 256^2 and 512^2, float64 and float32
    python benchmarks/bench_fit.py --sizes 256 --precisions float64
    python benchmarks/bench_fit.py --sizes 256 512 1024 --repeat 5

Every record is appended to --out as a JSON line; the summary prints each derivative's time as a
multiple of the forward pass measured in the same run.
"""
import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from jaxbragg import fit, parameters  # noqa: E402
from jaxbragg.cli.flags import parse  # noqa: E402
from jaxbragg.cli.resolve import resolve  # noqa: E402
from jaxbragg.simulate import compiler_options  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
#: (field, number of entries) of the 13 Jacobian scalars, in this order
JACOBIAN_FIELDS = (("cell_lengths", 3), ("misset", 3), ("distance", 1), ("beam_center", 2), ("ncells", 3),
                   ("mosaic_spread", 1))
GRID_HALF = 30            # F grid over h, k, l in [-30, 30]: every reflection of perf_heavy up to 1024^2


def case(size, precision, grid=True):
    """(template, physical) of perf_heavy_512 on ``size`` x ``size`` pixels."""
    args = json.loads((GOLDEN / "perf_heavy_512" / "case.json").read_text())["args"]
    i = args.index("-detpixels")
    args = args[:i + 1] + [str(size)] + args[i + 2:]
    setup = resolve(parse(args))
    config, params = setup.config, setup.params
    if grid:
        n = 2 * GRID_HALF + 1
        config = dataclasses.replace(config, hkl_min=(-GRID_HALF,) * 3)
        params = params.replace(F_grid=np.full((n, n, n), float(params.default_F)))
    if precision == "float32":
        config = dataclasses.replace(config, precision="float32")
    setup = dataclasses.replace(setup, config=config, params=params)
    return parameters.from_setup(setup)


def best_time(fn, repeat):
    """(best wall time, best process CPU time) of ``repeat`` calls. On a shared machine the CPU time (all
    threads) is the steadier measure of the work done; the wall time is what a user waits."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def timed(fn, arg, repeat):
    """(first call incl. compilation, best steady wall time, best steady CPU time) of the jitted ``fn``."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(arg))
    first = time.perf_counter() - t0
    return (first,) + best_time(lambda: fn(arg), repeat)


def scalars_of(physical):
    return jnp.concatenate([jnp.ravel(getattr(physical, name)) for name, _ in JACOBIAN_FIELDS])


def with_scalars(physical, x):
    new, i = {}, 0
    for name, n in JACOBIAN_FIELDS:
        shape = np.shape(getattr(physical, name))
        new[name] = x[i:i + n].reshape(shape)
        i += n
    return physical.replace(**new)


def measure(size, precision, repeat, grid, jacobian=True):
    template, physical = case(size, precision, grid)
    opts = compiler_options()
    render = lambda ph: parameters.render(template, ph)
    observed = jnp.round(jax.jit(render, compiler_options=opts)(physical))
    rec = dict(size=size, precision=precision, grid=grid, samples_per_pixel=template.config.samples_per_pixel)

    fwd = jax.jit(render, compiler_options=opts)
    rec["forward_first_s"], rec["forward_s"], rec["forward_cpu_s"] = timed(fwd, physical, repeat)

    loss = lambda ph: fit.poisson_nll(render(ph), observed)
    vg = jax.jit(jax.value_and_grad(loss), compiler_options=opts)
    rec["grad_first_s"], rec["grad_s"], rec["grad_cpu_s"] = timed(vg, physical, repeat)

    if jacobian:
        x0 = scalars_of(physical)
        jac = jax.jit(jax.jacfwd(lambda x: render(with_scalars(physical, x))), compiler_options=opts)
        rec["jacfwd_first_s"], rec["jacfwd_s"], rec["jacfwd_cpu_s"] = timed(jac, x0, repeat)
    return rec


def meta():
    return dict(device=str(jax.devices()[0]), backend=jax.default_backend(), cpu_count=os.cpu_count(),
                machine=platform.machine(), jax=jax.__version__,
                load_avg=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)


def time_to_fit(precisions, starts):
    """The fitting module's own cases, when it is there (benchmarks/fit_cases.py)."""
    try:
        from fit_cases import run_cases
    except ImportError:
        print("time to fit: benchmarks/fit_cases.py not found, skipped")
        return []
    out = []
    for precision in precisions:
        result = run_cases(precision, starts)
        print(f"time to fit ({precision}): {result}")
        out.append(dict(mode="time_to_fit", precision=precision, result=result))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", type=int, default=[256, 512])
    ap.add_argument("--precisions", nargs="*", default=["float64", "float32"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-grid", action="store_true", help="no F grid (default_F only)")
    ap.add_argument("--no-jacobian", action="store_true")
    ap.add_argument("--fit-starts", type=int, default=2, help="starts per case for the time-to-fit section (0: skip)")
    ap.add_argument("--out", default="benchmarks/results_fit.jsonl")
    ns = ap.parse_args()
    rows = []
    for size in ns.sizes:
        for precision in ns.precisions:
            rec = dict(mode="derivatives", **meta(),
                       **measure(size, precision, ns.repeat, not ns.no_grid, not ns.no_jacobian))
            rows.append(rec)
            with open(ns.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            jac = (f", jacfwd(13) {rec['jacfwd_s']:.3f} s = {rec['jacfwd_s'] / rec['forward_s']:.1f}x"
                   if "jacfwd_s" in rec else "")
            print(f"{size}^2 {precision}: forward {rec['forward_s']:.3f} s, value_and_grad {rec['grad_s']:.3f} s "
                  f"= {rec['grad_s'] / rec['forward_s']:.1f}x{jac}  (compile+run: forward "
                  f"{rec['forward_first_s']:.1f} s, grad {rec['grad_first_s']:.1f} s"
                  + (f", jacfwd {rec['jacfwd_first_s']:.1f} s)" if "jacfwd_s" in rec else ")"), flush=True)
    print("\n| size | precision | forward (wall / CPU) | value_and_grad / forward (wall / CPU) "
          "| jacfwd(13) / forward (wall / CPU) |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = lambda k: f"{r[k + '_s'] / r['forward_s']:.1f}x / {r[k + '_cpu_s'] / r['forward_cpu_s']:.1f}x"
        jac = ratio("jacfwd") if "jacfwd_s" in r else "-"
        print(f"| {r['size']}^2 | {r['precision']} | {r['forward_s']:.3f} s / {r['forward_cpu_s']:.3f} s "
              f"| {ratio('grad')} | {jac} |")
    if ns.fit_starts:
        for rec in time_to_fit(ns.precisions, ns.fit_starts):
            with open(ns.out, "a") as fh:
                fh.write(json.dumps(rec, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
