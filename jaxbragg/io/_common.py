"""Private helpers shared by the :mod:`jaxbragg.io` readers and writers.

Contents:
    * C-``strtod``-like number recognition (decimal, exponent, ``inf``,
      ``infinity``, ``nan``; no hexadecimal floats, no digit separators).
    * Strict text loading (UTF-8, optional BOM) with :class:`InputError`
      messages that name the file.
    * Atomic file replacement used by every writer (:func:`atomic_write`), and
      its two halves :func:`stage` / :func:`commit` for writing several files
      all-or-nothing.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Iterable, Union

from jaxbragg.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

# One number as the C library's strtod/atof would accept it (minus hex forms).
NUMBER_PATTERN = (
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)"
)
_NUMBER_RE = re.compile(NUMBER_PATTERN, re.IGNORECASE)
_FULL_NUMBER_RE = re.compile(NUMBER_PATTERN + r"\Z", re.IGNORECASE)
# A number inside free text must end at whitespace, at the end of the text, or
# where the sign of an abutting number starts (fixed-width Fortran output such
# as "0.0123-0.0456" holds two numbers, exactly as fscanf("%lg") reads it).
SCAN_RE = re.compile(r"\s*(" + NUMBER_PATTERN + r")(?=[\s+-]|\Z)", re.IGNORECASE)

_MAX_SHOWN = 40


def show(token: str) -> str:
    """Return a short, single-line ``repr`` of *token* for error messages."""
    if len(token) > _MAX_SHOWN:
        token = token[:_MAX_SHOWN] + "..."
    return repr(token)


def where(path: PathLike, line: int | None = None) -> str:
    """Return the ``"<file>"`` or ``"<file>: line N"`` prefix of a message."""
    name = os.fspath(path)
    return f"{name}: line {line}" if line is not None else f"{name}"


def fail(path: PathLike, message: str, line: int | None = None) -> InputError:
    """Build a one-line :class:`InputError` naming *path* (and *line*)."""
    text = f"{where(path, line)}: {message}"
    return InputError(" ".join(text.split("\n")))


def parse_number(token: str) -> float | None:
    """Parse *token* as a whole C-style number; ``None`` if it is not one."""
    if _FULL_NUMBER_RE.match(token) is None:
        return None
    return float(token)


def scan_numbers(text: str, limit: int) -> tuple[list[float], str | None]:
    """Read up to *limit* numbers from the start of *text*, fscanf-style.

    Numbers may be separated by whitespace or abut when the next one starts
    with a sign.

    Returns:
        ``(values, bad)`` where *bad* is the offending token when scanning
        stopped at something that is not a number, or ``None`` when it stopped
        because *limit* was reached or the text ran out.
    """
    values: list[float] = []
    pos = 0
    n = len(text)
    while len(values) < limit:
        m = SCAN_RE.match(text, pos)
        if m is None:
            rest = text[pos:].lstrip()
            if not rest:
                return values, None
            return values, rest.split(None, 1)[0]
        values.append(float(m.group(1)))
        pos = m.end()
        if pos >= n:
            break
    return values, None


def read_text(path: PathLike, what: str) -> str:
    """Load a text file strictly as UTF-8 (a leading BOM is dropped).

    Raises:
        InputError: the file cannot be opened/read or is not valid UTF-8.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise fail(path, f"cannot read {what}: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise fail(
            path,
            f"{what} is not a UTF-8 text file (undecodable byte 0x{raw[exc.start]:02x})",
            line,
        ) from exc


def read_bytes(path: PathLike, what: str) -> bytes:
    """Load a whole binary file, turning ``OSError`` into :class:`InputError`."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise fail(path, f"cannot read {what}: {exc.strerror or exc}") from exc


def text_lines(text: str) -> list[str]:
    """Split on ``\\n`` only (so line numbers match ``wc -l``), dropping ``\\r``."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def stage(path: PathLike, chunks: Iterable[bytes]) -> str:
    """Write *chunks* to a new, uniquely named temporary file next to *path*.

    Returns the temporary file's name; :func:`commit` moves it over *path*,
    :func:`discard` removes it.  Nothing is left behind when this fails or is
    interrupted (``KeyboardInterrupt`` included).

    Raises:
        InputError: the destination directory cannot be written.
    """
    target = os.fspath(path)
    directory, base = os.path.split(target)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise fail(target, f"cannot write file: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
    except BaseException as exc:
        discard(tmp)
        if isinstance(exc, OSError):
            raise fail(target, f"cannot write file: {exc.strerror or exc}") from exc
        raise
    return tmp


def discard(tmp: str) -> None:
    """Remove a temporary file made by :func:`stage` (if it is still there)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def commit(tmp: str, path: PathLike) -> None:
    """Move the staged file *tmp* over *path* (one atomic rename).

    Raises:
        InputError: the rename failed (the temporary file is removed).
    """
    try:
        os.replace(tmp, os.fspath(path))
    except BaseException as exc:
        discard(tmp)
        if isinstance(exc, OSError):
            raise fail(path, f"cannot write file: {exc.strerror or exc}") from exc
        raise


def atomic_write(path: PathLike, chunks: Iterable[bytes]) -> None:
    """Write *chunks* to *path* atomically.

    The bytes go to a uniquely named temporary file in the destination
    directory, which is then moved over *path* with :func:`os.replace`, so a
    reader never sees a half-written file.  The temporary file is created with
    mode ``0o666`` filtered by the process umask, like a plain ``open``.

    Raises:
        InputError: the destination cannot be written.
    """
    commit(stage(path, chunks), path)
