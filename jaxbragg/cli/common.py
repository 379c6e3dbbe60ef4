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

import os
import signal
import sys
import threading
from typing import Callable, Dict, List, Optional

from ..errors import InputError


def check_writable(paths: List[str]):
    for path in paths:
        d = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(d):
            raise InputError(f"{path}: output directory does not exist")
        if not os.access(d, os.W_OK):
            raise InputError(f"{path}: output directory is not writable")
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory")


def check_distinct(files: Dict[str, str], flags: Dict[str, str]):
    """Two outputs may not be the same file (the later would silently replace the earlier)."""
    seen: Dict[str, str] = {}
    for key, path in files.items():
        real = os.path.normcase(os.path.realpath(path))
        if real in seen:
            raise InputError(f"{flags[seen[real]]} and {flags[key]} both write {path}")
        seen[real] = key


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
                tmp, path = staged[0]
                _common.commit(tmp, path)
                staged.pop(0)
        return bool(deferred.pending)
    finally:
        for tmp, _ in staged:
            _common.discard(tmp)


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the same clean-up as for Ctrl-C runs."""


class Signals:
    """SIGINT and SIGTERM during :func:`main`: the first one is recorded and acted on at the next safe point
    (:func:`checkpoint`: between render chunks, before the outputs are written), because interrupting the
    XLA compiler or runtime in the middle of a call can crash the process when it exits. A second signal
    interrupts at once."""

    active: "Optional[Signals]" = None

    def __init__(self):
        self.pending: Optional[int] = None
        self.old = {}

    @staticmethod
    def _raise(signum):
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _handler(self, signum, _frame):
        if self.pending is not None:
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
    """Act on a signal recorded by :class:`Signals` (no-op outside :func:`main`)."""
    if Signals.active is not None:
        Signals.active.check()




def guarded(prog: str, body: Callable[[], int], memory_hint: str) -> int:
    """Run ``body()`` under :class:`Signals` and turn each way it can end into an exit status.

    ``InputError`` -> one line and 2; Ctrl-C -> 130; SIGTERM -> 143; a closed standard-output pipe -> 141,
    silently; ``MemoryError`` -> one line (``memory_hint`` says what to lower) and 2; anything else -> one
    line naming the internal error and 1 (``JAXBRAGG_DEBUG=1`` shows the traceback).
    """
    try:
        with Signals():
            return body()
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
        if os.environ.get("JAXBRAGG_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1


def exit_now(code: int) -> None:  # pragma: no cover - exercised by the installed console scripts
    """Flush the standard streams and end the process with ``os._exit``, skipping the interpreter's
    teardown of JAX's runtime (about 0.15 s of a 1.5 s warm run). Every output file is complete and
    closed by then."""
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
