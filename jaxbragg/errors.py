"""Exception types shared across jaxbragg.

The command-line front end maps :class:`InputError` to exit status 2, so any
problem that is the user's fault (a bad file, an unusable argument) should be
raised as an ``InputError`` whose message fits on one line and names the
offending file or option.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A user-supplied input (file or argument) is missing or malformed.

    The message is a single line that names the file (and, for text formats,
    the 1-based line number) so it can be shown to the user verbatim.
    """
