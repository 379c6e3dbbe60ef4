"""From parsed flags to an explicit (SimConfig, Params): the reference's defaults and precedence rules.

This is the only place that knows nanoBragg.c's flag semantics. The order of operations follows ``main``:

1. ``-mask`` then ``-img`` headers seed the detector (flags given on the command line override them).
2. Flags are applied in command-line order (a later flag wins; ``-Xbeam``/``-distance`` ask for the beam
   pivot, ``-Xclose``/``-ORGX``/``-close_distance``/``-twotheta`` for the sample pivot; a vector flag
   selects the CUSTOM convention).
3. Detector size, fluence (flux x exposure / beamsize^2, with the sample clipped to the beam), beam-centre
   defaults, then the convention block: it sets the basis vectors and, except for CUSTOM, forces the pivot
   (MOSFLM/DENZO/ADXV: beam; XDS/DIALS: sample).
4. Step counts for phi, divergence, dispersion, sensor layers and mosaic domains by the reference's rules.
5. Cell / orientation, crystal size in cells, automatic oversampling, structure factors, sources, mosaic
   domains.

Units: flags are in the reference's units (mm, Angstrom, degrees, mrad, microns); everything leaving this
module is SI.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import beam as beam_mod
from .. import crystal, geometry, io, resources, rng
from .. import detector as det_mod
from ..errors import InputError, PhysicsError
from ..simulate import Params, SimConfig
from .. import validate

RTD = 180.0 / math.pi

#: The flags behind each :class:`Params` field, for :class:`PhysicsError` messages.
_PARAM_FLAGS = {
    "lattice": "-cell/-mat/-misset", "ncells": "-N/-Na/-Nb/-Nc/-xtalsize", "fudge": "-fudge",
    "spindle": "-spindle_axis", "phi0": "-phi", "phistep": "-phistep/-osc", "mosaic_umats": "-mosaic",
    "default_F": "-default_F", "fdet": "-fdet_vector", "sdet": "-sdet_vector", "odet": "-odet_vector",
    "beam": "-beam_vector", "detector_rotations": "-detector_rotx/-detector_roty/-detector_rotz",
    "twotheta_axis": "-twotheta_axis", "twotheta": "-twotheta", "beam_center": "-Xbeam/-Ybeam/-Xclose/-Yclose",
    "distance": "-distance/-close_distance", "pixel_size": "-pixel",
    "source_dirs": "-beam_vector/-divergence/-sourcefile", "source_lambda": "-lambda/-energy/-dispersion",
    "fluence": "-fluence/-flux/-exposure/-beamsize", "kahn": "-polar", "polar_vector": "-polar_vector",
    "water_size": "-water", "dmin": "-dmin", "thickstep": "-detector_thick", "mu": "-detector_abs",
    "F_grid": "-hkl", "pix0": "-pix0_vector", "mask": "-mask",
}

OUTPUT_FLAGS = {"-floatfile": "float", "-floatimage": "float", "-intfile": "int", "-intimage": "int",
                "-pgmfile": "pgm", "-pgmimage": "pgm", "-noisefile": "noise", "-noiseimage": "noise",
                "-pngfile": "png", "-nexusfile": "nexus", "-cbffile": "cbf"}


@dataclasses.dataclass
class Setup:
    """Everything a run needs: the library inputs plus what the CLI prints and writes."""
    config: SimConfig
    params: Params
    info: Dict[str, Any]
    outputs: Dict[str, Optional[str]]
    options: Dict[str, Any]
    warnings: List[str]
    experiment: Any = None      # the jaxbragg.Experiment of the command line (see translate)
    panel_setups: Optional[List["Setup"]] = None    # -expt with several panels: one Setup per panel


_unit = geometry.unitize_safe


def _ceil_count(x: float, flags: str, what: str) -> int:
    """``ceil(x)`` for a step count, refusing the non-finite or absurd values that a ratio of two flags
    can produce (the reference would overflow its ``int``)."""
    if not (math.isfinite(x) and x <= resources.MAX_SAMPLES_PER_PIXEL):
        raise resources.ResourceError(f"{flags}: {x:.3g} {what} is more than the limit of "
                                      f"{resources.MAX_SAMPLES_PER_PIXEL:.0e}")
    return int(math.ceil(x))


def _steps_rule(steps, rng_, step, user_only_steps_default, flags="", what="steps"):
    """The reference's auto-selection of (steps, range, step) for divergence / dispersion."""
    if steps <= 0:
        if rng_ < 0.0:
            if step <= 0.0:
                return 1, 0.0, 0.0
            return 2, step, step
        if step <= 0.0:
            return 2, rng_, rng_
        return _ceil_count(rng_ / step, flags, what), rng_, step
    if rng_ < 0.0:
        if step <= 0.0:
            return steps, user_only_steps_default, user_only_steps_default / steps
        return 2, step, step
    if step <= 0.0:
        steps = max(steps, 2)
        return steps, rng_, rng_ / (steps - 1)
    return steps, rng_, step


class _State:
    """Mutable mirror of the reference's option variables (SI units)."""

    def __init__(self):
        self.cell = None
        self.matfile = None
        self.misset = None                  # None, "random" or radians (3)
        self.Na = self.Nb = self.Nc = 1.0
        self.sample = [0.0, 0.0, 0.0]
        self.shape = "square"
        self.fudge = 1.0
        self.mosaic_spread = -1.0
        self.mosaic_domains = -1
        self.mosaic_seed = -12345678
        self.seed = -int(time.time())
        self.misset_seed = self.seed
        self.phi0, self.osc, self.phistep, self.phisteps = 0.0, -1.0, -1.0, -1
        self.phi_carryover = False
        self.hkl = None
        self.default_F = 0.0
        self.dumpfile = "Fdump.bin"
        self.interpolate = 2
        self.water = 0.0
        self.lambda0 = 1.0e-10
        self.fluence = 125932015286227086360700780544.0
        self.flux, self.exposure, self.beamsize = 0.0, 1.0, 1e-4
        self.dispersion, self.dispstep, self.dispsteps = 0.0, -1.0, -1
        self.hdivrange = self.vdivrange = -1.0
        self.hdivstep = self.vdivstep = -1.0
        self.hdivsteps = self.vdivsteps = -1
        self.round_div = True
        self.sourcefile = None
        self.polarization, self.nopolar = 0.0, False
        self.dmin = 0.0
        self.distance, self.close_distance = 100.0e-3, math.nan
        self.pixel = 0.1e-3
        self.detsize_f = self.detsize_s = 102.4e-3
        self.fpixels = self.spixels = 0
        self.Xbeam = self.Ybeam = math.nan
        self.Xclose = self.Yclose = math.nan
        self.ORGX = self.ORGY = math.nan
        self.pivot = "beam"
        self.convention = "mosflm"
        (self.beam_vector, self.fdet, self.sdet, self.odet, self.twotheta_axis, self.polar_vector,
         self.spindle) = det_mod.convention_vectors("custom")
        self.pix0 = None
        self.rot = [0.0, 0.0, 0.0]
        self.twotheta = 0.0
        self.curved = self.point_pixel = False
        self.det_mu, self.det_thick, self.det_thickstep, self.det_thicksteps = -1.0, 0.0, -1.0, -1
        self.oversample = -1
        self.os_thick = self.os_polar = self.os_omega = False
        self.roi = None
        self.img = self.mask = None
        self.outputs: Dict[str, Optional[str]] = {}
        self.intfile_scale, self.pgm_scale, self.adc = 0.0, 0.0, 40.0
        self.noise, self.write_pgm = True, True
        self.noise_jax = False
        self.progress = True
        self.printout, self.printout_pixel, self.trace_pixel = False, None, None
        self.float32 = False
        self.tile = None
        self.demo = False
        self.max_memory = None              # bytes (-max_memory_gb), None: detect
        self.expt, self.expt_index, self.expt_recip, self.expt_panels = None, 0, None, 1     # -expt


