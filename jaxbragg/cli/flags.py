"""The command-line grammar: every flag nanoBragg.c accepts, with its synonyms and argument types.

Flags are matched by their exact name (the reference matches substrings; see specs/cli.md for the
accidents this avoids). :func:`parse` turns ``argv`` into an ordered list of ``(name, values)`` pairs and
raises :class:`jaxbragg.errors.InputError` (one line, naming the flag) on an unknown flag, a missing value
or a value of the wrong type. The meaning of each flag is applied in order by :mod:`jaxbragg.cli.resolve`.
"""
from __future__ import annotations

import difflib
import math
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import InputError
from ..io._common import parse_number

# kind codes: "" no value, "f" float, "i" int, "s" string, "3f" three floats, "4i" four ints,
# "2i" two ints, "cell" 1-6 floats, "misset" 'random' or three floats, "abs" float or 'inf'
_TABLE: Dict[str, str] = {
    # crystal
    "-cell": "cell", "-mat": "s", "-misset": "misset", "-misset_seed": "i",
    "-N": "f", "-Na": "f", "-Nb": "f", "-Nc": "f",
    "-xtalsize": "f", "-xtal_size": "f", "-samplesize": "f", "-sample_size": "f",
    "-xtal_thick": "f", "-xtal_x": "f", "-sample_thick": "f", "-sample_x": "f",
    "-xtal_width": "f", "-xtal_y": "f", "-sample_width": "f", "-sample_y": "f", "-width": "f",
    "-xtal_height": "f", "-xtal_z": "f", "-sample_height": "f", "-sample_z": "f", "-height": "f",
    "-density": "f", "-sample_density": "f", "-MW": "f", "-molecular_weight": "f",
    "-round_xtal": "", "-square_xtal": "", "-gauss_xtal": "", "-tophat_spots": "", "-binary_spots": "",
    "-fudge": "f",
    "-mosaic": "f", "-mosaicity": "f", "-mosaic_spread": "f", "-mosaic_domains": "i", "-mosaic_dom": "i",
    "-mosaic_seed": "i",
    "-phi": "f", "-osc": "f", "-phistep": "f", "-phisteps": "i", "-spindle_axis": "3f",
    "-phi_carryover": "",
    # structure factors
    "-hkl": "s", "-default_F": "f", "-dump": "s", "-interpolate": "", "-nointerpolate": "",
    "-stol": "s", "-4stol": "s", "-Q": "s", "-stolout": "s", "-water": "f",
    # beam
    "-lambda": "f", "-wave": "f", "-energy": "f", "-fluence": "f", "-flux": "f", "-exposure": "f",
    "-beamsize": "f", "-dispersion": "f", "-dispsteps": "i",
    "-divergence": "f", "-hdivrange": "f", "-vdivrange": "f", "-hdivstep": "f", "-vdivstep": "f",
    "-hdivsteps": "i", "-vdivsteps": "i", "-divsteps": "i", "-round_div": "", "-square_div": "",
    "-sourcefile": "s", "-coherent": "",
    "-polar": "f", "-nopolar": "", "-polar_vector": "3f", "-beam_vector": "3f", "-dmin": "f",
    # detector
    "-distance": "f", "-close_distance": "f", "-pixel": "f",
    "-detsize": "f", "-detsize_f": "f", "-detsize_s": "f",
    "-detpixels": "i", "-detpixels_f": "i", "-detpixels_x": "i", "-detpixels_s": "i", "-detpixels_y": "i",
    "-Xbeam": "f", "-Ybeam": "f", "-Xclose": "f", "-Yclose": "f", "-ORGX": "f", "-ORGY": "f",
    "-pivot": "s", "-mosflm": "", "-xds": "", "-adxv": "", "-denzo": "", "-dials": "",
    "-fdet_vector": "3f", "-sdet_vector": "3f", "-odet_vector": "3f", "-twotheta_axis": "3f",
    "-pix0_vector": "3f", "-pix0_vector_mm": "3f",
    "-detector_rotx": "f", "-detector_roty": "f", "-detector_rotz": "f", "-twotheta": "f",
    "-curved_det": "", "-point_pixel": "",
    "-detector_abs": "abs", "-detector_thick": "f", "-detector_thicksteps": "i", "-thicksteps": "i",
    "-oversample": "i", "-oversample_thick": "", "-oversample_polar": "", "-oversample_omega": "",
    "-roi": "4i", "-img": "s", "-mask": "s",
    # output
    "-floatfile": "s", "-floatimage": "s", "-intfile": "s", "-intimage": "s",
    "-pgmfile": "s", "-pgmimage": "s", "-noisefile": "s", "-noiseimage": "s",
    "-scale": "f", "-pgmscale": "f", "-adc": "f", "-seed": "i",
    "-nonoise": "", "-nopgm": "", "-noprogress": "", "-progress": "",
    "-printout": "", "-printout_pixel": "2i", "-trace_pixel": "2i",
    # jaxbragg additions
    "-demo": "", "-float32": "", "-tile": "i", "-pngfile": "s", "-noise_jax": "", "-max_memory_gb": "f",
    "-nexusfile": "s", "-cbffile": "s",
    "-expt": "s", "-expt_index": "i",
}

