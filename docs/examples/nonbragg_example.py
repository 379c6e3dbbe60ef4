"""The worked example of docs/nonbragg.md: a water background, the ice profile's two interpolants, and a
gradient. Writes docs/images/nonbragg_example.png (needs the `docs` extra, matplotlib).

    python docs/examples/nonbragg_example.py
"""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxbragg import amorphous  # noqa: E402
from jaxbragg.cli import nonbragg  # noqa: E402


def setup(args):
    """(config, params) for a nonBragg command line, with its defaults and conventions."""
    parsed, warnings = nonbragg.parse(args)
    s = nonbragg.resolve(parsed, warnings)
    return s.config, s.params


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 100 um of water, 1 A, 1e21 photons/m^2, a 192 x 192 detector of 0.4 mm pixels at 80 mm
    geometry = ["-distance", "80", "-detpixels", "192", "-pixel", "0.4", "-lambda", "1", "-fluence", "1e21"]
    cfg, p = setup(["-stol", "water", "-thickness", "0.1", "-samplesize", "0.1"] + geometry)
    water = np.asarray(amorphous.amorphous_image(cfg, p))

    # d(sum of image)/d(thickness): the image is linear in the thickness, so the gradient is sum / t
    total = jax.jit(lambda t: jnp.sum(amorphous.render(cfg, p.replace(thickness=t))))
    g = float(jax.grad(total)(p.thickness))
    print(f"water: {water.sum():.4g} photons; d/d(thickness) = {g:.4g} photons/m "
          f"(sum / thickness = {water.sum() / float(p.thickness):.4g})")

    # ice: the reference's 4-point polynomial against the smooth non-negative interpolant
    ice = amorphous.load_profile("ice")
    x = jnp.linspace(0.2e10, 0.36e10, 4001)
    st, F = jnp.asarray(ice.stol), jnp.asarray(ice.F)
    f_polint = np.asarray(amorphous.interpolate_polint(st, F, x))
    f_pchip = np.asarray(amorphous.interpolate_pchip(st, F, x))
    cfg_i, p_i = setup(["-stol", "ice", "-thickness", "0.05", "-samplesize", "0.05", "-density", "0.92"]
                       + geometry)
    img_polint = np.asarray(amorphous.amorphous_image(cfg_i, p_i))
    img_pchip = np.asarray(amorphous.amorphous_image(
        amorphous.AmorphousConfig(**{**cfg_i.__dict__, "interpolation": "pchip"}), p_i))

    fig, ax = plt.subplots(1, 4, figsize=(17, 4.2))
    im = ax[0].imshow(water, cmap="gray")
    ax[0].set_title("water, 100 um: photons/pixel")
    fig.colorbar(im, ax=ax[0], shrink=0.8)
    ax[1].plot(x / 1e10, f_polint, lw=0.8, label="polint (nonBragg.c)")
    ax[1].plot(x / 1e10, f_pchip, lw=1.2, label="pchip (non-negative)")
    sel = (ice.stol >= 0.2e10) & (ice.stol <= 0.36e10)
    ax[1].plot(ice.stol[sel] / 1e10, ice.F[sel], "k.", ms=3, label="ice.stol points")
    ax[1].set_ylim(-400, 400)
    ax[1].set_xlabel("sin(theta)/lambda [1/A]")
    ax[1].set_ylabel("F")
    ax[1].set_title("ice profile: the two interpolants")
    ax[1].legend(fontsize=8)
    lim = np.percentile(np.abs(img_polint), 99)
    im = ax[2].imshow(img_polint, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax[2].set_title(f"ice, polint: min {img_polint.min():.2g}")
    fig.colorbar(im, ax=ax[2], shrink=0.8)
    im = ax[3].imshow(img_pchip, cmap="gray")
    ax[3].set_title(f"ice, pchip: min {img_pchip.min():.2g}")
    fig.colorbar(im, ax=ax[3], shrink=0.8)
    for a in (ax[0], ax[2], ax[3]):
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    out = Path(__file__).resolve().parent.parent / "images" / "nonbragg_example.png"
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
