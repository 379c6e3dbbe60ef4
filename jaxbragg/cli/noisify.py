"""``jaxbragg-noisify``: a photons/pixel float image in, detector images out (noisify.c's flags).

    jaxbragg-noisify -floatfile in.bin [-scale S] [-psf gauss|fiber -psf_fwhm UM [-psf_radius PX]]
                     [-flicker F] [-calibration C] [-readout ADU] [-gain G] [-adc A] [-bits 16|32]
                     [-seed S] [-calib_seed S] [-intfile F] [-noisefile F] [-pgmfile F | -nopgm] ...

The output is the reference's, bit for bit: the same noiseless SMV (``-intfile``), PGM (``-pgmfile``)
and noisy SMV (``-noisefile``) for the same seeds (the draws are replayed in the C's order by
:mod:`jaxbragg.response_c`). Every flag, unit and default is in specs/noisify.md; flags are spelled
exactly (the C matches substrings), an unknown flag or a bad value is one line on stderr and exit 2, and
the outputs are written all-or-nothing once everything is computed. No JAX is needed on this path.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from ..errors import InputError
from ..io._common import parse_number, read_bytes
from . import common
from .flags import _number, unknown_flag, walk

PROG = "jaxbragg-noisify"
R_E_SQR = 7.94079248018965e-30
#: noisify.c's default fluence: one electron then scatters one photon per steradian (photons/m^2).
DEFAULT_FLUENCE = 125932015286227086360700780544.0

# kind: "" no value, "f" number, "i" integer, "s" string; each synonym maps to one option name
_FLAGS: Dict[str, tuple] = {}


def _add(kind: str, name: str, *spellings: str) -> None:
    for s in spellings:
        _FLAGS[s] = (kind, name)


_add("s", "floatfile", "-floatfile", "-floatimage", "-bin")
_add("s", "header", "-header")
_add("s", "intfile", "-intfile", "-intimage")
_add("s", "pgmfile", "-pgmfile", "-pgmimage")
_add("s", "noisefile", "-noisefile", "-noiseimage")
_add("", "nonoise", "-nonoise")
_add("", "nopgm", "-nopgm")
_add("i", "bits", "-bits")
_add("f", "lambda", "-lambda")
_add("f", "Xbeam", "-Xbeam")
_add("f", "Ybeam", "-Ybeam")
_add("f", "distance", "-distance")
_add("f", "detsize", "-detsize")
_add("f", "detsize_x", "-detsize_x")
_add("f", "detsize_y", "-detsize_y")
_add("i", "detpixels", "-detpixels")
_add("i", "detpixels_x", "-detpixels_x")
_add("i", "detpixels_y", "-detpixels_y")
_add("f", "pixel", "-pixel")
_add("s", "psf", "-psf")
_add("f", "psf_radius", "-psf_radius", "-psf_rad")
_add("f", "psf_fwhm", "-psf_fwhm", "-psf_fw", "-psf_sigma", "-psf_size", "-psf_si", "-psf_width", "-psf_wi")
_add("f", "fluence", "-fluence")
_add("f", "readout", "-readout", "-readout_noise", "-readnoise", "-readnoi")
_add("f", "flicker", "-flicker")
_add("f", "calibration", "-calibration")
_add("f", "scale", "-scale")
_add("i", "seed", "-seed")
_add("i", "calib_seed", "-calib_seed")
_add("i", "badpix_seed", "-badpix_seed")
_add("i", "hotpix_seed", "-hotpix_seed")
_add("f", "adc", "-adc")
_add("f", "gain", "-gain")
_add("f", "phi", "-phi")
_add("f", "osc", "-osc")
_add("", "noprogress", "-noprogress")
_add("", "progress", "-progress")

#: Option defaults (noisify.c's), in the command line's units.
DEFAULTS = dict(floatfile=None, header=None, intfile="intimage.img", pgmfile="image.pgm",
                noisefile="noiseimage.img", nonoise=False, nopgm=False, bits=16, distance=100.0,
                detsize=None, detsize_x=102.4, detsize_y=102.4, detpixels=None, detpixels_x=None,
                detpixels_y=None, pixel=0.1, Xbeam=None, Ybeam=None, psf=None, psf_radius=0.0,
                psf_fwhm=46.0, fluence=DEFAULT_FLUENCE, readout=0.0, flicker=0.0, calibration=0.03,
                scale=1.0, seed=None, calib_seed=None, badpix_seed=None, hotpix_seed=None, adc=40.0,
                gain=1.0, phi=0.0, osc=1.0, noprogress=False, progress=False)
DEFAULTS["lambda"] = 1.0

#: Runs of at least this many pixels report progress on stderr.
PROGRESS_PIXELS = 1 << 19


def parse(argv: List[str]) -> dict:
    """Options from ``argv`` (later flags win, as in the C); raises InputError naming the flag."""
    def lookup(tok):
        if tok in _FLAGS:
            return _FLAGS[tok][0]
        # the C takes any argument naming floatimage.bin as the input image
        return "image" if not tok.startswith("-") and "floatimage.bin" in tok else None

    def value(argv, i, flag):     # noisify takes any next token that is no flag name and not empty
        if i + 1 >= len(argv) or argv[i + 1] in _FLAGS or argv[i + 1] == "":
            raise InputError(f"{flag}: expected a value")
        kind = _FLAGS[flag][0]
        raw = argv[i + 1]
        return (raw if kind == "s" else _number(flag, raw, kind == "i"),), 1

    def unknown(tok, out):
        if tok.startswith("-") and parse_number(tok) is None:
            return unknown_flag(tok, _FLAGS)
        return InputError(f"unexpected argument {tok!r} (values must follow a flag)")

    opts = dict(DEFAULTS)
    opts["_detpixels"] = []
    given = {}
    special = {"image": lambda argv, i, tok: ((tok,), 0), "s": value, "f": value, "i": value}
    for tok, kind, vals in walk(argv, lookup, _FLAGS, unknown, special):
        if kind == "image":
            opts["floatfile"], given["floatfile"] = tok, tok
            continue
        name = _FLAGS[tok][1]
        opts[name] = vals[0] if vals else True
        given[name] = tok
        if name.startswith("detpixels"):
            opts["_detpixels"].append((name, opts[name]))
    opts["_given"] = given
    return opts


def _guess_dims(pixels: int):
    """noisify.c's guess of the detector size from the pixel count: the squarest exact factorisation."""
    x = int(math.sqrt(pixels))
    y = pixels // x if x else 0
    while x > 0 and pixels != x * y:
        x -= 1
        y = pixels // x if x else 0
    if pixels != x * y:
        x, y = pixels, 1
    return x, y