#: Header keys read by :func:`_apply_header` that must be positive when present.
_POSITIVE_HEADER_KEYS = ("PIXEL_SIZE", "WAVELENGTH")


def _check_not_edge_on(st: "_State", frame, beam_v, distance: float) -> None:
    """The placed detector (after -twotheta and every rotation) may not lie along the beam: a plane
    parallel to the beam, or one through the sample, makes the C divide by a rounding leftover.

    The rule is :func:`jaxbragg.validate.placement_problem` (also applied to a Python experiment); here it
    runs as soon as the detector is placed, so the message names the flags."""
    named = [f for f, on in (("-twotheta", st.twotheta != 0.0),
                             ("-detector_rotx/-detector_roty/-detector_rotz", any(r != 0.0 for r in st.rot)),
                             ("-pix0_vector", st.pix0 is not None)) if on] or ["-fdet_vector/-sdet_vector/-odet_vector"]
    problem = validate.placement_problem(frame, beam_v, distance, st.curved)
    if problem:
        raise InputError(f"{' and '.join(named)}: {problem}")


def _apply_header(st: _State, path: str, is_mask: bool, cwd: str = "."):
    header, data = io.read_smv(os.path.join(cwd, path))
    if data.size > resources.MAX_PIXELS:
        raise InputError(f"{path}: SMV image of {data.shape[1]}x{data.shape[0]} pixels is larger than the "
                         f"limit of {resources.MAX_PIXELS} pixels")
    st.spixels, st.fpixels = data.shape

    def get(key):
        value = io.header_value(header, key)
        if value is not None and not math.isfinite(value):
            raise InputError(f"{path}: header {key}={header[key]!r} is not a finite number")
        if value is not None and key in _POSITIVE_HEADER_KEYS and value <= 0:
            raise InputError(f"{path}: header {key}={header[key]!r} must be positive")
        return value
    if get("PIXEL_SIZE") is not None:
        st.pixel = get("PIXEL_SIZE") / 1000.0
    st.detsize_f = st.pixel * st.fpixels
    st.detsize_s = st.pixel * st.spixels
    if get("DISTANCE") is not None:
        st.distance = get("DISTANCE") / 1000.0
    if get("CLOSE_DISTANCE") is not None:
        st.close_distance = get("CLOSE_DISTANCE") / 1000.0
    if get("WAVELENGTH") is not None:
        st.lambda0 = get("WAVELENGTH") / 1e10
    if get("BEAM_CENTER_X") is not None:
        st.Xbeam = get("BEAM_CENTER_X") / 1000.0
    if get("BEAM_CENTER_Y") is not None:
        y = get("BEAM_CENTER_Y") / 1000.0
        st.Ybeam = st.detsize_s - y if is_mask else y
    if get("ORGX") is not None:
        st.ORGX = get("ORGX")
    if get("ORGY") is not None:
        st.ORGY = get("ORGY")
    if get("PHI") is not None:
        st.phi0 = get("PHI") / RTD
    if get("OSC_RANGE") is not None:
        st.osc = get("OSC_RANGE") / RTD
    # TWOTHETA is read by the reference into an unused variable: no effect.
    return data


def _apply_expt(st: _State, cwd: str, panel: int) -> None:
    """Seed the state from panel ``panel`` of ``-expt FILE`` (experiment ``-expt_index``), in the MOSFLM
    frame (:mod:`jaxbragg.io.dials`): every flag on the command line then overrides it."""
    from ..io.dials import read_expt, to_mosflm
    fr = to_mosflm(read_expt(os.path.join(cwd, st.expt), st.expt_index))
    st.expt_panels = len(fr.panels)
    p = fr.panels[panel]
    st.convention = "custom"
    st.pix0 = p["pix0"] / 1000.0
    st.fdet, st.sdet, st.odet = p["fdet"], p["sdet"], p["odet"]
    st.pixel = p["pixel"] / 1000.0
    st.fpixels, st.spixels = p["pixels"]
    if p["thickness"] > 0:
        st.det_thick, st.det_mu = p["thickness"] * 1e-6, 1.0 / (p["attenuation"] * 1e-6)
        st.det_thicksteps, st.det_thickstep = 1, st.det_thick     # one layer, as Experiment.from_expt
    st.beam_vector, st.polar_vector, st.spindle = fr.beam, fr.polar_vector, fr.spindle
    st.polarization, st.lambda0 = fr.kahn, fr.wavelength * 1e-10
    st.phi0 = fr.phi / RTD
    if fr.osc > 0:
        st.osc = fr.osc / RTD
    if fr.mosaic_spread > 0:
        st.mosaic_spread = fr.mosaic_spread / RTD
    if fr.lattice is not None:
        st.expt_recip = np.linalg.inv(fr.lattice * 1e-10).T       # 1/m, independent of -lambda


# ---- the flag table: one rule per flag (command-line order is applied by _resolve) ---------------------
# A rule is ``rule(st, values)``; the helpers below build the common kinds. Units: flags in the
# reference's units in, SI out.

def _store(attr, convert=lambda x: x, pivot=None):
    """``st.attr = convert(first value)``; ``pivot``: the flag also asks for that pivot."""
    def rule(st, v):
        setattr(st, attr, convert(v[0]))
        if pivot is not None:
            st.pivot = pivot
    return rule


def _store_all(attr, convert=lambda v: v):
    def rule(st, v):
        setattr(st, attr, convert(v))
    return rule


def _const(**values):
    def rule(st, v):
        for attr, value in values.items():
            setattr(st, attr, value)
    return rule


def _sample_axis(axis):
    def rule(st, v):
        st.sample[axis] = v[0] / 1000
    return rule


def _rotation(axis):
    def rule(st, v):
        st.rot[axis] = v[0] / RTD
    return rule


def _ignored(st, v):
    """Parsed by the reference without effect on the image."""


def _cells(x):
    return float(int(x))


def _all_cells(st, v):
    st.Na = st.Nb = st.Nc = _cells(v[0])


def _misset(st, v):
    st.misset = "random" if v[0] == "random" else tuple(a / RTD for a in v)


def _sample_size(st, v):
    st.sample = [v[0] / 1000] * 3


def _pivot(st, v):
    if v[0] not in ("sample", "beam"):
        raise InputError(f"-pivot: expected 'sample' or 'beam', got {v[0]!r}")
    st.pivot = v[0]


def _convention(name):
    def rule(st, v):
        st.convention = name
        st.pivot = "sample" if name == "xds" else "beam"
    return rule


def _vector(attr):
    def rule(st, v):               # any vector selects the CUSTOM convention
        st.convention = "custom"
        setattr(st, attr, np.array(v, float))
    return rule


def _pix0(scale):
    def rule(st, v):
        st.convention = "custom"
        st.pix0 = np.array(v, float) / scale
    return rule