#: Other spellings that the reference's usage text or README shows and that the reference accepts (its
#: option loop matches substrings): the same flag under its canonical name.
ALIASES: Dict[str, str] = {"-matrix": "-mat", "-detector_absorb": "-detector_abs", "-adcoffset": "-adc"}

#: Spellings the reference's README shows but the reference silently ignores: errors, with the flag meant.
IGNORED_BY_REFERENCE: Dict[str, str] = {
    "-hdiv": "-hdivrange", "-vdiv": "-vdivrange", "-xdet_vector": "-fdet_vector", "-ydet_vector": "-sdet_vector",
    "-zdet_vector": "-odet_vector", "-thick": "-detector_thick", "-detsize_x": "-detsize_f",
    "-detsize_y": "-detsize_s", "-source_distance": "", "-source_dist": ""}

FLAGS = frozenset(_TABLE) | frozenset(ALIASES)

#: Flags that print the help or the version and exit 0 (handled by :func:`jaxbragg.cli.main`).
HELP_FLAGS = ("-h", "-help", "--help")
VERSION_FLAGS = ("--version",)

#: Integer values are C ``int`` s in the reference (``atoi``): anything outside this range is an error.
INT_MAX = 2**31 - 1


def _to_float(token: str):
    """The value of ``token`` when the whole token is a C-style number (``strtod`` syntax: decimal with an
    optional exponent, ``inf``, ``infinity``, ``nan``), else None. Python's ``float`` is not used on its own:
    it also accepts ``1_000``, surrounding whitespace and non-ASCII digits, which the reference would read
    as something else."""
    return parse_number(token)


def _number(flag: str, token: str, integer: bool) -> float:
    value = _to_float(token)
    if value is None:
        kind = "an integer" if integer else "a number"
        raise InputError(f"{flag}: expected {kind}, got {token!r}")
    if not math.isfinite(value):
        raise InputError(f"{flag}: value must be finite, got {token!r}")
    if integer:
        if value != int(value):
            raise InputError(f"{flag}: expected an integer, got {token!r}")
        if abs(value) > INT_MAX:
            raise InputError(f"{flag}: integer {token!r} is out of range (at most {INT_MAX} in magnitude)")
        return int(value)
    return value


def _is_number(token: str) -> bool:
    value = _to_float(token)
    return value is not None and math.isfinite(value)


def _parses(token: str) -> bool:
    """True for any C-style number, non-finite values included (so they get a precise message)."""
    return _to_float(token) is not None


def _take(argv: List[str], i: int, flag: str, n: int) -> List[str]:
    vals = argv[i + 1:i + 1 + n]
    if len(vals) < n or any(v.startswith("-") and not _parses(v) for v in vals):
        raise InputError(f"{flag}: expected {n} value{'s' if n > 1 else ''}")
    return vals


def unknown_flag(flag: str, names, note: str = "") -> InputError:
    """The one-line error for a token that is no flag of the program (with the closest name)."""
    close = difflib.get_close_matches(flag, sorted(names), n=1, cutoff=0.6)
    if note:
        hint = f" (did you mean {close[0]}? {note})" if close else f" ({note})"
    else:
        hint = f" (did you mean {close[0]}?)" if close else ""
    return InputError(f"unknown flag {flag!r}{hint}")