def _read_header(path: str):
    """The raw header bytes of an SMV file and the values noisify reads from it."""
    from ..io.smv import header_value, read_smv
    raw = read_bytes(path, "SMV header file")
    if not raw.startswith(b"{\nHEADER_BYT"):
        raise InputError(f"-header: {path}: does not look like an ADSC (SMV) frame")
    header, _ = read_smv(path)
    nbytes = int(header_value(header, "HEADER_BYTES"))
    return raw[:nbytes], header, header_value


def resolve(opts: dict) -> dict:
    """Apply noisify.c's precedence and defaults; returns the run's settings in SI units."""
    s = {}
    if opts["floatfile"] is None:
        raise InputError("no input image: give -floatfile FILE (raw float32 photons/pixel)")
    if opts["psf"] is not None and opts["psf"] not in ("gauss", "fiber"):
        raise InputError(f"-psf: unknown PSF type {opts['psf']!r} (expected gauss or fiber)")
    if opts["bits"] not in (16, 32):
        raise InputError(f"-bits: {opts['bits']} is not supported (16 or 32)")
    for key in ("pixel",):
        if not opts[key] > 0.0:
            raise InputError(f"-{key}: must be positive, got {opts[key]:g}")
    for key in ("detpixels", "detpixels_x", "detpixels_y"):
        if opts[key] is not None and opts[key] <= 0:
            raise InputError(f"-{key}: must be positive, got {opts[key]}")
    for key in ("readout", "flicker", "calibration"):
        if opts[key] < 0.0:
            raise InputError(f"-{key}: must not be negative, got {opts[key]:g}")
    distance = opts["distance"] / 1000.0
    pixel = opts["pixel"] / 1000.0
    lam = opts["lambda"]
    xbeam = None if opts["Xbeam"] is None else opts["Xbeam"] / 1000.0
    ybeam = None if opts["Ybeam"] is None else opts["Ybeam"] / 1000.0
    xp = yp = 0
    # the C applies -detpixels* in argument order; the last spelling given wins per axis
    for k, v in opts["_detpixels"]:
        if k == "detpixels":
            xp = yp = v
        elif k == "detpixels_x":
            xp = v
        else:
            yp = v
    path = opts["floatfile"]
    try:
        nbytes = os.path.getsize(path)
    except OSError as e:
        raise InputError(f"-floatfile: {path}: cannot read float image: {e.strerror or e}") from None
    pixels = nbytes // 4
    header_raw = None
    if opts["header"] is not None:
        header_raw, header, value = _read_header(opts["header"])
        xp, yp = int(value(header, "SIZE1")), int(value(header, "SIZE2"))
        pixels = xp * yp
        v = value(header, "PIXEL_SIZE")
        if v is not None:
            pixel = v / 1000.0
        v = value(header, "DISTANCE")
        if v is not None:
            distance = v / 1000.0
        v = value(header, "WAVELENGTH")
        if v is not None:
            lam = v / 1e10          # the C's unit slip: the value is then 1e10 too small (printout only)
        v = value(header, "BEAM_CENTER_X")
        if v is not None:
            xbeam = v / 1000.0
        v = value(header, "BEAM_CENTER_Y")
        if v is not None:
            ybeam = pixel * yp - v / 1000.0
    warnings = []
    if not xp and not yp:
        if pixels == 0:
            raise InputError(f"-floatfile: {path}: the file holds no float32 pixels")
        warnings.append("WARNING: guessing xy pixel dimensions.")
        xp, yp = _guess_dims(pixels)
    if xp and not yp:
        yp = pixels // xp
    if yp and not xp:
        xp = pixels // yp
    if xp <= 0 or yp <= 0:
        raise InputError(f"-floatfile: {path}: {nbytes} bytes cannot fill a detector {xp} pixels wide")
    from ..io.floatfile import read_float
    try:
        image = read_float(path, (yp, xp))
    except InputError as e:
        raise InputError(f"-floatfile: {e} (a {xp}x{yp}-pixel detector)") from None
    detsize_x, detsize_y = pixel * xp, pixel * yp
    s.update(image=image, xpixels=xp, ypixels=yp, pixel=pixel, distance=distance, lam=lam,
             detsize_x=detsize_x, detsize_y=detsize_y,
             Xbeam=detsize_x / 2.0 if xbeam is None else xbeam,
             Ybeam=detsize_y / 2.0 if ybeam is None else ybeam,
             header_raw=header_raw, warnings=warnings)
    noise = not opts["nonoise"]
    s["noise"] = noise
    s["calibration"] = opts["calibration"] if noise else 0.0
    s["readout"] = opts["readout"] if noise else 0.0
    s["flicker"] = opts["flicker"] if noise else 0.0
    # seeds are the C's idums: -seed S gives -S; the default seed is -time()
    s["seed"] = -opts["seed"] if opts["seed"] is not None else -int(time.time())
    s["calib_seed"] = -opts["calib_seed"] if opts["calib_seed"] is not None else 123456789
    s["psf"] = opts["psf"]
    from ..response_c import c_int
    s["psf_radius"] = c_int(opts["psf_radius"])       # atof, then the C's int conversion (truncation)
    s["psf_fwhm"] = float(np.float32(opts["psf_fwhm"] / 1e6))    # the C keeps it in a float
    for key in ("scale", "fluence", "gain", "adc", "phi", "osc", "bits"):
        s[key] = opts[key]
    s["files"] = {"int": opts["intfile"]}
    if not opts["nopgm"]:
        s["files"]["pgm"] = opts["pgmfile"]
    if noise:
        s["files"]["noise"] = opts["noisefile"]
    s["inputs"] = {"-floatfile": path}
    if opts["header"] is not None:
        s["inputs"]["-header"] = opts["header"]
    s["progress"] = not opts["noprogress"]
    return s


