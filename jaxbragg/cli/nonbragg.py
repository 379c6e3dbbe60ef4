"""``jaxbragg-nonbragg``: nonBragg.c's command line (amorphous scattering from a ``.stol`` profile).

Thin layer like the ``jaxbragg`` command: :func:`parse` (the flag table, exact names and the synonyms the
reference's substring tests accept), :func:`resolve` (nonBragg.c's defaults and precedence, in its order:
the ``-img`` header first, then the flags in command-line order, then detector size, default beam centre,
fluence, beam clipping, molecules, step-count rules, placement, profile, sources), the library's
:func:`jaxbragg.amorphous.pixel_values` to render, then statistics and files (float, SMV int and noise
images, PGM, and in the inverse mode the ``-stolout`` profile). Every flag, unit and default is listed in
specs/nonbragg.md, with each deviation from the C.

Bad input gives one line on stderr naming the flag or file and exit status 2, before anything is
written; all outputs are written together at the end or not at all (:mod:`jaxbragg.cli.common`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from ..errors import InputError
from . import common
from .flags import _parses, unexpected_value, unknown_flag, walk

PROG = "jaxbragg-nonbragg"
RTD = 180.0 / math.pi
AVOGADRO = 6.02214179e23
R_E_SQR = 7.94079248018965e-30

# flag -> (kind, key). Kinds: "" no value, "f" number, "i" integer, "s" string, "3f", "4i", "2i";
# "curved" takes no value but counts only when another argument follows (as in nonBragg.c).
_TABLE: Dict[str, tuple] = {}


def _add(kind, key, *names):
    for n in names:
        _TABLE[n] = (kind, key)


# sample
_add("f", "samplesize", "-samplesize", "-sample_size")
_add("f", "sample_x", "-sample_thick", "-sample_x", "-thick", "-thickness")
_add("f", "sample_y", "-sample_width", "-sample_y", "-width")
_add("f", "sample_z", "-sample_heigh", "-sample_height", "-sample_z", "-heigh", "-height")
_add("f", "density", "-density", "-sample_den", "-sample_density")
_add("f", "molecules", "-molecules", "-sample_molecules")
_add("f", "MW", "-MW", "-molecular", "-molecular_weight")
# profile and inverse mode
_add("s", "stol", "-stol")
_add("s", "4stol", "-4stol")
_add("s", "Q", "-Q")
_add("s", "stolout", "-stolout")
_add("s", "img", "-img")
_add("f", "ignore", "-ignore")
_add("", "Fmap", "-Fmap")
_add("", "pchip", "-pchip")                       # jaxbragg: smooth non-negative interpolant
# detector
for _n in ("-Xbeam", "-Ybeam", "-Xclose", "-Yclose", "-ORGX", "-ORGY", "-distance", "-close_distance",
           "-source_distance", "-twotheta", "-detector_rotx", "-detector_roty", "-detector_rotz",
           "-detsize", "-detsize_x", "-detsize_y", "-pixel"):
    _add("f", _n[1:], _n)
_add("s", "pivot", "-pivot")
for _n in ("-fdet_vector", "-sdet_vector", "-odet_vector", "-beam_vector", "-polar_vector",
           "-spindle_axis", "-twotheta_axis", "-pix0_vector"):
    _add("3f", _n[1:], _n)
_add("i", "detpixels", "-detpixels")
_add("i", "detpixels_f", "-detpixels_f", "-detpixels_x")
_add("i", "detpixels_s", "-detpixels_s", "-detpixels_y")
_add("curved", "curved_det", "-curved_det")
_add("", "point_pixel", "-point_pixel")
_add("i", "oversample", "-oversample")
_add("4i", "roi", "-roi")
# beam
_add("f", "polar", "-polar")
_add("", "nopolar", "-nopolar")
_add("f", "lambda", "-lambda", "-wave", "-wavelength")
for _n in ("-energy", "-fluence", "-flux", "-exposure", "-beamsize", "-dispersion", "-divergence",
           "-hdivrange", "-vdivrange", "-hdivstep", "-vdivstep"):
    _add("f", _n[1:], _n)
for _n in ("-dispsteps", "-hdivsteps", "-vdivsteps", "-divsteps"):
    _add("i", _n[1:], _n)
_add("", "round_div", "-round_div")
_add("", "square_div", "-square_div")
_add("s", "sourcefile", "-sourcefile")
_add("", "coherent", "-coherent")
# spindle (header only)
_add("f", "phi", "-phi")
_add("f", "osc", "-osc")
_add("f", "phistep", "-phistep")
_add("i", "phisteps", "-phisteps")
# output
_add("s", "floatfile", "-floatfile", "-floatimage")
_add("s", "intfile", "-intfile", "-intimage")
_add("s", "pgmfile", "-pgmfile", "-pgmimage")
_add("s", "noisefile", "-noisefile", "-noiseimage")
_add("", "nonoise", "-nonoise")
_add("", "nopgm", "-nopgm")
_add("", "noreject", "-noreject")
_add("f", "scale", "-scale")
_add("f", "pgmscale", "-pgmscale")
_add("f", "adc", "-adc")
_add("f", "gain", "-gain")
_add("i", "seed", "-seed")
_add("", "printout", "-printout")
_add("2i", "printout_pixel", "-printout_pixel")
_add("", "noprogress", "-noprogress")
_add("", "progress", "-progress")

FLAGS = frozenset(_TABLE)

USAGE = ("usage: jaxbragg-nonbragg -stol water.stol [-thickness mm] [-density g/cm^3] [-MW g/mol] "
         "[-distance mm] [-pixel mm] [-detpixels N] [-lambda A] [-fluence ph/m^2] [-floatfile out.bin] ...\n"
         "see specs/nonbragg.md for every flag")


_KIND_WORDS = {"": "", "curved": "", "f": " X", "i": " N", "s": " NAME", "3f": " X Y Z", "4i": " N N N N",
               "2i": " N N"}


def help_text() -> str:
    """The usage line and every flag with its synonyms (units and defaults: specs/nonbragg.md)."""
    by_key: Dict[str, List[str]] = {}
    for name, (kind, key) in _TABLE.items():
        by_key.setdefault(key, []).append(name + _KIND_WORDS[kind])
    lines = [USAGE.splitlines()[0], "flags (synonyms after the first):"]
    lines += ["  " + ", ".join(names) for names in by_key.values()]
    lines.append("units: mm, Angstrom, degrees, mrad, percent, g/cm^3, g/mol, photons/m^2; "
                 "every flag with unit and default: specs/nonbragg.md")
    return "\n".join(lines)


def parse(argv: List[str]):
    """``[(flag, key, values), ...]`` in command-line order, plus warnings.

    Raises:
      InputError: an unknown flag, a missing value or a value of the wrong type (one line).
    """
    warnings = []

    def curved(argv, i, flag):
        if i + 1 >= len(argv):   # the reference tests argc > i+1 for this flag too
            warnings.append("-curved_det as the last argument is ignored (as nonBragg.c does)")
            return None, 0
        return (), 0

    def unknown(flag, out):
        if flag.startswith("-") and not _parses(flag):
            return unknown_flag(flag, FLAGS)
        return unexpected_value(flag, out)

    parsed = walk(argv, lambda f: _TABLE[f][0] if f in _TABLE else None, FLAGS, unknown, {"curved": curved})
    return [(flag, _TABLE[flag][1], vals) for flag, _, vals in parsed], warnings


# ----------------------------------------------------------------------------------------------------
# -img header (the reference's GetFrame / ValueOf)

def value_of(header: str, key: str) -> float:
    """nonBragg.c's ``ValueOf``: the number after the ``=`` that follows the LAST occurrence of ``key``
    anywhere in the header text (a substring match: ``DISTANCE`` finds ``CLOSE_DISTANCE``); NaN when the
    key is absent, 0 when no ``=`` follows."""
    from ..io.smv import _atof
    pos = header.rfind(key)
    if pos < 0:
        return math.nan
    eq = header.find("=", pos + len(key))
    if eq < 0:
        return 0.0
    return _atof(header[eq + 1:])


def read_img(path: str):
    """``(header text, pixels float32 [SIZE2, SIZE1])`` of an SMV image (``-img``)."""
    from .. import io
    from ..io import _common
    head, data = io.read_smv(path)
    raw = _common.read_bytes(path, "SMV image")
    nbytes = int(io.header_value(head, "HEADER_BYTES"))
    return raw[:nbytes].decode("latin-1"), data.astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# defaults and precedence

class _State:
    """nonBragg.c's variables before the set-up logic (its units: metres, radians, g/m^3, g/mol)."""

    def __init__(self):
        nan = math.nan
        self.sample = [1e-4, 1e-4, 1e-4]
        self.density, self.MW, self.molecules = 1.0e6, 18.0, 0.0
        self.fluence, self.flux, self.exposure, self.beamsize = 125932015286227086360700780544.0, 0.0, 1.0, 1e-4
        self.pixel, self.distance = 0.1e-3, 100.0e-3
        self.detsize = [102.4e-3, 102.4e-3]
        self.fpixels = self.spixels = 0
        self.fdet, self.sdet, self.odet = [0.0, 0, 1], [0.0, -1, 0], [0.0, 1, 0]
        self.beam, self.polar_vector, self.spindle = [1.0, 0, 0], [0.0, 0, 1], [0.0, 0, 1]
        self.twotheta_axis = [0.0, 1, 0]
        self.rot = [0.0, 0.0, 0.0]
        self.twotheta = 0.0
        self.pivot = "beam"
        self.curved = self.point_pixel = self.fmap = self.nopolar = False
        self.Xbeam = self.Ybeam = self.Xclose = self.Yclose = self.close_distance = nan
        self.ORGX = self.ORGY = nan
        self.gain, self.adc = 1.0, 40.0
        self.polarization = 0.0
        self.oversample = -1
        self.roi = [-1, -1, -1, -1]
        self.lambda0 = 1.0e-10
        self.dispersion, self.dispstep, self.dispsteps = 0.0, -1.0, -1
        self.hdivrange = self.vdivrange = -1.0
        self.hdivstep = self.vdivstep = -1.0
        self.hdivsteps = self.vdivsteps = -1
        self.round_div = True
        self.source_distance = 10.0
        self.phi0, self.phistep, self.osc, self.phisteps = 0.0, -1.0, -1.0, -1
        self.stol = None
        self.stol_mult = 1e10
        self.stolout = "output.stol"
        self.img = None
        self.ignore: List[float] = []
        self.sourcefile = None
        self.files = {"float": "floatimage.bin", "int": "intimage.img", "pgm": "image.pgm",
                      "noise": "noiseimage.img"}
        self.noise, self.pgm = True, True
        self.scale = self.pgmscale = 0.0
        self.printout, self.printout_pixel, self.progress = False, None, True
        self.seed = -int(time.time())
        self.pchip = False
        self.stol_units = "stol"


