"""Exception types shared across jaxbragg.

The command-line front end maps :class:`InputError` (and its subclasses) to exit status 2, so any
problem that is the user's fault (a bad file, an unusable argument, a physically meaningless parameter,
a job too large for the machine) should be raised as an ``InputError`` whose message fits on one line
and names the offending file, option or parameter.
"""

from __future__ import annotations

__all__ = ["InputError", "PhysicsError", "ResourceError"]


class InputError(ValueError):
    """A user-supplied input (file or argument) is missing or malformed.

    The message is a single line that names the file (and, for text formats,
    the 1-based line number) so it can be shown to the user verbatim.
    """


class PhysicsError(InputError):
    """Parameters that describe no physical experiment (zero cell volume, a wavelength <= 0, a detector
    parallel to the beam, a non-finite value, ...).

    Raised by :func:`jaxbragg.validate.validate` on concrete (non-traced) parameters, before any tracing.
    ``param`` is the name of the offending :class:`jaxbragg.simulate.Params` field (or ``SimConfig``
    attribute); the message starts with it.
    """

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.detail = message


class ResourceError(InputError):
    """The job cannot run on this machine: it would need more memory than is available even with the
    smallest tile, or more samples per pixel than jaxbragg accepts. The message names the flags (or
    ``SimConfig`` fields) that drive the requirement."""
