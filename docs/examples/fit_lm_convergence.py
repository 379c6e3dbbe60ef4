"""Convergence of jb.fit on the fitting issue's case: Levenberg-Marquardt with automatic staging, LM without
staging, and BFGS without staging, from the same start. Writes docs/images/fit_lm_convergence.png
(needs matplotlib: pip install 'jaxbragg[docs]').

    python docs/examples/fit_lm_convergence.py
"""
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import jaxbragg as jb                                        # noqa: E402
import fit_cases as fc                                       # noqa: E402


def main(start_index=2):
    truth = fc.truth_of(fc.CASES["issue (triclinic)"])
    mu = np.asarray(jb.simulate(truth))
    observed = np.asarray(jax.random.poisson(jax.random.PRNGKey(1000 * start_index), mu), np.float64)
    start = fc.perturbed(truth, start_index)
    runs = {}
    for label, kw in (("LM, staging='auto' (default)", {}), ("LM, no staging", dict(staging="none")),
                      ("BFGS, no staging", dict(method="bfgs", staging="none", maxiter=200))):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jb.SamplingWarning)
            res = jb.fit(start, observed, fc.FREE, **kw)
        z = fc.z_scores(res, truth).max()
        runs[label] = (res, time.perf_counter() - t0, z)
        print(f"{label}: loss {res.loss_history[0]:.4g} -> {res.loss:.6g} in {res.iterations} iterations, "
              f"{runs[label][1]:.1f} s, max |fitted - truth| / sigma = {z:.2f}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (res, _, z) in runs.items():
        ax.semilogy(res.loss_history, label=f"{label}: max z = {z:.1f}")
    ax.axhline(runs["LM, staging='auto' (default)"][0].loss, color="grey", ls=":", lw=1, label="optimum")
    ax.set_xlabel("iteration (stages concatenated)")
    ax.set_ylabel("Poisson loss (half deviance)")
    ax.set_title("64x64 px, -oversample 1, 12 free parameters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = ROOT / "docs" / "images" / "fit_lm_convergence.png"
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
