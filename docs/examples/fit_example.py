"""Recover cell, orientation, distance, beam centre and crystal size from a noisy still image.

Run from the repository root (about a minute on two CPU cores):

    python docs/examples/fit_example.py [output folder, default docs/images]

It simulates the "observed" image from known parameters with Poisson noise, perturbs them, fits them
back with ``jaxbragg.fit.fit`` and writes ``fit_images.png`` (observed, fit, and the normalised residuals
of start and fit) and ``fit_loss.png`` (loss per iteration). The figures use matplotlib when it is installed and fall back to
jaxbragg's own PNG writer otherwise.
"""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxbragg import fit, parameters                      # noqa: E402
from jaxbragg.cli.flags import parse                      # noqa: E402
from jaxbragg.cli.resolve import resolve                  # noqa: E402
from jaxbragg.io.png import write_png                     # noqa: E402

ARGS = ("-cell 30 32 34 88 92 91 -misset 10 20 30 -default_F 100 -N 5 -lambda 1.0 -distance 40 "
        "-detpixels 96 -pixel 0.2 -oversample 2 -fluence 1e30")
FREE = ["cell_lengths", "cell_angles", "rotvec", "distance", "beam_center", "ncells"]


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    template, truth = parameters.from_setup(resolve(parse(ARGS.split())))
    expected = parameters.simulate(template, truth)
    observed = np.asarray(jax.random.poisson(jax.random.PRNGKey(0), expected), np.float64)

    start = truth.replace(
        cell_lengths=truth.cell_lengths * np.array([1.003, 0.998, 1.002]),
        cell_angles=truth.cell_angles + np.radians([0.15, -0.1, 0.1]),
        rotvec=truth.rotvec + np.radians([0.1, -0.08, 0.05]),
        distance=truth.distance + 0.4e-3,
        beam_center=truth.beam_center + np.array([0.1e-3, -0.08e-3]),
        ncells=truth.ncells * np.array([0.9, 1.1, 0.95]))

    result = fit.fit(template, start, observed, FREE, maxiter=300,
                     callback=lambda it, x, loss: print(f"  iteration {it:3d}  loss {loss:.6g}") if it % 10 == 0
                     else None)
    print(f"{result.message} after {result.iterations} iterations; loss {result.loss_history[0]:.4g} -> "
          f"{result.loss:.4g} ({observed.size} pixels)\n")
    report(truth, start, result)

    start_img = np.asarray(parameters.simulate(template, start))
    fit_img = np.asarray(parameters.simulate(template, result.physical))
    save_figures(out, observed, start_img, fit_img, result.loss_history)


UNITS = dict(cell_lengths=("A", 1e10), cell_angles=("deg", 180 / np.pi), rotvec=("mdeg", 180e3 / np.pi),
             distance=("mm", 1e3), beam_center=("mm", 1e3), ncells=("cells", 1.0))


def report(truth, start, result):
    print(f"{'parameter':16s} {'truth':>12s} {'start':>12s} {'fitted':>12s} {'sigma':>10s} {'|err|/sigma':>11s}")
    for name in result.free:
        unit, k = UNITS[name]
        for i, (t, s, f, e) in enumerate(zip(*(np.ravel(np.asarray(v)) * k for v in (
                getattr(truth, name), getattr(start, name), getattr(result.physical, name))),
                np.ravel(result.uncertainties[name]) * k)):
            label = f"{name}[{i}] ({unit})"
            print(f"{label:26s} {t:12.5f} {s:12.5f} {f:12.5f} {e:10.2g} {abs(f - t) / e:11.2f}")


def _gray(img, top):
    return (np.clip(img / top, 0.0, 1.0) ** 0.5 * 255).astype(np.uint8)


def save_figures(out, observed, start_img, fit_img, history):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    top = np.percentile(observed, 99.5)
    pull = lambda model: (observed - model) / np.sqrt(np.maximum(model, 1.0))
    if plt is not None:
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
        for ax, (img, title) in zip(axes[:2], [(observed, "observed (Poisson noise)"), (fit_img, "fitted model")]):
            ax.imshow(np.sqrt(np.clip(img, 0, top)), cmap="gray_r")
            ax.set_title(title)
        for ax, (model, title) in zip(axes[2:], [(start_img, "start"), (fit_img, "fit")]):
            im = ax.imshow(pull(model), cmap="RdBu_r", vmin=-4, vmax=4)
            ax.set_title(f"(observed - {title}) / sqrt({title})")
        fig.colorbar(im, ax=axes[3], fraction=0.046)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        fig.savefig(out / "fit_images.png", dpi=90)
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.semilogy(np.arange(len(history)), history, marker=".", lw=1)
        ax.axhline(observed.size / 2, color="gray", ls="--", lw=1, label="N/2 (expected at the truth)")
        ax.set_xlabel("BFGS iteration")
        ax.set_ylabel("Poisson loss (half deviance)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "fit_loss.png", dpi=90)
        return
    # no matplotlib: grey panels side by side, and a bare log-scale curve drawn pixel by pixel
    gap = np.full((observed.shape[0], 4), 255, np.uint8)
    res = lambda model: 255 - (np.clip(np.abs(pull(model)) / 4.0, 0, 1) * 255).astype(np.uint8)
    write_png(out / "fit_images.png", np.hstack([255 - _gray(observed, top), gap, 255 - _gray(fit_img, top), gap,
                                                 res(start_img), gap, res(fit_img)]))
    h, w = 200, 300
    canvas = np.full((h, w), 255, np.uint8)
    logs = np.log10(np.asarray(history))
    xs = np.linspace(0, w - 1, len(logs)).astype(int)
    ys = ((logs.max() - logs) / max(np.ptp(logs), 1e-12) * (h - 1)).astype(int)
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:]):
        for t in np.linspace(0.0, 1.0, 2 * max(abs(x1 - x0), abs(y1 - y0)) + 2):
            canvas[int(round(y0 + t * (y1 - y0))), int(round(x0 + t * (x1 - x0)))] = 0
    write_png(out / "fit_loss.png", canvas)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "images")