def _apply(st: _State, flag: str, key: str, v: tuple):
    x = v[0] if v else None
    mm = lambda: x / 1000.0
    if key == "samplesize":
        st.sample = [mm()] * 3
    elif key in ("sample_x", "sample_y", "sample_z"):
        i = "xyz".index(key[-1])
        st.sample[i] = mm()
    elif key == "density":
        st.density = x * 1e6
    elif key == "molecules":
        st.molecules = x
    elif key == "MW":
        st.MW = x
    elif key in ("Xbeam", "Ybeam"):
        setattr(st, key, mm())
        st.pivot = "beam"
    elif key in ("Xclose", "Yclose"):
        setattr(st, key, mm())
        st.pivot = "sample"
    elif key in ("ORGX", "ORGY"):
        setattr(st, key, x)
        st.pivot = "sample"
    elif key == "pivot":
        if "sample" in x:
            st.pivot = "sample"
        if "beam" in x:
            st.pivot = "beam"
    elif key in ("fdet_vector", "sdet_vector", "odet_vector"):
        setattr(st, key[:4], list(v))
    elif key == "beam_vector":
        st.beam = list(v)
    elif key == "polar_vector":
        st.polar_vector = list(v)
    elif key == "spindle_axis":
        st.spindle = list(v)
    elif key == "twotheta_axis":
        st.twotheta_axis = list(v)
    elif key == "pix0_vector":
        pass                                   # parsed and then ignored, as in the reference
    elif key == "distance":
        st.distance, st.pivot = mm(), "beam"
    elif key == "close_distance":
        st.close_distance, st.pivot = mm(), "sample"
    elif key == "source_distance":
        st.source_distance = mm()
    elif key == "twotheta":
        st.twotheta, st.pivot = x / RTD, "sample"
    elif key in ("detector_rotx", "detector_roty", "detector_rotz"):
        st.rot["xyz".index(key[-1])] = x / RTD
    elif key == "detsize":
        st.detsize = [mm(), mm()]
    elif key in ("detsize_x", "detsize_y"):
        st.detsize["xy".index(key[-1])] = mm()
    elif key == "detpixels":
        st.fpixels = st.spixels = x
    elif key == "detpixels_f":
        st.fpixels = x
    elif key == "detpixels_s":
        st.spixels = x
    elif key == "curved_det":
        st.curved = True
    elif key == "pixel":
        st.pixel = mm()
    elif key == "point_pixel":
        st.point_pixel = True
    elif key == "Fmap":
        st.fmap = True
    elif key == "polar":
        st.polarization, st.nopolar = x, False
    elif key == "nopolar":
        st.nopolar = True
    elif key == "oversample":
        st.oversample = x
    elif key == "roi":
        st.roi = list(v)
    elif key == "lambda":
        st.lambda0 = x / 1.0e10
    elif key == "energy":
        if x == 0:
            raise InputError("-energy: must not be 0")
        st.lambda0 = (12398.42 / x) / 1.0e10
    elif key in ("fluence", "flux", "exposure"):
        setattr(st, key, x)
    elif key == "beamsize":
        st.beamsize = mm()
    elif key == "dispersion":
        st.dispersion = x / 100.0
    elif key == "dispsteps":
        st.dispsteps = x
    elif key == "divergence":
        st.hdivrange = st.vdivrange = mm()
    elif key in ("hdivrange", "vdivrange", "hdivstep", "vdivstep"):
        setattr(st, key, mm())
    elif key in ("hdivsteps", "vdivsteps"):
        setattr(st, key, x)
    elif key == "divsteps":
        st.hdivsteps = st.vdivsteps = x
    elif key == "round_div":
        st.round_div = True
    elif key == "square_div":
        st.round_div = False
    elif key == "adc":
        st.adc = x
    elif key == "gain":
        st.gain = x
    elif key == "phi":
        st.phi0 = x / RTD
    elif key == "osc":
        st.osc = x / RTD
    elif key == "phistep":
        st.phistep = x / RTD
    elif key == "phisteps":
        st.phisteps = x
    elif key == "img":
        st.img = x
    elif key == "ignore":
        if 0 <= x < 65536:                     # stored as an unsigned short by the reference
            st.ignore.append(float(int(x)))
    elif key == "stolout":
        st.stolout = x
    elif key in ("stol", "4stol", "Q"):
        from ..amorphous import PROFILE_UNITS
        st.stol, st.stol_mult, st.stol_units = x, PROFILE_UNITS[key], key
    elif key == "sourcefile":
        st.sourcefile = x
    elif key in ("floatfile", "intfile", "pgmfile"):
        st.files[key[:-4]] = x
    elif key == "noisefile":
        st.files["noise"], st.noise = x, True
    elif key == "nonoise":
        st.noise = False
    elif key == "nopgm":
        st.pgm = False
    elif key == "scale":
        st.scale = x
    elif key == "pgmscale":
        st.pgmscale = x
    elif key == "printout":
        st.printout = True
    elif key == "printout_pixel":
        st.printout, st.printout_pixel = True, (int(v[0]), int(v[1]))
    elif key == "noprogress":
        st.progress = False
    elif key == "progress":
        st.progress = True
    elif key == "seed":
        st.seed = -x
    elif key == "pchip":
        st.pchip = True
    elif key in ("noreject", "coherent"):
        pass                                   # no effect in the reference either


