"""Output files and their helpers: noise (C-identical and fast JAX), the PNG preview, progress reports,
and SMV interoperability with fabio."""
from __future__ import annotations

import io as _io
import json
import math
import struct
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import noise, rng
from jaxbragg.cli import Progress, main, run
from jaxbragg.cli import outputs as outmod
from jaxbragg.io.png import PNG_SIGNATURE, png_bytes, write_png

from helpers import run_cli

GOLDEN = Path(__file__).parent / "golden"
BASE = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-N", "5", "-seed", "7"]


# ------------------------------------------------------------------------------------------------
# a small independent PNG decoder (grayscale, filter 0 only: what our writer emits)
# ------------------------------------------------------------------------------------------------

def decode_png(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, ctype, comp, filt, lace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (ctype, comp, filt, lace) == (0, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    nbytes = depth // 8
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * nbytes)
    assert np.all(rows[:, 0] == 0)                     # filter type "None" on every scanline
    pix = rows[:, 1:].copy().view(">u2" if depth == 16 else np.uint8).reshape(height, width)
    text = dict(body.split(b"\0", 1) for kind, body in chunks if kind == b"tEXt")
    return pix, depth, {k.decode("latin-1"): v.decode("latin-1") for k, v in text.items()}


# ------------------------------------------------------------------------------------------------
# noise
# ------------------------------------------------------------------------------------------------

def test_fast_noise_mean_and_variance_on_a_flat_image():
    image = jnp.full((500, 200), 10.0, jnp.float32)           # 1e5 pixels of mean 10
    counts = np.asarray(noise.poisson_noise_jax(jax.random.PRNGKey(0), image))
    assert counts.shape == (500, 200) and counts.dtype == np.float32
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    assert abs(counts.mean() - 10.0) < 0.05                     # standard error 0.01
    assert abs(counts.var() / 10.0 - 1.0) < 0.02                # Var = mean for Poisson
    # low mean: P(0) = exp(-0.1) = 0.9048 (standard error 0.0009)
    low = np.asarray(noise.poisson_noise_jax(jax.random.PRNGKey(1), jnp.full((100_000,), 0.1)))
    assert abs(np.mean(low == 0) - math.exp(-0.1)) < 0.005


def test_fast_noise_edge_values_and_active_mask():
    image = np.array([[0.0, -3.0, np.nan], [4.0, 5.0, 1e4]], np.float32)
    active = np.array([[True, True, True], [False, True, True]])
    out = np.asarray(noise.poisson_noise_jax(jax.random.PRNGKey(3), image, active))
    assert out[0].tolist() == [0.0, 0.0, 0.0]                  # zero, negative and NaN means draw 0
    assert out[1, 0] == 0.0                                     # outside the mask
    assert abs(out[1, 2] - 1e4) < 6 * 100                       # 6 sigma of Poisson(1e4)


def test_fast_noise_vmaps_over_keys_and_jits():
    image = jnp.linspace(0.0, 50.0, 64 * 32).reshape(64, 32)
    keys = jax.random.split(jax.random.PRNGKey(42), 6)
    batch = jax.jit(jax.vmap(noise.poisson_noise_jax, in_axes=(0, None)))(keys, image)
    assert batch.shape == (6, 64, 32)
    for i in range(6):
        np.testing.assert_array_equal(batch[i], noise.poisson_noise_jax(keys[i], image))
    assert not np.array_equal(batch[0], batch[1])               # independent draws
    # averaged over the batch and all pixels, the counts follow the means
    assert abs(float(batch.mean()) - float(image.mean())) < 0.2   # standard error ~0.06


def test_to_counts_offset_clip_truncate_overloads():
    photons = np.array([0.0, 1.7, 65495.0, 65496.0, 70000.0, -50.0, np.nan, 3.0])
    counts, over = noise.to_counts(photons, 40.0)
    assert counts.dtype == np.uint16
    assert counts.tolist() == [40, 41, 65535, 65535, 65535, 0, 0, 43]
    assert over == 2                                            # 65536 and 70040; 65535 is not over
    active = np.array([True] * 4 + [False] + [True] * 3)
    counts, over = noise.to_counts(photons, 40.0, active)
    assert counts[4] == 0 and over == 1


def test_c_noise_helper_reproduces_the_golden_noise_image():
    case = GOLDEN / "noisefile_seed"
    args = json.loads((case / "case.json").read_text())["args"]
    seed = rng.idum_from_cli(args[args.index("-seed") + 1])      # -4242
    image = np.load(case / "float.npz")["image"]
    ref = np.frombuffer((case / "noise.img").read_bytes()[512:], "<u2").reshape(image.shape)
    active = np.ones(image.shape, bool)
    counts, photons, overloads = outmod.noise_image(image, seed, 40.0, active)
    np.testing.assert_array_equal(counts, ref)
    assert photons == float(ref.astype(np.int64).sum() - 40 * ref.size)
    assert overloads == 0
    np.testing.assert_array_equal(noise.to_counts(noise.poisson_noise_c(image, seed), 40.0)[0], ref)


def test_cli_noise_image_equals_the_reference_file(cwd):
    case = GOLDEN / "noisefile_seed"
    args = json.loads((case / "case.json").read_text())["args"]
    assert run(args + ["-floatfile", "f.bin"], out=_io.StringIO()) == 0
    assert (cwd / "noise.img").read_bytes()[512:] == (case / "noise.img").read_bytes()[512:]


def test_cli_noise_jax_uses_the_seeded_jax_key(cwd, capsys):
    argv = BASE + ["-detpixels", "16", "-nopgm", "-seed", "11"]
    rc, out, err = run_cli(argv + ["-noise_jax", "-noisefile", "j.img", "-floatfile", "f.bin"], capsys)
    assert rc == 0, err
    assert "jax.random.poisson" in out
    image = np.fromfile(cwd / "f.bin", "<f4").reshape(16, 16)
    expect, _ = noise.to_counts(noise.poisson_noise_jax(noise.key_from_seed(11), image), 40.0)
    got = np.frombuffer((cwd / "j.img").read_bytes()[512:], "<u2").reshape(16, 16)
    np.testing.assert_array_equal(got, expect)
    assert (cwd / "j.img").read_bytes()[:512] == (cwd / "intimage.img").read_bytes()[:512]
    # the default generator gives different numbers from the same seed
    rc, _, err = run_cli(argv + ["-noisefile", "c.img"], capsys)
    assert rc == 0, err
    assert (cwd / "c.img").read_bytes()[512:] != (cwd / "j.img").read_bytes()[512:]


# ------------------------------------------------------------------------------------------------
# PNG
# ------------------------------------------------------------------------------------------------

def test_png_bytes_round_trip_8_and_16_bit():
    a8 = (np.arange(7 * 5) * 7 % 256).astype(np.uint8).reshape(7, 5)
    data = png_bytes(a8, {"Comment": "hello"})
    assert data.startswith(PNG_SIGNATURE)
    pix, depth, text = decode_png(data)
    assert depth == 8 and pix.shape == (7, 5)
    np.testing.assert_array_equal(pix, a8)
    assert text == {"Comment": "hello"}
    a16 = np.array([[0, 1, 256], [65535, 4660, 300]], np.uint16)
    pix, depth, _ = decode_png(png_bytes(a16))
    assert depth == 16
    np.testing.assert_array_equal(pix, a16)
    # small plain integers are accepted; anything else is refused
    np.testing.assert_array_equal(decode_png(png_bytes(np.array([[0, 255]])))[0], [[0, 255]])
    for bad in (np.zeros((2, 2, 2), np.uint8), np.zeros((0, 3), np.uint8), np.array([[256]]),
                np.array([[0.5]])):
        with pytest.raises(ValueError):
            png_bytes(bad)


def test_png_decodes_with_pillow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    a = np.array([[0, 10, 20, 30], [40, 50, 60, 255], [1, 2, 3, 4]], np.uint8)
    write_png(tmp_path / "t.png", a, {"Software": "jaxbragg"})
    with Image.open(tmp_path / "t.png") as im:
        assert im.mode == "L" and im.size == (4, 3)
        np.testing.assert_array_equal(np.asarray(im), a)
        assert im.info["Software"] == "jaxbragg"


def test_cli_pngfile_preview(cwd, capsys):
    argv = BASE + ["-detpixels_f", "40", "-detpixels_s", "24", "-nopgm", "-nonoise",
                   "-floatfile", "f.bin", "-pngfile", "p.png", "-roi", "0", "35", "2", "23"]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert "writing p.png" in out
    pix, depth, text = decode_png((cwd / "p.png").read_bytes())
    assert depth == 8 and pix.shape == (24, 40)                 # height = slow, width = fast
    image = np.fromfile(cwd / "f.bin", "<f4").reshape(24, 40).astype(np.float64)
    roi = image[2:24, 0:36]
    white = np.percentile(roi, 99.9)
    assert f"png white level = {white:g} photons" in out
    assert f"W = {white:g}" in text["Comment"]
    expect = np.rint(255 * np.sqrt(np.clip(roi / white, 0, 1)))
    np.testing.assert_array_equal(pix[2:24, 0:36], expect)
    assert np.all(pix[:2] == 0) and np.all(pix[:, 36:] == 0)    # outside the ROI
    assert pix.max() == 255 and np.count_nonzero(pix == 255) == np.count_nonzero(roi >= white)


def test_png_white_level_fallbacks():
    sparse = np.zeros((40, 40), np.float32)
    sparse[3, 4] = 8.0                                          # 99.9th percentile is 0: use the max
    assert outmod.png_white_level(sparse, (0, 39, 0, 39), None) == 8.0
    assert outmod.png_white_level(np.zeros((40, 40), np.float32), (0, 39, 0, 39), None) == 1.0
    roi = (0, 9, 0, 9)
    mask = np.ones((10, 10), np.int32)
    mask[3, 4] = 0
    ramp = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert outmod.png_white_level(ramp, roi, mask) == pytest.approx(np.percentile(np.delete(ramp, 34), 99.9))


def test_pngfile_bad_directory_is_one_line_and_writes_nothing(cwd, capsys):
    rc, out, err = run_cli(BASE + ["-detpixels", "8", "-pngfile", "nodir/p.png"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("jaxbragg: error: nodir/p.png")
    assert list(cwd.iterdir()) == []


def test_no_png_unless_asked(cwd, capsys):
    rc, _, err = run_cli(BASE + ["-detpixels", "8"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in cwd.iterdir()) == ["floatimage.bin", "image.pgm", "intimage.img",
                                                     "noiseimage.img"]


# ------------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------------

# 64 x 64 pixels x (10 x 10 sub-pixels) x 10 mosaic domains x 5 phi steps = 20.48 M pixel-samples
LARGE = BASE + ["-detpixels", "64", "-oversample", "10", "-mosaic", "0.5", "-mosaic_domains", "10",
                "-phisteps", "5", "-osc", "1", "-nopgm", "-nonoise"]


def test_progress_lines_on_a_non_tty_stream(cwd, capsys):
    from jaxbragg import cli
    assert 64 * 64 * 100 * 10 * 5 >= cli.PROGRESS_MIN_WORK
    rc, out, err = run_cli(LARGE + ["-progress", "-floatfile", "a.bin"], capsys)
    assert rc == 0, err
    assert err.splitlines() == [f"{p}% done" for p in range(5, 101, 5)]
    assert "% done" not in out and "\r" not in err
    rc, out, err = run_cli(LARGE + ["-noprogress", "-floatfile", "b.bin"], capsys)
    assert rc == 0
    assert "done" not in err + out and err == ""
    # chunked and unchunked renders agree
    np.testing.assert_array_equal(np.fromfile(cwd / "a.bin", "<f4"), np.fromfile(cwd / "b.bin", "<f4"))


def test_no_progress_for_a_small_job(cwd, capsys):
    rc, out, err = run_cli(BASE + ["-detpixels", "8", "-progress"], capsys)
    assert rc == 0 and err == "" and "done" not in out


class FakeTTY(_io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_tty():
    times = iter([0.0, 1.0, 1.5, 2.0, 2.5])                   # start, then one tick per update
    s = FakeTTY()
    bar = Progress(s, 400, delay=2.0, clock=lambda: next(times))
    bar.update(100)      # 1.0 s, no rate yet: below the delay, nothing drawn
    assert s.getvalue() == ""
    bar.update(200)      # 1.5 s; 0.5 s per 100 since the first update -> ETA 1 s; 1.5 + 1 >= 2: drawn
    bar.update(300)      # 2.0 s; ETA 0.5 s
    bar.update(400)
    bar.close()
    frames = s.getvalue().split("\r")[1:]
    assert frames == [
        "[############............]  50%  elapsed 0:02  ETA 0:01",
        "[##################......]  75%  elapsed 0:02  ETA 0:00",
        "[########################] 100%  elapsed 0:02  ETA 0:00\n",
    ]


def test_progress_bar_quick_job_leaves_no_trace():
    ticks = iter(np.linspace(0.0, 0.2, 6))
    s = FakeTTY()
    bar = Progress(s, 4, delay=2.0, clock=lambda: next(ticks))
    for done in range(1, 5):
        bar.update(done)
    bar.close()
    assert s.getvalue() == ""


def test_progress_plain_lines_ignore_timing():
    s = _io.StringIO()
    bar = Progress(s, 3, delay=100.0)
    for done in (1, 2, 3):
        bar.update(done)
    bar.close()
    assert s.getvalue() == "33% done\n66% done\n100% done\n"


# ------------------------------------------------------------------------------------------------
# fabio reads our SMV files
# ------------------------------------------------------------------------------------------------

def test_smv_files_open_in_fabio(cwd, capsys):
    fabio = pytest.importorskip("fabio")
    argv = BASE + ["-detpixels_f", "24", "-detpixels_s", "16", "-pixel", "0.172", "-distance", "123.4",
                   "-lambda", "1.3", "-Xbeam", "1.5", "-Ybeam", "2.25", "-nopgm"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 0, err
    expect_header = {"SIZE1": 24, "SIZE2": 16, "PIXEL_SIZE": 0.172, "DISTANCE": 123.4, "WAVELENGTH": 1.3,
                     "BEAM_CENTER_X": 1.5, "BEAM_CENTER_Y": 2.25}
    for name in ("intimage.img", "noiseimage.img"):
        ours = np.frombuffer((cwd / name).read_bytes()[512:], "<u2").reshape(16, 24)
        assert ours.max() > 40                                  # real signal above the adc offset
        for img in (fabio.open(str(cwd / name)), fabio.adscimage.AdscImage().read(str(cwd / name))):
            assert img.data.shape == (16, 24)                   # (slow, fast)
            assert img.data.dtype == np.uint16
            np.testing.assert_array_equal(img.data, ours)
            for key, value in expect_header.items():
                assert float(img.header[key]) == pytest.approx(value, rel=1e-6), (name, key)