def _detector_abs(st, v):
    x = v[0]
    if x == "inf" or x == 0.0:     # absorption off, and (as the C) the thickness reset at this point
        st.det_thick, st.det_mu = 0.0, 0.0
    else:
        st.det_mu = 1.0 / (x * 1e-6)


def _detsize(*attrs):
    def rule(st, v):
        for attr in attrs:
            setattr(st, attr, v[0] / 1000.0)
    return rule


def _detpixels(flag, *attrs):
    def rule(st, v):
        if v[0] <= 0:
            raise InputError(f"{flag}: the detector must have at least one pixel, got {v[0]}")
        for attr in attrs:
            setattr(st, attr, v[0])
    return rule


def _wavelength(flag):
    def rule(st, v):
        if not v[0] > 0:
            raise InputError(f"{flag}: the wavelength must be positive, got {v[0]:g} A")
        st.lambda0 = v[0] / 1.0e10
    return rule


def _energy(st, v):
    if not v[0] > 0:
        raise InputError(f"-energy: the photon energy must be positive, got {v[0]:g} eV")
    st.lambda0 = (12398.42 / v[0]) / 1.0e10


def _mosaic(flag):
    def rule(st, v):
        if abs(v[0] / RTD) > 3.0e38:   # the reference narrows the spread to a float
            raise InputError(f"{flag}: a mosaic spread of {v[0]:g} degrees is out of range")
        st.mosaic_spread = v[0] / RTD
    return rule


def _output(kind):
    def rule(st, v):
        st.outputs[kind] = v[0]
        if kind == "pgm":
            st.write_pgm = True
        if kind == "noise":
            st.noise = True
    return rule


def _printout_pixel(st, v):
    st.printout, st.printout_pixel = True, v


def _tile(st, v):
    if v[0] <= 0:
        raise InputError("-tile: must be a positive number of pixels")
    st.tile = v[0]


def _max_memory(st, v):
    if not v[0] > 0:
        raise InputError(f"-max_memory_gb: must be a positive number of gigabytes, got {v[0]:g}")
    st.max_memory = min(v[0] * 1e9, float(1 << 62))


def _both(*rules):
    """Several rules for one flag, in order."""
    def rule(st, v):
        for r in rules:
            r(st, v)
    return rule


def _negated(attr):                # the reference's seeds: -seed S gives idum -S
    return _store(attr, lambda x: -x)


_mm = lambda x: x / 1000.0
_deg = lambda x: x / RTD
_mrad = lambda x: x / 1000.0

FLAG_RULES = {
    # crystal
    "-Na": _store("Na", _cells), "-Nb": _store("Nb", _cells), "-Nc": _store("Nc", _cells), "-N": _all_cells,
    "-cell": _store_all("cell"), "-mat": _store("matfile"), "-misset": _misset,
    "-round_xtal": _const(shape="round"), "-square_xtal": _const(shape="square"),
    "-gauss_xtal": _const(shape="gauss"), "-binary_spots": _const(shape="tophat"),
    "-tophat_spots": _const(shape="tophat"), "-fudge": _store("fudge"),
    "-mosaic_domains": _store("mosaic_domains"), "-mosaic_dom": _store("mosaic_domains"),
    "-phi": _store("phi0", _deg), "-osc": _store("osc", _deg), "-phistep": _store("phistep", _deg),
    "-phisteps": _store("phisteps"), "-phi_carryover": _const(phi_carryover=True),
    # structure factors and background
    "-hkl": _store("hkl"), "-default_F": _store("default_F"), "-dump": _store("dumpfile"),
    "-interpolate": _const(interpolate=1), "-nointerpolate": _const(interpolate=0),
    "-water": _store("water", lambda x: x / 1e6),
    # beam
    "-lambda": _wavelength("-lambda"), "-wave": _wavelength("-wave"), "-energy": _energy,
    "-fluence": _store("fluence"), "-flux": _store("flux"), "-exposure": _store("exposure"),
    "-beamsize": _store("beamsize", lambda x: x / 1000),
    "-dispersion": _store("dispersion", lambda x: x / 100.0), "-dispsteps": _store("dispsteps"),
    "-divergence": _both(_store("hdivrange", _mrad), _store("vdivrange", _mrad)),
    "-hdivrange": _store("hdivrange", _mrad), "-vdivrange": _store("vdivrange", _mrad),
    "-hdivstep": _store("hdivstep", _mrad), "-vdivstep": _store("vdivstep", _mrad),
    "-hdivsteps": _store("hdivsteps"), "-vdivsteps": _store("vdivsteps"),
    "-divsteps": _both(_store("hdivsteps"), _store("vdivsteps")),
    "-round_div": _const(round_div=True), "-square_div": _const(round_div=False),
    "-sourcefile": _store("sourcefile"), "-polar": _both(_store("polarization"), _const(nopolar=False)),
    "-nopolar": _const(nopolar=True), "-dmin": _store("dmin", lambda x: x * 1e-10),
    # detector
    "-Xbeam": _store("Xbeam", _mm, "beam"), "-Ybeam": _store("Ybeam", _mm, "beam"),
    "-Xclose": _store("Xclose", _mm, "sample"), "-Yclose": _store("Yclose", _mm, "sample"),
    "-ORGX": _store("ORGX", pivot="sample"), "-ORGY": _store("ORGY", pivot="sample"), "-pivot": _pivot,
    "-fdet_vector": _vector("fdet"), "-sdet_vector": _vector("sdet"), "-odet_vector": _vector("odet"),
    "-beam_vector": _vector("beam_vector"), "-polar_vector": _vector("polar_vector"),
    "-spindle_axis": _vector("spindle"), "-twotheta_axis": _vector("twotheta_axis"),
    "-pix0_vector": _pix0(1.0), "-pix0_vector_mm": _pix0(1000.0),
    "-distance": _store("distance", _mm, "beam"), "-close_distance": _store("close_distance", _mm, "sample"),
    "-detector_abs": _detector_abs, "-detector_thick": _store("det_thick", lambda x: x * 1e-6),
    "-detector_thicksteps": _store("det_thicksteps"), "-thicksteps": _store("det_thicksteps"),
    "-twotheta": _store("twotheta", _deg, "sample"),
    "-detector_rotx": _rotation(0), "-detector_roty": _rotation(1), "-detector_rotz": _rotation(2),
    "-detsize": _detsize("detsize_f", "detsize_s"), "-detsize_f": _detsize("detsize_f"),
    "-detsize_s": _detsize("detsize_s"),
    "-detpixels": _detpixels("-detpixels", "fpixels", "spixels"),
    "-detpixels_f": _detpixels("-detpixels_f", "fpixels"), "-detpixels_x": _detpixels("-detpixels_x", "fpixels"),
    "-detpixels_s": _detpixels("-detpixels_s", "spixels"), "-detpixels_y": _detpixels("-detpixels_y", "spixels"),
    "-curved_det": _const(curved=True), "-pixel": _store("pixel", _mm), "-point_pixel": _const(point_pixel=True),
    "-oversample_thick": _const(os_thick=True), "-oversample_polar": _const(os_polar=True),
    "-oversample_omega": _const(os_omega=True), "-oversample": _store("oversample"), "-roi": _store_all("roi"),
    "-img": _store("img"), "-mask": _store("mask"),
    # outputs and execution
    "-nonoise": _const(noise=False), "-noise_jax": _const(noise_jax=True), "-nopgm": _const(write_pgm=False),
    "-scale": _store("intfile_scale"), "-pgmscale": _both(_store("pgm_scale"), _const(write_pgm=True)),
    "-adc": _store("adc"), "-printout": _const(printout=True), "-noprogress": _const(progress=False),
    "-progress": _const(progress=True), "-printout_pixel": _printout_pixel, "-trace_pixel": _store_all("trace_pixel"),
    "-seed": _negated("seed"), "-mosaic_seed": _negated("mosaic_seed"), "-misset_seed": _negated("misset_seed"),
    "-float32": _const(float32=True), "-tile": _tile, "-demo": _const(demo=True), "-max_memory_gb": _max_memory,
    "-expt": _ignored, "-expt_index": _ignored,         # read before every other flag (_resolve)
}
for _f in ("-samplesize", "-sample_size", "-xtalsize", "-xtal_size"):
    FLAG_RULES[_f] = _sample_size
