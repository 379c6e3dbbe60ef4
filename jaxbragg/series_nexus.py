"""``jaxbragg-series --format nexus``: a series as Eiger-style NeXus files, resumable and all-or-nothing.

Each rendered group of frames becomes one data file ``PREFIX_data_NNNNNN.h5`` (numbered on from the
highest one present), written atomically; then the master ``PREFIX_master.h5`` is rewritten atomically
(a temporary file renamed over it) so that it links every data file of the series and maps every frame
written so far (:func:`jaxbragg.io.nexus.master_bytes`). A data file that exists is therefore complete.
Each records the frames it holds and a label of the series' settings (a digest of the manifest's
settings): a resumed run counts as done the frames held by the data files with its own label (a frame in
several: the highest-numbered file), renders the rest, and rewrites the master; files of other settings
(left by an ``--overwrite`` of different flags) are neither linked nor removed. ``--overwrite`` renders
every frame into new data files and links only those.

Pixels are the frames' SMV counts (``--format smv``'s values: per-frame ``55000 / max`` scale unless
``-scale``, ``-adc``); pass ``-scale`` for counts on one scale across the series.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from typing import List, Tuple

import numpy as np

from .errors import InputError


def label(manifest: dict, keys) -> str:
    """The series label stored in each data file: SHA-256 of the settings that change an image."""
    record = {k: manifest.get(k) for k in keys}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


class NexusSeries:
    """The data files and master of one series ``prefix`` of ``n`` frames."""

    def __init__(self, prefix: str, n: int, setup, series_label: str, overwrite: bool):
        from .io import nexus
        self.prefix, self.n, self.setup, self.label = prefix, n, setup, series_label
        self.master = nexus.master_file_name(prefix)
        pattern = re.compile(re.escape(os.path.basename(prefix)) + r"_data_(\d{%d})\.h5" % nexus.DATA_DIGITS)
        found = []
        for path in glob.glob(glob.escape(prefix) + "_data_*.h5"):
            m = pattern.fullmatch(os.path.basename(path))
            if m:
                found.append((int(m.group(1)), path))
        self.next_number = max((k for k, _ in found), default=0) + 1
        self.files: List[Tuple[int, str, np.ndarray]] = []      # (number, path, frames) of this series
        if not overwrite:
            for number, path in sorted(found):
                try:
                    frames, lab = nexus.read_data_file(path)
                except (OSError, KeyError, ValueError):
                    continue            # not one of ours (or unreadable): not linked
                if lab == self.label and frames.size and frames.min() >= 0 and frames.max() < n:
                    self.files.append((number, path, frames))

    def done(self) -> np.ndarray:
        """[n] bool: frames held by a data file of this series."""
        out = np.zeros(self.n, bool)
        for _, _, frames in self.files:
            out[frames] = True
        return out

    def first_data_name(self) -> str:
        from .io import nexus
        return nexus.data_file_name(self.prefix, self.next_number)

    def write(self, frames: List[int], counts: List[np.ndarray]) -> str:
        """Write one data file of ``frames`` and then the master; returns the data file's path."""
        from .io import nexus
        from .io._common import atomic_write
        path = nexus.data_file_name(self.prefix, self.next_number)
        atomic_write(path, [nexus.data_bytes(np.stack(counts), frames, self.label)])
        self.files.append((self.next_number, path, np.asarray(frames, np.int64)))
        self.next_number += 1
        self.write_master()
        return path

    def write_master(self) -> None:
        """Rewrite the master atomically: every data file of the series, linked by its base name."""
        from .io import nexus
        from .io._common import atomic_write
        links = [(os.path.basename(path), frames.tolist()) for _, path, frames in self.files]
        atomic_write(self.master, [nexus.master_bytes(self.setup, self.n, links)])


def open_series(opts, manifest: dict, keys, setup, n: int) -> NexusSeries:
    """The :class:`NexusSeries` of a ``jaxbragg-series`` run (``setup``: the resolved command line):
    the goniometer scan is the rotation's ``--start-phi``/``--osc`` per frame, or no rotation for shots.

    Raises:
      InputError: the optional ``h5`` extra is missing (``--format nexus: ...``).
    """
    from .io import nexus
    try:
        nexus.require()
    except ImportError as e:
        raise InputError(f"--format nexus: {e}") from e
    rad = np.pi / 180.0
    if opts.mode == "rotation":
        nx_setup = nexus.setup_from_experiment(setup.experiment, start=opts.start_phi * rad,
                                               increment=opts.osc * rad)
    else:
        nx_setup = nexus.setup_from_experiment(setup.experiment, start=0.0, increment=0.0)
    return NexusSeries(opts.prefix, n, nx_setup, label(manifest, keys), opts.overwrite)


def names_pattern(stem: str) -> str:
    """Regular expression of the file names a nexus series writes (for the input-overwrite check)."""
    return rf"{stem}_master\.h5|{stem}_data_\d{{6}}\.h5"


__all__ = ["NexusSeries", "open_series", "label", "names_pattern"]
