"""nearBragg examples: a strained nanocrystal beside the perfect one, and atom positions refined by gradient.

Run from the repository root (about half a minute on two CPU cores):

    python docs/examples/nearbragg_example.py [output folder, default docs/images]

* ``nearbragg_strain.png``: a perfect 8x8x8 cubic lattice of point scatterers (a = 20 A) and the same
  lattice under a radial strain ``u(x) = eps |x| x / R`` (eps = 4 %, R its half-width), rendered by
  ``jaxbragg.nearbragg.render`` with a plane wave. The strain broadens and splits the spots away from the
  beam, the perfect crystal's spots stay sharp to high angle.
* :func:`refine`: three atoms of a 27-atom cluster are displaced by 0.25 A; their positions are refined
  against the unperturbed image by gradient descent (Adam, written out) on ``sum (I - I_obs)^2``, with
  ``jax.value_and_grad`` through the renderer. ``tests/test_nearbragg_docs.py`` runs it.
"""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxbragg import nearbragg as nb        # noqa: E402


def cubic_lattice(n, a):
    """[n^3, 3] points on a cubic lattice of spacing ``a`` [m], centred on the origin."""
    idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return (idx - (n - 1) / 2.0) * a


def radial_strain(pos, eps):
    """``x + eps |x| x / R`` with ``R`` the largest |x|: a strain growing from the centre to the surface."""
    r = np.linalg.norm(pos, axis=1, keepdims=True)
    return pos + eps * r * pos / r.max()


def strain_images(n_pix=128):
    pos = cubic_lattice(8, 20e-10)
    cfg = nb.NearConfig(n_pix, n_pix, oversample=2, far_source=True)
    exp = nb.experiment(fpixels=n_pix, spixels=n_pix, pixel=0.5e-3, distance=0.1)
    out = []
    for p in (pos, radial_strain(pos, 0.04)):
        atoms = nb.Scatterers(p, np.ones(len(p)), np.zeros(len(p)), np.zeros(len(p)))
        out.append(np.asarray(nb.render(cfg, atoms, exp)))
    return out


def refine_problem():
    """(config, experiment, true scatterers, start positions, indices of the moved atoms)."""
    n_pix = 24
    cfg = nb.NearConfig(n_pix, n_pix, far_source=True, debye_waller=False)
    exp = nb.experiment(fpixels=n_pix, spixels=n_pix, pixel=1e-3, distance=0.02)
    truth = cubic_lattice(3, 4e-10) + np.random.default_rng(0).normal(0, 0.3e-10, (27, 3))
    moved = np.array([4, 13, 22])
    start = truth.copy()
    start[moved] += np.random.default_rng(1).normal(0, 1, (3, 3)) * 0.25e-10 / np.sqrt(3)
    ones = np.ones(27)
    atoms = nb.Scatterers(truth, ones, np.zeros(27), np.zeros(27))
    return cfg, exp, atoms, start, moved


def refine(n_steps=150, lr=0.02):
    """Refine the moved atoms' positions (in A) from the start; returns (rms error before, after) in A and
    the loss per step."""
    cfg, exp, truth, start, moved = refine_problem()
    observed = nb.render(cfg, truth, exp)
    norm = float(jnp.sum(observed ** 2))

    def loss(delta_A):
        pos = jnp.asarray(start).at[moved].add(delta_A * 1e-10)
        img = nb.render(cfg, truth._replace(positions=pos), exp)
        return jnp.sum((img - observed) ** 2) / norm

    step = jax.jit(jax.value_and_grad(loss))
    x = jnp.zeros((len(moved), 3))
    m = v = jnp.zeros_like(x)
    losses = []
    for t in range(1, n_steps + 1):          # Adam, written out (no optimiser dependency)
        value, g = step(x)
        losses.append(float(value))
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        x = x - lr * (m / (1 - 0.9 ** t)) / (jnp.sqrt(v / (1 - 0.999 ** t)) + 1e-12)
    err = lambda d: float(np.sqrt(np.mean(((start[moved] + np.asarray(d) * 1e-10) - truth.positions[moved]) ** 2))) * 1e10
    return err(np.zeros((len(moved), 3))), err(x), losses


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    perfect, strained = strain_images()
    vmax = np.log10(perfect.max())
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6), constrained_layout=True)
    for ax, img, title in zip(axes, (perfect, strained), ("perfect 8x8x8 lattice", "4 % radial strain")):
        im = ax.imshow(np.log10(np.maximum(img, 10 ** (vmax - 4))), cmap="magma", vmin=vmax - 4, vmax=vmax)
        ax.set_title(title)
        ax.set_xlabel("fast pixel")
        ax.set_ylabel("slow pixel")
    fig.colorbar(im, ax=axes, label="log10 photons/pixel", shrink=0.85)
    fig.savefig(out / "nearbragg_strain.png", dpi=90)
    if "--figure-only" in sys.argv:
        return
    before, after, losses = refine()
    print(f"refined 3 atoms: rms position error {before:.3f} A -> {after:.4f} A "
          f"(loss {losses[0]:.3g} -> {losses[-1]:.3g})")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(Path(args[0]) if args else Path("docs/images"))