def _steps(rng, step, steps, auto_range):
    """The reference's step-count rule for divergence and dispersion (``auto_range``: the range chosen
    when only the number of steps is given). Returns ``(range, step, steps)``."""
    if steps <= 0:
        if rng < 0.0:
            if step <= 0.0:
                steps, rng, step = 1, 0.0, 0.0
            else:
                rng, steps = step, 2
        else:
            if step <= 0.0:
                step, steps = rng, 2
            else:
                steps = math.ceil(rng / step)
    else:
        if rng < 0.0:
            if step <= 0.0:
                rng = auto_range
                step = rng / steps
            else:
                rng, steps = step, 2
        else:
            if step <= 0.0:
                if steps <= 1:
                    steps = 2
                step = rng / (steps - 1)
    if rng <= 0.0 or step <= 0.0 or steps <= 0:
        steps, rng, step = 1, 0.0, 0.0
    return rng, step, steps


def _osc(st: _State) -> float:
    """The oscillation range the header reports (the reference's phi step rules; phi does not enter
    nonBragg's image)."""
    osc, phistep = st.osc, st.phistep
    if st.phisteps < 0:
        if osc < 0.0:
            osc = 0.0 if phistep <= 0.0 else phistep
    else:
        if osc < 0.0:
            osc = 1.0 / RTD if phistep <= 0.0 else phistep
    return osc


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    return v / n if n != 0.0 else np.zeros(3)


