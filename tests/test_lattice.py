"""Lattice factors: analytic values, the reference's normalisations, finite gradients at integers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import lattice

REC = np.diag([1 / 50.0, 1 / 60.0, 1 / 70.0])     # 1/Angstrom
N = jnp.array([5.0, 6.0, 7.0])


@pytest.mark.parametrize("h", [0.0, 1.0 + 1e-9, -3.0 + 1e-9, 7.0 - 1e-9])
def test_sincg_equals_n_at_integer_index(h):
    # N = 5 is odd, so the peak value is +N at every integer index
    assert float(lattice.sincg(jnp.pi * h, 5.0)) == pytest.approx(5.0, rel=1e-6)


def test_sincg_zeros_between_peaks():
    # sin(N pi h) = 0 at h = m/N, m not a multiple of N
    assert float(lattice.sincg(jnp.pi * 0.2, 5.0)) == pytest.approx(0.0, abs=1e-12)


def test_square_peak_is_product_of_n():
    f = lattice.lattice_factor(jnp.array([2.0, -1.0, 0.0]), N, 1.0, REC, "square")
    assert abs(float(f)) == pytest.approx(5 * 6 * 7, rel=1e-12)


def test_square_axis_with_one_cell_is_flat():
    f = lattice.lattice_factor(jnp.array([0.3, 0.0, 0.0]), jnp.array([1.0, 1.0, 1.0]), 1.0, REC, "square")
    assert float(f) == 1.0


def test_round_gauss_tophat_normalisation_at_peak():
    hkl = jnp.array([1.0, 2.0, 3.0])
    assert float(lattice.lattice_factor(hkl, N, 1.0, REC, "round")) == pytest.approx(210 * 0.723601254558268)
    assert float(lattice.lattice_factor(hkl, N, 1.0, REC, "gauss")) == pytest.approx(210.0)
    assert float(lattice.lattice_factor(hkl, N, 1.0, REC, "tophat")) == 210.0


def test_sinc3_first_zero():
    # 3 (sin x - x cos x) / x^3 vanishes at tan x = x, x = 4.493409457909064
    assert float(lattice.sinc3(4.493409457909064)) == pytest.approx(0.0, abs=1e-12)


def test_gauss_falls_as_documented():
    dh = 0.01
    f = lattice.lattice_factor(jnp.array([dh, 0.0, 0.0]), N, 1.0, REC, "gauss")
    rad = (dh / 50.0) ** 2 * float(jnp.prod(N)) ** 2
    assert float(f) == pytest.approx(210 * np.exp(-rad / 0.63), rel=1e-12)


def test_tophat_edge():
    nprod = 210.0
    dh_edge = np.sqrt(0.3969) / nprod * 50.0      # rad_star_sqr == 0.3969 at fudge 1
    inside = lattice.lattice_factor(jnp.array([0.99 * dh_edge, 0, 0]), N, 1.0, REC, "tophat")
    outside = lattice.lattice_factor(jnp.array([1.01 * dh_edge, 0, 0]), N, 1.0, REC, "tophat")
    assert float(inside) == nprod and float(outside) == 0.0


@pytest.mark.parametrize("shape", ["square", "round", "gauss"])
def test_gradients_finite_at_integer_indices(shape):
    g = jax.grad(lambda hkl, n: lattice.lattice_factor(hkl, n, 1.0, REC, shape) ** 2, argnums=(0, 1))(
        jnp.array([1.0, 0.0, -2.0]), N)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)


def test_square_gradient_matches_finite_difference():
    f = lambda h: lattice.lattice_factor(jnp.array([h, 0.3, 0.1]), N, 1.0, REC, "square")
    h, eps = 0.37, 1e-6
    fd = (float(f(h + eps)) - float(f(h - eps))) / (2 * eps)
    assert float(jax.grad(f)(h)) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_square_peak_near_direct_beam_is_finite_under_jit(dtype):
    # indices of ~1e-15 (the direct-beam pixel): the three sin(pi d) multiply to ~1e-44, a float32
    # subnormal that XLA:CPU flushes to zero; the peak must still be Na Nb Nc, not 0 / 0
    d = jnp.full((64,), 2.5e-15, dtype)
    f = jax.jit(lambda x: lattice.lattice_factor_reduced([x, -x, x], jnp.array([5.0, 6.0, 7.0], dtype),
                                                         jnp.asarray(1.0, dtype), jnp.eye(3, dtype=dtype),
                                                         "square"))
    np.testing.assert_allclose(np.asarray(f(d)), 210.0, rtol=1e-6)


@pytest.mark.parametrize("dtype,bound", [(jnp.float32, 3e-7), (jnp.float64, 1e-15)])
def test_sin_pi_relative_accuracy(dtype, bound):
    # the polynomial behind the square lattice factor, against NumPy's float64 sine, on the whole
    # reduced range and close to 0 (where relative accuracy matters for the ratio num / den)
    r = np.concatenate([np.linspace(-0.5, 0.5, 20001), np.geomspace(1e-30, 1e-3, 200)])
    got = np.asarray(jax.jit(lattice.sin_pi)(jnp.asarray(r, dtype)), np.float64)
    ref = np.sin(np.pi * np.asarray(r, dtype).astype(np.float64))
    nz = ref != 0
    assert np.max(np.abs(got[nz] - ref[nz]) / np.abs(ref[nz])) < bound
    assert np.all(got[~nz] == 0)