_FLAG_NAMES = {"int": "-intfile", "pgm": "-pgmfile", "noise": "-noisefile"}


def _smv(pixels: np.ndarray, bits: int, st: dict) -> bytes:
    """SMV bytes as noisify writes them: its own header (or the -header file's), little-endian pixels."""
    from ..io.smv import format_g as g, smv_bytes
    data = np.ascontiguousarray(pixels.reshape(st["ypixels"], st["xpixels"]))
    if st["header_raw"] is not None:
        head = st["header_raw"]
    else:
        items = [("PIXEL_SIZE", g(st["pixel"] * 1000.0)), ("DISTANCE", g(st["distance"] * 1000.0)),
                 ("WAVELENGTH", g(st["lam"])), ("BEAM_CENTER_X", g(st["Xbeam"] * 1000.0)),
                 ("BEAM_CENTER_Y", g((st["detsize_y"] - st["Ybeam"]) * 1000)),
                 ("PHI", g(st["phi"])), ("OSC_START", g(st["phi"])), ("OSC_RANGE", g(st["osc"])),
                 ("DETECTOR_SN", "000"), ("BEAMLINE", "fake")]
        blank = np.zeros(data.shape, np.uint16)
        blob = smv_bytes(blank, items)
        head = blob[:len(blob) - 2 * blank.size]
        if bits == 32:
            # the shared writer knows only unsigned_short: swap the type and keep the 512-byte block
            n = len(head)
            head = head.replace(b"TYPE=unsigned_short;", b"TYPE=long_integer;", 1)
            head = head + b" " * (n - len(head))
    dtype = "<u4" if bits == 32 else "<u2"
    return head + data.astype(dtype).tobytes()


