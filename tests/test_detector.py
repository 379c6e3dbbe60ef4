"""Detector geometry: pivots keep what they promise, solid angle, capture fractions, Bragg's law."""
import numpy as np
import pytest

from jaxbragg import detector, geometry
from jaxbragg.simulate import simulate

from helpers import setup_from

MOSFLM = [np.array(v, float) for v in ((0, 0, 1), (0, -1, 0), (1, 0, 0), (1, 0, 0))]   # f, s, o, beam


@pytest.mark.parametrize("rot,tt", [((0.0, 0.0, 0.0), 0.0), ((0.05, -0.03, 0.02), 0.17)])
def test_beam_pivot_keeps_the_beam_spot(rot, tt):
    f, s, o, b = MOSFLM
    frame = detector.place_detector(f, s, o, b, np.array(rot), np.array([0, 0, -1.0]), tt, "beam",
                                    np.array([0.0051, 0.0062]), 0.1)
    spot = np.asarray(frame["pix0"]) + 0.0051 * np.asarray(frame["fdet"]) + 0.0062 * np.asarray(frame["sdet"])
    np.testing.assert_allclose(spot, 0.1 * b, atol=1e-16)         # the beam hits (Fbeam, Sbeam) at 100 mm
    if tt == 0.0:   # the reference's recomputed distance/beam centre agree when there is no two-theta
        assert float(frame["distance"]) == pytest.approx(0.1, rel=1e-13)
        np.testing.assert_allclose(detector.beam_spot(frame, b), [0.0051, 0.0062], atol=1e-15)


def test_sample_pivot_rotates_the_whole_detector_about_the_sample():
    f, s, o, b = MOSFLM
    args = (f, s, o, b, np.zeros(3), np.array([0, 0, -1.0]))
    flat = detector.place_detector(*args, 0.0, "sample", np.array([0.005, 0.006]), 0.1)
    swung = detector.place_detector(*args, 0.3, "sample", np.array([0.005, 0.006]), 0.1)
    r = np.asarray(geometry.axis_matrix(np.array([0, 0, -1.0]), 0.3))
    np.testing.assert_allclose(swung["pix0"], r @ np.asarray(flat["pix0"]), atol=1e-16)
    assert float(swung["close_distance"]) == pytest.approx(0.1, rel=1e-13)   # rigid rotation


def test_solid_angle_on_axis_and_obliquity():
    px, d = 1e-4, 0.1
    assert float(detector.solid_angle(d, d, px, False)) == pytest.approx(px * px / d ** 2, rel=1e-14)
    r = d / np.cos(0.3)           # pixel seen at 0.3 rad from the normal: pixel^2 cos / R^2
    assert float(detector.solid_angle(r, d, px, False)) == pytest.approx(px * px * np.cos(0.3) / r ** 2)
    assert float(detector.solid_angle(r, d, px, True)) == pytest.approx(1.0 / r ** 2)


def test_capture_fractions_of_all_layers_sum_to_total_absorption():
    d = np.array([0.8, 0.6, 0.0])
    odet = np.array([1.0, 0, 0])
    mu, step, n = 1 / 200e-6, 100e-6, 4
    total = sum(float(detector.capture_fraction(d, odet, i, step, mu)) for i in range(n))
    assert total == pytest.approx(1 - np.exp(-n * step * mu / 0.8), rel=1e-13)


def test_single_reflection_lands_where_braggs_law_says(tmp_path):
    """Only reflection (0 1 0) of a 50 A cubic cell, rotated into the Bragg condition about z."""
    (tmp_path / "one.hkl").write_text("0 1 0 100\n")
    lam, dspacing, dist, px = 1.0, 50.0, 100.0, 0.1
    theta = np.arcsin(lam / (2 * dspacing))
    setup = setup_from(f"-cell 50 50 50 90 90 90 -misset 0 0 {float(np.degrees(theta))!r} -hkl one.hkl "
                       f"-nointerpolate -N 10 -lambda {lam} -distance {dist} -detpixels 128 -pixel {px} "
                       "-oversample 1", str(tmp_path))
    image = np.asarray(simulate(setup.config, setup.params))
    # MOSFLM: beam along +x, slow axis along -y; diffracted ray (cos 2theta, sin 2theta, 0)
    sbeam_px, fbeam_px = setup.info["Sbeam"] / (px * 1e-3), setup.info["Fbeam"] / (px * 1e-3)
    y_px = dist * np.tan(2 * theta) / px
    expect_s, expect_f = sbeam_px - y_px - 0.5, fbeam_px - 0.5            # pixel-centre coordinates
    s_idx, f_idx = np.indices(image.shape)
    w = image / image.sum()
    assert (w * s_idx).sum() == pytest.approx(expect_s, abs=0.1)
    assert (w * f_idx).sum() == pytest.approx(expect_f, abs=0.1)
