"""File readers and writers for the nanoBragg formats (pure NumPy, no JAX).

These modules sit at the edge of the system: they return raw file values and
leave unit conversion to the caller (each module documents the units).  All
problems with user files raise :class:`jaxbragg.errors.InputError` with a
one-line message naming the file (and line, for text formats); writers
replace their destination atomically.

Modules:
    hkl: ``h k l F`` text files -> :class:`HKLGrid` (C ``-hkl`` reading).
    fdump: ``Fdump.bin`` structure-factor cache, byte-identical to the C.
    matfile: MOSFLM ``A`` matrix (``-mat``).
    sourcefile: beam source lists (``-sourcefile``, C ``read_text_file``).
    smv: SMV images (``GetFrame``/``ValueOf`` and the ``-intfile`` writer),
        plus :func:`format_g` for C ``%g``.
    pgm: P5 PGM previews (``-pgmfile``).
    floatfile: raw float32 images (``-floatfile``).
    reflections: MTZ / structure-factor mmCIF amplitudes expanded to P1
        (optional gemmi dependency, imported only when such a file is read),
        and :func:`read_structure_factors`, the ``-hkl`` dispatcher.
    nexus: NeXus/NXmx HDF5 (Eiger master and data files; optional h5py + hdf5plugin, imported only when
        a file is written).
    cbf: Pilatus miniCBF (optional fabio, imported only when a file is written).
    naming: per-panel file and module names (``NAME_p00.EXT``).
    dials: DIALS experiment lists (``.expt`` JSON) -> geometry (``-expt``).
"""

from jaxbragg.io.dials import read_expt
from jaxbragg.io.fdump import read_fdump, write_fdump
from jaxbragg.io.floatfile import read_float, write_float
from jaxbragg.io.hkl import HKLGrid, read_hkl
from jaxbragg.io.matfile import read_mat
from jaxbragg.io.pgm import write_pgm
from jaxbragg.io.reflections import (
    ReflectionList,
    expand_to_p1,
    read_reflection_list,
    read_reflections,
    read_structure_factors,
)
from jaxbragg.io.smv import UNTERMINATED, format_g, header_value, read_smv, write_smv
from jaxbragg.io.sourcefile import SOURCE_COLUMNS, read_sourcefile
from jaxbragg.io.nexus import write_nexus
from jaxbragg.io.cbf import write_cbf

__all__ = [
    "read_expt",
    "HKLGrid",
    "read_hkl",
    "read_reflections",
    "read_reflection_list",
    "read_structure_factors",
    "ReflectionList",
    "expand_to_p1",
    "read_fdump",
    "write_fdump",
    "read_mat",
    "read_sourcefile",
    "SOURCE_COLUMNS",
    "read_smv",
    "write_smv",
    "header_value",
    "format_g",
    "UNTERMINATED",
    "write_pgm",
    "write_float",
    "read_float",
    "write_nexus",
    "write_cbf",
]
