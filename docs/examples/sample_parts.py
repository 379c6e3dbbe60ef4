"""A sample made of parts: a crystal in a water film with an air path, seen through a detector; then a
fit of the water thickness and the PSF width to that one noisy image.

Run from the repository root (about a minute on two CPU cores):

    python docs/examples/sample_parts.py [output folder, default docs/images]

The experiment holds the crystal and two amorphous parts (``jb.Amorphous``): 2 um of water around the
crystal and 60 mm of air between sample and detector, both over the beam's 20 x 20 um cross-section.
``jb.simulate_parts`` renders the Bragg image, each part, and their sum; the detector
(``jaxbragg.response.detector_image``) adds a Gaussian PSF of 1.5 pixels FWHM, Poisson noise, a gain of
2 ADU/photon, 40 ADU offset and 3 ADU read-out noise. The fit frees the water thickness (through
``Experiment.set("parts.0.thickness", ...)``) and the PSF width, minimising the detector likelihood
``poisson_gaussian_nll`` with ``jaxbragg.fit.minimize``; gain, offset, read-out noise and the air are
known. The 1-sigma errors come from the inverse Hessian of the negative log-likelihood at the optimum
(central differences of its gradient).
It writes ``sample_parts.png`` and prints the recovered values.
"""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import jaxbragg as jb                                    # noqa: E402
from jaxbragg import fit, response as R                  # noqa: E402

RADIUS = 6                                               # PSF kernel half-width [pixels]
TRUE = dict(thickness=1e-6, fwhm=1.5)                    # water thickness [m], PSF FWHM [pixels]
DETECTOR = R.Response(gain=2.0, adc=40.0, readout=3.0)


def experiment(n=64):
    """Crystal + water + air on an n x n detector covering the water ring (sin(theta)/lambda ~ 0.16/A)."""
    crystal = jb.Crystal(cell=(70, 80, 90), misset=(12, 25, 37), default_F=20000, N=20, mosaic_spread=0.5,
                         mosaic_domains=10)
    beam = jb.Beam(wavelength=1.0, fluence=1e21)
    detector = jb.Detector(pixels=n, pixel_size=64.0 / n, distance=80.0)
    water = jb.Amorphous("water", thickness=TRUE["thickness"] * 1e6, width=0.01, height=0.01,
                         interpolation="pchip")
    air = jb.Amorphous("air", thickness_mm=1, width=0.01, height=0.01, density=1.2e-3, molecular_weight=29)
    return jb.Experiment(crystal, beam, detector, oversample=2, parts=(water, air))


def observe(exp, key=jax.random.PRNGKey(0)):
    """One noisy 16-bit detector image [ADU] of ``exp`` (PSF, Poisson, gain, offset, read-out)."""
    total = jb.simulate(exp)
    return R.detector_image(key, total, DETECTOR._replace(fwhm=TRUE["fwhm"]), RADIUS, "gauss")


def fit_thickness_and_width(exp, observed, start=(4e-6, 1.0), maxiter=60):
    """Fit the water thickness [m] and the PSF FWHM [pixels] to ``observed``; returns a dict."""
    t0, w0 = start

    def unpack(x):                      # log-parameters: positive by construction, O(1) steps
        return t0 * jnp.exp(x[0]), w0 * jnp.exp(x[1])

    def nll(x, aux):
        thickness, fwhm = unpack(x)
        mu = R.apply_psf(jb.simulate(exp.set("parts.0.thickness", thickness)), fwhm, RADIUS, "gauss")
        return R.poisson_gaussian_nll(aux["y"], mu, DETECTOR.gain, DETECTOR.adc, DETECTOR.readout)

    aux = dict(y=observed)
    value_and_grad = jax.jit(jax.value_and_grad(nll))        # one compilation for the fit and the errors
    x, history, iters, converged, message = fit.minimize(nll, jnp.zeros(2), aux, maxiter=maxiter,
                                                         value_and_grad=value_and_grad)
    thickness, fwhm = (float(v) for v in unpack(jnp.asarray(x)))
    # 1-sigma errors: inverse Hessian of the NLL (central differences of its gradient) in the
    # log-parameters, times the values
    h, eye = 1e-4, np.eye(2)
    hess = np.stack([(np.asarray(value_and_grad(jnp.asarray(x + h * e), aux)[1])
                      - np.asarray(value_and_grad(jnp.asarray(x - h * e), aux)[1])) / (2 * h) for e in eye], 1)
    sig = np.sqrt(np.diag(np.linalg.inv(hess))) * np.array([thickness, fwhm])
    return dict(thickness=thickness, fwhm=fwhm, sigma_thickness=float(sig[0]), sigma_fwhm=float(sig[1]),
                iterations=int(iters), converged=bool(converged), message=message, history=history)


def main(out_dir, n=64):
    exp = experiment(n)
    total, bragg, parts = (np.asarray(a) for a in jb.simulate_parts(exp))
    observed = observe(exp)
    result = fit_thickness_and_width(exp, observed)
    print(f"photons: Bragg {bragg.sum():.4g}, water {parts[0].sum():.4g}, air {parts[1].sum():.4g}; "
          f"brightest Bragg pixel {bragg.max():.4g}, water at most {parts[0].max():.4g}/pixel")
    print(f"water thickness {result['thickness'] * 1e6:.4f} +- {result['sigma_thickness'] * 1e6:.4f} um "
          f"(true {TRUE['thickness'] * 1e6:g}), PSF FWHM {result['fwhm']:.4f} +- {result['sigma_fwhm']:.4f} px "
          f"(true {TRUE['fwhm']}); {result['iterations']} iterations, {result['message']}")
    fitted = exp.set("parts.0.thickness", result["thickness"])
    model = np.asarray(R.expected_adu(jb.simulate(fitted), DETECTOR._replace(fwhm=result["fwhm"]), RADIUS))
    resid = (np.asarray(observed) - model) / np.sqrt(DETECTOR.gain * (model - DETECTOR.adc)
                                                     + DETECTOR.readout ** 2)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.9))
    top = float(np.percentile(total, 99.5))
    lin = Normalize(0.0, top)                                             # one grey scale for all three
    panels = [(bragg, "Bragg only (photons)", lin, "gray_r"),
              (total, "Bragg + water + air (photons)", lin, "gray_r"),
              ((np.asarray(observed) - DETECTOR.adc) / DETECTOR.gain,
               f"detector: PSF {TRUE['fwhm']} px, noise ((ADU - adc) / gain)", lin, "gray_r"),
              (resid, "fit: (observed - model) / sigma", Normalize(-4.0, 4.0), "RdBu_r")]
    print(f"residual / sigma: mean {resid.mean():.3f}, rms {resid.std():.3f}")
    for ax, (img, title, norm, cmap) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap, norm=norm, origin="upper", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.tight_layout()
    out = Path(out_dir) / "sample_parts.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "images")
