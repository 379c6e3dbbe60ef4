"""Tests for jaxbragg.io: byte-identity with the reference outputs and errors."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from jaxbragg.errors import InputError
from jaxbragg.io import (
    UNTERMINATED,
    HKLGrid,
    format_g,
    header_value,
    read_fdump,
    read_float,
    read_hkl,
    read_mat,
    read_smv,
    read_sourcefile,
    write_fdump,
    write_float,
    write_pgm,
    write_smv,
)

GOLDEN = Path(__file__).parent / "golden"
FDUMP_DIR = GOLDEN / "fdump"
INTFILE = GOLDEN / "intfile_scale_adc" / "int.img"
PGMFILE = GOLDEN / "pgmfile_pgmscale" / "image.pgm"
SOURCES = GOLDEN / "sourcefile" / "sources.txt"



def _write(tmp_path: Path, name: str, content, mode: str = "w") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with open(path, "w", newline="") as handle:
            handle.write(content)
    return path


def _assert_error(exc_info, path: Path, line: int | None = None) -> None:
    message = str(exc_info.value)
    assert "\n" not in message
    assert path.name in message
    if line is not None:
        assert f"line {line}" in message


# --------------------------------------------------------------------------- hkl


def test_read_hkl_basic_semantics(tmp_path):
    path = _write(
        tmp_path,
        "x.hkl",
        "\ufeff# comment line\r\n"
        "  1  0 -2   10.5  0.3 extra\r\n"
        "\r\n"
        "! another comment\n"
        "-1 2 0 20\n"
        "1 0 -2 11.5\n"  # duplicate: last wins
        "0 1 -1 3.0e1\n",
    )
    grid = read_hkl(path, default_F=7.0)
    assert (grid.hmin, grid.hmax, grid.kmin, grid.kmax, grid.lmin, grid.lmax) == (
        -1, 1, 0, 2, -2, 0,
    )
    assert grid.F.shape == (3, 3, 3)
    assert grid.F.dtype == np.float64
    assert grid.count == 4
    assert grid.F[1 - -1, 0 - 0, -2 - -2] == 11.5
    assert grid.F[-1 - -1, 2, 0 - -2] == 20.0
    assert grid.F[0 - -1, 1, -1 - -2] == 30.0
    assert grid.F[0 - -1, 0, 0 - -2] == 7.0
    assert np.count_nonzero(grid.F == 7.0) == 27 - 3
    with pytest.raises(ValueError):
        grid.F[0, 0, 0] = 1.0  # read-only


def test_read_hkl_abutting_fixed_width_columns(tmp_path):
    path = _write(tmp_path, "fw.hkl", "  -4-12  3   9.5\n 1  1-10  2\n")
    grid = read_hkl(path)
    assert grid.mins == (-4, -12, -10) and grid.maxs == (1, 1, 3)
    assert grid.F[0, 0, 13] == 9.5 and grid.F[5, 13, 0] == 2.0


def test_read_hkl_integral_float_indices_accepted(tmp_path):
    grid = read_hkl(_write(tmp_path, "f.hkl", "1.0 2.0000000001 -3. 5\n"))
    assert grid.mins == (1, 2, -3) and grid.F[0, 0, 0] == 5.0


@pytest.mark.parametrize(
    "content, line",
    [
        ("1 2 3 4\n1 2 3\n", 2),
        ("1 2 3 4\n\n1 2 x 4\n", 3),
        ("1 2 3 4\n1 2 3 4abc\n", 2),
        ("1 2.5 3 4\n", 1),
        ("1 2 3 nan\n", 1),
        ("# c\n1 2 3 -inf\n", 2),
        ("1 2 inf 4\n", 1),
        ("1,2,3,4\n", 1),
    ],
)
def test_read_hkl_line_errors(tmp_path, content, line):
    path = _write(tmp_path, "bad.hkl", content)
    with pytest.raises(InputError) as exc_info:
        read_hkl(path)
    _assert_error(exc_info, path, line)


@pytest.mark.parametrize("content", ["", "\n\n# only comments\n! here\n"])
def test_read_hkl_empty(tmp_path, content):
    path = _write(tmp_path, "empty.hkl", content)
    with pytest.raises(InputError) as exc_info:
        read_hkl(path)
    _assert_error(exc_info, path)
    assert "no reflections" in str(exc_info.value)


def test_read_hkl_missing_and_binary(tmp_path):
    missing = tmp_path / "nope.hkl"
    with pytest.raises(InputError) as exc_info:
        read_hkl(missing)
    _assert_error(exc_info, missing)

    binary = _write(tmp_path, "bin.hkl", b"1 2 3 4\n\xff\xfe\x00garbage\n")
    with pytest.raises(InputError) as exc_info:
        read_hkl(binary)
    _assert_error(exc_info, binary, 2)
    assert "UTF-8" in str(exc_info.value)


def test_read_hkl_box_too_large(tmp_path):
    path = _write(tmp_path, "huge.hkl", "-100000 0 0 1\n100000 1000 1000 1\n")
    with pytest.raises(InputError) as exc_info:
        read_hkl(path)
    _assert_error(exc_info, path)


# ------------------------------------------------------------------------- fdump


def test_fdump_byte_identical_to_reference(tmp_path):
    grid = read_hkl(FDUMP_DIR / "P1.hkl")
    out = tmp_path / "Fdump.bin"
    write_fdump(out, grid)
    reference = (FDUMP_DIR / "Fdump.bin").read_bytes()
    assert out.read_bytes() == reference
    assert len(reference) == 16 + 10 * 16 * 18 * 8


def test_read_fdump_reference_matches_hkl():
    from_hkl = read_hkl(FDUMP_DIR / "P1.hkl")
    cached = read_fdump(FDUMP_DIR / "Fdump.bin")
    assert (cached.mins, cached.maxs) == ((-4, -7, -8), (4, 7, 8))
    assert cached.F.shape == from_hkl.F.shape == (9, 15, 17)
    np.testing.assert_array_equal(cached.F, from_hkl.F)
    assert np.count_nonzero(cached.F) > 0


def test_fdump_layout_and_roundtrip_with_default_F(tmp_path):
    hkl = _write(tmp_path, "s.hkl", "-2 -1 -3 1.5\n0 1 0 -2.25\n-1 0 -1 4\n")
    grid = read_hkl(hkl, default_F=9.0)
    out = tmp_path / "dump.bin"
    write_fdump(out, grid)
    raw = out.read_bytes()
    header = b"-2 0 -1 1 -3 0\n\x0c"
    assert raw.startswith(header)
    body = np.frombuffer(raw[len(header):], dtype="<f8")
    assert body.size == 4 * 4 * 5  # one spare slot per axis
    padded = body.reshape(4, 4, 5)
    # spare slots are zero, in-box cells are default_F or the file value
    assert np.all(padded[3, :, :] == 0) and np.all(padded[:, 3, :] == 0)
    assert np.all(padded[:, :, 4] == 0)
    assert padded[0, 0, 0] == 1.5 and padded[2, 2, 3] == -2.25 and padded[1, 1, 2] == 4
    assert padded[0, 1, 0] == 9.0

    back = read_fdump(out)
    assert (back.mins, back.maxs) == (grid.mins, grid.maxs)
    np.testing.assert_array_equal(back.F, grid.F)
    assert back.count == 3 * 3 * 4


def test_fdump_roundtrip_synthetic_grid(tmp_path):
    rng = np.random.default_rng(1)
    F = rng.normal(size=(3, 5, 2))
    grid = HKLGrid(F, -1, -4, 5, 1, 0, 6, count=30)
    out = tmp_path / "g.bin"
    write_fdump(out, grid)
    back = read_fdump(out)
    assert (back.hmin, back.kmin, back.lmin, back.hmax, back.kmax, back.lmax) == (
        -1, -4, 5, 1, 0, 6,
    )
    np.testing.assert_array_equal(back.F, F)


def test_read_fdump_errors(tmp_path):
    missing = tmp_path / "none.bin"
    with pytest.raises(InputError) as exc_info:
        read_fdump(missing)
    _assert_error(exc_info, missing)

    garbage = _write(tmp_path, "garbage.bin", b"hello world\n\x0c" + b"\0" * 64)
    with pytest.raises(InputError) as exc_info:
        read_fdump(garbage)
    _assert_error(exc_info, garbage)

    header = b"0 1 0 0 0 0\n\x0c"
    truncated = _write(tmp_path, "trunc.bin", header + b"\0" * (3 * 2 * 2 * 8 - 8))
    with pytest.raises(InputError) as exc_info:
        read_fdump(truncated)
    _assert_error(exc_info, truncated)

    ok = _write(tmp_path, "ok.bin", header + struct.pack("<12d", *range(12)))
    assert read_fdump(ok).F.tolist() == [[[0.0]], [[4.0]]]

    inverted = _write(tmp_path, "inv.bin", b"1 0 0 0 0 0\n\x0c" + b"\0" * 64)
    with pytest.raises(InputError) as exc_info:
        read_fdump(inverted)
    _assert_error(exc_info, inverted)


# ----------------------------------------------------------------------- matfile


def test_read_mat_rows_are_reciprocal_vectors(tmp_path):
    path = _write(
        tmp_path,
        "A.mat",
        " 0.0100 0.0020 0.0030\n"
        " 0.0000 0.0200-0.0010\n"  # abutting fixed-width fields
        " 0.0000 0.0000 0.0300\n"
        "       0.000       0.000       0.000\n"
        "junk that is never read\n",
    )
    M = read_mat(path)
    expected = np.array(
        [[0.01, 0.0, 0.0], [0.002, 0.02, 0.0], [0.003, -0.001, 0.03]]
    )
    np.testing.assert_array_equal(M, expected)
    assert M.shape == (3, 3) and M.dtype == np.float64


def test_read_mat_numbers_may_span_lines(tmp_path):
    path = _write(tmp_path, "B.mat", "1 2\n3 4 5 6 7\n8 10\n")
    expected = np.array([[1.0, 4.0, 7.0], [2.0, 5.0, 8.0], [3.0, 6.0, 10.0]])
    np.testing.assert_array_equal(read_mat(path), expected)


@pytest.mark.parametrize(
    "content, line",
    [
        ("1 0 0\n0 1 0\n0 0\n", None),  # only 8 numbers
        ("1 0 0\n0 x 0\n0 0 1\n", 2),
        ("1 0 0\n0 1 0\n0 0 nan\n", 3),
        ("1 0 0\n0 1 0\n1 1 0\n", None),  # singular (coplanar)
        ("", None),
    ],
)
def test_read_mat_errors(tmp_path, content, line):
    path = _write(tmp_path, "bad.mat", content)
    with pytest.raises(InputError) as exc_info:
        read_mat(path)
    _assert_error(exc_info, path, line)


def test_read_mat_missing(tmp_path):
    path = tmp_path / "missing.mat"
    with pytest.raises(InputError) as exc_info:
        read_mat(path)
    _assert_error(exc_info, path)


# -------------------------------------------------------------------- sourcefile


def test_read_sourcefile_reference():
    src = read_sourcefile(SOURCES)
    assert src.shape == (4, 5)
    np.testing.assert_array_equal(src[1], [-10.0, 0.03, 0.0, 0.5, 1.04e-10])
    np.testing.assert_array_equal(src[3, :3], [-10.0, 0.012, 0.018])
    assert np.isnan(src[3, 3]) and np.isnan(src[3, 4])
    assert not np.isnan(src[:3]).any()


def test_read_sourcefile_delimiters_blank_and_extra_columns(tmp_path):
    path = _write(
        tmp_path,
        "s.txt",
        "1,2;3:4!5 6 7\r\n"
        " ,, \t\r\n"
        "\n"
        "# comment\n"
        "\t-1e1  nan 2\n"
        "8",  # no final newline: missing columns stay NaN
    )
    src = read_sourcefile(path)
    assert src.shape == (3, 5)
    np.testing.assert_array_equal(src[0], [1, 2, 3, 4, 5])
    assert src[1, 0] == -10.0 and np.isnan(src[1, 1]) and src[1, 2] == 2.0
    assert np.isnan(src[1, 3:]).all()
    assert src[2, 0] == 8.0 and np.isnan(src[2, 1:]).all()


@pytest.mark.parametrize(
    "content, line",
    [
        ("1 2 3\nfoo 2 3\n", 2),
        ("1 2 3\n\n1 2 3abc\n", 3),
        ("1 2 inf\n", 1),
        ("1 2 3 4 5 6\n1 2 3 4 x\n", 2),
    ],
)
def test_read_sourcefile_line_errors(tmp_path, content, line):
    path = _write(tmp_path, "bad.txt", content)
    with pytest.raises(InputError) as exc_info:
        read_sourcefile(path)
    _assert_error(exc_info, path, line)


def test_read_sourcefile_ignores_garbage_beyond_fifth_column(tmp_path):
    src = read_sourcefile(_write(tmp_path, "x.txt", "1 2 3 4 5 junk\n"))
    np.testing.assert_array_equal(src, [[1, 2, 3, 4, 5]])


@pytest.mark.parametrize("content", ["", " \n,,\n\n"])
def test_read_sourcefile_empty(tmp_path, content):
    path = _write(tmp_path, "empty.txt", content)
    with pytest.raises(InputError) as exc_info:
        read_sourcefile(path)
    _assert_error(exc_info, path)


def test_read_sourcefile_missing(tmp_path):
    path = tmp_path / "missing.txt"
    with pytest.raises(InputError) as exc_info:
        read_sourcefile(path)
    _assert_error(exc_info, path)


# --------------------------------------------------------------------------- smv


def test_smv_roundtrip_byte_identical_to_reference(tmp_path):
    header, data = read_smv(INTFILE)
    assert data.shape == (64, 64) and data.dtype == np.uint16
    assert data.max() == 65535 and data[32, 32] == 65535
    assert header["SIZE1"] == "64" and header["HEADER_BYTES"] == "512"
    assert header["DIALS_ORIGIN"] == "-3.3,3.3,-100"
    assert header_value(header, "PIXEL_SIZE") == 0.1
    assert header_value(header, "DIALS_ORIGIN") == -3.3
    assert header_value(header, "NOT_THERE") is None

    items = [
        (key, value, UNTERMINATED) if key == "DIALS_ORIGIN" else (key, value)
        for key, value in header.items()
    ]
    out = tmp_path / "int.img"
    write_smv(out, data, items)
    assert out.read_bytes() == INTFILE.read_bytes()

    # without the quirk the output must differ (guards against a vacuous pass)
    plain = tmp_path / "plain.img"
    write_smv(plain, data, list(header.items()))
    assert plain.read_bytes() != INTFILE.read_bytes()


def test_smv_write_read_roundtrip_and_defaults(tmp_path):
    data = (np.arange(3 * 5, dtype=np.uint16) * 4000).reshape(3, 5)
    out = tmp_path / "a.img"
    write_smv(out, data, [("PIXEL_SIZE", format_g(0.172)), ("BEAMLINE", "fake")])
    raw = out.read_bytes()
    assert raw.startswith(b"{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\n")
    assert raw[:512].rstrip(b" ").endswith(b"BEAMLINE=fake;\n}\x0c")
    assert len(raw) == 512 + 2 * 15
    assert raw[512:514] == struct.pack("<H", int(data[0, 0]))
    assert raw[514:516] == struct.pack("<H", int(data[0, 1]))
    header, back = read_smv(out)
    assert header["SIZE1"] == "5" and header["SIZE2"] == "3"
    np.testing.assert_array_equal(back, data)


def test_smv_header_grows_in_512_blocks(tmp_path):
    data = np.ones((2, 2), dtype=np.uint16)
    items = [(f"KEY{i:03d}", "x" * 20) for i in range(40)] + [("HEADER_BYTES", "512")]
    out = tmp_path / "big.img"
    write_smv(out, data, items)
    raw = out.read_bytes()
    assert raw.startswith(b"{\nHEADER_BYTES=1536;\nDIM=2;\n")
    assert raw.count(b"HEADER_BYTES") == 1
    assert len(raw) == 1536 + 8
    header, back = read_smv(out)
    assert header["KEY039"] == "x" * 20
    np.testing.assert_array_equal(back, data)


def test_read_smv_big_endian_and_last_key_wins(tmp_path):
    data = np.array([[1, 258], [65535, 4096]], dtype=">u2")
    head = (
        "{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nSIZE1=7;\n"
        "SIZE1=2;\nSIZE2=2;\nBYTE_ORDER=big_endian;\n}\x0c"
    ).encode()
    path = _write(tmp_path, "be.img", head.ljust(512, b" ") + data.tobytes())
    header, back = read_smv(path)
    assert header["BYTE_ORDER"] == "big_endian" and header["SIZE1"] == "2"
    np.testing.assert_array_equal(back, data.astype(np.uint16))


@pytest.mark.parametrize(
    "content",
    [
        b"P5\n2 2\n255\n" + b"\0" * 600,
        b"{\nDIM=2;\nSIZE1=2;\nSIZE2=2;\n}\x0c".ljust(512, b" ") + b"\0" * 8,
        b"{\nHEADER_BYTES=512;\nSIZE1=2;\n}\x0c".ljust(512, b" ") + b"\0" * 8,
        b"{\nHEADER_BYTES=512;\nSIZE1=0;\nSIZE2=2;\n}\x0c".ljust(512, b" ") + b"\0" * 8,
        b"{\nHEADER_BYTES=512;\nSIZE1=4;\nSIZE2=4;\n}\x0c".ljust(512, b" ") + b"\0" * 30,
        b"{\nHEADER_BYTES=512;\nSIZE1=1;\nSIZE2=1;\n}",
    ],
    ids=["not_smv", "no_header_bytes", "no_size2", "zero_size1", "truncated", "short"],
)
def test_read_smv_errors(tmp_path, content):
    path = _write(tmp_path, "bad.img", content)
    with pytest.raises(InputError) as exc_info:
        read_smv(path)
    _assert_error(exc_info, path)


def test_read_smv_missing(tmp_path):
    path = tmp_path / "missing.img"
    with pytest.raises(InputError) as exc_info:
        read_smv(path)
    _assert_error(exc_info, path)


def test_write_smv_rejects_inconsistent_items(tmp_path):
    data = np.zeros((2, 3), dtype=np.uint16)
    with pytest.raises(ValueError):
        write_smv(tmp_path / "x.img", data, [("SIZE1", "2")])
    with pytest.raises(ValueError):
        write_smv(tmp_path / "x.img", data, [("BYTE_ORDER", "big_endian")])
    with pytest.raises(ValueError):
        write_smv(tmp_path / "x.img", data, [("A", "b;c")])
    with pytest.raises(ValueError):
        write_smv(tmp_path / "x.img", np.zeros((2, 3)), [])
    assert not (tmp_path / "x.img").exists()


@pytest.mark.parametrize(
    "value, text",
    [
        (0.1, "0.1"),
        (100.0, "100"),
        (3.25, "3.25"),
        (1e-5, "1e-05"),
        (123456789.0, "1.23457e+08"),
        (-0.0, "-0"),
        (0.0001, "0.0001"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (float("nan"), "nan"),
        (-float("nan"), "-nan"),
        (np.float32(6.2), "6.2"),
    ],
)
def test_format_g_matches_c(value, text):
    assert format_g(value) == text


# --------------------------------------------------------------------------- pgm


def test_pgm_byte_identical_to_reference(tmp_path):
    reference = PGMFILE.read_bytes()
    pixels = np.frombuffer(reference[-64 * 64:], dtype=np.uint8).reshape(64, 64)
    out = tmp_path / "image.pgm"
    write_pgm(out, pixels, 3)
    assert out.read_bytes() == reference
    write_pgm(out, pixels, 2.5)
    assert out.read_bytes() != reference


def test_pgm_layout_nonsquare(tmp_path):
    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = tmp_path / "p.pgm"
    write_pgm(out, pixels, 0.125)
    assert out.read_bytes() == b"P5\n3 2\n# pixels scaled by 0.125\n255\n" + bytes(range(6))


# --------------------------------------------------------------------- floatfile


def test_float_roundtrip_and_layout(tmp_path):
    image = np.arange(12, dtype=np.float64).reshape(3, 4) / 3.0
    out = tmp_path / "f.bin"
    write_float(out, image)
    raw = out.read_bytes()
    assert len(raw) == 48
    assert struct.unpack("<f", raw[4:8])[0] == np.float32(1 / 3.0)
    back = read_float(out, (3, 4))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image.astype(np.float32))
    assert read_float(out).shape == (12,)


def test_read_float_errors(tmp_path):
    out = tmp_path / "f.bin"
    write_float(out, np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(InputError) as exc_info:
        read_float(out, (3, 3))
    _assert_error(exc_info, out)
    missing = tmp_path / "missing.bin"
    with pytest.raises(InputError) as exc_info:
        read_float(missing, (2, 2))
    _assert_error(exc_info, missing)


# ------------------------------------------------------------------ atomic write


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    out = tmp_path / "img.bin"
    out.write_bytes(b"old")
    write_float(out, np.ones((2, 2)))
    assert len(out.read_bytes()) == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.bin"]
    mode = os.stat(out).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_write_into_missing_directory_is_input_error(tmp_path):
    target = tmp_path / "no_such_dir" / "out.pgm"
    with pytest.raises(InputError) as exc_info:
        write_pgm(target, np.zeros((1, 1), dtype=np.uint8), 1.0)
    _assert_error(exc_info, target)