@dataclasses.dataclass
class Setup:
    config: object
    params: object
    info: dict
    state: _State
    img: Optional[np.ndarray]
    warnings: List[str]


def resolve(parsed, warnings=None, cwd: str = ".") -> Setup:
    """nonBragg.c's set-up from parsed flags: ``Setup(config, params, info, state, img, warnings)``."""
    import jax.numpy as jnp
    from .. import amorphous, beam as beam_mod, detector, geometry
    st = _State()
    warnings = list(warnings or [])
    join = lambda p: p if os.path.isabs(p) or cwd in ("", ".") else os.path.join(cwd, p)
    img = None
    # the -img header is read before the other flags, which then override it
    for flag, key, v in parsed:
        if key == "img":
            st.img = v[0]
    if st.img is not None:
        text, img = read_img(join(st.img))
        st.spixels, st.fpixels = img.shape
        test = value_of(text, "PIXEL_SIZE")
        if not math.isnan(test):
            st.pixel = test / 1000.0
        st.detsize = [st.pixel * st.fpixels, st.pixel * st.spixels]
        for key, attr, div in (("DISTANCE", "distance", 1000.0), ("CLOSE_DISTANCE", "close_distance", 1000.0),
                               ("WAVELENGTH", "lambda0", 1e10), ("BEAM_CENTER_X", "Xbeam", 1000.0),
                               ("ORGX", "ORGX", 1.0), ("ORGY", "ORGY", 1.0), ("PHI", "phi0", RTD),
                               ("OSC_RANGE", "osc", RTD)):
            test = value_of(text, key)
            if not math.isnan(test):
                setattr(st, attr, test / div)
        test = value_of(text, "BEAM_CENTER_Y")
        if not math.isnan(test):
            st.Ybeam = st.detsize[1] - test / 1000.0
        # (the reference reads TWOTHETA into a scratch variable: it does not move the detector)
    for flag, key, v in parsed:
        _apply(st, flag, key, v)
    if st.stol is None:
        raise InputError("no profile given: -stol FILE or NAME (or -4stol / -Q) is required")
    if not st.pixel > 0.0:
        raise InputError(f"-pixel: must be positive, got {st.pixel * 1000:g} mm")

    # detector size
    if st.fpixels:
        st.detsize[0] = st.pixel * st.fpixels
    if st.spixels:
        st.detsize[1] = st.pixel * st.spixels
    fpixels = int(math.ceil(st.detsize[0] / st.pixel))
    spixels = int(math.ceil(st.detsize[1] / st.pixel))
    if fpixels <= 0 or spixels <= 0:
        raise InputError(f"-detpixels/-detsize: the detector has {fpixels}x{spixels} pixels")
    if img is not None and img.shape != (spixels, fpixels):
        raise InputError(f"-img {st.img}: the image is {img.shape[1]}x{img.shape[0]} pixels but the "
                         f"detector is {fpixels}x{spixels} (-detpixels/-detsize/-pixel)")
    if not math.isnan(st.ORGX):
        st.Xclose = st.ORGX * st.pixel
    if not math.isnan(st.ORGY):
        st.Yclose = st.ORGY * st.pixel
    if math.isnan(st.Xclose):
        st.Xclose = (st.detsize[0] - st.pixel) / 2.0
    if math.isnan(st.Yclose):
        st.Yclose = (st.detsize[1] + st.pixel) / 2.0
    if math.isnan(st.Xbeam):
        st.Xbeam = st.Xclose
    if math.isnan(st.Ybeam):
        st.Ybeam = st.Yclose
    r = st.roi
    roi = (r[0] if r[0] >= 0 else 0, r[1] if r[1] >= 0 else fpixels,
           r[2] if r[2] >= 0 else 0, r[3] if r[3] >= 0 else spixels)

    # fluence, beam clipping, molecules
    if st.flux != 0.0 and st.exposure > 0.0 and st.beamsize >= 0:
        if st.beamsize == 0.0:
            raise InputError("-beamsize: must be positive with -flux")
        st.fluence = st.flux * st.exposure / st.beamsize / st.beamsize
    if st.beamsize >= 0:
        if st.beamsize < st.sample[1]:
            warnings.append(f"clipping sample ({st.sample[1]:g} m high) with beam ({st.beamsize:g} m)")
            st.sample[1] = st.beamsize
        if st.beamsize < st.sample[2]:
            warnings.append(f"clipping sample ({st.sample[2]:g} m wide) with beam ({st.beamsize:g} m)")
            st.sample[2] = st.beamsize
    volume = st.sample[0] * st.sample[1] * st.sample[2]
    if st.MW == 0.0:
        raise InputError("-MW: the molecular weight must not be 0")
    if st.molecules != 0:
        if volume == 0.0:
            raise InputError("-molecules: the sample volume is 0 (-thickness/-width/-height/-samplesize)")
        st.density = st.molecules / volume / AVOGADRO * st.MW
    n_mol = volume * st.density * AVOGADRO / st.MW

    # vectors
    beam = _unit(st.beam)
    fdet, sdet = _unit(st.fdet), _unit(st.sdet)
    odet = _unit(np.cross(fdet, sdet))
    polar = _unit(st.polar_vector)
    for name, vec in (("-beam_vector", beam), ("-fdet_vector", fdet), ("-sdet_vector", sdet),
                      ("-polar_vector", polar)):
        if not np.any(vec):
            raise InputError(f"{name}: must not be the zero vector")
    if not np.any(odet):
        raise InputError("-fdet_vector/-sdet_vector: the two detector axes are parallel")
    twotheta_axis = _unit(st.twotheta_axis)

    # sampling
    hdivrange, hdivstep, hdivsteps = _steps(st.hdivrange, st.hdivstep, st.hdivsteps, 1.0)
    vdivrange, vdivstep, vdivsteps = _steps(st.vdivrange, st.vdivstep, st.vdivsteps, 1.0)
    dispersion, dispstep, dispsteps = _steps(st.dispersion, st.dispstep, st.dispsteps, 1.0)

    # placement
    ratio = float(np.dot(beam, geometry.rotate_xyz(odet, np.asarray(st.rot))))
    if ratio == 0.0:
        ratio = sys.float_info.min
    close = st.close_distance if not math.isnan(st.close_distance) else ratio * st.distance
    distance = close / ratio
    if st.pivot == "sample":
        center, dist_in = (st.Xclose, st.Yclose), close
    else:
        center, dist_in = (st.Xbeam, st.Ybeam), distance
    frame = detector.place_detector(fdet, sdet, odet, beam, np.asarray(st.rot), twotheta_axis,
                                    np.float64(st.twotheta), st.pivot, np.asarray(center, np.float64),
                                    np.float64(dist_in))
    spot = detector.beam_spot(frame, beam)

    # profile
    # a file first; a name such as "water" that is no file picks the built-in profile (jaxbragg only)
    where = join(st.stol) if os.path.exists(join(st.stol)) else st.stol
    try:
        prof = amorphous.load_profile(where, units=st.stol_units)
    except InputError as e:
        raise InputError(f"-{st.stol_units} {e}") from None
    # sources
    if st.sourcefile is not None:
        from ..io.sourcefile import read_sources
        rows, _ = read_sources(join(st.sourcefile))
        rows = rows.copy()
        for c in range(3):
            rows[np.isnan(rows[:, c]), c] = -st.source_distance * beam[c]
        rows[np.isnan(rows[:, 3]), 3] = 1.0
        rows[np.isnan(rows[:, 4]), 4] = st.lambda0
        if np.any(rows[:, 4] <= 0.0):
            raise InputError(f"-sourcefile {st.sourcefile}: a wavelength is not positive")
        dirs = np.asarray(geometry.unitize(rows[:, :3]))
        lams, weights = rows[:, 4], rows[:, 3]
        n_div = len(rows)
    else:
        div = beam_mod.divergence_grid(hdivrange, hdivstep, hdivsteps, vdivrange, vdivstep, vdivsteps,
                                       st.round_div)
        dirs, lams = beam_mod.make_sources(beam, polar, st.lambda0, div, dispersion, dispstep, dispsteps)
        weights = np.ones(len(lams))
        n_div = len(div)
    if len(lams) == 0:
        raise InputError("no sources: the divergence settings leave no source point")
    if not st.lambda0 > 0.0:
        raise InputError("-lambda/-energy: the wavelength must be positive")
    oversample = st.oversample if st.oversample > 0 else 1

    f0, f1, s0, s1 = roi
    if max(f0, 0) > min(f1, fpixels - 1) or max(s0, 0) > min(s1, spixels - 1):
        raise InputError(f"-roi: the window x {f0}..{f1}, y {s0}..{s1} holds no pixel of the "
                         f"{fpixels}x{spixels}-pixel detector")
    config = amorphous.AmorphousConfig(
        fpixels=fpixels, spixels=spixels, oversample=oversample, sources=len(lams), pivot=st.pivot,
        curved=st.curved, point_pixel=st.point_pixel, polarization=not st.nopolar,
        interpolation="pchip" if st.pchip else "polint", roi=roi)
    f64 = lambda x: jnp.asarray(x, jnp.float64)
    F = prof.F
    params = amorphous.AmorphousParams(
        fdet=f64(fdet), sdet=f64(sdet), odet=f64(odet), beam=f64(beam), detector_rotations=f64(st.rot),
        twotheta_axis=f64(twotheta_axis), twotheta=f64(st.twotheta), beam_center=f64(center),
        distance=f64(dist_in), pixel_size=f64(st.pixel), source_dirs=f64(dirs), source_lambda=f64(lams),
        source_weights=f64(weights), polar_vector=f64(polar), kahn=f64(st.polarization),
        fluence=f64(st.fluence), thickness=f64(st.sample[0]), width=f64(st.sample[1]),
        height=f64(st.sample[2]), density=f64(st.density / 1000.0), molar_mass=f64(st.MW / 1000.0),
        stol=f64(prof.stol), F=f64(F),
        F_low=None if prof.F_low == F[0] else f64(prof.F_low),
        F_high=None if prof.F_high == F[-1] else f64(prof.F_high))
    info = dict(fpixels=fpixels, spixels=spixels, detsize=tuple(st.detsize),
                pixel=st.pixel, distance=float(frame["distance"]), close_distance=float(frame["close_distance"]),
                Xbeam=float(spot[0]), Ybeam=float(spot[1]),
                Xclose=float(-np.dot(frame["pix0"], frame["fdet"])),
                Yclose=float(-np.dot(frame["pix0"], frame["sdet"])),
                pix0=np.asarray(frame["pix0"]), fdet=np.asarray(frame["fdet"]), sdet=np.asarray(frame["sdet"]),
                odet=np.asarray(frame["odet"]), beam=beam, polar=polar, lambda0=st.lambda0,
                dispersion=dispersion, dispsteps=dispsteps, hdiv=(hdivrange, hdivstep), vdiv=(vdivrange, vdivstep),
                divsteps=n_div, sources=len(lams), molecules=n_mol, volume=volume, profile=prof,
                profile_points=len(prof.stol), roi=roi, osc=_osc(st), twotheta=st.twotheta)
    return Setup(config, params, info, st, img, warnings)


