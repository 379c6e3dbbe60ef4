"""jaxbragg.fit: losses, the observed-image reader, the optimisers, and a reduced end-to-end fit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import fit as F
from jaxbragg import io
from jaxbragg import parameters as P

from helpers import setup_from

# a small triclinic crystal on a 32 x 32 detector that reaches 2theta ~ 25 degrees
REDUCED = ("-cell 30 32 34 88 92 91 -misset 10 20 30 -default_F 100 -N 5 -lambda 1.0 -distance 40 "
           "-detpixels 32 -pixel 0.5 -oversample 2 -fluence 1e30")


def test_poisson_nll_is_the_negative_log_likelihood_up_to_a_constant():
    n = jnp.array([0.0, 1.0, 3.0, 10.0, 250.0])
    mu1 = jnp.array([0.5, 1.5, 2.0, 12.0, 240.0])
    mu2 = jnp.array([0.1, 0.7, 4.0, 9.0, 260.0])
    logpmf = jax.scipy.stats.poisson.logpmf
    want = -(jnp.sum(logpmf(n, mu1)) - jnp.sum(logpmf(n, mu2)))
    assert float(F.poisson_nll(mu1, n) - F.poisson_nll(mu2, n)) == pytest.approx(float(want), rel=1e-12)
    assert float(F.poisson_nll(n, n)) == 0.0                    # saturated model: zero
    assert float(F.poisson_nll(mu1 - 0.1, n, background=0.1)) == pytest.approx(float(F.poisson_nll(mu1, n)))
    # empty pixels of an empty model: finite value and gradient
    g = jax.grad(F.poisson_nll)(jnp.zeros(3), jnp.zeros(3))
    np.testing.assert_array_equal(g, np.ones(3))


def test_least_squares():
    m, o, w = jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]), jnp.array([2.0, 0.5])
    assert float(F.least_squares(m, o)) == 2.5
    assert float(F.least_squares(m, o, w)) == 2.0


def test_load_observed_subtracts_the_adc_offset(tmp_path):
    photons = np.arange(12, dtype=np.uint16).reshape(3, 4)
    io.write_smv(tmp_path / "a.img", photons + 10, [("ADC_OFFSET", "10")])
    io.write_smv(tmp_path / "b.img", photons + 40, [])
    np.testing.assert_array_equal(F.load_observed(tmp_path / "a.img"), photons)
    np.testing.assert_array_equal(F.load_observed(str(tmp_path / "b.img")), photons)
    np.testing.assert_array_equal(F.load_observed(tmp_path / "a.img", adc_offset=0), photons + 10)
    assert F.load_observed(photons).dtype == np.float64


def _rosenbrock(x, aux):
    return jnp.sum(aux * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_bfgs_minimises_rosenbrock():
    x, history, it, converged, _ = F.minimize(_rosenbrock, jnp.array([-1.2, 1.0, 0.5]), jnp.asarray(100.0),
                                              gtol=1e-8)
    assert converged and it < 200
    np.testing.assert_allclose(x, np.ones(3), atol=1e-6)
    assert np.all(np.diff(history) <= 0) and len(history) == it + 1


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_optax_methods(method):
    pytest.importorskip("optax")
    quad = lambda x, aux: jnp.sum(aux * (x - 1.0) ** 2)
    x, history, it, converged, _ = F.minimize(quad, jnp.zeros(3), jnp.array([1.0, 2.0, 3.0]), method=method,
                                              maxiter=500, gtol=1e-6, learning_rate=0.05)
    np.testing.assert_allclose(x, np.ones(3), atol=1e-4)
    assert len(history) == it + 1 and history[-1] < 1e-8


def test_fit_rejects_unknown_parameters():
    setup = setup_from("-cell 30 30 30 90 90 90 -default_F 1 -detpixels 4")
    template, physical = P.from_setup(setup)
    with pytest.raises(ValueError, match="unknown parameter"):
        F.fit(template, physical, np.zeros((4, 4)), ["distanse"])
    with pytest.raises(ValueError, match="cannot be fitted"):
        F.fit(template, physical, np.zeros((4, 4)), ["F_grid"])


def test_reduced_fit_recovers_distance_beam_centre_and_cell(tmp_path):
    setup = setup_from(REDUCED)
    template, truth = P.from_setup(setup)
    expected = P.simulate(template, truth)
    photons = np.asarray(jax.random.poisson(jax.random.PRNGKey(0), expected))
    io.write_smv(tmp_path / "obs.img", (photons + 40).astype(np.uint16), [("ADC_OFFSET", "40")])
    start = truth.replace(distance=truth.distance + 3e-4, beam_center=truth.beam_center + np.array([1e-4, -1e-4]),
                          cell_lengths=truth.cell_lengths * 1.002)
    # fit only the brighter half of the pixels, rendering just those
    observed = F.load_observed(tmp_path / "obs.img")
    pixels = observed > np.median(observed)
    result = F.fit(template, start, tmp_path / "obs.img", ["distance", "beam_center", "cell_lengths"],
                   pixels=pixels, maxiter=150)
    assert result.converged, result.message
    assert result.loss_history[-1] < 1e-3 * result.loss_history[0]
    assert np.all(np.diff(result.loss_history) <= 0)
    fitted = result.physical
    assert abs(float(fitted.distance - truth.distance)) < 0.05e-3
    assert np.max(np.abs(np.asarray(fitted.beam_center - truth.beam_center))) < 0.02e-3
    assert np.max(np.abs(np.asarray(fitted.cell_lengths / truth.cell_lengths - 1.0))) < 5e-4
    # the Fisher errors describe the scatter: every error within 5 sigma, sigmas positive
    for name in result.free:
        err = np.abs(np.asarray(getattr(fitted, name)) - np.asarray(getattr(truth, name)))
        assert np.all(result.uncertainties[name] > 0) and np.all(err < 5 * result.uncertainties[name]), name
    assert result.covariance.shape == (6, 6)
    np.testing.assert_array_equal(fitted.ncells, truth.ncells)          # fixed fields stay put