for _axis, _names in enumerate((("-sample_thick", "-sample_x", "-xtal_thick", "-xtal_x"),
                                ("-sample_width", "-sample_y", "-width", "-xtal_width", "-xtal_y"),
                                ("-sample_height", "-sample_z", "-height", "-xtal_height", "-xtal_z"))):
    for _f in _names:
        FLAG_RULES[_f] = _sample_axis(_axis)
for _f in ("-density", "-sample_density", "-MW", "-molecular_weight", "-coherent", "-stolout", "-stol", "-4stol",
           "-Q"):
    FLAG_RULES[_f] = _ignored        # read by the reference, never used in the image
for _f in ("-mosaic", "-mosaicity", "-mosaic_spread"):
    FLAG_RULES[_f] = _mosaic(_f)
for _f, _kind in OUTPUT_FLAGS.items():
    FLAG_RULES[_f] = _output(_kind)
for _f in ("-mosflm", "-xds", "-adxv", "-denzo", "-dials"):
    FLAG_RULES[_f] = _convention(_f[1:])



def _apply_flag(st: _State, flag: str, v: tuple):
    FLAG_RULES[flag](st, v)


DEMO_ARGS = ["-cell", "70", "80", "90", "75", "85", "95", "-misset", "10", "20", "30", "-default_F", "100",
             "-N", "5", "-mosaic", "0.3", "-mosaic_domains", "4", "-phi", "1", "-osc", "1", "-phisteps", "2",
             "-lambda", "1.0", "-distance", "100", "-detpixels", "256", "-pixel", "0.1", "-oversample", "1"]


def resolve(parsed: List[Tuple[str, tuple]], cwd: str = ".") -> Setup:
    """Apply the reference's rules to parsed flags and build the library inputs.

    Raises:
      InputError: (one line, naming the flag or file) for anything the model cannot render, including
        the resource caps of :mod:`jaxbragg.resources` and the checks of :func:`jaxbragg.validate.validate`.
    """
    with np.errstate(all="ignore"):     # every value that matters is checked explicitly
        setup = _resolve(parsed, cwd)
        count = setup.info["expt_panels"]
        if count > 1:                   # -expt with several panels: the same rules, once per panel
            setup.panel_setups = [setup] + [_resolve(parsed, cwd, k) for k in range(1, count)]
        return setup


