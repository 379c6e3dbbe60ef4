"""Detector response on a Bragg image: PSF, gain, offset, read-out and photon noise; then fit them back.

Run from the repository root (well under a minute on two CPU cores):

    python docs/examples/noisify_example.py [output folder, default docs/images]

It takes the 128 x 128 photons/pixel image of the reference case ``noisify_psf_gauss`` (a nanoBragg
render), applies a Gaussian PSF of 1.5 pixels FWHM, a gain of 2 ADU/photon, an offset of 40 ADU and 3 ADU
of read-out noise with ``jaxbragg.response.detector_image``, then recovers the PSF width and the gain
from that one noisy image by minimising ``poisson_gaussian_nll`` with ``jaxbragg.fit.minimize``. It
writes ``noisify_example.png`` (ideal image, noisy detector image, fitted model; the central 64 x 64
pixels).
"""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from jaxbragg import fit, response as R                  # noqa: E402

RADIUS = 6
TRUE = R.Response(fwhm=1.5, gain=2.0, adc=40.0, readout=3.0, scale=20.0)


def main(out_dir):
    photons = np.fromfile(ROOT / "tests/golden_noisify/noisify_psf_gauss/in.bin", "<f4").reshape(128, 128)
    lam = jnp.asarray(photons, jnp.float64) * TRUE.scale + 0.5          # plus a flat 0.5 photon background
    shot = R.detector_image(jax.random.PRNGKey(0), lam, TRUE._replace(scale=1.0), RADIUS, "gauss")

    # free: log FWHM and log gain (positive by construction); adc and read-out known from dark frames
    def loss(x, aux):
        fwhm, gain = jnp.exp(x[0]), jnp.exp(x[1])
        mu = R.apply_psf(aux["lam"], fwhm, RADIUS, "gauss", lost="uniform")
        return R.poisson_gaussian_nll(aux["y"], mu, gain, TRUE.adc, TRUE.readout) / aux["y"].size

    x0 = jnp.log(jnp.array([1.0, 1.5]))                                  # start: 1 px, 1.5 ADU/photon
    x, history, iters, converged, message = fit.minimize(loss, x0, dict(lam=lam, y=shot), maxiter=100)
    fwhm, gain = np.exp(np.asarray(x))
    print(f"fitted FWHM {fwhm:.3f} px (true {TRUE.fwhm}), gain {gain:.3f} ADU/photon (true {TRUE.gain}); "
          f"{iters} iterations, {message}")
    model = R.expected_adu(lam, TRUE._replace(fwhm=float(fwhm), gain=float(gain), scale=1.0), RADIUS)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    crop = (slice(24, 88), slice(24, 88))                                 # 64 x 64 pixels, to see the noise
    top = float(np.percentile(np.asarray(shot), 97.0))
    panels = [(lam * TRUE.gain + TRUE.adc, "ideal (gain x photons + adc)"),
              (shot, "detector: PSF 1.5 px, noise, 16-bit"),
              (model, f"fitted model: FWHM {fwhm:.2f} px, gain {gain:.2f}")]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(np.asarray(img)[crop], cmap="gray_r", vmin=TRUE.adc - 2 * TRUE.readout, vmax=top,
                  origin="upper", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out = Path(out_dir) / "noisify_example.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "images")
