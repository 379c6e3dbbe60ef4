"""Rotations: analytic properties and agreement between the vector and matrix forms."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import geometry

ANGLES = [(0.3, -1.1, 2.0), (0.0, 0.0, 0.0), (np.pi, 0.2, -0.7)]


@pytest.mark.parametrize("angles", ANGLES)
def test_xyz_matrix_is_a_proper_rotation(angles):
    r = np.asarray(geometry.xyz_matrix(np.array(angles)))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-14)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-14)


def test_xyz_order_is_x_then_y_then_z():
    # a quarter turn about x takes y to z; a following quarter turn about y takes z to x
    v = geometry.rotate_xyz(np.array([0.0, 1.0, 0.0]), np.array([np.pi / 2, np.pi / 2, 0.0]))
    np.testing.assert_allclose(v, [1.0, 0.0, 0.0], atol=1e-15)


@pytest.mark.parametrize("angle", [0.0, 0.4, -2.5])
def test_rotate_axis_matches_axis_matrix_and_keeps_length(angle):
    axis = np.array([1.0, 2.0, -3.0]) / np.sqrt(14.0)
    v = np.array([0.3, -1.2, 2.0])
    rotated = geometry.rotate_axis(v, axis, angle)
    np.testing.assert_allclose(rotated, geometry.axis_matrix(axis, angle) @ v, atol=1e-15)
    assert np.linalg.norm(rotated) == pytest.approx(np.linalg.norm(v), rel=1e-15)
    assert np.dot(rotated, axis) == pytest.approx(np.dot(v, axis), abs=1e-15)
    m = np.asarray(geometry.axis_matrix(axis, angle))
    assert np.linalg.det(m) == pytest.approx(1.0, abs=1e-14)


def test_right_handed_about_z():
    np.testing.assert_allclose(geometry.rotate_axis(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.pi / 2),
                               [0.0, 1.0, 0.0], atol=1e-15)


def test_numpy_inputs_stay_numpy_float64_and_jax_inputs_trace():
    out = geometry.rotate_axis(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), 0.1)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    out = geometry.rotate_axis(jnp.array([1.0, 0, 0]), np.array([0, 0, 1.0]), 0.1)
    assert not isinstance(out, np.ndarray)


def test_unitize_zero_vector_stays_zero():
    np.testing.assert_array_equal(geometry.unitize(np.zeros(3)), np.zeros(3))
    np.testing.assert_allclose(geometry.norm(geometry.unitize(np.array([3.0, 4.0, 12.0]))), 1.0)
