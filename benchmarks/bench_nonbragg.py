"""Time the amorphous-scattering render (jaxbragg.amorphous) side by side with nonBragg.c.

For each case (a golden nonbragg_* case, optionally re-sized: ``nonbragg_water_basic_1024`` renders it on
1024 x 1024 pixels) this prints and appends to --out (JSON lines): the first call (compile + run), the
steady-state render (best of --repeat), pixel-samples per second, the gradient of a scalar loss with
respect to the sample and profile parameters, and peak resident memory. With NONBRAGG_C_BIN set to a
nonBragg binary (built by you, outside the repository: ``gcc -O2 -o nonBragg nonBragg.c -lm``) the
reference runs the same command line and the ratio ``C time / jaxbragg time`` is printed; nonBragg.c is
single-threaded. The float images of the two are compared as well (max|diff| / max|ref|).

    python benchmarks/bench_nonbragg.py
    NONBRAGG_C_BIN=$HOME/nonBragg python benchmarks/bench_nonbragg.py --cases nonbragg_water_basic_1024 \
        nonbragg_water_oversample_polar_512
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
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxbragg import amorphous  # noqa: E402
from jaxbragg._jit import compiler_options  # noqa: E402
from jaxbragg.cli import nonbragg  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden_nonbragg"


def case_args(name):
    """A case's arguments, with ``-detpixels`` replaced by the ``_N`` suffix when there is one; returns
    (args, folder holding its inputs)."""
    base, size = name, None
    if not (GOLDEN / name).is_dir():
        base, _, size = name.rpartition("_")
    args = json.loads((GOLDEN / base / "case.json").read_text())["args"]
    if size is not None:
        i = args.index("-detpixels")
        args = args[:i + 1] + [size] + args[i + 2:]
    # the benchmark times the render: no int/noise/PGM files
    drop = {"-intfile", "-noisefile"}
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in drop:
            skip = True
            continue
        out.append(a)
    return out, GOLDEN / base


def best_time(fn, repeat):
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    return min(runs)


def time_jax(args, folder, repeat):
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        parsed, warnings = nonbragg.parse(args)
        setup = nonbragg.resolve(parsed, warnings)
    finally:
        os.chdir(cwd)
    cfg, p = setup.config, setup.params
    opts = compiler_options()
    fwd = jax.jit(lambda p: amorphous.render(cfg, p), compiler_options=opts)
    t0 = time.perf_counter()
    image = np.asarray(jax.block_until_ready(fwd(p)))
    first = time.perf_counter() - t0
    steady = best_time(lambda: fwd(p), repeat)

    def loss(thickness, density, F):
        return jnp.sum(amorphous.render(cfg, p.replace(thickness=thickness, density=density, F=F)) ** 2)

    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), compiler_options=opts)
    jax.block_until_ready(vg(p.thickness, p.density, p.F))
    grad = best_time(lambda: vg(p.thickness, p.density, p.F), repeat)
    samples = cfg.fpixels * cfg.spixels * cfg.steps
    return image, dict(pixels=cfg.fpixels * cfg.spixels, steps=cfg.steps, pixel_samples=samples,
                       first_call_s=first, steady_s=steady, samples_per_s=samples / steady,
                       value_and_grad_s=grad, grad_over_forward=grad / steady)


def time_c(binary, args, folder, shape):
    with tempfile.TemporaryDirectory() as tmp:
        for f in folder.glob("*.stol"):
            os.symlink(f, Path(tmp) / f.name)
        t0 = time.perf_counter()
        subprocess.run([binary, *args, "-floatfile", "c.bin", "-nonoise", "-noprogress"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
        elapsed = time.perf_counter() - t0
        image = np.fromfile(Path(tmp) / "c.bin", dtype="<f4").reshape(shape)
    return elapsed, image


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["nonbragg_water_basic_512", "nonbragg_ice_dispersion"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench_nonbragg.jsonl")
    ns = ap.parse_args()
    c_bin = os.environ.get("NONBRAGG_C_BIN")
    for name in ns.cases:
        args, folder = case_args(name)
        image, rec = time_jax(args, folder, ns.repeat)
        rec.update(case=name, device=str(jax.devices()[0]), backend=jax.default_backend(),
                   cpu_count=os.cpu_count(), machine=platform.machine(), jax=jax.__version__,
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
        line = (f"{name}: {rec['pixels']} px x {rec['steps']} steps; first {rec['first_call_s']:.2f} s, "
                f"steady {rec['steady_s']:.3f} s ({rec['samples_per_s'] / 1e6:.1f} M pixel-samples/s), "
                f"value_and_grad {rec['value_and_grad_s']:.3f} s ({rec['grad_over_forward']:.1f}x)")
        if c_bin:
            c_time, c_image = time_c(c_bin, args, folder, image.shape)
            ref = c_image.astype(np.float64)
            rel = float(np.max(np.abs(image.astype(np.float32) - ref)) / np.max(np.abs(ref)))
            rec.update(c_time_s=c_time, speedup_vs_c=c_time / rec["steady_s"], rel_vs_c=rel)
            line += f"; C {c_time:.3f} s (whole program) -> {rec['speedup_vs_c']:.1f}x, rel diff {rel:.1e}"
        print(line)
        with open(ns.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
