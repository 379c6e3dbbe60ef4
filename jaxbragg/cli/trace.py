"""``-trace_pixel S F`` / ``-printout_pixel F S``: every intermediate quantity of one pixel.

Prints, for the pixel's first sensor layer, first sub-pixel and first source (the sample the reference's
``-printout_pixel`` reports), the lab position, diffracted direction, scattering vector, sin(theta)/lambda,
and for each phi x mosaic sample the fractional and nearest Miller indices, F_cell and F_latt; then the
cached factors (polarization, solid angle, capture fraction) and the rendered pixel value. Comparing this
with the reference's output locates a parity difference.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import beam as beam_mod
from .. import crystal, detector, geometry, lattice, structure_factors
from ..errors import InputError
from ..simulate import SimConfig, _lattice_stack, _tile, detector_frame, phi_schedule


def trace_pixel(setup, spix: int, fpix: int, out) -> None:
    cfg: SimConfig = setup.config
    p = setup.params
    if not (0 <= spix < cfg.spixels and 0 <= fpix < cfg.fpixels):
        raise InputError(f"-trace_pixel: pixel (slow {spix}, fast {fpix}) is outside the detector")
    pr = lambda *a: print(*a, file=out)
    frame = detector_frame(cfg, p)
    sub = p.pixel_size / cfg.oversample
    f_c = sub * (fpix * cfg.oversample) + sub / 2.0
    s_c = sub * (spix * cfg.oversample) + sub / 2.0
    pos = detector.pixel_position(frame, jnp.asarray(f_c), jnp.asarray(s_c), jnp.asarray(0.0 * f_c),
                                  cfg.curved, p.beam)
    air = geometry.norm(pos)
    d = pos / air
    inc = -p.source_dirs[0]
    q = (d - inc) / p.source_lambda[0]
    angles, _ = phi_schedule(cfg, p)
    stack = _lattice_stack(cfg, p, angles)
    recip_A = crystal.reciprocal_from_lattice(p.lattice) * 1e-10
    hkl = jnp.einsum("j,pvj->pv", q, stack)
    f_latt = lattice.lattice_factor(hkl, p.ncells, p.fudge, recip_A, cfg.shape)
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
    polar = beam_mod.polarization_factor(p.kahn, inc, d, p.polar_vector) if cfg.polarization else 1.0
    omega = detector.solid_angle(air, frame["close_distance"], p.pixel_size, cfg.point_pixel)
    pr(f"  polar = {float(polar):.12g}; omega = {float(omega):.12g} sr")
    if cfg.thick_sensor:
        cap = detector.capture_fraction(d, frame["odet"], 0.0, p.thickstep, p.mu)
        pr(f"  capture fraction (layer 0) = {float(cap):.12g}")
    value = _tile(cfg, p, frame, stack[None], recip_A, jnp.array([spix]), jnp.array([fpix]))[0]
    pr(f"  pixel value = {float(value):.12g} photons (steps = {cfg.steps})")
