"""Are the Fisher sigmas of jb.fit right? Refit many Poisson noise realisations of one truth and compare the
spread of the fitted values with the reported sigmas (not a CI test).

For each realisation the fit starts at the truth (the question is the error model, not convergence) and
runs Levenberg-Marquardt at the data's own sampling. Printed per parameter: the standard deviation of the
fitted values over the realisations, the mean reported sigma, and their ratio (1 is calibrated; the
ratio's own sampling error is about 1/sqrt(2 R) for R realisations).

    python benchmarks/calibrate_uncertainties.py [--realisations 50] [--case "issue (triclinic)"]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def calibrate(realisations: int = 50, case: str = "issue (triclinic)", oversample: int = None):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jaxbragg as jb
    import fit_cases as fc
    flags = fc.CASES[case] + " " + fc.COMMON
    if oversample is not None:
        flags = flags.replace("-oversample 1", f"-oversample {oversample}")
    truth = jb.Experiment.from_flags(flags.split())
    mu = np.asarray(jb.simulate(truth))
    fitted, sigmas = [], []
    t0 = time.perf_counter()
    for r in range(realisations):
        observed = np.asarray(jax.random.poisson(jax.random.PRNGKey(50_000 + r), mu), np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = jb.fit(truth, observed, fc.FREE, staging="none")
        fitted.append(np.concatenate([np.ravel(res.values[p]) for p in fc.FREE]))
        sigmas.append(np.concatenate([np.ravel(res.uncertainties[p]) for p in fc.FREE]))
    fitted, sigmas = np.array(fitted), np.array(sigmas)
    spread = fitted.std(axis=0, ddof=1)
    reported = sigmas.mean(axis=0)
    names = [f"{p}[{i}]" for p in fc.FREE for i in range(np.size(np.asarray(res.values[p])))]
    print(f"{case}, {realisations} noise realisations, oversample {truth.oversample}, "
          f"{time.perf_counter() - t0:.0f} s")
    print("| parameter | spread of fits | mean reported sigma | ratio |")
    print("|---|---|---|---|")
    for n, s, m in zip(names, spread, reported):
        print(f"| {n} | {s:.4g} | {m:.4g} | {s / m:.2f} |")
    ratio = spread / reported
    print(f"mean ratio {ratio.mean():.3f}; mean |ratio - 1| {np.abs(ratio - 1).mean():.3f}")
    return names, spread, reported


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--realisations", type=int, default=50)
    ap.add_argument("--case", default="issue (triclinic)")
    ap.add_argument("--oversample", type=int, default=None)
    a = ap.parse_args()
    calibrate(a.realisations, a.case, a.oversample)
