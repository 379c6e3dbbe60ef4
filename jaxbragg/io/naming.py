"""File and group names of the per-panel outputs of a multi-panel detector.

A one-panel detector keeps the names it is given. With several panels, each one-image format writes one
file per panel, ``NAME_p00.EXT``, ``NAME_p01.EXT``, ... for ``NAME.EXT`` (:func:`panel_path`), and a NeXus
file holds them as modules ``module_p00``, ``module_p01``, ... of one detector
(:func:`jaxbragg.io.nexus.module_name`).
"""
from __future__ import annotations

import os


def panel_suffix(index: int, count: int) -> str:
    """``""`` for a one-panel detector, else ``_pNN`` (two digits, more when there are over 100 panels)."""
    if count <= 1:
        return ""
    digits = max(2, len(str(count - 1)))
    return f"_p{index:0{digits}d}"


def panel_path(path, index: int, count: int) -> str:
    """``NAME_pNN.EXT`` for panel ``index`` of ``count`` (``path`` itself when ``count`` is 1)."""
    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    return stem + panel_suffix(index, count) + ext
