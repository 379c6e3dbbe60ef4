"""Reader for amorphous structure-factor profiles (``.stol`` files, nonBragg's ``-stol``).

Format:
    One table point per line, ``x F``: ``x`` is sin(theta)/lambda in 1/Angstrom (or 4 sin(theta)/lambda
    for ``-4stol``, or Q = 4 pi sin(theta)/lambda for ``-Q``) and ``F`` the structure factor of one
    molecule in electrons. Columns are separated by any run of space, tab, ``,``, ``;``, ``:`` or ``!``;
    columns after the second are ignored (``nanoice.stol`` has a third). Lines made only of separators
    are skipped. A line with one column has a missing ``F`` (NaN here; the caller treats it as 0, as
    nonBragg.c does).

Mirrors ``read_text_file()`` of nonBragg.c called with two columns, except that:
    * lines whose first non-separator character is ``#`` are comments (the C's ``atof`` reads such a line
      as the point ``(0, 0)``: ``nanoice.stol`` starts with two of them);
    * every value in the first two columns must be a complete number (the C's ``atof`` turns garbage
      into 0); ``nan`` means missing, ``inf`` is rejected.

Units are those of the file; :mod:`jaxbragg.amorphous` converts to SI.
"""
from __future__ import annotations

import math
import re

import numpy as np

from jaxbragg.io._common import PathLike, fail, parse_number, read_text, show, text_lines

__all__ = ["read_stol"]

_DELIMS = " \t,;:!"
_SPLIT_RE = re.compile(r"[ \t,;:!]+")


def read_stol(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a profile table.

    Returns:
        ``(x, F)`` float64 arrays [n] of raw file values in file order; ``F`` is NaN where a line has
        one column.

    Raises:
        InputError: unreadable or non-UTF-8 file, no points, or a value that is not a finite number
            (the message gives the line).
    """
    text = read_text(path, "profile (.stol) file")
    xs: list[float] = []
    fs: list[float] = []
    for lineno, raw in enumerate(text_lines(text), start=1):
        line = raw.strip(_DELIMS + "\r\n\v\f")
        if not line or line.startswith("#"):
            continue
        row = [math.nan, math.nan]
        for col, token in enumerate(_SPLIT_RE.split(line)[:2]):
            value = parse_number(token)
            if value is None:
                raise fail(path, f"column {col + 1} ({'xF'[col]}) is not a number: {show(token)}", lineno)
            if math.isinf(value) or (col == 0 and math.isnan(value)):
                raise fail(path, f"column {col + 1} ({'xF'[col]}) is not a finite number: {show(token)}",
                           lineno)
            row[col] = value
        xs.append(row[0])
        fs.append(row[1])
    if not xs:
        raise fail(path, "profile file contains no points")
    return np.asarray(xs, dtype=np.float64), np.asarray(fs, dtype=np.float64)
