"""Fit cases of the fitting issue and a time-to-fit runner (``run_cases``; benchmarks/bench_fit.py calls it).

Each case is a command line (the truth) on a 64 x 64 detector at ``-oversample 1`` (below the reference's
recommendation on purpose: the automatic staging of ``jb.fit`` has to rescue it). For each random start:
Poisson noise drawn with its own seed, a start off by ``START`` (0.2 % in each cell edge, 0.08 degrees of
orientation about a random axis, 0.3 mm in distance, 0.1 mm in each beam-centre coordinate, 8 % in each N;
random signs), then ``jb.fit`` with its defaults (Levenberg-Marquardt, ``staging="auto"``) freeing the cell
edges, orientation, distance, beam centre and N. A start *converges* when every fitted value is within 3
reported sigmas of the truth. Times include compilation (the first start of a case compiles; later starts
of the same case reuse it).

    python benchmarks/fit_cases.py [--precision float64|float32] [--starts 10] [--cases issue,cubic]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

COMMON = "-default_F 100 -lambda 1.0 -distance 40 -fluence 1e30 -detpixels 64 -pixel 0.3 -oversample 1"
CASES = {
    "issue (triclinic)": "-cell 30 32 34 88 92 91 -misset 10 20 30 -N 5",
    "cubic": "-cell 36 36 36 90 90 90 -misset 5 15 25 -N 5",
    "monoclinic": "-cell 32 38 30 90 104 90 -misset 20 -10 40 -N 5",
    "orthorhombic": "-cell 28 34 40 90 90 90 -misset -15 30 5 -N 6",
}
FREE = ["crystal.cell_lengths", "crystal.orientation", "detector.distance", "detector.beam_center", "crystal.N"]
START = dict(cell=0.002, orientation_deg=0.08, distance_mm=0.3, beam_center_mm=0.1, N=0.08)


def truth_of(args: str):
    import jaxbragg as jb
    return jb.Experiment.from_flags(f"{args} {COMMON}".split())


def perturbed(truth, seed: int):
    """The start: ``truth`` moved by the sizes of START with random signs and orientation axis."""
    r = np.random.default_rng(seed)
    sign = lambda k: r.choice([-1.0, 1.0], k)
    axis = r.normal(size=3)
    axis /= np.linalg.norm(axis)
    c, d = truth.crystal, truth.detector
    return (truth.set("crystal.cell_lengths", c.cell_lengths * (1 + START["cell"] * sign(3)))
            .set("crystal.rotvec", axis * np.deg2rad(START["orientation_deg"]))
            .set("detector.distance", d.distance + START["distance_mm"] * 1e-3 * sign(1)[0])
            .set("detector.beam_center", d.beam_center + START["beam_center_mm"] * 1e-3 * sign(2))
            .set("crystal.ncells", c.ncells * (1 + START["N"] * sign(3))))


def z_scores(result, truth):
    """|fitted - truth| / sigma of every free component."""
    from jaxbragg import paths
    return np.concatenate([np.abs(np.ravel(result.values[p] - np.asarray(paths.get_path(truth, p))))
                           / np.ravel(result.uncertainties[p]) for p in result.free])


def run_case(name: str, precision: str = "float64", starts: int = 10, seed: int = 0, verbose: bool = True):
    import jax
    import jaxbragg as jb
    execution = jb.Execution(precision="float32") if precision == "float32" else None
    truth = truth_of(CASES[name])
    mu = np.asarray(jb.simulate(truth, execution))
    rows = []
    for k in range(starts):
        observed = np.asarray(jax.random.poisson(jax.random.PRNGKey(seed + 1000 * k), mu), np.float64)
        start = perturbed(truth, seed + k)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jb.SamplingWarning)
            res = jb.fit(start, observed, FREE, execution=execution)
        seconds = time.perf_counter() - t0
        z = z_scores(res, truth)
        row = dict(case=name, start=k, seconds=seconds, max_z=float(z.max()), within_3sigma=bool(z.max() <= 3),
                   loss_start=float(res.loss_history[0]), loss=res.loss, pixels=int(mu.size),
                   iterations=res.iterations, stages="+".join(f"os{s['oversample']}:{s['iterations']}"
                                                              for s in res.stages))
        rows.append(row)
        if verbose:
            print(f"  {name:18s} start {k}: {seconds:5.1f} s  max|z| {row['max_z']:8.2f}  loss {row['loss']:.6g}"
                  f"  ({row['stages']})", flush=True)
    return rows


def run_cases(precision: str = "float64", starts: int = 10, cases=None, verbose: bool = True):
    """Fit every case from ``starts`` random starts; print a summary table and return the per-start rows."""
    import jax
    jax.config.update("jax_enable_x64", True)          # a script: the library never does this
    names = list(CASES) if cases is None else list(cases)
    rows = []
    for name in names:
        rows += run_case(name, precision, starts, verbose=verbose)
    print(f"\n{precision}: fits of {', '.join(FREE)} from starts off by {START}")
    print("| case | within 3 sigma | median time [s] | max time [s] | median max-abs-z |")
    print("|---|---|---|---|---|")
    for name in names:
        rs = [r for r in rows if r["case"] == name]
        t = np.array([r["seconds"] for r in rs])
        print(f"| {name} | {sum(r['within_3sigma'] for r in rs)}/{len(rs)} | {np.median(t):.1f} | {t.max():.1f} "
              f"| {np.median([r['max_z'] for r in rs]):.2f} |")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="float64", choices=["float64", "float32"])
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--cases", default=None, help="comma-separated case names (prefixes) to run")
    a = ap.parse_args()
    chosen = None if a.cases is None else [n for n in CASES if any(n.startswith(c) for c in a.cases.split(","))]
    run_cases(a.precision, a.starts, chosen)