def _resolve(parsed: List[Tuple[str, tuple]], cwd: str, panel: int = 0) -> Setup:
    st = _State()
    warnings: List[str] = []
    if any(f == "-demo" for f, _ in parsed):
        from .flags import parse
        parsed = parse(DEMO_ARGS) + [p for p in parsed if p[0] != "-demo"]
        st.demo = True
        st.outputs.setdefault("float", "jaxbragg_demo.bin")
    for f, v in parsed:      # the reference reads these two headers before any other option
        if f == "-mask": st.mask = v[0]
        if f == "-img": st.img = v[0]
    mask_data = None
    if st.mask is not None:
        mask_data = _apply_header(st, st.mask, True, cwd)
    if st.img is not None:
        _apply_header(st, st.img, False, cwd)
    for f, v in parsed:      # -expt seeds the whole experiment; the other flags override it
        if f == "-expt": st.expt = v[0]
        if f == "-expt_index": st.expt_index = int(v[0])
    if st.expt is not None:
        _apply_expt(st, cwd, panel)
    for f, v in parsed:
        _apply_flag(st, f, v)

    # ---- detector size -------------------------------------------------------------------------
    if st.pixel <= 0:
        raise InputError("-pixel: pixel size must be positive")
    if st.fpixels:
        st.detsize_f = st.pixel * st.fpixels
    if st.spixels:
        st.detsize_s = st.pixel * st.spixels
    nf, ns = st.detsize_f / st.pixel - 0.5, st.detsize_s / st.pixel - 0.5
    if not (math.isfinite(nf) and math.isfinite(ns)) or max(nf, ns) > resources.MAX_PIXELS:
        raise InputError(f"-detpixels/-detsize/-pixel: a {st.detsize_f * 1e3:g} x {st.detsize_s * 1e3:g} mm "
                         f"detector of {st.pixel * 1e3:g} mm pixels has too many pixels")
    fpixels = int(math.ceil(nf))
    spixels = int(math.ceil(ns))
    if fpixels <= 0 or spixels <= 0:
        raise InputError("-detpixels/-detsize: the detector must have at least one pixel")
    if fpixels * spixels > resources.MAX_PIXELS:
        raise InputError(f"-detpixels: {fpixels}x{spixels} pixels is more than the limit of "
                         f"{resources.MAX_PIXELS} pixels")
    if mask_data is not None and mask_data.shape != (spixels, fpixels):
        raise InputError(f"{st.mask}: mask is {mask_data.shape[1]}x{mask_data.shape[0]} pixels but the "
                         f"detector is {fpixels}x{spixels}")

    # ---- fluence and sample clipping ---------------------------------------------------------------
    if st.flux != 0.0 and st.exposure > 0.0 and st.beamsize >= 0:
        if st.beamsize == 0:
            raise InputError("-beamsize: must be positive when -flux is given")
        st.fluence = st.flux * st.exposure / st.beamsize / st.beamsize
    if not (math.isfinite(st.fluence) and st.fluence >= 0):
        raise InputError(f"-fluence/-flux/-exposure/-beamsize: the fluence must be finite and not negative, "
                         f"got {st.fluence:g} photons/m^2")
    if st.beamsize >= 0:
        if st.beamsize < st.sample[1]:
            warnings.append(f"clipping sample ({st.sample[1]:g} m high) with beam ({st.beamsize:g} m)")
            st.sample[1] = st.beamsize
        if st.beamsize < st.sample[2]:
            warnings.append(f"clipping sample ({st.sample[2]:g} m wide) with beam ({st.beamsize:g} m)")
            st.sample[2] = st.beamsize

    # ---- beam centre defaults and the convention block ---------------------------------------------
    px = st.pixel
    Fclose, Sclose = det_mod.close_point(st.ORGX, st.ORGY, st.detsize_f, st.detsize_s, px)
    Xclose = Fclose if math.isnan(st.Xclose) else st.Xclose
    Yclose = Sclose if math.isnan(st.Yclose) else st.Yclose
    conv = st.convention
    # the convention block: a named convention sets every vector and forces its pivot
    if conv in det_mod.CONVENTIONS:
        (st.beam_vector, st.fdet, st.sdet, st.odet, st.twotheta_axis, st.polar_vector,
         st.spindle) = det_mod.convention_vectors(conv)
    pivot = det_mod.CONVENTION_PIVOT.get(conv, st.pivot)
    X0, Y0 = det_mod.default_beam_center(conv, st.detsize_f, st.detsize_s, px, (Xclose, Yclose))
    Xbeam = X0 if math.isnan(st.Xbeam) else st.Xbeam
    Ybeam = Y0 if math.isnan(st.Ybeam) else st.Ybeam
    Fbeam, Sbeam = det_mod.beam_pivot_point(conv, (Xbeam, Ybeam), st.detsize_s, px)
    close_point = (Fclose, Sclose)
    if conv == "custom":
        Fclose, Sclose = Xbeam, Ybeam

    beam_v = _unit(st.beam_vector)
    fdet0, sdet0 = _unit(st.fdet), _unit(st.sdet)
    for name, vec in (("-beam_vector", beam_v), ("-fdet_vector", fdet0), ("-sdet_vector", sdet0),
                      ("-spindle_axis", st.spindle), ("-polar_vector", st.polar_vector)):
        if not np.any(vec):
            raise InputError(f"{name}: vector must be non-zero")
    if float(np.linalg.norm(np.cross(fdet0, sdet0))) < 1e-9:
        raise InputError("-fdet_vector/-sdet_vector: the fast and slow axes are parallel")
    if float(geometry.norm(st.odet)) != 1.0:
        warnings.append("auto-generating odet_vector")
        odet0 = _unit(np.cross(fdet0, sdet0))
    else:
        odet0 = _unit(st.odet)
    polar_v = _unit(st.polar_vector)
    spindle = _unit(st.spindle)
    tt_axis = np.asarray(st.twotheta_axis, float)
    if st.twotheta != 0.0 and not np.any(tt_axis):
        raise InputError("-twotheta_axis: vector must be non-zero when -twotheta is given")

    # ---- step counts -------------------------------------------------------------------------------
    phi0, osc, phistep, phisteps = st.phi0, st.osc, st.phistep, st.phisteps
    if phisteps < 0:
        if osc < 0.0:
            if phistep <= 0.0:
                phisteps, osc, phistep = 1, 0.0, 0.0
            else:
                osc, phisteps = phistep, 2
        elif phistep <= 0.0:
            phisteps, phistep = 2, osc / 2.0
        else:
            phisteps = _ceil_count(osc / phistep, "-osc/-phistep", "phi steps")
    else:
        if phisteps == 0:
            phisteps = 1
        if osc < 0.0:
            if phistep <= 0.0:
                osc = 1.0 / RTD
                phistep = osc / phisteps
            else:
                osc, phisteps = phistep, 2
        elif phistep < 0.0:
            phistep = osc / phisteps
    hdivsteps, hdivrange, hdivstep = _steps_rule(st.hdivsteps, st.hdivrange, st.hdivstep, 1.0,
                                                 "-hdivrange/-hdivstep", "horizontal divergence steps")
    vdivsteps, vdivrange, vdivstep = _steps_rule(st.vdivsteps, st.vdivrange, st.vdivstep, 1.0,
                                                 "-vdivrange/-vdivstep", "vertical divergence steps")
    dispsteps, dispersion, dispstep = _steps_rule(st.dispsteps, st.dispersion, st.dispstep, 1.0,
                                                  "-dispersion/-dispstep", "dispersion steps")
    thick, thickstep, thicksteps = st.det_thick, st.det_thickstep, st.det_thicksteps
    if thicksteps <= 0:
        if thick < 0.0:
            thicksteps, thick, thickstep = 1, 0.0, 0.0
        elif thickstep <= 0.0:
            thicksteps = 2
            thickstep = thick / thicksteps
        else:
            thicksteps = _ceil_count(thick / thickstep, "-detector_thick", "sensor layers")
    else:
        if thick < 0.0:
            thick = 0.5e-6
            thickstep = thick / thicksteps
        elif thickstep <= 0.0:
            thicksteps = max(thicksteps, 2)
            thickstep = thick / (thicksteps - 1)
    mu = st.det_mu
    if thick > 0.0 and mu < 0.0:
        mu = 1.0 / thick
        warnings.append(f"setting detector attenuation depth to {mu:g} m")
    spread, domains = st.mosaic_spread, st.mosaic_domains
    if domains <= 0:
        if spread < 0.0:
            domains, spread = 1, 0.0
        elif spread == 0.0:
            domains = 1
        else:
            warnings.append("finite mosaicity with only one domain! upping to 10 mosaic domains")
            domains = 10
    else:
        if spread < 0.0:
            warnings.append("no mosaic spread specified.  setting mosaic_domains = 1")
            spread, domains = 0.0, 1
        elif spread == 0.0:
            warnings.append("zero mosaic spread specified.  setting mosaic_domains = 1")
            domains = 1
    if hdivrange <= 0.0 or hdivstep <= 0.0 or hdivsteps <= 0:
        hdivsteps, hdivrange, hdivstep = 1, 0.0, 0.0
    if vdivrange <= 0.0 or vdivstep <= 0.0 or vdivsteps <= 0:
        vdivsteps, vdivrange, vdivstep = 1, 0.0, 0.0
    if dispersion <= 0.0 or dispstep <= 0.0 or dispsteps <= 0:
        dispsteps, dispersion, dispstep = 1, 0.0, 0.0
    if thick <= 0.0 or thickstep <= 0.0 or thicksteps <= 0:
        thicksteps, thick, thickstep = 1, 0.0, 0.0
    # caps, before anything of these sizes is built (the divergence count is an upper bound here)
    resources.check_sample_counts(1, phisteps, domains, 1, thicksteps, names=resources.CLI_NAMES)
    if st.sourcefile is None and hdivsteps * vdivsteps * dispsteps > resources.MAX_SETUP_COUNT:
        raise resources.ResourceError(
            f"-divsteps/-hdivsteps/-vdivsteps/-dispsteps: {hdivsteps} x {vdivsteps} divergence x {dispsteps} "
            f"dispersion points is more than the limit of {resources.MAX_SETUP_COUNT:.0e} sources")

    # ---- detector placement (distance bookkeeping as the reference does it) ------------------------
    ratio = float(np.dot(beam_v, geometry.rotate_xyz(odet0, np.array(st.rot))))
    if abs(ratio) < 1e-9:   # cos(90 deg) is 6e-17, not 0: treat edge-on as parallel
        raise InputError("detector is parallel to the beam (-distance/-detector_rot*/vectors)")
    distance, close = det_mod.detector_distance(
        beam_v, odet0, np.array(st.rot), st.distance, None if math.isnan(st.close_distance) else st.close_distance)
    center = (Fbeam, Sbeam) if pivot == "beam" else (Fclose, Sclose)
    dist_param = distance if pivot == "beam" else close
    frame = det_mod.place_detector(fdet0, sdet0, odet0, beam_v, np.array(st.rot), tt_axis,
                                   st.twotheta, pivot, np.array(center), dist_param, st.pix0)
    final_close = float(frame["close_distance"])
    final_distance = float(frame["distance"])
    _check_not_edge_on(st, frame, beam_v, dist_param)
    if not (math.isfinite(final_close) and math.isfinite(final_distance)):
        raise InputError("-distance/-pix0_vector/-Xbeam/-Ybeam: the detector position is not finite")
    if final_close <= 0 and not st.curved:
        raise InputError("-distance: the detector must be in front of the sample (distance > 0)")
    if st.curved and not final_distance > 0:
        raise InputError("-distance: a curved detector needs a positive distance")

    # ---- crystal -----------------------------------------------------------------------------------
    if st.cell is None and st.matfile is None and st.expt_recip is None:
        raise InputError("no unit cell: give -cell a b c alpha beta gamma or -mat FILE")
    recip = None
    lengths = None
    if st.cell is not None:
        a = st.cell[0]
        c6 = list(st.cell) + [0.0] * (6 - len(st.cell))
        b_ = c6[1] if c6[1] > 0 else a
        c_ = c6[2] if c6[2] > 0 else a
        angles = [c6[i] / RTD if c6[i] > 0 else math.pi / 2 for i in (3, 4, 5)]
        cell = np.array([a, b_, c_] + angles)
        if a <= 0:
            raise InputError("-cell: cell lengths must be positive")
        if not (1e-5 <= min(a, b_, c_) and max(a, b_, c_) <= 1e10):
            raise InputError(f"-cell: cell lengths must lie between 1e-5 and 1e10 A, got {a:g} {b_:g} {c_:g}")
        impossible = validate.cell_angles_problem(angles)
        if impossible:
            raise InputError(f"-cell: {impossible}")
        with np.errstate(all="ignore"):
            shape_factor = float(crystal.cell_volume(np.array([1.0, 1.0, 1.0] + angles)))
        if not shape_factor > 1e-6:     # V / (a b c): 1 for right angles, 0 for coplanar edges (the
            # half-angle formula leaves ~1e-8 of rounding noise for a flat cell such as 120 120 120)
            raise InputError("-cell: these angles give a zero cell volume")
        with np.errstate(all="ignore"):
            recip = crystal.reference_default_reciprocal(cell) * 1e10      # 1/m (the C's construction)
        if not np.all(np.isfinite(recip)):
            raise InputError("-cell: these angles give no valid reciprocal cell")
        lengths = cell[:3] * 1e-10
    mat_A = None
    if st.matfile is not None:
        mat_A = io.read_mat(os.path.join(cwd, st.matfile))       # dimensionless: a* x lambda, ...
        with np.errstate(all="ignore"):
            recip = mat_A / st.lambda0
        if not np.all(np.isfinite(recip)):
            rough = st.lambda0 * 1e10 / np.max(np.abs(mat_A))   # A, to the order of magnitude
            raise InputError(f"-mat: matrix elements up to {np.max(np.abs(mat_A)):.3g} give cell edges near "
                             f"{rough:.1g} A, outside 1e-5 .. 1e10 A")
    if st.cell is None and st.matfile is None and st.expt_recip is not None:    # the -expt crystal
        recip, mat_A = st.expt_recip, st.expt_recip * st.lambda0
    misset = (0.0, 0.0, 0.0)
    misset_info = None
    if st.misset == "random":
        misset = rng.random_misset(st.misset_seed)
        misset_info = tuple(m * RTD for m in misset)
    elif st.misset is not None:
        misset = st.misset
    with np.errstate(all="ignore"):
        lattice = crystal.oriented_lattice(recip, np.array(misset, float), lengths)
        edges = np.linalg.norm(lattice, axis=1) * 1e10       # A
    which = '-mat' if st.matfile is not None and st.cell is None else '-cell'
    if st.cell is None and np.all(np.isfinite(edges)) and not (1e-5 <= edges.min() and edges.max() <= 1e10):
        raise InputError(f"{which}: the matrix gives cell edges of {edges[0]:.3g} {edges[1]:.3g} "
                         f"{edges[2]:.3g} A, outside 1e-5 .. 1e10 A (is the matrix in 1/A, times the "
                         f"wavelength, as MOSFLM writes it?)")
    if not np.all(np.isfinite(lattice)) or not abs(float(np.linalg.det(lattice))) > 0:
        raise InputError(f"{which}: the unit cell cannot be computed (zero volume or out of range)")
    cell_len = np.linalg.norm(lattice, axis=1)
    Na, Nb, Nc = st.Na, st.Nb, st.Nc
    for axis, flag in enumerate(("-xtal_thick/-samplesize", "-xtal_width/-samplesize",
                                 "-xtal_height/-samplesize")):
        if st.sample[axis] > 0:
            n = st.sample[axis] / cell_len[axis]
            if not math.isfinite(n) or n > resources.MAX_CELLS_PER_AXIS:
                raise InputError(f"{flag}: a {st.sample[axis] * 1e3:g} mm crystal is {n:.3g} unit cells "
                                 f"across, more than the limit of {resources.MAX_CELLS_PER_AXIS:.0e}")
            if axis == 0: Na = math.ceil(n)
            elif axis == 1: Nb = math.ceil(n)
            else: Nc = math.ceil(n)
    Na, Nb, Nc = (max(float(n), 1.0) for n in (Na, Nb, Nc))
    for n, flag in ((Na, "-Na"), (Nb, "-Nb"), (Nc, "-Nc")):
        if n > resources.MAX_CELLS_PER_AXIS:
            raise InputError(f"{flag}/-N: {n:.3g} unit cells along one axis is more than the limit of "
                             f"{resources.MAX_CELLS_PER_AXIS:.0e}")
    xtal_max = max(cell_len[0] * Na, cell_len[1] * Nb, cell_len[2] * Nc)
    recip_px = st.lambda0 * final_distance / px
    ratio_os = 3.0 * xtal_max / recip_px if recip_px > 0 else math.inf
    if math.isfinite(ratio_os) and ratio_os <= resources.MAX_SAMPLES_PER_PIXEL:
        recommended = max(int(math.ceil(ratio_os)), 1)
    else:
        recommended = None     # absurd: only an error if it would be used
    if st.oversample > 0:
        oversample = st.oversample
    elif recommended is not None:
        oversample = recommended
    else:
        raise resources.ResourceError(
            f"-oversample: the automatic oversample for a {xtal_max * 1e10:.3g} A crystal "
            f"(-N/-Na/-Nb/-Nc/-xtalsize) at this -distance/-pixel/-lambda is {ratio_os:.3g}; give -oversample")
    if recommended is None or oversample < recommended:
        warnings.append(f"maximum dimension of sample is {xtal_max * 1e10:g} A")
    resources.check_sample_counts(oversample, phisteps, domains, 1, thicksteps, names=resources.CLI_NAMES)

    # ---- structure factors -------------------------------------------------------------------------
    grid = None
    fdump_used = None
    if st.hkl is not None:
        grid = io.read_structure_factors(os.path.join(cwd, st.hkl), st.default_F)   # .hkl/.mtz/.cif
    else:
        dump = os.path.join(cwd, st.dumpfile)
        if os.path.isfile(dump):
            grid = io.read_fdump(dump)
            fdump_used = st.dumpfile
        elif st.default_F == 0.0:
            raise InputError("no structure factors: give -hkl FILE or -default_F VALUE")
    interpolate = st.interpolate
    if interpolate > 1:   # decided, like the reference, from -N/-Na/-Nb/-Nc before -xtalsize is applied
        interpolate = 1 if (st.Na <= 2 or st.Nb <= 2 or st.Nc <= 2) else 0
    if grid is None:
        interpolate = 0

    # ---- sources -----------------------------------------------------------------------------------
    if st.sourcefile is not None:
        table, rows = io.sourcefile.read_sources(os.path.join(cwd, st.sourcefile))
        if len(table) > resources.MAX_SETUP_COUNT:
            raise resources.ResourceError(f"{st.sourcefile}: {len(table)} sources is more than the limit of "
                                          f"{resources.MAX_SETUP_COUNT:.0e}")
        for col in range(3):
            table[:, col] = np.where(np.isnan(table[:, col]), -beam_mod.SOURCE_DISTANCE * beam_v[col],
                                     table[:, col])
        table[:, 4] = np.where(np.isnan(table[:, 4]), st.lambda0, table[:, 4])
        bad = np.flatnonzero(~(table[:, 4] > 0))
        if bad.size:
            raise InputError(f"{st.sourcefile}: line {rows[bad[0]]}: the source wavelength must be positive, "
                             f"got {table[bad[0], 4]:g} m")
        scale = np.max(np.abs(table[:, :3]), axis=1)
        bad = np.flatnonzero(scale == 0)
        if bad.size:
            raise InputError(f"{st.sourcefile}: line {rows[bad[0]]}: the source sits at the sample position "
                             f"(0 0 0)")
        source_dirs = _unit(table[:, :3])
        source_lambda = table[:, 4].copy()
        n_div = 0
    else:
        div = beam_mod.divergence_grid(hdivrange, hdivstep, hdivsteps, vdivrange, vdivstep, vdivsteps,
                                       st.round_div)
        source_dirs, source_lambda = beam_mod.make_sources(beam_v, polar_v, st.lambda0, div,
                                                           dispersion, dispstep, dispsteps)
        n_div = len(div)
    if len(source_lambda) == 0:
        raise InputError("-divergence/-hdivrange/-vdivrange/-divsteps: the divergence settings leave no "
                         "beam source")
    if np.any(source_lambda <= 0):
        raise InputError("-lambda/-energy/-dispersion: wavelengths must be positive")
    resources.check_sample_counts(oversample, phisteps, domains, len(source_lambda), thicksteps,
                                  names=resources.CLI_NAMES)

    umats = rng.mosaic_umats(spread, domains, st.mosaic_seed)

    # ---- ROI ---------------------------------------------------------------------------------------
    roi = None
    if st.roi is not None:
        roi = tuple(int(r) for r in st.roi)
        if roi[0] > roi[1] or roi[2] > roi[3]:
            raise InputError("-roi: expected xmin xmax ymin ymax with min <= max")
        if roi[1] < 0 or roi[3] < 0 or roi[0] > fpixels - 1 or roi[2] > spixels - 1:
            raise InputError(f"-roi: the window {roi[0]} {roi[1]} {roi[2]} {roi[3]} lies outside the "
                             f"{fpixels}x{spixels}-pixel detector")

    dtype = np.float64      # -float32 selects the single-precision sample stage (SimConfig.precision)
    cfg = SimConfig(
        fpixels=fpixels, spixels=spixels, oversample=oversample, phisteps=phisteps,
        mosaic_domains=domains, sources=len(source_lambda), thicksteps=thicksteps, shape=st.shape,
        pivot=pivot, explicit_pix0=st.pix0 is not None, curved=st.curved, point_pixel=st.point_pixel,
        polarization=not st.nopolar, thick_sensor=thick > 0.0, water=st.water != 0.0,
        oversample_thick=st.os_thick, oversample_polar=st.os_polar, oversample_omega=st.os_omega,
        phi_carryover=st.phi_carryover, roi=roi,
        hkl_min=(grid.hmin, grid.kmin, grid.lmin) if grid is not None else None,
        interpolate=bool(interpolate), use_mask=mask_data is not None, tile_pixels=st.tile,
        precision="float32" if st.float32 else None)
    arr = lambda x: np.asarray(x, dtype=dtype)
    params = Params(
        lattice=arr(lattice), ncells=arr([Na, Nb, Nc]), fudge=arr(st.fudge), spindle=arr(spindle),
        phi0=arr(phi0), phistep=arr(phistep), mosaic_umats=arr(umats), default_F=arr(st.default_F),
        fdet=arr(fdet0), sdet=arr(sdet0), odet=arr(odet0), beam=arr(beam_v),
        detector_rotations=arr(st.rot), twotheta_axis=arr(tt_axis), twotheta=arr(st.twotheta),
        beam_center=arr(center), distance=arr(dist_param), pixel_size=arr(px),
        source_dirs=arr(source_dirs), source_lambda=arr(source_lambda), fluence=arr(st.fluence),
        kahn=arr(st.polarization), polar_vector=arr(polar_v), water_size=arr(st.water),
        dmin=arr(st.dmin), thickstep=arr(thickstep), mu=arr(max(mu, 0.0)),
        F_grid=arr(grid.F) if grid is not None else None,
        pix0=arr(st.pix0) if st.pix0 is not None else None,
        mask=arr(mask_data != 0) if mask_data is not None else None)

    try:
        validate.validate(cfg, params)
    except PhysicsError as e:      # name the flags behind the parameter
        raise InputError(f"{_PARAM_FLAGS.get(e.param, e.param)}: {e.detail} ({e.param})") from e

    spot = det_mod.beam_spot(frame, beam_v)
    info = dict(
        convention=conv, pivot=pivot, fpixels=fpixels, spixels=spixels, pixel=px,
        detsize_f=st.detsize_f, detsize_s=st.detsize_s, distance=final_distance, close_distance=final_close,
        Xbeam=Xbeam, Ybeam=Ybeam, Fbeam=float(spot[0]), Sbeam=float(spot[1]),
        Fclose=-float(np.dot(frame["pix0"], frame["fdet"])), Sclose=-float(np.dot(frame["pix0"], frame["sdet"])),
        ORGX=-float(np.dot(frame["pix0"], frame["fdet"])) / px + 0.5,
        ORGY=-float(np.dot(frame["pix0"], frame["sdet"])) / px + 0.5,
        dials_origin=1000.0 * np.array([frame["pix0"][2], frame["pix0"][1], -frame["pix0"][0]]),
        pix0=np.asarray(frame["pix0"]), fdet=np.asarray(frame["fdet"]), sdet=np.asarray(frame["sdet"]),
        odet=np.asarray(frame["odet"]), beam=beam_v, spindle=spindle, polar_vector=polar_v,
        lambda0=st.lambda0, phi0=phi0, osc=osc, phistep=phistep, phisteps=phisteps, twotheta=st.twotheta,
        Ncells=(Na, Nb, Nc), lattice=np.asarray(lattice), oversample=oversample, recommended=recommended,
        mosaic_spread=spread, mosaic_domains=domains, mosaic_seed=st.mosaic_seed, sources=len(source_lambda), divsteps=n_div,
        thick=thick, thicksteps=thicksteps, mu=mu, fluence=st.fluence, misset_random=misset_info,
        hkl=st.hkl, fdump_used=fdump_used, hkl_count=grid.count if grid is not None else 0,
        default_F=st.default_F, shape=st.shape, steps=cfg.steps, grid=grid, dumpfile=st.dumpfile,
        float32=st.float32, demo=st.demo, expt_panels=st.expt_panels)
    options = dict(progress=st.progress, printout=st.printout, printout_pixel=st.printout_pixel,
                   trace_pixel=st.trace_pixel, noise=st.noise, write_pgm=st.write_pgm,
                   intfile_scale=st.intfile_scale, pgm_scale=st.pgm_scale, adc=st.adc, seed=st.seed,
                   noise_jax=st.noise_jax, max_memory=st.max_memory)
    model = dict(cell=cell if st.cell is not None else None, mat_A=mat_A, misset=misset, ncells=(Na, Nb, Nc),
                 spread=spread, domains=domains, grid=grid, interpolate=bool(interpolate),
                 div=(hdivrange, vdivrange), divstep=(hdivstep, vdivstep), divsteps=(hdivsteps, vdivsteps),
                 dispersion=dispersion, dispstep=dispstep, dispsteps=dispsteps,
                 sources=(source_dirs, source_lambda) if st.sourcefile is not None else None,
                 beam=beam_v, polar=polar_v, spindle=spindle, fpixels=fpixels, spixels=spixels, pixel=px,
                 convention=conv, pivot=pivot, beam_center=(Xbeam, Ybeam), close_point=close_point,
                 fdet=fdet0, sdet=sdet0, odet=odet0, twotheta_axis=tt_axis, thick=thick, thickstep=thickstep,
                 thicksteps=thicksteps, mu=max(mu, 0.0), roi=roi, mask=mask_data, phi0=phi0, phistep=phistep,
                 phisteps=phisteps, oversample=oversample)
    setup = Setup(cfg, params, info, dict(st.outputs), options, warnings)
    setup.experiment = _experiment(st, model)
    return setup


