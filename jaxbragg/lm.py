"""Levenberg-Marquardt (damped Gauss-Newton) on a model's Jacobian, for image likelihoods.

Model ``mu(x)`` (photons per pixel, ``x`` the packed free parameters in units of their scales), observed
``n``. A :class:`Likelihood` gives the per-pixel negative log-likelihood ``l(mu, n)`` and the Fisher
weight ``w(mu) = E[d^2 l / d mu^2]``, so that with ``J = d mu / d x`` (``jax.jacfwd``)

* gradient ``g = J^T dl/dmu``,
* Gauss-Newton (Fisher scoring) matrix ``H = J^T diag(w) J`` (positive semi-definite; at the optimum it is
  the Fisher information whose inverse is the covariance).

Likelihoods (:func:`likelihood`):

* ``"poisson"``: ``l = mu - n + n log(n / mu)`` (half the deviance), ``w = 1 / mu``;
* ``"poisson_readout"``: the Gaussian approximation of Poisson photons plus Gaussian read-out noise
  ``sigma`` [photons]: ``v = mu + sigma^2``, ``l = (n - mu)^2 / (2 v) + log(v / v_n) / 2`` with
  ``v_n = max(n, 0) + sigma^2`` (a constant that keeps the sum near half the pixel count), and
  ``w = 1 / v + 1 / (2 v^2)``;
* ``"least_squares"``: ``l = w_i (mu - n)^2 / 2``, ``w = w_i`` (default 1).

The step solves ``(H + lambda D) dx = -g`` with Marquardt's scaling ``D = diag(H)`` (floored at a small
fraction of its largest entry, so a parameter with no signal stays put), and accepts it when the loss
falls. The damping follows Nielsen (1999): on an accepted step with gain ratio ``rho`` (actual over
predicted decrease) ``lambda *= max(1/3, 1 - (2 rho - 1)^3)``, ``nu = 2``; on a rejected one
``lambda *= nu``, ``nu *= 2``. It stops when the Newton decrement ``g^T H^-1 g / 2`` (the loss still to
gain, in likelihood units) falls below ``dtol * max(1, loss)``, when the loss stops decreasing (``ftol``),
or at ``maxiter``.

The loop runs on the host and calls two jitted functions: ``evaluate(x) -> (loss, g, H)`` and
``loss(x)``; one iteration costs one Jacobian (plus one forward pass per rejected trial).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np


class Likelihood(NamedTuple):
    """Per-pixel ``nll(mu, n) [P]`` and Fisher weight ``weight(mu) [P]`` (both plain JAX functions)."""
    name: str
    nll: Callable
    weight: Callable


def _safe_ratio(n, mu):
    seen = n > 0
    return seen, jnp.where(seen, n, 1.0) / jnp.where(seen, mu, 1.0)


def likelihood(name: str = "poisson", readout: float = 0.0, weights=None, floor: float = 1e-6) -> Likelihood:
    """The :class:`Likelihood` named ``name`` (module docstring).

    Args:
      readout: read-out noise [photons rms] for ``"poisson_readout"``.
      weights: per-pixel weights [P] for ``"least_squares"``.
      floor: smallest model value used in a Poisson weight or logarithm [photons] (empty pixels).
    """
    if name == "poisson":
        def nll(mu, n):
            seen, ratio = _safe_ratio(n, mu)
            return mu - n + jnp.where(seen, n * jnp.log(ratio), 0.0)
        return Likelihood(name, nll, lambda mu: 1.0 / jnp.maximum(mu, floor))
    if name == "poisson_readout":
        s2 = float(readout) ** 2

        def nll(mu, n):
            v = jnp.maximum(mu, floor) + s2
            return 0.5 * (n - mu) ** 2 / v + 0.5 * jnp.log(v / (jnp.maximum(n, 0.0) + s2 + floor))

        def weight(mu):
            v = jnp.maximum(mu, floor) + s2
            return 1.0 / v + 0.5 / (v * v)
        return Likelihood(name, nll, weight)
    if name == "least_squares":
        w = 1.0 if weights is None else jnp.asarray(weights)
        return Likelihood(name, lambda mu, n: 0.5 * w * (mu - n) ** 2, lambda mu: w * jnp.ones_like(mu))
    raise ValueError(f"unknown likelihood {name!r}; expected 'poisson', 'poisson_readout' or 'least_squares'")


def normal_equations(model: Callable, lik: Likelihood):
    """``(x, n, *args) -> (loss, g [k], H [k, k], mu [P])`` for ``model(x, *args) -> mu [P]`` (un-jitted).

    ``J`` comes from ``jax.jacfwd`` (one tangent per free parameter), so faster forward-mode rules in the
    kernel speed this up without change here.
    """
    def evaluate(x, n, *args):
        def both(y):
            m = model(y, *args)
            return m, m
        jac, mu = jax.jacfwd(both, has_aux=True)(x)
        dl = jax.grad(lambda m: jnp.sum(lik.nll(m, n)))(mu)
        w = lik.weight(mu)
        return jnp.sum(lik.nll(mu, n)), jac.T @ dl, (jac * w[:, None]).T @ jac, mu
    return evaluate


class LMResult(NamedTuple):
    x: np.ndarray
    loss_history: np.ndarray
    iterations: int
    converged: bool
    message: str
    hessian: np.ndarray            # J^T W J at x
    gradient: np.ndarray


def levenberg_marquardt(evaluate: Callable, loss: Callable, x0, *, maxiter: int = 100, dtol: float = 1e-10,
                        ftol: float = 1e-13, lambda0: float = 1e-3, callback: Optional[Callable] = None,
                        max_step: Optional[float] = None) -> LMResult:
    """Minimise with Levenberg-Marquardt (module docstring).

    Args:
      evaluate: ``x -> (loss, g, H)`` (host or jitted; arrays are converted to NumPy float64).
      loss: ``x -> loss``.
      x0: start [k].
      maxiter: iterations (Jacobians) at most.
      dtol: stop when ``g^T H^-1 g / 2 <= dtol * max(1, loss)``.
      ftol: stop when an accepted step lowers the loss by at most ``ftol * max(1, loss)``.
      lambda0: initial damping.
      callback: ``callback(iteration, x, loss)`` after each accepted step.
      max_step: largest step [units of x] (a trust radius; None: unlimited).
    """
    x = np.asarray(x0, np.float64).copy()

    def ev(x):
        f, g, h = evaluate(x)[:3]
        return float(f), np.asarray(g, np.float64), np.asarray(h, np.float64)

    f, g, h = ev(x)
    history, lam, nu = [f], float(lambda0), 2.0
    message, converged, it, rejected = "maximum number of iterations reached", False, 0, 0
    while it < maxiter:
        if not (np.isfinite(f) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
            message = "loss, gradient or Gauss-Newton matrix not finite"
            break
        dec = 0.5 * float(g @ np.linalg.lstsq(h, g, rcond=1e-12)[0])
        if dec <= dtol * max(1.0, abs(f)):
            message, converged = "Newton decrement below dtol", True
            break
        d = np.diag(h).copy()
        d = np.maximum(d, 1e-9 * max(float(d.max()), 1e-300))
        step = np.linalg.solve(h + lam * np.diag(d), -g)
        if max_step is not None and np.max(np.abs(step)) > max_step:
            step *= max_step / np.max(np.abs(step))
        predicted = -float(g @ step) - 0.5 * float(step @ h @ step)
        f_new = float(loss(x + step))
        rho = (f - f_new) / predicted if predicted > 0 else -1.0
        if np.isfinite(f_new) and f_new < f and rho > 0:
            x = x + step
            decrease = f - f_new
            f, g, h = ev(x)
            history.append(f)
            it += 1
            rejected = 0
            lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            nu = 2.0
            if callback is not None:
                callback(it, x, f)
            if decrease <= ftol * max(1.0, abs(f)):
                message, converged = "relative loss decrease below ftol", True
                break
        else:
            lam *= nu
            nu *= 2.0
            rejected += 1
            if rejected > 40 or lam > 1e16:
                message = "no step lowers the loss (at its rounding level?)"
                converged = dec <= 1e3 * dtol * max(1.0, abs(f))
                break
    return LMResult(x, np.asarray(history), it, converged, message, h, g)
