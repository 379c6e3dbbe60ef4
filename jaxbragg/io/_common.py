"""Private helpers shared by the :mod:`jaxbragg.io` readers and writers.

Contents:
    * C-``strtod``-like number recognition (decimal, exponent, ``inf``,
      ``infinity``, ``nan``; no hexadecimal floats, no digit separators).
    * Strict text loading (UTF-8, optional BOM) with :class:`InputError`
      messages that name the file.
    * Input checks: only regular files, of bounded size (:func:`check_input`); text read with
      LF, CRLF or CR line endings (:func:`text_lines`).
    * All-or-nothing output used by every writer (:func:`atomic_write`), and its two halves
      :func:`stage` / :func:`commit` for writing several files all-or-nothing; the rules for each
      kind of output path (:func:`output_target`, :func:`check_output`); :func:`same_file`.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from typing import Iterable, NamedTuple, Optional, Tuple, Union

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


#: The largest text input accepted (structure-factor lists, matrices, source lists, profiles): 1 GiB.
MAX_TEXT_BYTES = 1 << 30
#: The largest binary input accepted (SMV, raw float images, Fdump caches): 16 GiB.
MAX_BINARY_BYTES = 1 << 34


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_input(path: PathLike, what: str, limit: int = MAX_BINARY_BYTES) -> int:
    """Check that *path* names a readable regular file of at most *limit* bytes; return its size.

    Inputs must be regular files: a FIFO, a device or a socket could block the run or never end, and
    the size of a regular file is known before it is read, so an oversized input is refused up front
    rather than read until memory runs out. ``stat`` never blocks (a FIFO is not opened).

    Raises:
        InputError: missing, unreadable, not a regular file, or larger than *limit*.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise fail(path, f"cannot read {what}: {exc.strerror or exc}") from exc
    except ValueError as exc:           # an embedded NUL byte
        raise fail(path, f"cannot read {what}: {exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise fail(path, f"cannot read {what}: {_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise fail(path, f"{what} is {st.st_size} bytes, more than the {limit}-byte limit")
    return st.st_size


def _read_regular(path: PathLike, what: str, limit: int) -> bytes:
    """Read a whole regular file of at most *limit* bytes (see :func:`check_input`).

    The file is opened non-blocking (so a FIFO swapped in after the check cannot hang the open), its
    type and size are checked again on the open descriptor, and at most *limit* + 1 bytes are read (a
    file that grows past the limit while it is read is refused too).
    """
    check_input(path, what, limit)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise fail(path, f"cannot read {what}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail(path, f"cannot read {what}: {_kind(st.st_mode)}, not a regular file")
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise fail(path, f"cannot read {what}: {exc.strerror or exc}") from exc
    finally:
        if fd >= 0:
            os.close(fd)
    if len(raw) > limit:
        raise fail(path, f"{what} is more than the {limit}-byte limit")
    return raw


def read_text(path: PathLike, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """Load a text file strictly as UTF-8 (a leading BOM is dropped).

    Line endings are left as they are; :func:`text_lines` splits on all three conventions.

    Raises:
        InputError: the file cannot be opened/read, is not a regular file, is larger than *limit*, or
            is not valid UTF-8.
    """
    raw = _read_regular(path, what, limit)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = len(_LINE_END_RE.split(raw[: exc.start].decode("latin-1")))
        raise fail(
            path,
            f"{what} is not a UTF-8 text file (undecodable byte 0x{raw[exc.start]:02x})",
            line,
        ) from exc


def read_bytes(path: PathLike, what: str, limit: int = MAX_BINARY_BYTES) -> bytes:
    """Load a whole binary regular file of at most *limit* bytes, turning ``OSError`` into
    :class:`InputError`."""
    return _read_regular(path, what, limit)


_LINE_END_RE = re.compile(r"\r\n|\r|\n")


def text_lines(text: str) -> list[str]:
    """Split into lines at LF (Unix), CRLF (DOS) or a lone CR (classic Mac OS), so a file reads the
    same whichever convention wrote it; line numbers count lines as an editor shows them."""
    lines = _LINE_END_RE.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


class Staged(NamedTuple):
    """An output made ready by :func:`stage`, put in place by :func:`commit`."""
    target: str             #: the file written: the output path with every symlink resolved
    tmp: Optional[str]      #: the temporary file renamed over ``target`` (None for a device)
    data: Optional[bytes]   #: for a character device, the bytes written through at commit


def output_target(path: PathLike) -> Tuple[str, bool]:
    """Where an output named *path* is written, and whether it is written through a device.

    * absent or a regular file: the file itself; a symlink is followed (to its last target, which is
      created if it does not exist), so the link stays a link and the file it names gets the data;
    * a character device (``/dev/null``, a terminal): written through, never replaced;
    * a directory, FIFO, block device or socket: refused.

    Raises:
        InputError: the path is one of the refused kinds or cannot be examined.
    """
    name = os.fspath(path)
    try:
        real = os.path.realpath(name)
        st = os.stat(real)
    except FileNotFoundError:
        return real, False
    except (OSError, ValueError) as exc:
        if getattr(exc, "errno", None) == errno.ENAMETOOLONG:
            raise fail(name, "file name is longer than this file system allows") from exc
        raise fail(name, f"cannot write file: {getattr(exc, 'strerror', None) or exc}") from exc
    if stat.S_ISREG(st.st_mode):
        return real, False
    if stat.S_ISCHR(st.st_mode):
        return real, True
    raise fail(name, f"cannot write file: it is {_kind(st.st_mode)}")


def check_output(path: PathLike) -> None:
    """Check before any work is done that :func:`stage` and :func:`commit` can write *path*.

    Raises:
        InputError: a refused kind of path (:func:`output_target`), a missing or unwritable directory,
            or a file name longer than the file system allows.
    """
    name = os.fspath(path)
    real, device = output_target(name)
    if device:
        if not os.access(real, os.W_OK):
            raise fail(name, "cannot write file: the device is not writable")
        return
    directory, base = os.path.split(real)
    if not os.path.isdir(directory):
        raise fail(name, "output directory does not exist")
    if not os.access(directory, os.W_OK):
        raise fail(name, "output directory is not writable")
    try:
        name_max = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    if len(os.fsencode(base)) > name_max:
        raise fail(name, f"file name is longer than this file system allows ({name_max} bytes)")


def stage(path: PathLike, chunks: Iterable[bytes]) -> Staged:
    """Write *chunks* to a new, uniquely named temporary file next to the output's target.

    Returns the :class:`Staged` output; :func:`commit` moves it over the target, :func:`discard` removes
    it. The temporary name has a bounded length (whatever the length of the output's name). An existing
    target's permission bits are kept. For a character device the bytes are held until :func:`commit`
    writes them through. Nothing is left behind when this fails or is interrupted (``KeyboardInterrupt``
    included).

    Raises:
        InputError: the output is a refused kind of path or its directory cannot be written.
    """
    name = os.fspath(path)
    target, device = output_target(name)
    if device:
        return Staged(target, None, b"".join(bytes(c) for c in chunks))
    directory, base = os.path.split(target)
    tmp = os.path.join(directory, f".{base[:32]}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise fail(name, f"cannot write file: {exc.strerror or exc}") from exc
    staged = Staged(target, tmp, None)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            pass
    except BaseException as exc:
        discard(staged)
        if isinstance(exc, OSError):
            raise fail(name, f"cannot write file: {exc.strerror or exc}") from exc
        raise
    return staged


def discard(staged: Staged) -> None:
    """Remove the temporary file of a :func:`stage` (if it is still there)."""
    if staged.tmp is None:
        return
    try:
        os.unlink(staged.tmp)
    except OSError:
        pass


def commit(staged: Staged, path: PathLike) -> None:
    """Put the staged output in place: one atomic rename over the target, or for a character device
    the bytes written through it.

    Raises:
        InputError: the rename or write failed (the temporary file is removed).
    """
    try:
        if staged.tmp is None:
            fd = os.open(staged.target, os.O_WRONLY)
            with os.fdopen(fd, "wb") as handle:
                handle.write(staged.data)
        else:
            os.replace(staged.tmp, staged.target)
    except BaseException as exc:
        discard(staged)
        if isinstance(exc, OSError):
            raise fail(path, f"cannot write file: {exc.strerror or exc}") from exc
        raise


def atomic_write(path: PathLike, chunks: Iterable[bytes]) -> None:
    """Write *chunks* to *path* all-or-nothing (:func:`stage` then :func:`commit`).

    A regular file is written to a temporary next to it and renamed over it, so a reader never sees a
    half-written file; a symlink is written through, a character device written to; other kinds of
    path are refused (:func:`output_target`). A new file gets mode ``0o666`` filtered by the umask.

    Raises:
        InputError: the destination cannot be written.
    """
    commit(stage(path, chunks), path)


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: the same path once symlinks, ``..`` and case (where the file
    system ignores it) are resolved, or the same inode (hard links, bind mounts)."""
    ra = os.path.normcase(os.path.realpath(os.fspath(a)))
    rb = os.path.normcase(os.path.realpath(os.fspath(b)))
    if ra == rb:
        return True
    try:
        return os.path.samefile(ra, rb)
    except (OSError, ValueError):
        return False
