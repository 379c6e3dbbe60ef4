"""Reader for beam source-list files (``-sourcefile``).

Format:
    One source per line with up to five columns ``X Y Z weight lambda``,
    separated by any run of the characters space, tab, ``,``, ``;``, ``:`` or
    ``!``.  Columns beyond the fifth are ignored.  Lines made only of
    separators are skipped.  Units are those the reference program assumes:
    ``X Y Z`` is the position of the source in metres relative to the sample
    (only its direction matters), ``weight`` is a relative intensity (read
    but unused by the reference) and ``lambda`` is the wavelength in METRES.

Mirrors ``read_text_file()`` in nanoBragg.c as called for ``-sourcefile``
with five output columns: a missing trailing column stays NaN and the caller
substitutes defaults (beam direction, weight 1, the global wavelength).

Differences from the C:
    * every value among the first five columns must be a complete number (the
      C's ``atof`` turns garbage into 0); ``nan`` is accepted and means
      "missing, use the default", ``inf`` is rejected;
    * lines whose first non-separator character is ``#`` are comments;
    * CRLF endings and a missing final newline are handled (the C then
      stores 0 instead of NaN in missing columns).
"""

from __future__ import annotations

import math
import re

import numpy as np

from jaxbragg.io._common import PathLike, fail, parse_number, read_text, show, text_lines

__all__ = ["read_sourcefile", "read_sources", "SOURCE_COLUMNS"]

#: Column names of the array returned by :func:`read_sourcefile`.
SOURCE_COLUMNS = ("X", "Y", "Z", "weight", "lambda")

_DELIMS = " \t,;:!"
_SPLIT_RE = re.compile(r"[ \t,;:!]+")


def read_sourcefile(path: PathLike) -> np.ndarray:
    """Read a source list into an ``(n, 5)`` float64 array.

    Args:
        path: the source file.

    Returns:
        Array with columns ``X, Y, Z, weight, lambda`` (see
        :data:`SOURCE_COLUMNS`), raw file values, NaN where a line has fewer
        than five columns.

    Raises:
        InputError: unreadable or non-UTF-8 file, no sources, a value that is
            not a number or is infinite (message gives ``line N``).
    """
    return read_sources(path)[0]


def read_sources(path: PathLike) -> tuple[np.ndarray, list[int]]:
    """Like :func:`read_sourcefile`, also returning the 1-based line number of each row (so that a
    caller's later checks, e.g. a zero wavelength, can name the line)."""
    text = read_text(path, "source file")
    rows: list[list[float]] = []
    linenos: list[int] = []
    for lineno, raw in enumerate(text_lines(text), start=1):
        line = raw.strip(_DELIMS + "\r\n\v\f")
        if not line or line.startswith("#"):
            continue
        row = [math.nan] * 5
        for col, token in enumerate(_SPLIT_RE.split(line)[:5]):
            value = parse_number(token)
            if value is None:
                raise fail(
                    path,
                    f"column {col + 1} ({SOURCE_COLUMNS[col]}) is not a number: "
                    f"{show(token)}",
                    lineno,
                )
            if math.isinf(value):
                raise fail(
                    path,
                    f"column {col + 1} ({SOURCE_COLUMNS[col]}) is infinite",
                    lineno,
                )
            row[col] = value
        rows.append(row)
        linenos.append(lineno)
    if not rows:
        raise fail(path, "source file contains no sources")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5), linenos