def _experiment(st: _State, m: Dict[str, Any]):
    """The :class:`jaxbragg.Experiment` of a resolved command line: the stored (SI) fields set directly to
    the values the reference's rules produced, so that its lowering gives the command line's inputs."""
    from ..experiment import Beam, Crystal, Detector, Experiment, Panel, Scan, mosaic_draws
    f64 = lambda x: np.asarray(x, np.float64)
    cell, grid = m["cell"], m["grid"]
    seed = -int(st.mosaic_seed)
    axes, unit = mosaic_draws(float(m["spread"]), m["domains"], seed)
    xtal = Crystal._si(
        cell_lengths=None if cell is None else f64(cell[:3] * 1e-10), cell_angles=None if cell is None else f64(cell[3:]),
        A=None if m["mat_A"] is None else f64(m["mat_A"]), misset=f64(m["misset"]), rotvec=np.zeros(3),
        ncells=f64(m["ncells"]), fudge=f64(st.fudge), default_F=f64(st.default_F), mosaic_spread=f64(m["spread"]),
        mosaic_axes=axes, mosaic_unit_angles=unit, F=None if grid is None else f64(grid.F), shape=st.shape,
        mosaic_domains=m["domains"], mosaic_seed=seed,
        hkl_origin=None if grid is None else (grid.hmin, grid.kmin, grid.lmin),
        interpolate=m["interpolate"] and grid is not None, cell_rule="reference")
    sources = m["sources"]
    beam = Beam._si(
        wavelength=f64(st.lambda0), fluence=f64(st.fluence), kahn=f64(st.polarization),
        dispersion=f64(m["dispersion"]), dispstep=f64(m["dispstep"]),
        source_vectors=None if sources is None else f64(sources[0]),
        source_wavelengths=None if sources is None else f64(sources[1]), polarized=not st.nopolar,
        divergence=tuple(float(x) for x in m["div"]), divstep=tuple(float(x) for x in m["divstep"]),
        divsteps=tuple(int(x) for x in m["divsteps"]), dispsteps=int(m["dispsteps"]), round_div=bool(st.round_div),
        direction=tuple(float(x) for x in m["beam"]), polar_vector=tuple(float(x) for x in m["polar"]),
        source_weights=None, weights_count=False)
    px, ns = m["pixel"], m["spixels"]
    X, Y = m["beam_center"]
    if m["convention"] == "adxv":       # the model measures Y from px * spixels, the flags from -detsize_s
        Y = Y + (px * ns - st.detsize_s)
    is_close = not math.isnan(st.close_distance)
    panel = Panel._si(
        pixel_size=f64(px), distance=f64(st.close_distance if is_close else st.distance),
        beam_center=f64((X, Y)), close_center=f64(m["close_point"]), rotations=f64(st.rot),
        twotheta=f64(st.twotheta), fdet=f64(m["fdet"]), sdet=f64(m["sdet"]), odet=f64(m["odet"]),
        twotheta_axis=f64(m["twotheta_axis"]), pix0=None if st.pix0 is None else f64(st.pix0),
        thickstep=f64(m["thickstep"]), mu=f64(m["mu"]),
        mask=None if m["mask"] is None else f64(m["mask"] != 0), fpixels=m["fpixels"], spixels=ns,
        convention=m["convention"], pivot=m["pivot"], distance_is_close=is_close, curved=bool(st.curved),
        point_pixel=bool(st.point_pixel), thicksteps=int(m["thicksteps"]), thick_sensor=bool(m["thick"] > 0.0),
        roi=m["roi"])
    scan = Scan._si(phi0=f64(m["phi0"]), phistep=f64(m["phistep"]), spindle=f64(m["spindle"]),
                    phisteps=int(m["phisteps"]), carryover=bool(st.phi_carryover))
    return Experiment._si(
        crystal=xtal, beam=beam, detector=Detector._si(panels=(panel,)), scan=scan, water=f64(st.water),
        dmin=f64(st.dmin), oversample=int(m["oversample"]), oversample_thick=bool(st.os_thick),
        oversample_polar=bool(st.os_polar), oversample_omega=bool(st.os_omega), has_water=st.water != 0.0)


