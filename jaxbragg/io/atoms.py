"""Point-scatterer lists for nearBragg (``-file``).

Format:
    One scatterer per line: ``X Y Z [occupancy [B [phase]]]``, X Y Z in Angstrom (x along the beam),
    B in A^2, the phase shift in degrees. Missing columns default to occupancy 1, B 0 and phase -90
    degrees (the reference's defaults). Fields are separated by any of the reference's delimiters
    (space, tab, ``,``, ``;``, ``:``, ``!``). Blank lines and lines starting with ``#`` are skipped;
    ``#`` also ends a line's data. Lines may end in LF, CRLF or a lone CR.

Mirrors the two ``fgets`` passes in ``main()`` of nearBragg.c, but strictly: a field that is not a number,
a non-finite number, fewer than three or more than six fields, or a file without scatterers is an error
naming the file and line (the C's ``atof`` reads garbage as 0 and ignores extra fields).
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np

from jaxbragg.io._common import PathLike, fail, parse_number, read_text, show

__all__ = ["AtomList", "read_atoms", "parse_atoms", "ATOM_COLUMNS"]

ATOM_COLUMNS = ("x", "y", "z", "occupancy", "B", "phase")
_DEFAULTS = (1.0, 0.0, -90.0)
_SPLIT = re.compile(r"[ \t\r\f\v,;:!]+")


class AtomList(NamedTuple):
    """Raw file values: ``xyz`` [N, 3] Angstrom, ``occupancy`` [N], ``b_factor`` [N] A^2,
    ``phase_deg`` [N] degrees (float64)."""
    xyz: np.ndarray
    occupancy: np.ndarray
    b_factor: np.ndarray
    phase_deg: np.ndarray


def parse_atoms(text: str, path: PathLike = "<atoms>") -> AtomList:
    """Parse the text of an atom file (see the module docstring); errors name ``path`` and the line."""
    rows = []
    # a lone CR ends a line too (old Mac files); CRLF counts once
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        data = line.split("#", 1)[0]
        fields = [f for f in _SPLIT.split(data) if f]
        if not fields:
            continue
        if len(fields) < 3:
            raise fail(path, f"expected X Y Z [occupancy [B [phase]]], got {len(fields)} field"
                             f"{'s' if len(fields) != 1 else ''}", number)
        if len(fields) > 6:
            raise fail(path, f"expected at most 6 fields (X Y Z occupancy B phase), got {len(fields)}", number)
        values = []
        for name, token in zip(ATOM_COLUMNS, fields):
            value = parse_number(token)
            if value is None:
                raise fail(path, f"{name} {show(token)} is not a number", number)
            if not math.isfinite(value):
                raise fail(path, f"{name} {show(token)} is not finite", number)
            values.append(value)
        values += list(_DEFAULTS[len(values) - 3:])
        rows.append(values)
    if not rows:
        raise fail(path, "no scatterers (every line is blank or a comment)")
    arr = np.asarray(rows, dtype=np.float64)
    return AtomList(arr[:, :3].copy(), arr[:, 3].copy(), arr[:, 4].copy(), arr[:, 5].copy())


def read_atoms(path: PathLike) -> AtomList:
    """Read an atom file (UTF-8, optional BOM).

    Raises:
        InputError: unreadable file or a malformed line (one line naming the file and line).
    """
    return parse_atoms(read_text(path, "atom list"), path)
