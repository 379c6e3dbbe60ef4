"""MTZ / structure-factor mmCIF reading and expansion to P1 (jaxbragg.io.reflections).

gemmi is an optional dependency of jaxbragg but part of the test extra, so the
importorskip below is only a guard for a bare install; CI always runs these.
Every test file is built here, with gemmi itself (MTZ) or as literal text
(mmCIF).  The expected mates are computed independently of the module, with
gemmi's own ``Op.apply_to_hkl`` over every operation of the space group (or
by hand for P 21 21 21).
"""

from __future__ import annotations

import gzip
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

gemmi = pytest.importorskip("gemmi")

from jaxbragg.errors import InputError  # noqa: E402
from jaxbragg.io import (  # noqa: E402
    HKLGrid,
    expand_to_p1,
    read_hkl,
    read_reflection_list,
    read_reflections,
    read_structure_factors,
)

CELLS = {
    "P 21 21 21": (21.0, 33.0, 47.0, 90.0, 90.0, 90.0),
    "P 41 21 2": (40.0, 40.0, 60.0, 90.0, 90.0, 90.0),
    "P 31 2 1": (50.0, 50.0, 70.0, 90.0, 90.0, 120.0),
    "C 1 2 1": (60.0, 30.0, 40.0, 90.0, 105.0, 90.0),
}


# ------------------------------------------------------------------ helpers


def amplitude(h: int, k: int, l: int) -> float:
    """A smooth, distinct-enough amplitude for each listed reflection."""
    return 1.0 + 3.0 * abs(h) + 0.7 * k * k + 0.13 * l + 0.01 * h * k * l


def asu_reflections(sg_name: str, hmax: int = 3) -> list[tuple[int, int, int]]:
    """One reflection per equivalence class (gemmi's reciprocal ASU), no absences."""
    sg = gemmi.SpaceGroup(sg_name)
    ops = sg.operations()
    asu = gemmi.ReciprocalAsu(sg)
    out = []
    for hkl in itertools.product(range(-hmax, hmax + 1), repeat=3):
        if hkl == (0, 0, 0) or not asu.is_in(list(hkl)):
            continue
        if ops.is_systematically_absent(list(hkl)):
            continue
        out.append(hkl)
    return out


def expected_mates(sg_name: str, listed) -> dict[tuple[int, int, int], float]:
    """Every symmetry and Friedel mate of each listed (hkl, F), via gemmi ops."""
    ops = list(gemmi.SpaceGroup(sg_name).operations())  # centring ops included
    expected: dict[tuple[int, int, int], float] = {}
    for hkl, F in listed:
        for op in ops:
            mate = tuple(op.apply_to_hkl(list(hkl)))
            for m in (mate, tuple(-x for x in mate)):
                assert expected.setdefault(m, F) == F, "test data: mates of two listed reflections collide"
    return expected


def check_grid(grid: HKLGrid, expected: dict, default_F: float) -> None:
    keys = np.array(list(expected))
    assert grid.mins == tuple(int(x) for x in keys.min(axis=0))
    assert grid.maxs == tuple(int(x) for x in keys.max(axis=0))
    nh, nk, nl = grid.shape
    n_default = 0
    for i, j, m in itertools.product(range(nh), range(nk), range(nl)):
        hkl = (i + grid.hmin, j + grid.kmin, m + grid.lmin)
        if hkl in expected:
            assert grid.F[i, j, m] == pytest.approx(expected[hkl], rel=1e-6), hkl
        else:
            assert grid.F[i, j, m] == default_F, hkl
            n_default += 1
    assert n_default == nh * nk * nl - len(expected)


def write_mtz(path, sg_name: str, rows, columns=(("FP", "F"), ("SIGFP", "Q"))) -> None:
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup(sg_name)
    mtz.set_cell_for_all(gemmi.UnitCell(*CELLS.get(sg_name, CELLS["P 21 21 21"])))
    mtz.add_dataset("synthetic")
    for label, kind in columns:
        mtz.add_column(label, kind)
    mtz.set_data(np.asarray(rows, dtype=np.float32).reshape(-1, 3 + len(columns)))
    mtz.write_to_file(str(path))


def mtz_rows(sg_name: str):
    hkls = asu_reflections(sg_name)
    listed = [(hkl, amplitude(*hkl)) for hkl in hkls]
    rows = [[*hkl, F, 0.1 * F] for hkl, F in listed]
    return listed, rows


