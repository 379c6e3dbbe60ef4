"""Images per second of jaxbragg.batch.render_sharded against the number of devices.

Each device count runs in its own interpreter, because the number of virtual CPU devices is fixed when
JAX starts (``XLA_FLAGS=--xla_force_host_platform_device_count=D``). With ``--real-devices`` the children
instead use the first D of the machine's own devices (GPUs), with no XLA flag.

Two modes: ``--mode strong`` renders the same ``--images`` images on every device count (time to solution);
``--mode weak`` renders ``--images`` images per device. Each child reports the first call (compile + run)
and the median of ``--repeat`` warm calls; results are appended to ``--out`` as JSON lines.

    python benchmarks/bench_scaling.py                                 # 1, 2, 4 virtual CPU devices
    python benchmarks/bench_scaling.py --devices 1 2 4 8 --detpixels 128 --images 32 --out scaling.jsonl
    python benchmarks/bench_scaling.py --real-devices --devices 1 2 4 8 --detpixels 1024   # on GPUs

Virtual CPU devices share the host's cores, so on a C-core machine the rate can at best grow until D
reaches C (and less where XLA already runs one device's work on several threads).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

CASE = ("-cell 70 80 90 75 85 95 -misset 10 20 30 -default_F 100 -N 5 -mosaic 0.3 -mosaic_domains 4 "
        "-osc 1 -phisteps 2 -lambda 1 -distance 100 -pixel 0.1 -oversample 1")


def child(args):
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", args.dtype == "float64")
    from jaxbragg import batch
    from jaxbragg.cli.flags import parse
    from jaxbragg.cli.resolve import resolve

    setup = resolve(parse(CASE.split() + ["-detpixels", str(args.detpixels)]
                          + (["-float32"] if args.dtype == "float32" else [])))
    devices = jax.devices()[:args.child_devices]
    mesh = batch.make_mesh(pixels=args.pixel_split, devices=devices)
    n = args.images * (len(devices) // args.pixel_split if args.mode == "weak" else 1)
    stack = batch.with_orientations(setup.params, batch.random_orientations(0, n))

    def once():
        t0 = time.perf_counter()
        jax.block_until_ready(batch.render_sharded(setup.config, stack, mesh=mesh))
        return time.perf_counter() - t0

    first = once()
    steady = float(np.median([once() for _ in range(args.repeat)]))
    cfg = setup.config
    print("RESULT " + json.dumps(dict(
        devices=len(devices), platform=devices[0].platform, mode=args.mode, images=n,
        pixel_split=args.pixel_split, detpixels=args.detpixels, samples_per_pixel=cfg.samples_per_pixel,
        dtype=args.dtype, first_call_s=first, steady_s=steady, images_per_s=n / steady,
        pixel_samples_per_s=n * cfg.fpixels * cfg.spixels * cfg.samples_per_pixel / steady,
        host_cpus=os.cpu_count(), jax=jax.__version__, machine=platform.machine())))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--mode", choices=("strong", "weak"), default="strong")
    ap.add_argument("--images", type=int, default=16, help="total (strong) or per device (weak)")
    ap.add_argument("--detpixels", type=int, default=128)
    ap.add_argument("--pixel-split", type=int, default=1, help="devices sharing one image")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--real-devices", action="store_true", help="use the machine's devices, not virtual CPUs")
    ap.add_argument("--out", default="bench_scaling.jsonl")
    ap.add_argument("--child-devices", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_devices:
        return child(args)

    base = None
    for d in args.devices:
        env = dict(os.environ)
        if not args.real_devices:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={d}").strip()
            env["JAX_PLATFORMS"] = "cpu"
        argv = [sys.executable, os.path.abspath(__file__), "--child-devices", str(d)] + sys.argv[1:]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{d} devices: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rec = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
        base = base or rec  # rates relative to the first device count run
        rec["speedup"] = rec["images_per_s"] / base["images_per_s"]
        rec["speedup_over_devices"] = base["devices"]
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{rec['devices']:3d} {rec['platform']} device(s): {rec['images']:4d} images  "
              f"first {rec['first_call_s']:7.2f} s  steady {rec['steady_s']:7.3f} s  "
              f"{rec['images_per_s']:8.2f} images/s  x{rec['speedup']:.2f}")


if __name__ == "__main__":
    main()
