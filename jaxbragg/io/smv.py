"""Reader and writer for SMV (ADSC-style) detector images, plus C ``%g``.

Format:
    An ASCII header ``{\\n`` ``KEY=VALUE;\\n`` ... ``}\\f`` padded with spaces
    to ``HEADER_BYTES`` (512 for nanoBragg), followed by ``SIZE1*SIZE2``
    pixels of the header's ``TYPE`` (unsigned 16-bit when absent), fast axis (``SIZE1``) varying fastest, in the
    byte order named by ``BYTE_ORDER``.

Reading mirrors ``GetFrame()``/``ValueOf()`` in nanoBragg.c: the header
length comes from ``HEADER_BYTES`` found in the first 512 bytes, the last
occurrence of a key wins, pixels are byte-swapped when ``BYTE_ORDER`` is not
``little_endian`` and, when ``SIZE1`` is absent, ``DETECTOR_DIMENSIONS``
supplies both sizes.  Unlike ``ValueOf()`` (a substring search) keys are
matched whole.

Writing mirrors the ``-intfile``/``-noisefile`` SMV writers in nanoBragg.c:
``{\\n``, one ``KEY=VALUE;\\n`` line per item, ``}\\f``, space padding to 512
bytes, then little-endian pixels.  The reference writes its ``DIALS_ORIGIN``
line with no ``;``; pass that item as the 3-tuple
``("DIALS_ORIGIN", value, "\\n")`` to reproduce it byte for byte.  Header
values are returned and accepted as raw strings (the C writes mm, Angstrom
and degrees).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence, Union

import numpy as np

from jaxbragg.io._common import MAX_BINARY_BYTES, PathLike, atomic_write, check_input, fail

__all__ = [
    "read_smv",
    "write_smv",
    "header_value",
    "format_g",
    "smv_bytes",
    "DEFAULT_TERMINATOR",
    "UNTERMINATED",
]

#: What follows a value unless an item says otherwise.
DEFAULT_TERMINATOR = ";\n"
#: Terminator of the reference's ``DIALS_ORIGIN`` line (no semicolon).
UNTERMINATED = "\n"

_BLOCK = 512
#: The largest SMV header accepted (real ones are 512 to 4096 bytes).
MAX_HEADER_BYTES = 1 << 20
_ATOF_RE = re.compile(
    r"\s*([+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan))",
    re.IGNORECASE,
)

HeaderItem = Union[tuple[str, str], tuple[str, str, str]]


def format_g(x: float) -> str:
    """Format *x* exactly as C ``printf("%g")`` does with glibc.

    Python's ``%g`` already matches C for finite values and infinities; NaN
    is printed as ``nan`` or, when its sign bit is set, ``-nan`` (glibc's
    spelling, e.g. for the result of ``0.0/0.0`` on x86).
    """
    x = float(x)
    if math.isnan(x):
        return "-nan" if math.copysign(1.0, x) < 0 else "nan"
    return "%g" % x


def _atof(text: str) -> float:
    m = _ATOF_RE.match(text)
    return float(m.group(1)) if m else 0.0


def header_value(header: dict, key: str) -> float | None:
    """Numeric value of *key* in a parsed header, like the C's ``ValueOf``.

    Args:
        header: mapping returned by :func:`read_smv`.
        key: header keyword, matched exactly.

    Returns:
        ``None`` if the key is absent; otherwise the leading number of its
        value as ``atof`` reads it (``0.0`` when the value does not start with
        a number, e.g. ``"-3.3,3.3,-100"`` gives ``-3.3``).
    """
    if key not in header:
        return None
    return _atof(str(header[key]))


def _parse_header(text: str) -> dict[str, str]:
    body = text[1:] if text.startswith("{") else text
    end = body.find("}")
    if end >= 0:
        body = body[:end]
    header: dict[str, str] = {}
    for piece in re.split(r"[;\n]", body):
        if "=" not in piece:
            continue
        key, value = piece.split("=", 1)
        key = key.strip()
        if not key:
            continue
        if key in header:
            del header[key]  # keep dict order = order of the winning (last) entry
        header[key] = value.strip()
    return header


def _positive_int(header: dict, key: str, path: PathLike) -> int | None:
    if key not in header:
        return None
    value = header_value(header, key)
    if value is None or not math.isfinite(value) or value <= 0 or value != int(value):
        raise fail(path, f"SMV header {key}={header[key]!r} is not a positive integer")
    return int(value)


#: Pixel types an SMV header may name (``TYPE=``), with their sizes; absent means unsigned_short.
SMV_TYPES = {
    "unsigned_short": "u2", "signed_short": "i2", "short": "i2",
    "unsigned_long": "u4", "unsigned_int": "u4", "signed_long": "i4", "long": "i4", "int": "i4",
    "float": "f4", "float32": "f4", "double": "f8",
    "long_integer": "u4",       # what noisify -bits 32 writes (unsigned 32-bit pixels)
}


def read_smv(path: PathLike) -> tuple[dict[str, str], np.ndarray]:
    """Read an SMV image.

    Args:
        path: the image file.

    Returns:
        ``(header, data)``: header keys to raw string values (last occurrence
        wins, surrounding whitespace and ``;`` removed) in file order, and a
        native-endian array of shape ``(SIZE2, SIZE1)`` of the header's
        ``TYPE`` (:data:`SMV_TYPES`; ``uint16`` when there is no ``TYPE``, as
        nanoBragg writes and reads it).

    Raises:
        InputError: unreadable file, not an SMV file (must start with ``{``
            and give ``HEADER_BYTES``), missing or non-positive
            ``SIZE1``/``SIZE2``, a ``TYPE`` not in :data:`SMV_TYPES`, or fewer
            pixel bytes than the header needs.  Only the header and the bytes
            it describes are read, however large the file.
    """
    size = check_input(path, "SMV image")
    try:
        with open(path, "rb") as handle:
            return _read_smv(path, handle, size)
    except OSError as exc:
        raise fail(path, f"cannot read SMV image: {exc.strerror or exc}") from exc


def _read_smv(path: PathLike, handle, size: int) -> tuple[dict[str, str], np.ndarray]:
    raw = handle.read(_BLOCK)
    if not raw.startswith(b"{"):
        raise fail(path, "not an SMV image (file does not start with '{')")
    first = _parse_header(raw.decode("latin-1"))
    if "HEADER_BYTES" not in first:
        raise fail(path, "not an SMV image (no HEADER_BYTES in the first 512 bytes)")
    header_bytes = _positive_int(first, "HEADER_BYTES", path)
    if header_bytes > MAX_HEADER_BYTES:
        raise fail(path, f"SMV header HEADER_BYTES={header_bytes} is larger than {MAX_HEADER_BYTES}")
    if header_bytes > len(raw):
        raw += handle.read(header_bytes - len(raw))
    if len(raw) < header_bytes:
        raise fail(
            path,
            f"SMV file is {len(raw)} bytes, shorter than HEADER_BYTES={header_bytes}",
        )
    header = _parse_header(raw[:header_bytes].decode("latin-1"))
    width = _positive_int(header, "SIZE1", path)
    height = _positive_int(header, "SIZE2", path)
    if width is None and height is None and "DETECTOR_DIMENSIONS" in header:
        width = height = _positive_int(header, "DETECTOR_DIMENSIONS", path)
    if width is None or height is None:
        missing = "SIZE1" if width is None else "SIZE2"
        raise fail(path, f"SMV header has no {missing}")
    kind = header.get("TYPE", "unsigned_short").strip().lower()
    if kind not in SMV_TYPES:
        raise fail(path, f"SMV header TYPE={header['TYPE']!r} is not a pixel type this reader knows "
                         f"({', '.join(sorted(SMV_TYPES))})")
    order = header.get("BYTE_ORDER", "little_endian")
    dtype = np.dtype(("<" if order[:10] == "little_end" else ">") + SMV_TYPES[kind])
    need = dtype.itemsize * width * height
    if size - header_bytes < need:
        raise fail(
            path,
            f"SMV data truncated: {size - header_bytes} bytes after the header, "
            f"{width}x{height} {kind} pixels need {need}",
        )
    if need > MAX_BINARY_BYTES:
        raise fail(path, f"SMV header describes {width}x{height} {kind} pixels, more than the "
                         f"{MAX_BINARY_BYTES}-byte input limit")
    body = raw[header_bytes:] + handle.read(max(need - (len(raw) - header_bytes), 0))
    if len(body) < need:
        raise fail(
            path,
            f"SMV data truncated: {len(body)} bytes after the header, "
            f"{width}x{height} {kind} pixels need {need}",
        )
    data = np.frombuffer(body, dtype=dtype, count=width * height)
    return header, data.reshape(height, width).astype(dtype.newbyteorder("="))


def _check_key(key: str) -> None:
    if not key or any(c in key for c in "=;\n{}") or key != key.strip():
        raise ValueError(f"invalid SMV header key {key!r}")


def _check_value(key: str, value: str, terminator: str) -> None:
    if any(c in value for c in ";\n}") or "}" in terminator:
        raise ValueError(f"invalid SMV header value for {key}: {value!r}")
    if not terminator.endswith("\n"):
        raise ValueError(f"SMV header terminator for {key} must end in a newline")


def _normalise_items(
    data: np.ndarray, items: Iterable[Sequence[str]]
) -> list[list[str]]:
    rows: list[list[str]] = []
    for item in items:
        if len(item) == 2:
            key, value = item
            term = DEFAULT_TERMINATOR
        elif len(item) == 3:
            key, value, term = item
        else:
            raise ValueError(f"SMV header item must be (key, value[, terminator]): {item!r}")
        key, value, term = str(key), str(value), str(term)
        _check_key(key)
        _check_value(key, value, term)
        rows.append([key, value, term])
    keys = [r[0] for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys in SMV header items")

    height, width = data.shape
    required = {
        "HEADER_BYTES": str(_BLOCK),
        "DIM": "2",
        "BYTE_ORDER": "little_endian",
        "TYPE": "unsigned_short",
        "SIZE1": str(width),
        "SIZE2": str(height),
    }
    for row in rows:
        key, value = row[0], row[1]
        if key in ("SIZE1", "SIZE2", "DIM") and _atof(value) != float(required[key]):
            raise ValueError(f"SMV item {key}={value} disagrees with data ({required[key]})")
        if key in ("BYTE_ORDER", "TYPE") and value != required[key]:
            raise ValueError(f"SMV item {key}={value}: only {required[key]} is written")
    # HEADER_BYTES always leads: readers (the C's GetFrame included) look for
    # "{\nHEADER_BYTES=" at the very start of the file.
    first = [r for r in rows if r[0] == "HEADER_BYTES"] or [
        ["HEADER_BYTES", required["HEADER_BYTES"], DEFAULT_TERMINATOR]
    ]
    missing = [
        [k, v, DEFAULT_TERMINATOR]
        for k, v in required.items()
        if k not in keys and k != "HEADER_BYTES"
    ]
    return first + missing + [r for r in rows if r[0] != "HEADER_BYTES"]


def _render(rows: list[list[str]], header_bytes: int) -> bytes:
    parts = ["{\n"]
    for key, value, term in rows:
        if key == "HEADER_BYTES":
            value = str(header_bytes)
        parts.append(f"{key}={value}{term}")
    parts.append("}\f")
    return "".join(parts).encode("latin-1")


def smv_bytes(data: np.ndarray, header_items: Iterable[HeaderItem]) -> bytes:
    """Return the exact bytes :func:`write_smv` would write."""
    pixels = _as_uint16(data)
    rows = _normalise_items(pixels, header_items)
    header_bytes = _BLOCK
    while True:
        text = _render(rows, header_bytes)
        if len(text) <= header_bytes:
            break
        header_bytes = -(-len(text) // _BLOCK) * _BLOCK
    text = text + b" " * (header_bytes - len(text))
    return text + pixels.astype("<u2").tobytes(order="C")


def _as_uint16(data: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"SMV data must be a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype == np.uint16:
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"SMV data must be unsigned 16-bit integers, got {arr.dtype}")
    if arr.min() < 0 or arr.max() > 65535:
        raise ValueError("SMV data values must lie in 0..65535")
    return arr.astype(np.uint16)


def write_smv(
    path: PathLike,
    data_uint16_2d: np.ndarray,
    header_items: Iterable[HeaderItem],
) -> None:
    """Write an SMV image the way nanoBragg does.

    Args:
        path: destination; replaced atomically.
        data_uint16_2d: pixels, shape ``(slow, fast)`` = ``(SIZE2, SIZE1)``;
            any integer dtype with values in 0..65535 is accepted.
        header_items: ordered ``(key, value)`` pairs written as
            ``KEY=VALUE;\\n``, or ``(key, value, terminator)`` triples whose
            terminator (ending in a newline) replaces ``";\\n"`` -- use
            ``("DIALS_ORIGIN", v, UNTERMINATED)`` to match the C.
            ``HEADER_BYTES`` is always written first (moved there if given
            elsewhere) with its value set to the real header length (512, or
            the next multiple of 512 when the text does not fit); missing
            ``DIM, BYTE_ORDER, TYPE, SIZE1, SIZE2`` follow it in that order,
            then the remaining items in the order given.

    Raises:
        ValueError: malformed items, or items contradicting the data
            (``SIZE1``/``SIZE2``/``DIM``, a ``BYTE_ORDER`` other than
            ``little_endian``, a ``TYPE`` other than ``unsigned_short``).
        InputError: the destination cannot be written.
    """
    atomic_write(path, [smv_bytes(data_uint16_2d, header_items)])