def take_values(argv: List[str], i: int, flag: str, kind: str, names) -> Tuple[tuple, int]:
    """The values of the flag ``argv[i]`` of a plain kind and how many tokens they use.

    Kinds: ``""`` none, ``"f"``/``"i"`` a number/integer, ``"s"`` a string (not a flag name of ``names``,
    not empty), ``"Nf"``/``"Ni"`` N numbers/integers. Raises InputError naming the flag."""
    if kind == "":
        return (), 0
    if kind in ("f", "i"):
        (tok,) = _take(argv, i, flag, 1)
        return (_number(flag, tok, kind == "i"),), 1
    if kind == "s":
        if i + 1 >= len(argv) or argv[i + 1] in names:
            raise InputError(f"{flag}: expected a value")
        if argv[i + 1] == "":
            raise InputError(f"{flag}: the value is an empty string")
        return (argv[i + 1],), 1
    if len(kind) == 2 and kind[0].isdigit() and kind[1] in "fi":
        n = int(kind[0])
        toks = _take(argv, i, flag, n)
        return tuple(_number(flag, t, kind[1] == "i") for t in toks), n
    raise AssertionError(kind)  # pragma: no cover - table typo guard


def walk(argv: List[str], lookup: Callable[[str], Optional[str]], names, on_unknown: Callable,
         special: Optional[Dict[str, Callable]] = None) -> List[Tuple[str, str, tuple]]:
    """The one command-line walk every program shares: ``[(flag, kind, values), ...]`` in order.

    Args:
      lookup: flag -> kind code (None: not a flag of the program).
      names: every flag name (a string value may not be one).
      on_unknown: ``on_unknown(token, parsed_so_far)`` -> the InputError for a token that is no flag.
      special: program-specific kinds: ``kind -> handler(argv, i, flag) -> (values, used)``; values None
        drops the flag (e.g. a flag the reference ignores in that position).
    """
    out: List[Tuple[str, str, tuple]] = []
    i = 0
    while i < len(argv):
        flag = argv[i]
        kind = lookup(flag)
        if kind is None:
            raise on_unknown(flag, out)
        handler = (special or {}).get(kind)
        vals, used = handler(argv, i, flag) if handler else take_values(argv, i, flag, kind, names)
        if vals is not None:
            out.append((flag, kind, vals))
        i += 1 + used
    return out


def unexpected_value(flag: str, out) -> InputError:
    """A number (or other non-flag token) where a flag should stand."""
    return InputError(f"unexpected argument {flag!r}"
                      + (f" after {out[-1][0]}" if out else " (values must follow a flag)"))


def _nanobragg_unknown(flag: str, out) -> InputError:
    if flag in IGNORED_BY_REFERENCE:
        meant = IGNORED_BY_REFERENCE[flag]
        return InputError(f"unknown flag {flag!r} (nanoBragg ignores it without a word"
                          + (f"; did you mean {meant}?)" if meant else "; it has no effect there)"))
    if flag.startswith("-") and not _is_number(flag):
        return unknown_flag(flag, FLAGS, "jaxbragg -h lists every flag")
    if out:
        prev = out[-1][0]
        n = len(out[-1][2])
        takes = "takes no value" if _TABLE[prev] == "" else f"takes {n} value{'s' if n != 1 else ''}"
        return InputError(f"unexpected argument {flag!r} after {prev} ({prev} {takes})")
    return InputError(f"unexpected argument {flag!r} (values must follow a flag)")


def _cell_values(argv, i, flag):
    toks = []
    while len(toks) < 6 and i + 1 + len(toks) < len(argv) and _parses(argv[i + 1 + len(toks)]) \
            and not argv[i + 1 + len(toks)].startswith("-"):
        toks.append(argv[i + 1 + len(toks)])
    if not toks:
        raise InputError(f"{flag}: expected a b c [alpha beta gamma]")
    return tuple(_number(flag, t, False) for t in toks), len(toks)


def _misset_values(argv, i, flag):
    if i + 1 < len(argv) and argv[i + 1].startswith("rand"):
        return ("random",), 1
    toks = _take(argv, i, flag, 3)
    return tuple(_number(flag, t, False) for t in toks), 3


def _abs_values(argv, i, flag):
    (tok,) = _take(argv, i, flag, 1)
    return (("inf",) if tok.startswith("inf") else (_number(flag, tok, False),)), 1


def parse(argv: List[str]) -> List[Tuple[str, tuple]]:
    """Split ``argv`` into ``[(flag, values), ...]`` in command-line order (aliases resolved)."""
    parsed = walk(argv, lambda f: _TABLE.get(ALIASES.get(f, f)), FLAGS, _nanobragg_unknown,
                  {"cell": _cell_values, "misset": _misset_values, "abs": _abs_values})
    return [(ALIASES.get(flag, flag), vals) for flag, _, vals in parsed]