@dataclasses.dataclass
class Run:
    """What a command line asks besides the experiment: the output files and how to compute.

    Attributes:
      outputs: output kind (``float``, ``int``, ``pgm``, ``noise``, ``png``, ``nexus``, ``cbf``) -> path given, if any.
      options: progress, printout, trace pixel, noise/PGM switches and scales, ADC offset, noise seed, ...
      execution: :class:`jaxbragg.Execution` (``-tile``, ``-float32``).
    """
    outputs: Dict[str, Optional[str]]
    options: Dict[str, Any]
    execution: Any


@dataclasses.dataclass
class Translation:
    """A command line translated: the experiment, the run options, and the kernel inputs of the
    command line's own float64 set-up (:class:`Setup`, what the CLI renders)."""
    experiment: Any
    run: Run
    setup: Setup
    parsed: List[Tuple[str, tuple]] = dataclasses.field(default_factory=list)


def translate(argv: List[str], cwd: str = ".") -> Translation:
    """Translate a ``jaxbragg`` command line (a list of tokens) with the reference's rules.

    Raises:
      InputError: one line naming the flag or file, as for :func:`resolve`.
    """
    from ..experiment import Execution
    from .flags import parse
    parsed = parse(list(argv))
    setup = resolve(parsed, cwd)
    if setup.panel_setups:              # -expt with several panels: one detector of every panel
        from ..experiment import Detector
        panels = tuple(s.experiment.detector.panels[0] for s in setup.panel_setups)
        setup.experiment = setup.experiment.replace(detector=Detector._si(panels=panels))
    cfg = setup.config
    run = Run(outputs=dict(setup.outputs), options=dict(setup.options),
              execution=Execution(tile_pixels=cfg.tile_pixels, sample_budget=cfg.sample_budget,
                                  precision=cfg.precision))
    return Translation(setup.experiment, run, setup, parsed)
