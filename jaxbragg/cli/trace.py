"""``-trace_pixel S F`` / ``-printout_pixel F S``: every intermediate quantity of one pixel.

Prints, for the pixel's first sensor layer, first sub-pixel and first source (the sample the reference's
``-printout_pixel`` reports), the lab position, diffracted direction, scattering vector, sin(theta)/lambda,
and for each phi x mosaic sample the fractional and nearest Miller indices, F_cell and F_latt; then the
cached factors (polarization, solid angle, capture fraction) and the rendered pixel value. Comparing this
with the reference's output locates a parity difference.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import geometry, kernel, lattice, structure_factors
from .._schedule import PLAIN
from ..errors import InputError
from ..simulate import SimConfig, image_setup


def trace_pixel(setup, spix: int, fpix: int, out) -> None:
    cfg: SimConfig = setup.config
    if not (0 <= spix < cfg.spixels and 0 <= fpix < cfg.fpixels):
        raise InputError(f"-trace_pixel: pixel (slow {spix}, fast {fpix}) is outside the detector")
    pr = lambda *a: print(*a, file=out)
    # the image's own set-up and the kernel's stages, evaluated eagerly for this one pixel
    image = image_setup(cfg, setup.params)
    p, frame = image.params, image.frame
    s_idx, f_idx = jnp.array([spix]), jnp.array([fpix])
    points = kernel.sample_points(cfg, p, frame, s_idx, f_idx)
    rays = kernel.diffracted_rays(cfg, p, frame, points, PLAIN, None)
    sc = kernel.scattering(cfg, p, rays, PLAIN, None)
    pos, air, d = points.position[0, 0, 0, 0], rays.airpath[0, 0, 0, 0], rays.diffracted[0, 0, 0, 0]
    inc = sc.incident[0, 0]
    q = jnp.stack([c[0, 0, 0, 0, 0] for c in sc.q])
    stack = image.lat_stacks[0]
    hkl = jnp.einsum("j,pvj->pv", q, stack)
    f_latt = lattice.lattice_factor(hkl, p.ncells, p.fudge, image.recip_A, cfg.shape)
    f_cell = structure_factors.lookup_nearest(hkl, p.F_grid, cfg.hkl_min, p.default_F)
    vec = lambda v: " ".join(f"{float(x):.12g}" for x in np.ravel(v))
    pr(f"TRACE pixel slow {spix} fast {fpix}")
    pr(f"  pix0 = {vec(frame['pix0'])} m; fdet = {vec(frame['fdet'])}; sdet = {vec(frame['sdet'])}; "
       f"odet = {vec(frame['odet'])}")
    pr(f"  distance = {float(frame['distance']):.12g} m, close_distance = {float(frame['close_distance']):.12g} m")
    pr(f"  position = {vec(pos)} m, airpath = {float(air):.12g} m")
    pr(f"  diffracted = {vec(d)}; incident = {vec(inc)}; lambda = {float(p.source_lambda[0]):.12g} m")
    pr(f"  q = {vec(q)} 1/m; stol = {float(0.5 * geometry.norm(q)):.12g} 1/m")
    for i in range(hkl.shape[0]):
        h = np.asarray(hkl[i])
        pr(f"  sample {i} (phi {i // cfg.mosaic_domains}, mosaic {i % cfg.mosaic_domains}): "
           f"hkl = {vec(h)}  hkl0 = {vec(np.ceil(h - 0.5))}  F_cell = {float(f_cell[i]):.12g}  "
           f"F_latt = {float(f_latt[i]):.12g}")
    polar = np.ravel(sc.polar)[0] if cfg.polarization else 1.0
    pr(f"  polar = {float(polar):.12g}; omega = {float(rays.omega[0, 0, 0, 0]):.12g} sr")
    if cfg.thick_sensor:
        pr(f"  capture fraction (layer 0) = {float(rays.capture[0, 0, 0, 0]):.12g}")
    value = kernel.render_tile(cfg, image, s_idx, f_idx).value[0]
    pr(f"  pixel value = {float(value):.12g} photons (steps = {cfg.steps})")
