"""Console entry points, with signal handling from their first instruction.

Importing NumPy and JAX takes about a second; a Ctrl-C or SIGTERM in that time would otherwise end the
program with a Python traceback. Until a program installs its own handlers (:class:`jaxbragg.cli.common.Signals`)
a signal prints the same one line a later one would and ends the process with the conventional status
(130 for SIGINT, 143 for SIGTERM): nothing has been written yet, so there is nothing to clean up.
This module imports nothing heavy.
"""
import os
import signal


def _early_handlers(prog: str) -> None:
    def handler(signum, _frame):
        word = "terminated" if signum == signal.SIGTERM else "interrupted"
        try:
            os.write(2, f"{prog}: {word}; no output written\n".encode())
        finally:
            os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def jaxbragg() -> None:
    """``jaxbragg``: the nanoBragg-compatible command line."""
    _early_handlers("jaxbragg")
    from .cli import entry
    entry()


def series() -> None:
    """``jaxbragg-series``: rotation and shot series."""
    _early_handlers("jaxbragg-series")
    from .cli import common
    from .series import main
    common.exit_now(main())


def nonbragg() -> None:
    """``jaxbragg-nonbragg``: amorphous scattering, nonBragg.c's command line."""
    _early_handlers("jaxbragg-nonbragg")
    from .cli.nonbragg import entry
    entry()


def nearbragg() -> None:
    """``jaxbragg-nearbragg``: explicit scatterers, nearBragg.c's command line."""
    _early_handlers("jaxbragg-nearbragg")
    from .cli.nearbragg import entry
    entry()


def noisify() -> None:
    """``jaxbragg-noisify``: detector response, noisify.c's command line."""
    _early_handlers("jaxbragg-noisify")
    from .cli.noisify import entry
    entry()