def _counts(adu: np.ndarray, noiseless: bool):
    """noisify's clamps and conversions: (uint32 image, uint16 image)."""
    from ..response_c import adu_to_uint
    a = np.minimum(adu, 2147483647.0)
    a32 = np.minimum(a, 65535.0) if noiseless else a       # the noiseless 32-bit image is capped at 65535
    return adu_to_uint(a32, 32), adu_to_uint(np.minimum(a, 65535.0), 16)


class _Reporter:
    """Progress on stderr for long runs (jaxbragg.cli.Progress), created on first use."""

    def __init__(self, enabled: bool, err):
        self.enabled, self.err, self.bar = enabled, err, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None and self.bar.total != max(int(total), 1):
            self.close()                       # a new phase (noise loop, then the PSF)
        if self.bar is None:
            from . import Progress
            self.bar = Progress(self.err, total)
        self.bar.update(done)
        common.checkpoint()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(argv: List[str], out=None, err=None) -> int:
    """Run one command line; returns the exit status (InputError propagates to :func:`main`)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    with np.errstate(all="ignore"):
        return _run(argv, out, err)


def _run(argv, out, err) -> int:
    from .. import response_c as rc
    opts = parse(argv)
    st = resolve(opts)
    files = st["files"]
    common.check_writable(list(files.values()))
    common.check_distinct(files, _FLAG_NAMES, st["inputs"])
    p = lambda *a, **k: print(*a, file=out, **k)
    xp, yp = st["xpixels"], st["ypixels"]
    pixels = xp * yp
    image = st["image"].ravel()
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        raise InputError(f"-floatfile: {opts['floatfile']}: {bad} pixels are NaN or infinite")

    p(f"{PROG}: photons/pixel image -> detector images (noisify-compatible)")
    for w in st["warnings"]:
        p(w)
    if st["header_raw"] is not None:
        p(f"taking header from {opts['header']}")
        p(f"reading {opts['header']}")
    p(f"importing {pixels} pixel intensites: {opts['floatfile']}")
    p(f"  distance={st['distance']:g} detsize={st['detsize_x']:g}x{st['detsize_y']:g}  pixel={st['pixel']:g} "
      f"meters ({xp}x{yp} pixels)")
    p(f"  Xbeam={st['Xbeam']:g} Ybeam={st['Ybeam']:g}")
    psf, rad, fwhm = st["psf"], st["psf_radius"], st["psf_fwhm"]
    if psf == "gauss":
        p(f"  Gaussian PSF fwhm = {fwhm * 1e6:g} um ", end="")
    if psf == "fiber":
        p(f"  fiber PSF fwhm = {fwhm * 1e6:g} um ", end="")
    if psf is not None and rad == 0:
        p("  with automatic rendering radius")
    if psf is not None and rad >= 0:
        p(f"  with rendering radius: {rad}")
    p(f"  seed: {st['seed']}")
    p(f"  calibration noise seed: {st['calib_seed']}")
    p(f"  calibration_noise = {st['calibration'] * 100:g} %")
    p(f"  input file scale = {st['scale']:g}")
    p(f"  readout_noise = {st['readout']:g} ADU")
    p(f"  flicker_noise = {st['flicker'] * 100:g} %")
    p(f"  quantum_gain = {st['gain']:g} ADU/photon")
    p(f"  adc_offset = {st['adc']:g} ADU")
    p("")

    negative = np.flatnonzero(image < 0.0)
    for v in image[negative[:10]]:
        p(f"WARNING: negative intensity in {opts['floatfile']}: {float(v):g}")
    if len(negative) > 10:
        p(f"WARNING: {len(negative) - 10} more negative intensities")
    max_i = max(float(image.max()), 0.0)
    photon = (st["fluence"] * R_E_SQR) * st["scale"] * image.astype(np.float64)
    photon = photon.astype(np.float32)
    p(f"maximum value in input file: {max_i:g} ( {max_i * st['scale'] * st['fluence'] * R_E_SQR:g} "
      f"on photon scale)")
    if not np.all(np.isfinite(photon)):
        raise InputError("-scale/-fluence: the scaled image exceeds the float32 range")
    out.flush()

    report = _Reporter(st["progress"] and pixels >= PROGRESS_PIXELS, err)
    fwhm_px = fwhm / st["pixel"]
    apply = psf is not None and fwhm > 0.0
    try:
        if not st["noise"] and apply:
            p(f"  applying PSF to noiseless image width = {fwhm_px:g} pixels")
            photon = rc.apply_psf_c(photon.reshape(yp, xp), psf, fwhm_px, rad, log=p,
                                    progress=report).ravel()
        bits = st["bits"]
        adu = photon.astype(np.float64) * st["gain"] + st["adc"]
        int32, int16 = _counts(adu, noiseless=True)
        blobs = {"int": _smv(int32 if bits == 32 else int16, bits, st)}
        p(f"writing {files['int']} as {pixels} {bits // 8}-byte integers")
        if "pgm" in files:
            from ..io.pgm import pgm_bytes
            pgm = np.minimum(int16, 255).astype(np.uint8).reshape(yp, xp)
            blobs["pgm"] = pgm_bytes(pgm, 1.0)
            p(f"writing {files['pgm']} as 1-byte integers")
        if st["noise"]:
            rng = rc.CRandom(st["seed"])
            counts, _ = rc.noise_loop_c(photon, st["seed"], st["calib_seed"], st["flicker"],
                                        st["calibration"], rng=rng,
                                        progress=lambda d: report(d, pixels))
            photon = counts
            if apply:
                p(f"{np.cumsum(photon, dtype=np.float64)[-1]:.0f} photons on noise image before PSF")
                p(f"  applying PSF width = {fwhm * 1e6:g} um")
                photon = rc.apply_psf_c(photon.reshape(yp, xp), psf, fwhm_px, rad, log=p,
                                        progress=report).ravel()
            total = float(np.cumsum(photon, dtype=np.float64)[-1])
            adu = photon.astype(np.float64) * st["gain"] + st["adc"]
            if st["readout"] > 0.0:
                adu = adu + st["readout"] * rc.readout_c(pixels, rng).astype(np.float64)
            over32 = int(np.count_nonzero(adu > 2147483647.0))
            over16 = int(np.count_nonzero(np.minimum(adu, 2147483647.0) > 65535.0))
            int32, int16 = _counts(adu, noiseless=False)
            p(f"{total:.0f} photons on noise image ({over32 if bits == 32 else over16} overloads)")
            blobs["noise"] = _smv(int32 if bits == 32 else int16, bits, st)
            p(f"writing {files['noise']} as {bits // 8}-byte integers")
    finally:
        report.close()
    common.checkpoint()
    writes = [(files[k], blobs[k], False) for k in ("int", "pgm", "noise") if k in blobs]
    interrupted = common.write_outputs(writes, out)
    if interrupted:
        print(f"{PROG}: interrupted after the output files were written", file=sys.stderr)
        return 130
    return 0


USAGE = (f"usage: {PROG} -floatfile floatimage.bin [-scale S] [-gain G] [-adc A] [-readout ADU] "
         "[-flicker F] [-calibration C]\n"
         "       [-seed S] [-calib_seed S] [-psf gauss|fiber -psf_fwhm UM [-psf_radius PX]] [-bits 16|32]\n"
         "       [-intfile F] [-noisefile F] [-pgmfile F | -nopgm] [-nonoise] [-header SMV] [-detpixels N]\n"
         "see specs/noisify.md for every flag")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return common.program_main(PROG, argv, USAGE, lambda: USAGE, lambda: run(argv), "use a smaller image")


def entry() -> None:  # pragma: no cover - exercised by the installed console script
    common.exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
