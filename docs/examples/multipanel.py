"""A four-module detector (2 x 2 panels with gaps, as Eiger/Pilatus modules are) rendered in one call.

Run from the repository root:

    python docs/examples/multipanel.py [--pixels 96] [--out docs/images/multipanel.png]

Every panel is a ``convention="custom"`` panel with its own origin ``pix0`` [mm] and axes; the detector is
``jb.Detector.from_panels(...)``; ``jb.simulate_panels`` renders the four equal panels with one
compilation ([4, slow, fast]). The picture lays the panels out as they sit in the detector plane, with
the gaps drawn mid-grey (panel grey = sqrt of the photons per pixel).
"""
import argparse
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxbragg as jb                        # noqa: E402
from jaxbragg.io.png import write_png       # noqa: E402

GAP_GREY = 70                                                              # picture grey of the gaps
FDET, SDET, ODET = (0.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)     # nanoBragg's MOSFLM frame


def build(pixels: int, pixel_mm: float, gap: int, distance_mm: float = 80.0):
    """The experiment and the (row, column) of each panel's corner in the picture."""
    size = pixels * pixel_mm
    step = size + gap * pixel_mm
    corner = -(size + gap * pixel_mm / 2.0)       # the beam passes through the middle of the central gap
    panels, places = [], []
    for row in range(2):
        for col in range(2):
            # pixel (0, 0) of a panel: fast along +z (picture columns), slow along -y (picture rows)
            pix0 = (distance_mm, -corner - row * step, corner + col * step)
            panels.append(jb.Panel(pixels, pixel_mm, convention="custom", fdet=FDET, sdet=SDET, odet=ODET,
                                   pix0=pix0))
            places.append((row * (pixels + gap), col * (pixels + gap)))
    crystal = jb.Crystal((60.0, 60.0, 60.0), misset=(10.0, 20.0, 30.0), N=6, default_F=100.0)
    exp = jb.Experiment(crystal, beam=jb.Beam(1.0, polarization=0.9),
                        detector=jb.Detector.from_panels(*panels))
    return exp, places


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=96, help="pixels per panel edge")
    ap.add_argument("--out", default="docs/images/multipanel.png")
    args = ap.parse_args()
    pixel_mm = 19.2 / args.pixels             # the same 19.2 mm modules at any resolution
    gap = max(args.pixels // 12, 2)
    exp, places = build(args.pixels, pixel_mm, gap)
    images = np.asarray(jb.simulate_panels(exp))
    edge = 2 * args.pixels + gap
    white = np.percentile(images, 99.5)
    grey = np.full((edge, edge), GAP_GREY, np.uint8)          # the gaps between the modules
    for img, (r, c) in zip(images, places):
        grey[r:r + args.pixels, c:c + args.pixels] = np.round(255 * np.sqrt(np.clip(img / white, 0, 1)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_png(args.out, grey)
    print(f"wrote {args.out}: {len(images)} panels of {args.pixels}x{args.pixels}, gap {gap} pixels, "
          f"max {images.max():.3g} photons")


if __name__ == "__main__":
    main()
