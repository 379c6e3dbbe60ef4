"""``jaxbragg-nearbragg``: the reference's nearBragg.c command line on :mod:`jaxbragg.nearbragg`.

    jaxbragg-nearbragg -file atoms.txt [-lambda A] [-distance mm] [-detpixels N] [-pixel mm] ...
    python -m jaxbragg.cli.nearbragg ...

Every flag of nearBragg.c's option loop, with its units and defaults (specs/nearbragg.md). Flags are matched
by their whole name (not the C's substrings); values are checked (one line naming the flag and exit status 2,
nothing written). Outputs: the float image (``-floatfile``, default ``floatimage.bin``), the SMV image
(``-intfile``, default ``intimage.img``) and, with ``-coherent``, the mean complex amplitude (``-cosfile``,
``-sinfile``; defaults ``cosimage.bin``, ``sinimage.bin``), all written at the end, all or none.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from ..errors import InputError
from . import common
from .flags import _number, _parses, unexpected_value, unknown_flag, walk

PROG = "jaxbragg-nearbragg"
RTD = 180.0 / 3.14159265358979          # the reference's PI

#: kind codes as in :mod:`jaxbragg.cli.flags`; "src": a number or ``far``
_TABLE: Dict[str, str] = {
    "-file": "s", "-atoms": "i",
    "-Xbeam": "f", "-Ybeam": "f", "-fdet_vector": "3f", "-sdet_vector": "3f", "-odet_vector": "3f",
    "-beam_vector": "3f", "-polar_vector": "3f", "-spindle_axis": "3f", "-pix0_vector": "3f",
    "-divergence": "f", "-hdivrange": "f", "-vdivrange": "f", "-hdivstep": "f", "-vdivstep": "f",
    "-hdivsteps": "i", "-vdivsteps": "i", "-divsteps": "i", "-square_div": "",
    "-distance": "f", "-twotheta": "f",
    "-source_distance": "src", "-source_dist": "src", "-source_depth": "f", "-depthsteps": "i",
    "-depthstep": "f",
    "-detsize": "f", "-detsize_x": "f", "-detsize_y": "f",
    "-detpixels": "i", "-detpixels_x": "i", "-detpixels_y": "i",
    "-curved_det": "", "-pixel": "f", "-point_pixel": "", "-nopolar": "", "-polar": "f",
    "-oversample": "i", "-roi": "4i",
    "-lambda": "f", "-wave": "f", "-energy": "f", "-fluence": "f", "-dispersion": "f", "-dispsteps": "i",
    "-phi": "f",
    "-floatfile": "s", "-sinfile": "s", "-cosfile": "s", "-intfile": "s", "-scale": "f",
    "-coherent": "", "-printout": "", "-printout_pixel": "2i", "-noprogress": "", "-progress": "",
    "-debug": "", "-accumulate": "",
}

OUTPUT_FLAG = {"atoms": "-file", "float": "-floatfile", "int": "-intfile", "sin": "-sinfile",
               "cos": "-cosfile"}
DEFAULT_NAMES = {"float": "floatimage.bin", "int": "intimage.img", "sin": "sinimage.bin",
                 "cos": "cosimage.bin"}

USAGE = f"""usage: {PROG} -file atoms.txt [flags]
Coherent sum over explicit point scatterers with exact path lengths (nearBragg.c). Units as the reference:
  -file F                   scatterers: X Y Z [occupancy [B [phase]]] per line (A, A, A, -, A^2, degrees)
  -lambda/-wave A | -energy eV   wavelength (default 1 A)
  -dispersion PCT -dispsteps N   spectral spread (percent) and wavelength count
  -divergence MRAD, -hdivrange/-vdivrange MRAD, -hdivstep/-vdivstep MRAD, -hdivsteps/-vdivsteps/-divsteps N
                            source-point grid (corners rounded off, always: -square_div has no effect)
  -source_distance MM|far   origin to source (default 10000 mm); 'far' = plane wave along +x
  -source_depth A -depthsteps N  source thickness along the beam (Angstrom, as the reference's code reads it)
  -distance MM              origin to detector (default 100)
  -detsize[_x|_y] MM, -detpixels[_x|_y] N, -pixel MM   detector size (default 102.4 mm, 0.1 mm pixels)
  -Xbeam/-Ybeam MM          where the detector normal through the origin lands (default: centre)
  -twotheta DEG -spindle_axis X Y Z   detector swing (axis default 0 0 1)
  -fdet_vector/-sdet_vector/-odet_vector X Y Z, -pix0_vector X Y Z (metres)   detector frame
  -curved_det, -point_pixel, -oversample N (default: auto), -roi xmin xmax ymin ymax
  -fluence PHOTONS/M^2, -coherent, -polar K (jaxbragg: Kahn factor; the reference has none), -nopolar
  -floatfile F -intfile F -scale S -sinfile F -cosfile F -accumulate -phi DEG (header only)
  -printout, -printout_pixel X Y, -noprogress, -progress, -debug, -atoms N (no effect)
  -beam_vector, -polar_vector (without -polar), -depthstep, -square_div: accepted, no effect (as in the C)
See specs/nearbragg.md for every flag, unit, default and deviation."""


def parse(argv: List[str]):
    """``[(flag, values)]`` in order (the grammar of :mod:`jaxbragg.cli.flags`, nearBragg's table)."""
    def source(argv, i, flag):
        if i + 1 < len(argv) and argv[i + 1] == "far":
            return ("far",), 1
        if i + 1 >= len(argv) or not _parses(argv[i + 1]):
            raise InputError(f"{flag}: expected a distance in mm or 'far'")
        return (_number(flag, argv[i + 1], False),), 1

    def unknown(flag, out):
        if flag.startswith("-") and not _parses(flag):
            return unknown_flag(flag, _TABLE)
        return unexpected_value(flag, out)

    return [(flag, vals) for flag, _, vals in walk(argv, _TABLE.get, _TABLE, unknown, {"src": source})]


class Setup:
    """A resolved command line: the library's (config, scatterers, experiment) plus what the CLI prints."""


def resolve(parsed, cwd: str = ".") -> Setup:
    """Apply the flags in order with the reference's defaults and rules; read the atom file."""
    from .. import nearbragg as nb
    from .. import beam as beam_mod
    from ..io.atoms import read_atoms
    from .resolve import _steps_rule
    st = dict(atoms_file=None, Xbeam=None, Ybeam=None, fdet=[0.0, 0.0, 1.0], sdet=[0.0, -1.0, 0.0],
              odet=[1.0, 0.0, 0.0], polar_vector=[0.0, 0.0, 1.0], spindle=[0.0, 0.0, 1.0], pix0=None,
              hdivrange=-1.0, vdivrange=-1.0, hdivstep=-1.0, vdivstep=-1.0, hdivsteps=-1, vdivsteps=-1,
              distance=0.1, twotheta=None, far=False, source_distance=10.0, source_depth=0.0, depthsteps=-1,
              detsize_x=0.1024, detsize_y=0.1024, xpixels=0, ypixels=0, curved=False, pixel=0.1e-3,
              point_pixel=False, polar=False, kahn=0.0, oversample=-1, roi=None, lambda0=1e-10,
              fluence=nb.FLUENCE, dispersion=0.0, dispsteps=-1, phi0=0.0, float=None, sin=None, cos=None,
              int=None, scale=0.0, coherent=False, printout=False, printout_pixel=None, progress=True,
              debug=False, accumulate=False)
    warnings: List[str] = []
    noop = set()
    for flag, v in parsed:
        x = v[0] if v else None
        if flag == "-file": st["atoms_file"] = x
        elif flag in ("-atoms", "-beam_vector", "-square_div", "-depthstep"): noop.add(flag)
        elif flag == "-Xbeam": st["Xbeam"] = x / 1000.0
        elif flag == "-Ybeam": st["Ybeam"] = x / 1000.0
        elif flag == "-fdet_vector": st["fdet"] = list(v)
        elif flag == "-sdet_vector": st["sdet"] = list(v)
        elif flag == "-odet_vector": st["odet"] = list(v)
        elif flag == "-polar_vector": st["polar_vector"] = list(v)
        elif flag == "-spindle_axis": st["spindle"] = list(v)
        elif flag == "-pix0_vector": st["pix0"] = list(v)
        elif flag == "-divergence": st["hdivrange"] = st["vdivrange"] = x / 1000.0
        elif flag == "-hdivrange": st["hdivrange"] = x / 1000.0
        elif flag == "-vdivrange": st["vdivrange"] = x / 1000.0
        elif flag == "-hdivstep": st["hdivstep"] = x / 1000.0
        elif flag == "-vdivstep": st["vdivstep"] = x / 1000.0
        elif flag == "-hdivsteps": st["hdivsteps"] = x
        elif flag == "-vdivsteps": st["vdivsteps"] = x
        elif flag == "-divsteps": st["hdivsteps"] = st["vdivsteps"] = x
        elif flag == "-distance": st["distance"] = x / 1000.0
        elif flag == "-twotheta": st["twotheta"] = x / RTD
        elif flag in ("-source_distance", "-source_dist"):
            if x == "far":
                st.update(far=True, source_distance=0.0, source_depth=0.0)
            else:
                st["source_distance"] = x / 1000.0
        elif flag == "-source_depth":
            if x < 0:
                raise InputError(f"-source_depth: must be >= 0, got {x:g}")
            st["source_depth"] = x * 1e-10
        elif flag == "-depthsteps": st["depthsteps"] = x
        elif flag == "-detsize": st["detsize_x"] = st["detsize_y"] = x / 1000.0
        elif flag == "-detsize_x": st["detsize_x"] = x / 1000.0
        elif flag == "-detsize_y": st["detsize_y"] = x / 1000.0
        elif flag == "-detpixels": st["xpixels"] = st["ypixels"] = x
        elif flag == "-detpixels_x": st["xpixels"] = x
        elif flag == "-detpixels_y": st["ypixels"] = x
        elif flag == "-curved_det": st["curved"] = True
        elif flag == "-pixel": st["pixel"] = x / 1000.0
        elif flag == "-point_pixel": st["point_pixel"] = True
        elif flag == "-nopolar": st["polar"] = False
        elif flag == "-polar": st.update(polar=True, kahn=x)
        elif flag == "-oversample": st["oversample"] = x
        elif flag == "-roi": st["roi"] = tuple(v)
        elif flag in ("-lambda", "-wave"): st["lambda0"] = x / 1.0e10
        elif flag == "-energy":
            if x <= 0:
                raise InputError(f"-energy: must be > 0 eV, got {x:g}")
            st["lambda0"] = (12398.42 / x) / 1.0e10
        elif flag == "-fluence": st["fluence"] = x
        elif flag == "-dispersion": st["dispersion"] = x / 100.0
        elif flag == "-dispsteps": st["dispsteps"] = x
        elif flag == "-phi": st["phi0"] = x / RTD
        elif flag == "-floatfile": st["float"] = x
        elif flag == "-sinfile": st["sin"] = x
        elif flag == "-cosfile": st["cos"] = x
        elif flag == "-intfile": st["int"] = x
        elif flag == "-scale": st["scale"] = x
        elif flag == "-coherent": st["coherent"] = True
        elif flag == "-printout": st["printout"] = True
        elif flag == "-printout_pixel": st.update(printout=True, printout_pixel=tuple(v))
        elif flag == "-noprogress": st["progress"] = False
        elif flag == "-progress": st["progress"] = True
        elif flag == "-debug": st["debug"] = True
        elif flag == "-accumulate": st["accumulate"] = True
        else:  # pragma: no cover - table/handler mismatch
            raise AssertionError(flag)
    for flag, why in (("-depthstep", "the reference reads only -depthsteps"),
                      ("-square_div", "the reference always rounds off the divergence grid's corners"),
                      ("-beam_vector", "the beam always runs along +x"),
                      ("-atoms", "the atom count comes from the file")):
        if flag in noop:
            warnings.append(f"{flag} has no effect ({why})")
    if st["atoms_file"] is None:
        raise InputError("-file: no scatterer list given (see --help)")
    if not st["lambda0"] > 0:
        raise InputError(f"-lambda: the wavelength must be > 0, got {st['lambda0'] * 1e10:g} A")
    if not st["pixel"] > 0:
        raise InputError(f"-pixel: must be > 0 mm, got {st['pixel'] * 1000:g}")
    if not st["distance"] > 0:
        raise InputError(f"-distance: must be > 0 mm, got {st['distance'] * 1000:g}")
    if not st["far"] and not st["source_distance"] > 0:
        raise InputError("-source_distance: must be > 0 mm or 'far'")
    if not st["fluence"] >= 0:
        raise InputError(f"-fluence: must be >= 0, got {st['fluence']:g}")
    for flag in ("xpixels", "ypixels"):
        if st[flag] < 0:
            raise InputError(f"-detpixels: must be >= 0, got {st[flag]}")
    if st["roi"] is not None and (st["roi"][0] > st["roi"][1] or st["roi"][2] > st["roi"][3]):
        raise InputError("-roi: expected xmin xmax ymin ymax with min <= max")
    pixel = st["pixel"]
    detsize_x = pixel * st["xpixels"] if st["xpixels"] else st["detsize_x"]
    detsize_y = pixel * st["ypixels"] if st["ypixels"] else st["detsize_y"]
    ratios = (detsize_x / pixel, detsize_y / pixel)
    if not all(math.isfinite(r) and r <= 10 ** 8 for r in ratios):
        raise InputError("-detsize/-pixel: more than 1e8 pixels along one side")
    xpixels, ypixels = math.ceil(ratios[0]), math.ceil(ratios[1])
    if xpixels < 1 or ypixels < 1:
        raise InputError("-detsize/-detpixels: the detector has no pixels")
    if xpixels * ypixels > 10 ** 8:
        raise InputError(f"-detsize/-detpixels: {xpixels}x{ypixels} pixels is more than 1e8")
    Xbeam = (detsize_x - pixel) / 2.0 if st["Xbeam"] is None else st["Xbeam"]
    Ybeam = (detsize_y + pixel) / 2.0 if st["Ybeam"] is None else st["Ybeam"]

    hdivsteps, hdivrange, hdivstep = _steps_rule(st["hdivsteps"], st["hdivrange"], st["hdivstep"], 1.0,
                                                 "-hdivrange/-hdivstep", "horizontal divergence steps")
    vdivsteps, vdivrange, vdivstep = _steps_rule(st["vdivsteps"], st["vdivrange"], st["vdivstep"], 1.0,
                                                 "-vdivrange/-vdivstep", "vertical divergence steps")
    dispsteps, dispersion, dispstep = _steps_rule(st["dispsteps"], st["dispersion"], -1.0, 1.0,
                                                  "-dispersion", "dispersion steps")
    depthsteps, depth, depthstep = _steps_rule(st["depthsteps"], st["source_depth"], -1.0, 1.0,
                                               "-source_depth", "depth steps")
    if hdivrange <= 0.0 or hdivstep <= 0.0 or hdivsteps <= 0:
        hdivsteps, hdivrange, hdivstep = 1, 0.0, 0.0
    if vdivrange <= 0.0 or vdivstep <= 0.0 or vdivsteps <= 0:
        vdivsteps, vdivrange, vdivstep = 1, 0.0, 0.0
    if dispersion <= 0.0 or dispstep <= 0.0 or dispsteps <= 0:
        dispsteps, dispersion, dispstep = 1, 0.0, 0.0
    if depth <= 0.0 or depthstep <= 0.0 or depthsteps <= 0:
        depthsteps, depth, depthstep = 1, 0.0, 0.0
    if hdivsteps * vdivsteps * dispsteps * depthsteps > 10 ** 5:
        raise InputError("-divsteps/-dispsteps/-depthsteps: more than 1e5 source points")
    div = beam_mod.divergence_grid(hdivrange, hdivstep, hdivsteps, vdivrange, vdivstep, vdivsteps, True)
    factors = np.array([1.0 + dispstep * k - dispersion / 2.0 for k in range(dispsteps)])
    depths = np.array([depthstep * k - depth / 2.0 for k in range(depthsteps)])

    path = st["atoms_file"]
    if not os.path.isabs(path) and os.path.abspath(cwd) != os.getcwd():
        path = os.path.join(cwd, path)
    atoms = read_atoms(path)
    xyz = atoms.xyz
    size = float(np.max(np.ptp(xyz, axis=0))) * 1e-10
    recommended = max(math.ceil(3.0 * size / (st["lambda0"] * st["distance"] / pixel)), 1)
    oversample = st["oversample"]
    if oversample <= 0:
        oversample = recommended
        warnings.append(f"auto-selected {oversample}-fold oversampling")
    elif oversample < recommended:
        warnings.append(f"maximum dimension of sample is {size * 1e10:g} A but reciprocal pixel size is "
                        f"{st['lambda0'] * st['distance'] / pixel * 1e10:g} A: intensity may vary "
                        f"significantly across a pixel; recommend -oversample {recommended}")
    n_steps = oversample * oversample * len(div) * dispsteps * depthsteps
    if n_steps > 10 ** 8:
        raise InputError(f"-oversample/-divsteps/-dispsteps/-depthsteps: {n_steps:.3g} samples per pixel is "
                         "more than 1e8")
    roi = st["roi"]
    config = nb.NearConfig(fpixels=xpixels, spixels=ypixels, oversample=oversample, roi=roi,
                           curved=st["curved"], point_pixel=st["point_pixel"], far_source=st["far"],
                           coherent=st["coherent"], polarization=st["polar"],
                           debye_waller=bool(np.any(atoms.b_factor != 0.0)))
    if st["polar"] and not np.any(st["polar_vector"]):
        raise InputError("-polar_vector: must not be zero")
    exp = nb.experiment(fpixels=xpixels, spixels=ypixels, pixel=pixel, distance=st["distance"],
                        beam_center=(Xbeam, Ybeam), fdet=st["fdet"], sdet=st["sdet"], odet=st["odet"],
                        spindle=st["spindle"], twotheta=st["twotheta"] or 0.0, pix0=st["pix0"],
                        wavelength=st["lambda0"], wavelength_factors=factors, divergence=div, depths=depths,
                        source_distance=st["source_distance"], fluence=st["fluence"], kahn=st["kahn"],
                        polar_axis=st["polar_vector"])
    s = Setup()
    s.config, s.experiment, s.warnings, s.options = config, exp, warnings, st
    s.scatterers = nb.scatterers(xyz, atoms.occupancy, atoms.b_factor, atoms.phase_deg)
    s.atoms_path, s.n_atoms, s.steps = path, len(xyz), n_steps
    s.info = dict(detsize_x=detsize_x, detsize_y=detsize_y, Xbeam=Xbeam, Ybeam=Ybeam, hdivrange=hdivrange,
                  hdivstep=hdivstep, vdivrange=vdivrange, vdivstep=vdivstep, dispersion=dispersion,
                  dispsteps=dispsteps, depth=depth, depthsteps=depthsteps, divsteps=len(div))
    if st["printout_pixel"] is not None:
        fx, fy = st["printout_pixel"]
        if not (0 <= fx < xpixels and 0 <= fy < ypixels):
            raise InputError(f"-printout_pixel: pixel ({fx}, {fy}) is outside the {xpixels}x{ypixels} detector")
    return s


#: Jobs of at least this many pixel x ray x scatterer terms are rendered in chunks with progress reports.
PROGRESS_MIN_WORK = 50_000_000
PROGRESS_CHUNKS = 20


_FIELDS = None


def _fields_fn():
    """The compiled :func:`jaxbragg.nearbragg.pixel_fields` (built on first use: importing this module
    must not need a backend)."""
    global _FIELDS
    if _FIELDS is None:
        from .. import nearbragg as nb
        from .._jit import EntryJit
        _FIELDS = EntryJit(nb.pixel_fields, static_argnums=0)
    return _FIELDS


def compute_fields(setup, progress: bool, stream):
    """:class:`jaxbragg.nearbragg.PixelFields` of the ROI pixels (NumPy), in equal chunks (one compilation)
    with a :class:`jaxbragg.cli.Progress` report when the job is large."""
    from . import Progress
    import jax
    cfg, exp, atoms = setup.config, setup.experiment, setup.scatterers
    pixels = cfg.roi_pixels()
    n = len(pixels)
    if n == 0:                          # a window off the detector: nothing to render
        zero, three = np.zeros(0), np.zeros((0, 3))
        from .. import nearbragg as nb
        return pixels, nb.PixelFields(zero, zero, zero, zero, zero, three)
    work = n * setup.steps * setup.n_atoms
    chunked = work >= PROGRESS_MIN_WORK and n >= 2 * PROGRESS_CHUNKS
    chunk = -(-n // PROGRESS_CHUNKS) if chunked else n
    padded = np.concatenate([pixels, np.repeat(pixels[-1:], -n % chunk, axis=0)])
    bar = Progress(stream, n) if (progress and chunked) else None
    fn, parts = _fields_fn(), []
    try:
        for start in range(0, n, chunk):
            parts.append(jax.tree_util.tree_map(np.asarray, fn(cfg, atoms, exp, padded[start:start + chunk])))
            if bar is not None:
                bar.update(min(start + chunk, n))
            common.checkpoint()
    finally:
        if bar is not None:
            bar.close()
    return pixels, jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:n], *parts)


def _read_prior(path, shape, what, out):
    from ..io.floatfile import read_float
    if not os.path.exists(path):
        print(f"WARNING: no {path} {what} to read! setting initial values to all zeroes...", file=out)
        return np.zeros(shape, np.float32)
    print(f"importing {what}: {path}", file=out)
    return read_float(path, shape)


def header_items(setup):
    from ..io.smv import format_g as g
    st, info = setup.options, setup.info
    return [("PIXEL_SIZE", g(st["pixel"] * 1000.0)), ("DISTANCE", g(st["distance"] * 1000.0)),
            ("WAVELENGTH", g(st["lambda0"] * 1e10)), ("BEAM_CENTER_X", g(info["Xbeam"] * 1000.0)),
            ("BEAM_CENTER_Y", g((info["detsize_y"] - info["Ybeam"]) * 1000)),
            ("PHI", g(st["phi0"] * RTD)), ("OSC_START", g(st["phi0"] * RTD)), ("OSC_RANGE", "0"),
            ("DETECTOR_SN", "000"), ("BEAMLINE", "fake")]


def _print_setup(setup, out):
    st, info, cfg = setup.options, setup.info, setup.config
    p = lambda *a: print(*a, file=out)
    p("jaxbragg-nearbragg: assumption-free diffraction simulator (JAX port of nearBragg.c)")
    for w in setup.warnings:
        p(f"WARNING: {w}")
    f0, f1, s0, s1 = cfg.roi_box()
    p(f"  {setup.n_atoms} atoms from {st['atoms_file']}")
    p(f"  wave={st['lambda0']:g} meters +/- {info['dispersion'] * 100:g}% in {info['dispsteps']} steps")
    p(f"  distance={st['distance']:g} detsize={info['detsize_x']:g}x{info['detsize_y']:g}  pixel={st['pixel']:g} "
      f"meters ({cfg.fpixels}x{cfg.spixels} pixels)")
    p(f"  Xbeam={info['Xbeam']:g} Ybeam={info['Ybeam']:g}")
    p(f"  roi: {f0} <= x <= {f1} && {s0} <= y <= {s1}")
    p(f"  hdivrange={info['hdivrange']:g} hdivstep={info['hdivstep']:g}  radians")
    p(f"  vdivrange={info['vdivrange']:g} vdivstep={info['vdivstep']:g}  radians")
    p(f"  {info['divsteps']} divergence steps")
    if cfg.far_source:
        p("  source is VERY far away")
    else:
        p(f"  source at {st['source_distance']:g} meters and {info['depth']:g} deep in {info['depthsteps']} "
          f"depth steps")
    p(f"  {cfg.oversample} pixel oversample steps")
    p(f"  coherent source: {int(cfg.coherent)}")
    if cfg.polarization:
        p(f"  polarization: Kahn factor {st['kahn']:g} (jaxbragg extension)")


def _printout(setup, pixels, fields, image, cosimg, sinimg, fre, fim, out):
    st, cfg = setup.options, setup.config
    steps = setup.steps
    want = st["printout_pixel"]
    for k, (s, f) in enumerate(pixels):
        if want is not None and (f, s) != tuple(want):
            continue
        pos = fields.last_position[k]
        two = math.atan2(math.hypot(pos[1], pos[2]), pos[0])
        stol = math.sin(two / 2.0) / (st["lambda0"] * 1e10)
        if cfg.coherent:
            fa, fb = fre[k] / math.sqrt(steps), fim[k] / math.sqrt(steps)
            intensity = fa * fa + fb * fb
        else:
            fa = fb = 0.0
            intensity = fields.incoherent[k]
        air = float(np.sqrt(np.dot(pos, pos)))
        omega = fields.omega_r2[k] / air / air
        print("%4d %4d : stol = %g" % (f, s, stol), file=out)
        print(" Fa=%g  Fb=%g   I = %g" % (fa, fb, intensity), file=out)
        print("cos=%g sin=%g" % (cosimg[s, f], sinimg[s, f]), file=out)
        print("I/sr   %15.10g" % (image[s, f] / omega), file=out)
        print("omega  %15.10g" % omega, file=out)
        print("pixel  %15.10g" % image[s, f], file=out)


def run(argv: List[str], out=None, err=None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    with np.errstate(all="ignore"):
        return _run(argv, out, err)


def _run(argv, out, err) -> int:
    import jax
    jax.config.update("jax_enable_x64", True)     # the reference computes in double (see module docstring)
    from .. import nearbragg as nb
    from ..io import smv
    from .outputs import statistics
    setup = resolve(parse(argv))
    cfg, st = setup.config, setup.options
    files = {"float": st["float"] or DEFAULT_NAMES["float"], "int": st["int"] or DEFAULT_NAMES["int"]}
    if cfg.coherent:
        files["sin"] = st["sin"] or DEFAULT_NAMES["sin"]
        files["cos"] = st["cos"] or DEFAULT_NAMES["cos"]
    common.check_writable(list(files.values()))
    common.check_distinct(files, OUTPUT_FLAG, {"-file": setup.atoms_path})
    shape = (cfg.spixels, cfg.fpixels)
    image0 = np.zeros(shape, np.float32)
    cos0 = np.zeros(shape, np.float32)
    sin0 = np.zeros(shape, np.float32)
    _print_setup(setup, out)
    if st["accumulate"] and not cfg.coherent:
        image0 = _read_prior(files["float"], shape, "intensity", out)
    if st["accumulate"] and cfg.coherent:
        sin0 = _read_prior(files["sin"], shape, "sin", out)
        cos0 = _read_prior(files["cos"], shape, "cos", out)
    out.flush()
    common.checkpoint()
    t0 = time.perf_counter()
    pixels, fields = compute_fields(setup, st["progress"] and not st["printout"], err)
    common.checkpoint()
    image, cosimg, sinimg = image0.copy(), cos0.copy(), sin0.copy()
    s_idx, f_idx = pixels[:, 0], pixels[:, 1]
    steps = setup.steps
    fre = fields.field_re + cos0[s_idx, f_idx].astype(np.float64) * steps
    fim = fields.field_im + sin0[s_idx, f_idx].astype(np.float64) * steps
    if len(pixels):
        values = np.asarray(nb.pixel_values(cfg, setup.experiment, fields, steps, fre, fim))
        image[s_idx, f_idx] = (image0[s_idx, f_idx].astype(np.float64) + values).astype(np.float32)
        if cfg.coherent:
            cosimg[s_idx, f_idx] = (fre / steps).astype(np.float32)
            sinimg[s_idx, f_idx] = (fim / steps).astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        raise InputError(f"the rendered image has {bad} NaN or infinite pixels: lower -fluence or the occupancies")
    print(f"rendered {cfg.spixels}x{cfg.fpixels} pixels ({len(pixels)} in the ROI) x {setup.n_atoms} atoms x "
          f"{steps} steps in {time.perf_counter() - t0:.3f} s", file=out)
    if st["printout"]:
        _printout(setup, pixels, fields, image, cosimg, sinimg, fre, fim, out)
    roi = cfg.roi_box()
    stats = statistics(image, roi, None) if len(pixels) else dict(max=0.0, argmax=(0, 0), mean=0.0, rms=0.0)
    smax = max(stats["max"], 0.0)
    print("max_I = %g  at pixel (slow %d, fast %d)" % (smax, *stats["argmax"]), file=out)
    print("mean= %g rms= %g" % (stats["mean"], stats["rms"]), file=out)
    scale = st["scale"]
    if scale <= 0.0:
        scale = 55000.0 / smax if smax > 0.0 else 1.0
    print(f"intfile_scale = {scale:g}", file=out)
    ints = np.zeros(shape, np.uint16)
    if len(pixels):
        test = np.clip(image[s_idx, f_idx].astype(np.float64) * scale + 40.0, 0.0, 65535.0)
        ints[s_idx, f_idx] = test.astype(np.uint16)
    blobs = {"float": np.ascontiguousarray(image, dtype="<f4").tobytes(),
             "int": smv.smv_bytes(ints, header_items(setup))}
    if cfg.coherent:
        blobs["sin"] = np.ascontiguousarray(sinimg, dtype="<f4").tobytes()
        blobs["cos"] = np.ascontiguousarray(cosimg, dtype="<f4").tobytes()
    writes = [(files[k], blobs[k], False) for k in ("float", "sin", "cos", "int") if k in blobs]
    common.checkpoint()
    interrupted = common.write_outputs(writes, out)
    for path, blob, _ in writes:
        print(f"writing {path} ({len(blob)} bytes)", file=out)
    if interrupted:
        print(f"{PROG}: interrupted after the output files were written", file=sys.stderr)
        return 130
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return common.program_main(PROG, argv, USAGE, lambda: USAGE, lambda: run(argv), "use a smaller detector or -roi")


def entry() -> None:  # pragma: no cover - exercised by the installed console script
    common.exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
