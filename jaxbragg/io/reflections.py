"""Structure-factor amplitudes from MTZ and mmCIF files (optional, via gemmi).

The reference program only reads plain ``h k l F`` text; users with merged
data in MTZ or in a PDB structure-factor mmCIF (``r1abcsf.ent``) had to
convert it with CCP4 scripts first.  This module reads those files directly
with `gemmi <https://gemmi.readthedocs.io>`_, an **optional** dependency
(``pip install 'jaxbragg[mtz]'``) imported only when such a file is read.

The file lists amplitudes for (usually) one asymmetric unit.  They are
expanded to P1: every listed reflection is copied to all its equivalents
under the rotations of the space group (its Laue class, so the Friedel mate
``-h -k -l`` is included) with the same amplitude.  Phases are not used, so
translations and centring vectors play no part; systematically absent
reflections are simply never listed.  The result is the same dense
:class:`~jaxbragg.io.hkl.HKLGrid` that :func:`~jaxbragg.io.hkl.read_hkl`
returns.

Public functions:
    read_structure_factors: what the CLI's ``-hkl`` uses; picks this module
        or the text reader by file extension.
    read_reflections: an MTZ or mmCIF file -> expanded ``HKLGrid``.
    read_reflection_list: the listed (unexpanded) reflections plus the
        column used, the space group and the number of missing values.
    expand_to_p1: the expansion step on its own.

Units: amplitudes are returned as stored in the file (electrons for
``F_calc``; the arbitrary scale of the data for measured amplitudes).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os

import numpy as np

from jaxbragg.io._common import MAX_TEXT_BYTES, PathLike, check_input, fail, show
from jaxbragg.io.hkl import MAX_GRID_CELLS, HKLGrid, read_hkl

__all__ = [
    "ReflectionList",
    "read_reflection_list",
    "read_reflections",
    "read_structure_factors",
    "expand_to_p1",
    "MTZ_AMPLITUDE_LABELS",
    "CIF_AMPLITUDE_TAGS",
    "REFLECTION_SUFFIXES",
]

#: Preferred MTZ amplitude labels, best first, when no column is requested.
#: When none is present the first column of type ``F`` is used.
MTZ_AMPLITUDE_LABELS = ("F", "FP", "FOBS", "F-obs", "F_obs", "FMEAN", "F-model", "FC")

#: ``_refln.`` amplitude items tried in this order when no column is requested.
CIF_AMPLITUDE_TAGS = ("F_meas_au", "F_meas", "F_calc_au", "F_calc", "pdbx_F_plus")

#: File-name endings that :func:`read_structure_factors` sends to gemmi (a
#: further ``.gz`` is allowed); anything else is read as ``h k l F`` text.
REFLECTION_SUFFIXES = (".mtz", ".cif", ".mmcif", ".ent")

# MTZ column types accepted as amplitudes: F (amplitude), G (F(+)/F(-)).
_MTZ_AMPLITUDE_TYPES = ("F", "G")
_MTZ_INTENSITY_TYPES = ("J", "K")
_CIF_SPACE_GROUP_NAMES = (
    "_space_group.name_H-M_alt",
    "_symmetry.space_group_name_H-M",
    "_space_group.name_Hall",
    "_symmetry.space_group_name_Hall",
)
_CIF_SPACE_GROUP_NUMBERS = ("_space_group.IT_number", "_symmetry.Int_Tables_number")
_INT32 = 2**31 - 1


@dataclasses.dataclass(frozen=True, eq=False)
class ReflectionList:
    """The reflections of an MTZ/mmCIF file, as listed (not expanded).

    Attributes:
        hkl: int64 array ``(n, 3)`` of Miller indices, in file order.
        F: float64 amplitudes ``(n,)``; reflections whose amplitude is
            missing are already dropped.
        column: the MTZ column label or ``_refln.`` item that was read.
        space_group: the space group as gemmi names it (extended H-M).
        rotations: int64 ``(m, 3, 3)``, the distinct reciprocal-space
            rotations of the Laue class; a mate of ``h`` is ``h @ R``.
        n_missing: reflections skipped because the amplitude was missing
            (MTZ missing-number flag / NaN, or ``?``/``.`` in mmCIF).
        kind: ``"MTZ"`` or ``"mmCIF"``.
    """

    hkl: np.ndarray
    F: np.ndarray
    column: str
    space_group: str
    rotations: np.ndarray
    n_missing: int
    kind: str


def _import_gemmi(path: PathLike):
    try:
        import gemmi  # noqa: PLC0415  (optional dependency, imported lazily)
    except ImportError as exc:
        raise fail(
            path,
            "reading MTZ/mmCIF needs the optional dependency gemmi "
            "(pip install 'jaxbragg[mtz]')",
        ) from exc
    return gemmi


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _has_reflection_suffix(path: PathLike) -> bool:
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(REFLECTION_SUFFIXES)


def _file_head(path: PathLike) -> bytes:
    """The first bytes of the (possibly gzipped) file; InputError if unreadable or not a regular file
    of at most the text-input size limit (gemmi then reads the whole file)."""
    check_input(path, "structure-factor file", MAX_TEXT_BYTES)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                head = handle.read(4)
    except (OSError, EOFError) as exc:
        message = getattr(exc, "strerror", None) or _one_line(exc)
        raise fail(path, f"cannot read structure-factor file: {message}") from exc
    return head


def _laue_rotations(space_group, path: PathLike) -> np.ndarray:
    """Distinct reciprocal-space rotations of the Laue class of *space_group*."""
    seen: dict[bytes, np.ndarray] = {}
    ops = space_group.operations()
    for op in ops.sym_ops:
        rot = np.asarray(op.rot, dtype=np.int64)
        if np.any(rot % op.DEN):
            raise fail(path, f"space group {space_group.xhm()} has a non-integer rotation")
        rot //= op.DEN
        for r in (rot, -rot):
            seen.setdefault(r.tobytes(), r)
    return np.stack(list(seen.values()))


def _check_amplitudes(path: PathLike, F: np.ndarray, column: str) -> None:
    bad = np.isinf(F)
    if np.any(bad):
        raise fail(path, f"column {column} holds a non-finite amplitude ({F[bad][0]!r})")


def _finish(path, hkl, F, column, space_group, kind) -> ReflectionList:
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    F = np.asarray(F, dtype=np.float64).ravel()
    if hkl.shape[0] != F.size:  # pragma: no cover - gemmi keeps them aligned
        raise fail(path, "index and amplitude columns differ in length")
    _check_amplitudes(path, F, column)
    if hkl.size and np.abs(hkl).max() > _INT32:
        raise fail(path, "a Miller index is out of range")
    missing = np.isnan(F)
    n_missing = int(missing.sum())
    hkl, F = hkl[~missing], F[~missing]
    if F.size == 0:
        if n_missing:
            raise fail(path, f"every amplitude in column {column} is missing ({n_missing} reflections)")
        raise fail(path, f"{kind} file contains no reflections")
    return ReflectionList(
        hkl=hkl,
        F=F,
        column=column,
        space_group=space_group.xhm(),
        rotations=_laue_rotations(space_group, path),
        n_missing=n_missing,
        kind=kind,
    )


# ----------------------------------------------------------------------- MTZ


def _mtz_columns_text(columns) -> str:
    return ", ".join(f"{c.label} ({c.type})" for c in columns) or "none"


def _read_mtz(gemmi, path: PathLike, column: str | None) -> ReflectionList:
    try:
        mtz = gemmi.read_mtz_file(os.fspath(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise fail(path, f"not a readable MTZ file ({_one_line(exc)})") from exc
    if len(mtz.batches) > 0 or mtz.column_with_label("M/ISYM") is not None:
        raise fail(path, "is an unmerged MTZ file (it has batches); merged amplitudes are needed")
    columns = [c for c in mtz.columns if c.type != "H"]
    amplitude_columns = [c for c in columns if c.type in _MTZ_AMPLITUDE_TYPES]
    names = ", ".join(c.label for c in amplitude_columns) or "none"
    if column is not None:
        chosen = next((c for c in columns if c.label == column), None)
        if chosen is None:
            raise fail(
                path,
                f"MTZ file has no column {show(column)}; amplitude columns: {names}; "
                f"all columns: {_mtz_columns_text(columns)}",
            )
        if chosen.type not in _MTZ_AMPLITUDE_TYPES:
            raise fail(
                path,
                f"MTZ column {chosen.label} has type {chosen.type}, not an amplitude "
                f"(type F or G); amplitude columns: {names}",
            )
    else:
        if not amplitude_columns:
            hint = ""
            if any(c.type in _MTZ_INTENSITY_TYPES for c in columns):
                hint = " (intensities must be converted to amplitudes first, e.g. with ctruncate)"
            raise fail(
                path,
                f"MTZ file has no amplitude column (type F){hint}; "
                f"columns: {_mtz_columns_text(columns)}",
            )
        by_label = {}
        for c in amplitude_columns:
            if c.type == "F":
                by_label.setdefault(c.label, c)
        chosen = next((by_label[lab] for lab in MTZ_AMPLITUDE_LABELS if lab in by_label), None)
        if chosen is None:
            chosen = next((c for c in amplitude_columns if c.type == "F"), None)
        if chosen is None:
            raise fail(
                path,
                f"MTZ file has no plain amplitude column (type F), only F(+)/F(-) columns "
                f"({names}); name one explicitly",
            )
    if mtz.spacegroup is None:
        raise fail(path, f"MTZ file has no known space group ({show(mtz.spacegroup_name)})")
    hkl = np.asarray(mtz.make_miller_array())
    F = np.array(chosen.array, dtype=np.float64)
    return _finish(path, hkl, F, chosen.label, mtz.spacegroup, "MTZ")


# --------------------------------------------------------------------- mmCIF


def _cif_space_group(gemmi, block, refln_block, path: PathLike):
    if refln_block.spacegroup is not None:
        return refln_block.spacegroup
    for tag in _CIF_SPACE_GROUP_NAMES:
        value = block.find_value(tag)
        if value is not None and not gemmi.cif.is_null(value):
            name = gemmi.cif.as_string(value)
            found = None
            try:
                found = gemmi.find_spacegroup_by_name(name)
            except (RuntimeError, ValueError):
                found = None
            if found is None and "Hall" in tag:
                try:
                    found = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(name))
                except (RuntimeError, ValueError):
                    found = None
            if found is None:
                raise fail(path, f"unknown space group {show(name)} in {tag}")
            return found
    for tag in _CIF_SPACE_GROUP_NUMBERS:
        value = block.find_value(tag)
        if value is not None and not gemmi.cif.is_null(value):
            number = gemmi.cif.as_number(value)
            found = None
            if math.isfinite(number) and number == int(number):
                found = gemmi.find_spacegroup_by_number(int(number))
            if found is None:
                raise fail(path, f"unknown space group number {show(value)} in {tag}")
            return found
    raise fail(
        path,
        "mmCIF block has no space group (_symmetry.space_group_name_H-M or "
        "_space_group.name_H-M_alt)",
    )


def _cif_amplitudes(gemmi, block, prefix: str, label: str, path: PathLike) -> np.ndarray:
    """Numeric values of ``prefix+label``; ``?``/``.`` become NaN, junk is an error."""
    raw = list(block.find_values(prefix + label))
    F = np.empty(len(raw), dtype=np.float64)
    for i, value in enumerate(raw):
        if gemmi.cif.is_null(value):
            F[i] = math.nan
            continue
        number = gemmi.cif.as_number(value)  # accepts "12.3(4)"
        if math.isnan(number):
            text = gemmi.cif.as_string(value)
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if math.isnan(number):
                raise fail(
                    path,
                    f"{prefix}{label} value {i + 1} is not a number: {show(value)}",
                )
        F[i] = number
    return F


def _read_cif(gemmi, path: PathLike, column: str | None) -> ReflectionList:
    try:
        doc = gemmi.cif.read(os.fspath(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise fail(path, f"not an MTZ or mmCIF file ({_one_line(exc)})") from exc
    try:
        blocks = [rb for rb in gemmi.as_refln_blocks(doc) if rb.default_loop is not None]
    except (RuntimeError, ValueError) as exc:
        raise fail(path, f"cannot read the reflection loop ({_one_line(exc)})") from exc
    if not blocks:
        raise fail(path, "mmCIF file has no reflection loop (_refln)")
    merged = [rb for rb in blocks if rb.is_merged()]
    if not merged:
        raise fail(
            path,
            "mmCIF file holds only unmerged reflections (_diffrn_refln); "
            "merged amplitudes (_refln) are needed",
        )

    wanted = None
    if column is not None:
        wanted = column[len("_refln."):] if column.lower().startswith("_refln.") else column
    chosen = None
    for rb in merged:
        labels = {lab.lower(): lab for lab in rb.column_labels()}
        candidates = (wanted,) if wanted is not None else CIF_AMPLITUDE_TAGS
        label = next((labels[c.lower()] for c in candidates if c.lower() in labels), None)
        if label is not None:
            chosen = (rb, label)
            break
    if chosen is None:
        present = ", ".join(merged[0].column_labels())
        if wanted is not None:
            raise fail(path, f"mmCIF file has no _refln.{wanted} column; columns: {present}")
        hint = ""
        if any(lab.lower().startswith("intensity") for lab in merged[0].column_labels()):
            hint = " (intensities must be converted to amplitudes first)"
        raise fail(
            path,
            f"mmCIF file has no amplitude column ({', '.join(CIF_AMPLITUDE_TAGS)}){hint}; "
            f"columns: {present}",
        )
    rb, label = chosen
    loop = rb.default_loop
    prefix = loop.tags[0][: loop.tags[0].index(".") + 1]
    try:
        hkl = np.asarray(rb.make_miller_array())
    except (RuntimeError, ValueError) as exc:
        raise fail(path, f"bad Miller index in block {rb.block.name} ({_one_line(exc)})") from exc
    F = _cif_amplitudes(gemmi, rb.block, prefix, label, path)
    space_group = _cif_space_group(gemmi, rb.block, rb, path)
    return _finish(path, hkl, F, prefix + label, space_group, "mmCIF")


# -------------------------------------------------------------------- public


def read_reflection_list(path: PathLike, column: str | None = None) -> ReflectionList:
    """Read the listed reflections of an MTZ or structure-factor mmCIF file.

    The format is taken from the content: a file starting with ``MTZ `` is
    MTZ, anything else is parsed as (mm)CIF.  Gzipped files are accepted.

    Args:
        path: the file.
        column: the amplitude column to read: an MTZ label (type F or G), or
            an mmCIF ``_refln`` item with or without the ``_refln.`` prefix.
            By default the first present of :data:`MTZ_AMPLITUDE_LABELS`
            (else the first type-F column) or of :data:`CIF_AMPLITUDE_TAGS`.

    Returns:
        A :class:`ReflectionList` (reflections with a missing amplitude are
        dropped and counted in ``n_missing``).

    Raises:
        InputError: gemmi is not installed; the file is missing, unreadable,
            not MTZ/mmCIF, unmerged, has no amplitude column or not the one
            requested, no space group, no reflections, or a bad value.
    """
    gemmi = _import_gemmi(path)
    head = _file_head(path)
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if head == b"MTZ ":
        return _read_mtz(gemmi, path, column)
    if name.endswith(".mtz"):
        raise fail(path, "not an MTZ file (it does not start with 'MTZ ')")
    return _read_cif(gemmi, path, column)


def expand_to_p1(
    hkl,
    F,
    rotations,
    default_F: float = 0.0,
    path: PathLike = "<reflections>",
) -> HKLGrid:
    """Expand listed amplitudes to all symmetry and Friedel mates, on a dense grid.

    Args:
        hkl: integer ``(n, 3)`` Miller indices.
        F: ``(n,)`` amplitudes.
        rotations: integer ``(m, 3, 3)`` reciprocal-space rotations forming a
            group that contains the inversion (a Laue class, as in
            :attr:`ReflectionList.rotations`); the mates of ``h`` are ``h @ R``.
        default_F: amplitude of box cells no reflection reaches.
        path: used only to name the source in error messages.

    Returns:
        An :class:`HKLGrid` over the min..max box of all mates; ``count`` is
        ``n``.  When two listed reflections are equivalent, the one listed
        later wins for the whole set of mates (as a repeated line does in
        :func:`read_hkl`).

    Raises:
        InputError: non-finite ``default_F`` or a box over ``MAX_GRID_CELLS``.
    """
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    F = np.asarray(F, dtype=np.float64).ravel()
    rots = np.asarray(rotations, dtype=np.int64).reshape(-1, 3, 3)
    if hkl.shape[0] != F.size or F.size == 0 or rots.shape[0] == 0:
        raise ValueError("hkl (n, 3), F (n,) and rotations (m, 3, 3) must be non-empty and match")
    if not math.isfinite(float(default_F)):
        raise fail(path, f"default_F must be finite, got {default_F!r}")

    lo = np.full(3, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(3, np.iinfo(np.int64).min, dtype=np.int64)
    for R in rots:
        mates = hkl @ R
        lo = np.minimum(lo, mates.min(axis=0))
        hi = np.maximum(hi, mates.max(axis=0))
    shape = tuple(int(n) for n in hi - lo + 1)
    cells = shape[0] * shape[1] * shape[2]
    if cells > MAX_GRID_CELLS:
        raise fail(
            path,
            f"index box after expansion to P1, h {lo[0]}..{hi[0]}, k {lo[1]}..{hi[1]}, "
            f"l {lo[2]}..{hi[2]}, has {cells} cells (limit {MAX_GRID_CELLS})",
        )

    def flat(mates: np.ndarray) -> np.ndarray:
        m = mates - lo
        return (m[:, 0] * shape[1] + m[:, 1]) * shape[2] + m[:, 2]

    # One key per set of equivalent reflections (the largest flat index of its
    # mates), so equivalent listed reflections collapse to the last one.
    key = np.full(F.size, -1, dtype=np.int64)
    for R in rots:
        key = np.maximum(key, flat(hkl @ R))
    _, first_from_end = np.unique(key[::-1], return_index=True)
    keep = np.sort(F.size - 1 - first_from_end)
    hkl_u, F_u = hkl[keep], F[keep]

    grid = np.full(cells, float(default_F), dtype=np.float64)
    for R in rots:
        grid[flat(hkl_u @ R)] = F_u
    return HKLGrid(
        grid.reshape(shape),
        int(lo[0]), int(lo[1]), int(lo[2]),
        int(hi[0]), int(hi[1]), int(hi[2]),
        int(F.size),
    )


def read_reflections(
    path: PathLike, default_F: float = 0.0, column: str | None = None
) -> HKLGrid:
    """Read an MTZ or structure-factor mmCIF file and expand it to P1.

    Args:
        path: the file (``.mtz``, ``.cif``, ``.mmcif``, ``.ent``, optionally
            gzipped; the content decides between MTZ and mmCIF).
        default_F: amplitude of box cells no reflection reaches.
        column: amplitude column (see :func:`read_reflection_list`).

    Returns:
        The dense :class:`HKLGrid` of all symmetry and Friedel mates;
        ``count`` is the number of listed reflections that had an amplitude.

    Raises:
        InputError: see :func:`read_reflection_list` and :func:`expand_to_p1`.
    """
    if not math.isfinite(float(default_F)):
        raise fail(path, f"default_F must be finite, got {default_F!r}")
    refl = read_reflection_list(path, column)
    return expand_to_p1(refl.hkl, refl.F, refl.rotations, default_F, path)


def read_structure_factors(
    path: PathLike, default_F: float = 0.0, column: str | None = None
) -> HKLGrid:
    """Read the ``-hkl`` structure-factor file, whatever its format.

    Files ending in ``.mtz``, ``.cif``, ``.mmcif`` or ``.ent`` (optionally
    followed by ``.gz``; case ignored) go to :func:`read_reflections`; any
    other file is ``h k l F`` text read by :func:`read_hkl`, which needs no
    gemmi.

    Raises:
        InputError: as the chosen reader; ``column`` given for a text file.
    """
    if _has_reflection_suffix(path):
        return read_reflections(path, default_F, column)
    if column is not None:
        raise fail(path, "an amplitude column can only be chosen for MTZ/mmCIF files")
    return read_hkl(path, default_F)