def cif_text(sg_line: str, rows, amp_tag: str = "F_meas_au") -> str:
    lines = [
        "data_r0synsf",
        "_cell.length_a 21.0",
        "_cell.length_b 33.0",
        "_cell.length_c 47.0",
        "_cell.angle_alpha 90",
        "_cell.angle_beta 90",
        "_cell.angle_gamma 90",
        sg_line,
        "loop_",
        "_refln.crystal_id",
        "_refln.wavelength_id",
        "_refln.index_h",
        "_refln.index_k",
        "_refln.index_l",
        "_refln.status",
        f"_refln.{amp_tag}",
        "_refln.F_meas_sigma_au",
    ]
    for h, k, l, F in rows:
        if isinstance(F, str):  # written verbatim; sigma unknown
            value, sig = F, "?"
        else:
            value, sig = f"{F:.4f}", f"{0.1 * F:.4f}"
        lines.append(f"1 1 {h:3d} {k:3d} {l:3d} o {value} {sig}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- MTZ reading


@pytest.mark.parametrize("sg_name", sorted(CELLS))
@pytest.mark.parametrize("default_F", [0.0, 7.5])
def test_mtz_expanded_to_p1(tmp_path, sg_name, default_F):
    listed, rows = mtz_rows(sg_name)
    assert len(listed) >= 20
    path = tmp_path / "data.mtz"
    write_mtz(path, sg_name, rows)
    # Amplitudes went through float32 in the MTZ.
    listed = [(hkl, float(np.float32(F))) for hkl, F in listed]

    grid = read_reflections(path, default_F=default_F)
    assert isinstance(grid, HKLGrid)
    assert grid.count == len(listed)
    check_grid(grid, expected_mates(sg_name, listed), default_F)


def test_p212121_mates_by_hand(tmp_path):
    listed, rows = mtz_rows("P 21 21 21")
    path = tmp_path / "data.mtz"
    write_mtz(path, "P 21 21 21", rows)
    grid = read_reflections(path, default_F=-1.0)
    assert all(min(hkl) >= 0 for hkl, _ in listed)  # one octant listed
    bound = max(max(hkl) for hkl, _ in listed)
    for (h, k, l), F in listed:
        for sh, sk, sl in itertools.product((1, -1), repeat=3):
            got = grid.F[sh * h - grid.hmin, sk * k - grid.kmin, sl * l - grid.lmin]
            assert got == pytest.approx(F, rel=1e-6)
    # Absent reflections such as (1, 0, 0) are listed nowhere: default_F.
    assert grid.F[1 - grid.hmin, -grid.kmin, -grid.lmin] == -1.0
    assert grid.F[-grid.hmin, -grid.kmin, -grid.lmin] == -1.0  # F000 not listed
    assert grid.mins == (-bound, -bound, -bound)
    assert grid.maxs == (bound, bound, bound)


def test_mtz_missing_amplitudes_skipped_and_counted(tmp_path):
    listed, rows = mtz_rows("P 21 21 21")
    rows[0][3] = np.nan
    rows[5][3] = np.nan
    path = tmp_path / "data.mtz"
    write_mtz(path, "P 21 21 21", rows)
    refl = read_reflection_list(path)
    assert refl.kind == "MTZ"
    assert refl.column == "FP"
    assert refl.space_group == "P 21 21 21"
    assert refl.n_missing == 2
    assert refl.hkl.shape == (len(rows) - 2, 3)
    grid = read_reflections(path, default_F=3.25)
    assert grid.count == len(rows) - 2
    kept = [(hkl, float(np.float32(F))) for i, (hkl, F) in enumerate(listed) if i not in (0, 5)]
    check_grid(grid, expected_mates("P 21 21 21", kept), 3.25)


def test_mtz_column_choice(tmp_path):
    rows = [[1, 2, 3, 10.0, 20.0, 30.0], [0, 0, 2, 11.0, 21.0, 31.0]]
    path = tmp_path / "two.mtz"
    write_mtz(path, "P 21 21 21", rows, columns=(("FC", "F"), ("FP", "F"), ("SIGFP", "Q")))
    # FP is preferred over FC although FC comes first.
    grid = read_reflections(path)
    assert grid.F[1 - grid.hmin, 2 - grid.kmin, 3 - grid.lmin] == 20.0
    grid = read_reflections(path, column="FC")
    assert grid.F[-1 - grid.hmin, -2 - grid.kmin, 3 - grid.lmin] == 10.0

    with pytest.raises(InputError) as err:
        read_reflections(path, column="FOBS")
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert "'FOBS'" in msg and "FC" in msg and "FP" in msg

    with pytest.raises(InputError, match="SIGFP has type Q"):
        read_reflections(path, column="SIGFP")


def test_mtz_first_f_column_when_no_common_label(tmp_path):
    rows = [[1, 2, 3, 10.0, 20.0]]
    path = tmp_path / "odd.mtz"
    write_mtz(path, "P 21 21 21", rows, columns=(("FWT", "F"), ("DELFWT", "F")))
    assert read_reflection_list(path).column == "FWT"


def test_mtz_intensities_only_is_an_error(tmp_path):
    path = tmp_path / "ints.mtz"
    write_mtz(path, "P 21 21 21", [[1, 2, 3, 100.0, 5.0]], columns=(("IMEAN", "J"), ("SIGIMEAN", "Q")))
    with pytest.raises(InputError) as err:
        read_reflections(path)
    msg = str(err.value)
    assert msg.startswith(str(path))
    assert "no amplitude column" in msg and "IMEAN (J)" in msg and "intensities" in msg


def test_mtz_unmerged_is_an_error(tmp_path):
    path = tmp_path / "unmerged.mtz"
    write_mtz(path, "P 21 21 21", [[1, 2, 3, 1, 10.0]], columns=(("M/ISYM", "Y"), ("FP", "F")))
    with pytest.raises(InputError, match="unmerged"):
        read_reflections(path)


def test_mtz_infinite_amplitude_is_an_error(tmp_path):
    path = tmp_path / "inf.mtz"
    write_mtz(path, "P 21 21 21", [[1, 2, 3, np.inf, 1.0]])
    with pytest.raises(InputError, match="non-finite"):
        read_reflections(path)


def test_mtz_all_missing_is_an_error(tmp_path):
    path = tmp_path / "nan.mtz"
    write_mtz(path, "P 21 21 21", [[1, 2, 3, np.nan, 1.0], [2, 2, 3, np.nan, 1.0]])
    with pytest.raises(InputError, match="every amplitude in column FP is missing"):
        read_reflections(path)


def test_gzipped_mtz(tmp_path):
    listed, rows = mtz_rows("P 41 21 2")
    plain = tmp_path / "data.mtz"
    write_mtz(plain, "P 41 21 2", rows)
    packed = tmp_path / "data.mtz.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = read_reflections(plain)
    b = read_structure_factors(packed)
    assert a.mins == b.mins and a.maxs == b.maxs
    np.testing.assert_array_equal(a.F, b.F)


def test_equivalent_listed_reflections_later_wins(tmp_path):
    # (1,2,3) and (-1,2,-3) are equivalent in P 21 21 21: the later one wins
    # for every mate, as a repeated line does in read_hkl.
    rows = [[1, 2, 3, 5.0, 1.0], [0, 0, 2, 9.0, 1.0], [-1, 2, -3, 7.0, 1.0]]
    path = tmp_path / "dup.mtz"
    write_mtz(path, "P 21 21 21", rows)
    grid = read_reflections(path)
    assert grid.count == 3
    for sh, sk, sl in itertools.product((1, -1), repeat=3):
        assert grid.F[sh - grid.hmin, 2 * sk - grid.kmin, 3 * sl - grid.lmin] == 7.0
    assert grid.F[-grid.hmin, -grid.kmin, 2 - grid.lmin] == 9.0
    assert grid.F[-grid.hmin, -grid.kmin, -2 - grid.lmin] == 9.0


# ----------------------------------------------------------- mmCIF reading


@pytest.mark.parametrize("suffix", [".cif", ".mmcif", ".ent"])
def test_mmcif_expanded_to_p1(tmp_path, suffix):
    sg_name = "P 21 21 21"
    listed = [(hkl, amplitude(*hkl)) for hkl in asu_reflections(sg_name)]
    rows = [(*hkl, F) for hkl, F in listed]
    rows.insert(3, (3, 3, 3, "?"))  # missing amplitude
    rows.insert(7, (2, 3, 3, "."))  # missing amplitude
    path = tmp_path / f"r0synsf{suffix}"
    path.write_text(cif_text("_symmetry.space_group_name_H-M 'P 21 21 21'", rows))

    refl = read_reflection_list(path)
    assert refl.kind == "mmCIF"
    assert refl.column == "_refln.F_meas_au"
    assert refl.space_group == "P 21 21 21"
    assert refl.n_missing == 2

    grid = read_structure_factors(path, default_F=0.5)
    assert grid.count == len(listed)
    listed = [(hkl, round(F, 4)) for hkl, F in listed]  # written with 4 decimals
    check_grid(grid, expected_mates(sg_name, listed), 0.5)


def test_mmcif_trigonal_by_space_group_number(tmp_path):
    sg_name = "P 31 2 1"
    listed = [(hkl, round(amplitude(*hkl), 4)) for hkl in asu_reflections(sg_name)]
    path = tmp_path / "trig.cif"
    path.write_text(cif_text("_symmetry.Int_Tables_number 152", [(*h, F) for h, F in listed]))
    grid = read_reflections(path)
    check_grid(grid, expected_mates(sg_name, listed), 0.0)


def test_mmcif_column_override_and_errors(tmp_path):
    rows = [(1, 2, 3, 4.0), (0, 0, 2, 6.0)]
    path = tmp_path / "calc.cif"
    path.write_text(cif_text("_symmetry.space_group_name_H-M 'P 21 21 21'", rows, amp_tag="F_calc"))
    # F_calc is found automatically when there is no measured amplitude.
    assert read_reflection_list(path).column == "_refln.F_calc"
    # The sigma column can be named explicitly, with or without the prefix.
    for name in ("F_meas_sigma_au", "_refln.F_meas_sigma_au"):
        grid = read_reflections(path, column=name)
        assert grid.F[1 - grid.hmin, -2 - grid.kmin, -3 - grid.lmin] == pytest.approx(0.4)
    with pytest.raises(InputError) as err:
        read_reflections(path, column="F_meas_au")
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert "no _refln.F_meas_au column" in msg and "F_calc" in msg and "index_h" in msg


def test_mmcif_space_group_errors(tmp_path):
    rows = [(1, 2, 3, 4.0)]
    path = tmp_path / "nosg.cif"
    path.write_text(cif_text("_cell.Z_PDB 4", rows))
    with pytest.raises(InputError, match="no space group"):
        read_reflections(path)
    path.write_text(cif_text("_symmetry.space_group_name_H-M 'P 99 zz'", rows))
    with pytest.raises(InputError, match="unknown space group 'P 99 zz'"):
        read_reflections(path)


def test_mmcif_bad_values(tmp_path):
    path = tmp_path / "bad.cif"
    path.write_text(cif_text("_symmetry.space_group_name_H-M 'P 1'", [(1, 2, 3, "abc")]))
    with pytest.raises(InputError, match="F_meas_au value 1 is not a number: 'abc'"):
        read_reflections(path)
    text = cif_text("_symmetry.space_group_name_H-M 'P 1'", [(1, 2, 3, 4.0)])
    path.write_text(text.replace("   1   2   3 o", " 1.5   2   3 o"))
    with pytest.raises(InputError, match="bad Miller index"):
        read_reflections(path)


def test_mmcif_esd_and_quoted_numbers(tmp_path):
    path = tmp_path / "esd.cif"
    path.write_text(
        cif_text("_symmetry.space_group_name_H-M 'P 1'", [(1, 2, 3, "12.5(3)"), (2, 2, 3, "'7.25'")])
    )
    grid = read_reflections(path)
    assert grid.F[1 - grid.hmin, 2 - grid.kmin, 3 - grid.lmin] == 12.5
    assert grid.F[-2 - grid.hmin, -2 - grid.kmin, -3 - grid.lmin] == 7.25


@pytest.mark.parametrize("text,match", [
    ("data_x\n_symmetry.space_group_name_H-M 'P 1'\nloop_\n_refln.index_h\n_refln.index_k\n_refln.index_l\n"
     "_refln.intensity_meas\n1 2 3 40.0\n", "no amplitude column.*intensities.*intensity_meas"),
    ("data_x\n_symmetry.space_group_name_H-M 'P 1'\nloop_\n_diffrn_refln.index_h\n_diffrn_refln.index_k\n"
     "_diffrn_refln.index_l\n_diffrn_refln.intensity_net\n1 2 3 4\n", "unmerged"),
    ("data_1abc\n_cell.length_a 10\n_entry.id 1ABC\n", "no reflection loop"),
], ids=["intensities-only", "unmerged", "coordinates"])
def test_mmcif_without_merged_amplitudes_is_an_error(tmp_path, text, match):
    path = tmp_path / "x.cif"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_reflections(path)


# ------------------------------------------------------ files and dispatch


def test_missing_file(tmp_path):
    path = tmp_path / "absent.mtz"
    with pytest.raises(InputError) as err:
        read_reflections(path)
    assert str(err.value) == f"{path}: cannot read structure-factor file: No such file or directory"
    with pytest.raises(InputError, match="absent.mtz: cannot read"):
        read_structure_factors(path)


def test_not_an_mtz_or_mmcif(tmp_path):
    fake = tmp_path / "fake.mtz"
    fake.write_text("1 2 3 4.0\n")
    with pytest.raises(InputError) as err:
        read_reflections(fake)
    assert str(err.value).startswith(f"{fake}: not an MTZ file")
    for name, content in (("fake.cif", "1 2 3 4.0\n"), ("junk.bin", "\x00\x01binary")):
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(InputError) as err:
            read_reflections(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: not an MTZ or mmCIF file") and "\n" not in msg
    truncated = tmp_path / "short.mtz"
    good = tmp_path / "good.mtz"
    write_mtz(good, "P 21 21 21", [[1, 2, 3, 4.0, 1.0]])
    truncated.write_bytes(good.read_bytes()[:30])
    with pytest.raises(InputError, match="not a readable MTZ file"):
        read_reflections(truncated)


def test_content_decides_format(tmp_path):
    # An MTZ under an unusual name is still read as MTZ by read_reflections.
    path = tmp_path / "data.sf"
    write_mtz(path, "P 21 21 21", [[1, 2, 3, 4.0, 1.0]])
    assert read_reflection_list(path).kind == "MTZ"


def test_structure_factors_on_hkl_text_equals_read_hkl(tmp_path):
    path = tmp_path / "P1.hkl"
    path.write_text("# comment\n1 2 3 10.5\n-2 0 1 3.25 0.1\n0 -1 -4 7\n1 2 3 11\n")
    for default_F in (0.0, 2.5):
        a = read_structure_factors(path, default_F)
        b = read_hkl(path, default_F)
        assert (a.mins, a.maxs, a.count) == (b.mins, b.maxs, b.count)
        np.testing.assert_array_equal(a.F, b.F)
    with pytest.raises(InputError, match="column can only be chosen"):
        read_structure_factors(path, column="FP")


def test_structure_factors_dispatch_by_suffix(tmp_path):
    mtz = tmp_path / "DATA.MTZ"
    write_mtz(mtz, "P 21 21 21", [[1, 2, 3, 4.0, 1.0]])
    grid = read_structure_factors(mtz, column="FP")
    assert grid.F[-1 - grid.hmin, -2 - grid.kmin, -3 - grid.lmin] == 4.0
    cif = tmp_path / "sf.cif.gz"
    cif.write_bytes(gzip.compress(cif_text("_symmetry.space_group_name_H-M 'P 1'", [(1, 2, 3, 4.0)]).encode()))
    grid = read_structure_factors(cif)
    assert grid.mins == (-1, -2, -3) and grid.maxs == (1, 2, 3)
    assert grid.F[0, 0, 0] == 4.0 and grid.F[2, 4, 6] == 4.0 and grid.F[1, 1, 1] == 0.0


def test_missing_gemmi(tmp_path, monkeypatch):
    mtz = tmp_path / "data.mtz"
    write_mtz(mtz, "P 21 21 21", [[1, 2, 3, 4.0, 1.0]])
    hkl = tmp_path / "data.hkl"
    hkl.write_text("1 2 3 4\n")
    monkeypatch.setitem(sys.modules, "gemmi", None)  # makes `import gemmi` fail
    with pytest.raises(InputError) as err:
        read_structure_factors(mtz)
    assert str(err.value) == (
        f"{mtz}: reading MTZ/mmCIF needs the optional dependency gemmi "
        "(pip install 'jaxbragg[mtz]')"
    )
    # Text files never need gemmi.
    assert read_structure_factors(hkl).count == 1


def test_gemmi_is_imported_lazily():
    code = "import sys, jaxbragg.io; sys.exit(1 if 'gemmi' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----------------------------------------------------------- expand_to_p1


def test_expand_to_p1_matches_gemmi_ops():
    sg = gemmi.SpaceGroup("P 61 2 2")
    refl_hkl = [hkl for hkl in asu_reflections("P 61 2 2", hmax=2)]
    F = [amplitude(*hkl) for hkl in refl_hkl]
    rots = []
    for op in sg.operations().sym_ops:
        R = np.array(op.rot) // op.DEN
        rots += [R, -R]
    grid = expand_to_p1(refl_hkl, F, rots, default_F=-2.0)
    check_grid(grid, expected_mates("P 61 2 2", list(zip(refl_hkl, F))), -2.0)


def test_expand_to_p1_limits():
    eye = np.eye(3, dtype=int)
    with pytest.raises(InputError, match="limit"):
        expand_to_p1([[0, 0, 0], [1000, 1000, 1000]], [1.0, 2.0], [eye, -eye])
    with pytest.raises(InputError, match="default_F must be finite"):
        expand_to_p1([[1, 0, 0]], [1.0], [eye, -eye], default_F=math.nan)
