"""``jaxbragg`` command line: nanoBragg-compatible flags in, image files out.

The layer is thin: :mod:`.flags` parses argv, :mod:`.resolve` applies the reference's defaults and
precedence and builds ``(SimConfig, Params)``, :func:`jaxbragg.simulate.simulate` renders, and this module
prints the summary and writes the files. Any user error becomes one line on stderr and exit status 2,
before anything is written.
"""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

import numpy as np

from ..errors import InputError
from . import flags as flags_mod
from .resolve import resolve

RTD = 57.29577951308232


def _fmt_vec(v) -> str:
    return " ".join(f"{float(x):g}" for x in v)


def _print_summary(setup, out):
    info, cfg = setup.info, setup.config
    p = lambda *a: print(*a, file=out)
    p("jaxbragg: nanoBragg-compatible diffraction simulator (JAX)")
    for w in setup.warnings:
        p(f"WARNING: {w}")
    if info["misset_random"] is not None:
        p("random orientation misset angles: %f %f %f deg" % info["misset_random"])
    if info["fdump_used"]:
        p(f"reading structure factors from cache {info['fdump_used']} (no -hkl given)")
    p(f"{info['convention']} convention selected; pivoting detector around "
      f"{'direct beam spot' if info['pivot'] == 'beam' else 'sample'}")
    a = np.linalg.norm(info["lattice"], axis=1) * 1e10
    p(f"  unit cell lengths: {a[0]:g} {a[1]:g} {a[2]:g} A;  crystal {info['shape']} "
      f"{info['Ncells'][0]:.0f}x{info['Ncells'][1]:.0f}x{info['Ncells'][2]:.0f} cells")
    p(f"  {info['hkl_count']} structure factors from file (all others = {info['default_F']:g})")
    p(f"  wavelength {info['lambda0']:g} m, {info['sources']} source(s), fluence {info['fluence']:g} photons/m^2")
    p(f"  distance={info['distance']:g} m close_distance={info['close_distance']:g} m  "
      f"detector {cfg.fpixels}x{cfg.spixels} pixels of {info['pixel']:g} m")
    p(f"  Xbeam={info['Xbeam']:g} Ybeam={info['Ybeam']:g}  Fbeam={info['Fbeam']:g} Sbeam={info['Sbeam']:g}"
      f"  Fclose={info['Fclose']:g} Sclose={info['Sclose']:g}")
    p(f"  DIRECTION_OF_DETECTOR_X-AXIS= {_fmt_vec(info['fdet'])}")
    p(f"  DIRECTION_OF_DETECTOR_Y-AXIS= {_fmt_vec(info['sdet'])}")
    p(f"  DIRECTION_OF_DETECTOR_Z-AXIS= {_fmt_vec(info['odet'])}")
    p(f"  INCIDENT_BEAM_DIRECTION= {_fmt_vec(info['beam'])}")
    p(f"  spindle ROTATION_AXIS= {_fmt_vec(info['spindle'])}")
    p(f"  {info['mosaic_domains']} mosaic domains over mosaic spread of {info['mosaic_spread'] * RTD:g} degrees")
    p(f"  {info['phisteps']} phi steps from {info['phi0'] * RTD:g} to {(info['phi0'] + info['osc']) * RTD:g} degrees"
      + ("  (C-parity phi carry-over ON)" if cfg.phi_carryover else ""))
    p(f"  {cfg.oversample}x{cfg.oversample} pixel oversample steps"
      + (" +thick" if cfg.oversample_thick else "") + (" +polar" if cfg.oversample_polar else "")
      + (" +omega" if cfg.oversample_omega else ""))
    p(f"  sensor {info['thick']:g} m thick in {info['thicksteps']} layers;  {cfg.steps} steps per pixel, "
      f"{'float32' if info['float32'] else 'float64'}")


def _check_writable(paths: List[str]):
    for path in paths:
        d = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(d):
            raise InputError(f"{path}: output directory does not exist")
        if not os.access(d, os.W_OK):
            raise InputError(f"{path}: output directory is not writable")
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory")


def run(argv: List[str], out=sys.stdout) -> int:
    """Run one command line; returns the exit status."""
    parsed = flags_mod.parse(argv)
    setup = resolve(parsed, os.getcwd())
    outputs = setup.outputs
    _check_writable([p for p in outputs.values() if p])
    import jax
    if not setup.info["float32"]:
        jax.config.update("jax_enable_x64", True)
    from ..simulate import simulate
    params = jax.tree_util.tree_map(lambda x: x, setup.params)
    _print_summary(setup, out)
    t0 = time.perf_counter()
    image = np.asarray(jax.block_until_ready(simulate(setup.config, params)), dtype=np.float64)
    elapsed = time.perf_counter() - t0
    _report(image, setup, out, elapsed)
    from .. import io
    if outputs.get("float"):
        io.write_float(outputs["float"], image.astype(np.float32))
        print(f"writing {outputs['float']} as {image.size} 4-byte floats", file=out)
    return 0


def _report(image, setup, out, elapsed):
    cfg = setup.config
    f0, f1, s0, s1 = cfg.roi_box()
    window = image[s0:s1 + 1, f0:f1 + 1]
    valid = np.ones_like(window, bool)
    if setup.params.mask is not None:
        valid = np.asarray(setup.params.mask)[s0:s1 + 1, f0:f1 + 1] != 0
    vals = window[valid]
    n = max(vals.size, 1)
    mean = vals.sum() / n
    rms = np.sqrt((vals ** 2).sum() / max(n - 1, 1))
    rmsd = np.sqrt(((vals - mean) ** 2).sum() / max(n - 1, 1))
    idx = np.unravel_index(np.argmax(image), image.shape)
    print(f"rendered in {elapsed:.3f} s", file=out)
    print(f"max_I = {image.max():g}  at pixel (slow {idx[0]}, fast {idx[1]})", file=out)
    print(f"mean= {mean:g} rms= {rms:g} rmsd= {rmsd:g}", file=out)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: jaxbragg -cell a b c al be ga -default_F F [-hkl F.hkl] [-floatfile out.bin] ...\n"
              "       jaxbragg -demo        (render a built-in example)\n"
              "see specs/cli.md for every flag", file=sys.stderr)
        return 2
    try:
        return run(argv)
    except InputError as e:
        print(f"jaxbragg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxbragg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
