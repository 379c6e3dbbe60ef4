"""The tutorial of docs/tutorial.md, as one script (tests/test_experiment.py runs it).

Run ``python docs/examples/tutorial.py --pictures`` (needs the ``docs`` extra, matplotlib) to redraw the
tutorial's pictures in docs/images/.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)       # a choice for your program; jaxbragg never sets it
import jaxbragg as jb

# 1. A crystal on a detector -------------------------------------------------------------------------
# Angstrom and degrees for the cell, Angstrom for the wavelength, mm for the detector.
exp = jb.Experiment(
    crystal=jb.Crystal(cell=(40, 50, 60, 90, 95, 90), misset=(10, 20, 30), N=4, default_F=100.0),
    beam=jb.Beam(wavelength=1.0),
    detector=jb.Detector(pixels=48, pixel_size=0.5, distance=80.0),       # MOSFLM convention, centred beam
)
image = jb.simulate(exp)                        # [slow, fast] photons per pixel
print(f"1. image {image.shape}, brightest pixel {float(image.max()):.3g} photons")

# 2. A mosaic crystal in a rotation series ------------------------------------------------------------
# Each frame sweeps 1 degree in 2 steps; 4 mosaic domains 0.5 degrees wide. The frames differ only in
# the start angle, a stored (SI, radians) field: vmap over it renders the series in one call.
mosaic = jb.Experiment(
    crystal=jb.Crystal(cell=(40, 50, 60, 90, 95, 90), misset=(10, 20, 30), N=4, default_F=100.0,
                       mosaic_spread=0.5, mosaic_domains=4, mosaic_seed=1),
    beam=jb.Beam(wavelength=1.0),
    detector=jb.Detector(pixels=48, pixel_size=0.5, distance=80.0),
    scan=jb.Scan(phi=0.0, osc=1.0, phisteps=2),
)
starts = jnp.deg2rad(jnp.arange(4.0))          # frames at 0, 1, 2, 3 degrees
series = jax.vmap(lambda phi0: jb.simulate(mosaic.set("scan.phi0", phi0)))(starts)
print(f"2. series {series.shape}: photons per frame {np.round(np.asarray(series.sum(axis=(1, 2))), 1)}")

# 3. A batch of orientations --------------------------------------------------------------------------
# Build the experiments as usual and stack them (their static fields, e.g. step counts, must agree).
orientations = [(10, 20, 30), (11, 20, 30), (40, -10, 5)]
batch = jb.stack([exp.set("crystal.misset", jnp.deg2rad(jnp.asarray(m, float))) for m in orientations])
images = jax.vmap(jb.simulate)(batch)           # [3, slow, fast]
print(f"3. batch {images.shape}")

# 4. A gradient --------------------------------------------------------------------------------------
# How does the total signal change with the detector distance (metres inside)? Check against a finite
# difference.
def total(distance):
    return jb.simulate(exp.set("detector.distance", distance)).sum()

d0 = exp.detector.distance                      # 0.08 m
grad = jax.grad(total)(jnp.asarray(d0))
h = 1e-6
fd = (total(jnp.asarray(d0 + h)) - total(jnp.asarray(d0 - h))) / (2 * h)
print(f"4. d(total)/d(distance) = {float(grad):.6g} photons/m (finite difference {float(fd):.6g})")

# the command line's translation of the same experiment
flags = ["-cell", "40", "50", "60", "90", "95", "90", "-misset", "10", "20", "30", "-N", "4", "-default_F", "100",
         "-lambda", "1", "-detpixels", "48", "-pixel", "0.5", "-distance", "80", "-oversample", "1"]
same = jb.simulate(jb.Experiment.from_flags(flags))

def rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


checks = {"batch[0] is image 1": rel(images[0], image) <= 1e-12,
          "gradient = finite difference": abs(float(grad) - float(fd)) <= 1e-5 * abs(float(fd)),
          "from_flags gives image 1": rel(same, image) <= 1e-9,
          "one frame per start angle": series.shape == (4, 48, 48)}
print("checks:", checks)
checks_passed = all(checks.values())

if "--pictures" in sys.argv:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    panels = [(image, "1. one image"), (series[2], "2. frame at 2 deg (mosaic)"),
              (images[2], "3. another orientation"), (None, "")]
    for ax, (img, title) in zip(axes[:3], panels):
        ax.imshow(np.sqrt(np.asarray(img)), cmap="gray_r", origin="upper")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    ds = np.linspace(0.06, 0.10, 9)
    axes[3].plot(ds * 1e3, [float(total(jnp.asarray(d))) for d in ds], "o-")
    axes[3].set_xlabel("distance [mm]"), axes[3].set_ylabel("total photons")
    axes[3].set_title("4. signal vs distance", fontsize=9)
    fig.tight_layout()
    fig.savefig("docs/images/tutorial.png", dpi=110)