# ----------------------------------------------------------------------------------------------------
# running

#: Jobs of at least this many pixel-samples are rendered in chunks with a progress report.
PROGRESS_MIN_WORK = 20_000_000
PROGRESS_CHUNKS = 20
_PIXEL_VALUES = None          # the compiled chunk renderer, shared by every run in a process


def _render(setup: Setup, progress: bool, err):
    """Per-pixel maps of the ROI window (dict of [ns * nf] NumPy arrays), chunked for large jobs."""
    from .. import amorphous
    from .._jit import EntryJit
    from . import Progress
    cfg, params = setup.config, setup.params
    f0, f1, s0, s1 = cfg.roi_box()
    n_pix = max(f1 - f0 + 1, 0) * max(s1 - s0 + 1, 0)
    if n_pix == 0:
        return None
    work = n_pix * cfg.steps
    chunked = work >= PROGRESS_MIN_WORK and n_pix >= 64
    chunk = -(-n_pix // PROGRESS_CHUNKS) if chunked else n_pix
    global _PIXEL_VALUES
    if _PIXEL_VALUES is None:
        _PIXEL_VALUES = EntryJit(amorphous.pixel_values, static_argnums=(0, 3))
    fn = _PIXEL_VALUES
    bar = Progress(err, n_pix) if (progress and chunked) else None
    parts = []
    try:
        for start in range(0, n_pix, chunk):
            vals = fn(cfg, params, np.int64(start), chunk)
            parts.append({k: np.asarray(v) for k, v in vals.items()})
            if bar is not None:
                bar.update(min(start + chunk, n_pix))
            common.checkpoint()
    finally:
        if bar is not None:
            bar.close()
    return {k: np.concatenate([p[k] for p in parts])[:n_pix] for k in parts[0]}


def _place(cfg, vals, dtype=np.float64):
    f0, f1, s0, s1 = cfg.roi_box()
    image = np.zeros((cfg.spixels, cfg.fpixels), dtype)
    if vals is not None:
        image[s0:s1 + 1, f0:f1 + 1] = vals.reshape(s1 - s0 + 1, f1 - f0 + 1)
    return image


def header_items(info) -> list:
    """nonBragg.c's SMV header (after the required keys), values in mm, Angstrom and degrees."""
    from ..io.smv import format_g as g
    px = info["pixel"]
    return [("PIXEL_SIZE", g(px * 1000.0)), ("DISTANCE", g(info["distance"] * 1000.0)),
            ("WAVELENGTH", g(info["lambda0"] * 1e10)),
            ("BEAM_CENTER_X", g(info["Xbeam"] * 1000.0)),
            ("BEAM_CENTER_Y", g((info["detsize"][1] - info["Ybeam"]) * 1000)),
            ("ORGX", g(info["Xclose"] / px)), ("ORGY", g(info["Yclose"] / px)),
            ("CLOSE_DISTANCE", g(info["close_distance"] * 1000.0)),
            ("PHI", g(info["phi0"] * RTD)), ("OSC_START", g(info["phi0"] * RTD)),
            ("OSC_RANGE", g(info["osc"] * RTD)), ("TWOTHETA", g(info["twotheta"] * RTD)),
            ("DETECTOR_SN", "000"), ("BEAMLINE", "fake")]


def _fmt_vec(v) -> str:
    return " ".join(f"{float(x):g}" for x in v)


def _print_summary(setup: Setup, out):
    info, cfg, st = setup.info, setup.config, setup.state
    p = lambda *a: print(*a, file=out)
    p("jaxbragg-nonbragg: amorphous-material scattering (nonBragg-compatible, JAX)")
    for w in setup.warnings:
        p(f"WARNING: {w}")
    p(f"pivoting detector around {'direct beam spot' if cfg.pivot == 'beam' else 'sample'}")
    prof = info["profile"]
    unit = {"stol": "sin(theta)/lambda", "4stol": "4 sin(theta)/lambda", "Q": "Q"}[st.stol_units]
    p(f"  profile {st.stol} ({unit}): {info['profile_points']} points, F {prof.F_low:g} at the low end to "
      f"{prof.F_high:g} at the high end; {cfg.interpolation} interpolation")
    p(f"  sample {st.sample[0]:g} m thick x {st.sample[1]:g} m high x {st.sample[2]:g} m wide, "
      f"{st.density / 1e6:g} g/cm^3, {st.MW:g} g/mol: {info['molecules']:g} molecules")
    p(f"  wavelength {info['lambda0']:g} m +/- {info['dispersion'] * 100:g}% in {info['dispsteps']} steps; "
      f"{info['sources']} source(s) ({info['divsteps']} directions); fluence {st.fluence:g} photons/m^2")
    p("  polarization disabled" if st.nopolar else f"  Kahn polarization factor {st.polarization:g}")
    p(f"  distance={info['distance']:g} m close_distance={info['close_distance']:g} m  detector "
      f"{cfg.fpixels}x{cfg.spixels} pixels of {info['pixel']:g} m"
      + ("  curved" if cfg.curved else "") + ("  point pixels" if cfg.point_pixel else ""))
    p(f"  Xbeam={info['Xbeam']:g} Ybeam={info['Ybeam']:g}  Xclose={info['Xclose']:g} "
      f"Yclose={info['Yclose']:g}  (m, along fast/slow from the first pixel's corner)")
    p(f"  detector origin: {_fmt_vec(info['pix0'])}")
    p(f"  DIRECTION_OF_DETECTOR_X-AXIS= {_fmt_vec(info['fdet'])}")
    p(f"  DIRECTION_OF_DETECTOR_Y-AXIS= {_fmt_vec(info['sdet'])}")
    p(f"  INCIDENT_BEAM_DIRECTION= {_fmt_vec(info['beam'])}")
    p(f"  POLARIZATION_PLANE_NORMAL= {_fmt_vec(info['polar'])}")
    f0, f1, s0, s1 = info["roi"]
    p(f"  roi: {f0} <= x <= {f1} && {s0} <= y <= {s1}")
    p(f"  {cfg.oversample}x{cfg.oversample} sub-pixels x {cfg.sources} source(s) = {cfg.steps} steps per pixel"
      + ("; -Fmap: F of each pixel's last sample" if st.fmap else ""))
    if st.noise:
        p(f"  noise image seed: {st.seed}")


def _stolout(setup: Setup, maps, img) -> tuple:
    """The inverse mode: each valid pixel of the -img image back to a structure factor, binned at the
    nearest profile point. Returns ``(text, lines written, points with too few pixels)``."""
    from ..io.smv import format_g as g
    st, info, cfg = setup.state, setup.info, setup.config
    prof = info["profile"]
    mult = st.stol_mult
    xs = np.concatenate([[-1e99, -1e98], prof.stol, [1e98, 1e99]])
    n_tab = xs.size
    active = np.zeros((cfg.spixels, cfg.fpixels), bool)
    f0, f1, s0, s1 = cfg.roi_box()
    active[s0:s1 + 1, f0:f1 + 1] = True
    valid = active.copy()
    for value in st.ignore:
        valid &= img != np.float32(value)
    dev = ((img.astype(np.float64) - st.adc) / st.gain).astype(np.float32)
    sign = np.where(dev < 0.0, np.float32(-1.0), np.float32(1.0))
    dev = np.abs(dev).astype(np.float64)
    steps = cfg.steps
    with np.errstate(all="ignore"):
        pf = np.sqrt(dev / maps["polar"] / maps["omega"] / st.fluence / R_E_SQR / info["molecules"] * steps)
    pixel_F = (sign * pf).astype(np.float32)
    stol = maps["stol"]
    k = np.clip(np.searchsorted(xs, stol, side="right") - 1, 1, n_tab - 3)
    bins = k + (stol > (xs[k] + xs[np.minimum(k + 1, n_tab - 1)]) / 2.0)
    bins = np.where(valid, bins, 0)
    lines, few = [], 0
    order = np.argsort(bins[active], kind="stable")
    vals_all, bins_all = pixel_F[active][order], bins[active][order]
    starts = np.searchsorted(bins_all, np.arange(n_tab + 1))
    for b in range(2, n_tab - 2):
        vals = vals_all[starts[b]:starts[b + 1]]
        n = vals.size
        if n > 100:
            total = np.cumsum(vals, dtype=np.float32)[-1]
            avg = np.float32(total / np.float32(n))
            d = np.abs(vals - avg).astype(np.float32)
            sumd = np.cumsum(d * d, dtype=np.float32)[-1]
            rmsd = np.float32(math.sqrt(np.float32(sumd / np.float32(n))))
            med = float(np.median(vals))
            mad = float(np.median(np.abs(vals - med)))
            lines.append(f"{g(prof.stol[b - 2] / mult)} {g(avg)} {g(rmsd)}"
                         f"   {g(med)} {g(mad)}  {n}\n")
        else:
            few += 1
    return "".join(lines), len(lines), few


def run(argv: List[str], out=None, err=None) -> int:
    """Run one command line; returns the exit status (raises InputError for bad input)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    with np.errstate(all="ignore"):
        return _run(argv, out, err)


def _run(argv, out, err) -> int:
    import jax
    from . import outputs as outmod
    from .. import io
    parsed, warnings = parse(argv)
    # the command line computes in double like the reference (the library never sets this)
    jax.config.update("jax_enable_x64", True)
    try:        # jaxbragg's persistent compilation cache, when its command line provides one
        from . import _enable_compilation_cache
    except ImportError:  # pragma: no cover
        pass
    else:
        _enable_compilation_cache(jax)
    setup = resolve(parsed, warnings)
    st, cfg, info = setup.state, setup.config, setup.info
    info["phi0"] = st.phi0

    files = {"float": st.files["float"], "int": st.files["int"]}
    if st.pgm:
        files["pgm"] = st.files["pgm"]
    if st.noise:
        files["noise"] = st.files["noise"]
    if st.img is not None and st.stolout:
        files["stolout"] = st.stolout
    flags = {"float": "-floatfile", "int": "-intfile", "pgm": "-pgmfile", "noise": "-noisefile",
             "stolout": "-stolout"}
    common.check_writable(list(files.values()))
    common.check_distinct(files, flags, {"-stol": st.stol, "-img": st.img, "-sourcefile": st.sourcefile})
    if st.printout_pixel is not None:
        f, s = st.printout_pixel
        if not (0 <= f < cfg.fpixels and 0 <= s < cfg.spixels):
            raise InputError(f"-printout_pixel: pixel (fast {f}, slow {s}) is outside the "
                             f"{cfg.fpixels}x{cfg.spixels}-pixel detector")

    _print_summary(setup, out)
    out.flush()
    common.checkpoint()
    t0 = time.perf_counter()
    vals = _render(setup, st.progress and not st.printout, err)
    keys = ("I", "omega_sum", "F", "stol", "polar", "omega")
    maps = {k: _place(cfg, None if vals is None else vals[k]) for k in keys}
    image32 = maps["F" if st.fmap else "I"].astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(image32)))
    if bad:
        raise InputError(f"the rendered image has {bad} NaN or infinite pixels: check the profile file "
                         f"{st.stol} (repeated sin(theta)/lambda values?) and -fluence/-flux")
    print(f"rendered {cfg.spixels}x{cfg.fpixels} pixels in {time.perf_counter() - t0:.3f} s", file=out)
    omega_sum = float(np.sum(maps["omega_sum"]))
    print(f"solid angle subtended by detector = {omega_sum:g} steradian "
          f"( {100 * omega_sum / 4 / math.pi:g}% sphere)", file=out)
    if st.printout:
        _printout(setup, maps, image32, out)

    roi = cfg.roi_box()
    stats = outmod.statistics(image32, roi, None)
    active = outmod.roi_mask(image32.shape, roi)
    print("max_I = %g  at pixel (slow %d, fast %d)" % (stats["max"], *stats["argmax"]), file=out)
    print("mean= %g rms= %g rmsd= %g" % (stats["mean"], stats["rms"], stats["rmsd"]), file=out)
    scale = st.scale
    if scale <= 0.0:
        scale = 55000.0 / stats["max"] if stats["max"] > 0.0 else 1.0
    print(f"intfile_scale = {scale:g}", file=out)
    items = header_items(info)
    blobs = {"float": np.ascontiguousarray(image32, dtype="<f4").tobytes(),
             "int": io.smv.smv_bytes(outmod.int_image(image32, scale, st.adc, active), items)}
    if "stolout" in files:
        text, nlines, few = _stolout(setup, maps, setup.img)
        blobs["stolout"] = text.encode("ascii")
        print(f"inverse mode: {nlines} profile points with more than 100 valid pixels"
              + (f" ({few} with too few pixels left out)" if few else ""), file=out)
    if "pgm" in files:
        pgm_scale = st.pgmscale
        if pgm_scale <= 0.0:
            pgm_scale = 250.0 / (5.0 * stats["rmsd"]) if stats["rmsd"] > 0.0 else scale
        print(f"pgm_scale = {pgm_scale:g}", file=out)
        blobs["pgm"] = io.pgm.pgm_bytes(outmod.pgm_image(image32, pgm_scale, active), pgm_scale)
    if "noise" in files:
        noisy, photons, overloads = outmod.noise_image(image32, st.seed, st.adc, active)
        print(f"{photons:.0f} photons on noise image ({overloads} overloads)", file=out)
        blobs["noise"] = io.smv.smv_bytes(noisy, items)
    writes = [(files[k], blobs[k], False) for k in ("float", "int", "pgm", "noise", "stolout") if k in blobs]
    common.checkpoint()
    interrupted = common.write_outputs(writes, out)
    for k in ("float", "int", "pgm", "noise", "stolout"):
        if k in blobs:
            extra = f" as {image32.size} 4-byte floats" if k == "float" else ""
            print(f"writing {files[k]}{extra}", file=out)
    if interrupted:
        print(f"{PROG}: interrupted after the output files were written", file=sys.stderr)
        return 130
    return 0


def _printout(setup: Setup, maps, image32, out):
    """``-printout`` / ``-printout_pixel``: the last sample's quantities of each (or one) pixel."""
    cfg, st = setup.config, setup.state
    f0, f1, s0, s1 = cfg.roi_box()
    if st.printout_pixel is not None:
        pixels = [(st.printout_pixel[1], st.printout_pixel[0])]
    else:
        pixels = [(s, f) for s in range(s0, s1 + 1) for f in range(f0, f1 + 1)]
    for s, f in pixels:
        print(f"{f:4d} {s:4d} : stol = {maps['stol'][s, f] / 1e10:g} 1/A  F = {maps['F'][s, f]:g}  "
              f"polar = {maps['polar'][s, f]:.10g}  omega = {maps['omega'][s, f]:.10g} sr  "
              f"pixel = {image32[s, f]:.10g} photons  (last sample)", file=out)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return common.program_main(PROG, argv, USAGE, help_text, lambda: run(argv), "use a smaller detector or ROI")


def entry() -> None:  # pragma: no cover - exercised by the installed console script
    common.exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
