"""What every jaxbragg command line shares: the rules for outputs, signals and errors.

* :func:`check_writable` / :func:`check_distinct`: output paths checked before any work is done.
* :func:`write_outputs`: every file staged to a temporary first, then all renamed into place with
  interrupts held back (:class:`Deferred`), so a run writes all its outputs or none.
* :class:`Signals` / :func:`checkpoint`: SIGINT and SIGTERM acted on at safe points (a second one at once).
* :func:`guarded`: runs a program's ``main`` body and maps every way it can end to one line on stderr and
  the conventional exit status (2 for bad input, 130 for Ctrl-C, 143 for SIGTERM, 141 for a closed pipe).
* :func:`exit_now`: the console entry points' prompt exit.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from typing import Callable, Dict, List, Optional

from ..errors import InputError


def check_writable(paths: List[str]):
    """Every output path can be written the way :func:`jaxbragg.io._common.stage` writes it (a regular
    file or a new one, through symlinks; a character device written through; never a directory, FIFO,
    block device or socket; a name the file system accepts) — checked before any work is done."""
    from ..io import _common
    for path in paths:
        _common.check_output(path)


def check_distinct(files: Dict[str, str], flags: Dict[str, str], inputs: Optional[Dict[str, str]] = None):
    """No two outputs may be the same file (the later would silently replace the earlier), and no output
    may be one of the run's inputs (``inputs`` maps a flag to the file it reads). Paths are compared
    after resolving symlinks and ``..``, and by inode (hard links)."""
    from ..io import _common
    named = list(files.items())
    for i, (key, path) in enumerate(named):
        for other, earlier in named[:i]:
            if _common.same_file(path, earlier):
                raise InputError(f"{flags[other]} and {flags[key]} both write {path}")
        for flag, source in (inputs or {}).items():
            if source is not None and _common.same_file(path, source):
                raise InputError(f"{flags[key]} {path} would overwrite the input file of {flag}")


class Deferred:
    """Hold SIGINT/SIGTERM back while the output files are renamed into place (a few milliseconds), so
    that an interrupt cannot leave some outputs new and others old; ``pending`` lists what arrived."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.pending: List[int] = []
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, lambda n, _f: self.pending.append(n))
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        return False


def write_outputs(items, out) -> bool:
    """Write ``[(path, bytes, optional)]`` all-or-nothing: every file is staged to a temporary first
    (an error or interrupt then removes them all), then all are renamed into place with interrupts held
    back. A failure to stage an ``optional`` file is a warning. Returns whether an interrupt arrived
    during the renames."""
    from ..io import _common
    staged = []
    try:
        for path, blob, optional in items:
            try:
                staged.append((_common.stage(path, [blob]), path))
            except InputError as e:
                if not optional:
                    raise
                print(f"WARNING: unable to write {path}: {e}", file=out)
        checkpoint()
        with Deferred() as deferred:
            while staged:
                item, path = staged[0]
                _common.commit(item, path)
                staged.pop(0)
        return bool(deferred.pending)
    finally:
        for item, _ in staged:
            _common.discard(item)


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the same clean-up as for Ctrl-C runs."""


class Signals:
    """SIGINT and SIGTERM while a program runs (:func:`guarded`).

    Outside a :func:`critical` section a signal interrupts at once (reading a blocked input, waiting on
    a FIFO, importing JAX): one signal is always enough. Inside one (a call into the XLA compiler or
    runtime, which can crash the process at exit when an exception unwinds through it) the first signal
    is recorded and acted on when the section ends or at the next :func:`checkpoint`; a second one
    interrupts at once."""

    active: "Optional[Signals]" = None

    def __init__(self):
        self.pending: Optional[int] = None
        self.depth = 0
        self.old = {}

    @staticmethod
    def _raise(signum):
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _handler(self, signum, _frame):
        if self.depth == 0 or self.pending is not None:
            self.pending = None
            self._raise(signum)
        self.pending = signum

    def check(self):
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self._raise(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handler)
            Signals.active = self
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        if Signals.active is self:
            Signals.active = None
        return False


def checkpoint():
    """Act on a signal recorded by :class:`Signals` during a :func:`critical` section (no-op outside
    :func:`guarded`)."""
    if Signals.active is not None:
        Signals.active.check()


@contextlib.contextmanager
def critical():
    """A section during which the first SIGINT/SIGTERM is held back until the section ends (see
    :class:`Signals`); sections nest."""
    active = Signals.active
    if active is None:
        yield
        return
    active.depth += 1
    try:
        yield
    finally:
        active.depth -= 1
    if active.depth == 0:
        active.check()


#: Errors of writing a standard stream that end a run as an ordinary error (status 2).
_STREAM_ERRORS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EBADF}


def program_main(prog: str, argv: List[str], usage: str, help_text: Callable[[], str],
                 run: Callable[[], int], memory_hint: str) -> int:
    """The shape every companion program's ``main`` shares: ``-h/-help/--help`` anywhere prints the help
    (exit 0), ``--version`` the version, no arguments the usage on standard error (exit 2); anything else
    runs ``run()`` under :func:`guarded`."""
    def show(text):
        print(text)
        return 0

    if any(a in ("-h", "-help", "--help") for a in argv):
        return guarded(prog, lambda: show(help_text()), memory_hint)
    if "--version" in argv:
        from .. import __version__
        return guarded(prog, lambda: show(f"{prog} {__version__}"), memory_hint)
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    return guarded(prog, run, memory_hint)


def guarded(prog: str, body: Callable[[], int], memory_hint: str) -> int:
    """Run ``body()`` under :class:`Signals` and turn each way it can end into an exit status.

    ``InputError`` -> one line and 2; Ctrl-C -> 130; SIGTERM -> 143; a closed standard-output pipe -> 141,
    silently; ``MemoryError`` -> one line (``memory_hint`` says what to lower) and 2; anything else -> one
    line naming the internal error and 1 (``JAXBRAGG_DEBUG=1`` shows the traceback).
    """
    try:
        with Signals():
            code = body()
            sys.stdout.flush()      # a full or failing standard output is reported here, not lost
            return code
    except InputError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{prog}: terminated; no output written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our standard output went away (`prog ... | head`): stop quietly, like a C program
        # killed by SIGPIPE; nothing has been written
        silence_stdout()
        return 128 + signal.SIGPIPE
    except MemoryError:
        print(f"{prog}: error: out of memory; {memory_hint}", file=sys.stderr)
        return 2
    except Exception as e:  # an internal error: one line, no traceback (JAXBRAGG_DEBUG=1 shows it)
        if isinstance(e, OSError) and e.errno in _STREAM_ERRORS:
            # reading and writing files report their own errors (InputError); what is left is a standard
            # stream itself: a full disk, a quota, an I/O error — an ordinary error, not an internal one
            silence_stdout()
            print(f"{prog}: error: cannot write to standard output: {e.strerror or e}", file=sys.stderr)
            return 2
        if os.environ.get("JAXBRAGG_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1


def exit_now(code: int) -> None:  # pragma: no cover - exercised by the installed console scripts
    """Flush the standard streams and end the process with ``os._exit``, skipping the interpreter's
    teardown of JAX's runtime (about 0.15 s of a 1.5 s warm run). Every output file is complete and
    closed by then, so a late signal is ignored (it would otherwise reach the start-up handler of
    :mod:`jaxbragg._entry` and report a finished run as interrupted)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):     # a closed pipe or stream: nothing more to say
            pass
    os._exit(code)


def silence_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (a file name may hold a newline)."""
    return " ".join(str(e).splitlines())
