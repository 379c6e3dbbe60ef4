"""Fitting physical parameters to an observed image: losses, optimisers, uncertainties.

Model: ``mu_i(theta) + b``, the rendered photons of pixel ``i`` for the physical parameters ``theta``
(:mod:`jaxbragg.parameters`) plus an optional constant background ``b``. Losses between ``mu`` and the
observed photons ``n``:

* Poisson: ``L = sum_i mu_i - n_i + n_i log(n_i / mu_i)``, the negative log-likelihood less that of the
  saturated model (half the Poisson deviance). It differs from ``-log P(n | mu)`` by a constant, is 0 for a
  perfect model and about half the number of pixels at the truth, which keeps float32 sums well scaled.
* least squares: ``L = 1/2 sum_i w_i (mu_i - n_i)^2``.
* any callable ``loss(mu + b, observed)`` returning a scalar, e.g. the detector likelihood of an ADU image
  :func:`jaxbragg.response.detector_nll`. When it has an ``expected(model)`` method (the observation the
  model predicts, e.g. ``gain * mu + adc``), the information matrix uses it in place of ``mu + b``.

The free parameters are chosen by field name. The optimiser sees ``x = (theta - theta_start) / scale``
with one scale per field (:func:`default_scale`: about the size of a typical error, e.g. 0.1 mm for the
distance, 0.1% of the cell), so that its numbers are O(1).

Uncertainties come from the inverse of the information matrix at the optimum:
``I = J^T diag(1 / mu) J`` (Poisson Fisher information, ``J = d mu / d theta``), or
``I = J^T W J / s^2`` for least squares with ``s^2 = 2 L / (N - n)`` estimated from the residuals. Both are
the Hessian of the loss once the data are replaced by the fitted model (the residual terms vanish), which
:func:`_information` takes by central differences of the jitted gradient: no second compilation.

Optimisers: ``"bfgs"`` (default, no dependency): BFGS driven from the host on a jitted value-and-gradient,
with a backtracking Armijo line search. Unlike ``jax.scipy.optimize.minimize`` (one ``while_loop`` on the
device) it reports the loss after every iteration and can call back. ``"lbfgs"`` and ``"adam"`` come from
optax, an optional dependency imported only when asked for.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import io
from ._jit import EntryJit
from . import simulate as sim
from .parameters import FIELDS, Physical, Template, to_params

DEFAULT_ADC_OFFSET = 40.0

# typical sizes of an error, in SI units / radians ...
_ABSOLUTE_SCALE = dict(cell_angles=1e-3, misset=1e-3, rotvec=1e-3, phi0=1e-3, osc=1e-3, mosaic_spread=1e-3,
                       ncells=1.0, distance=1e-4, beam_center=1e-4, detector_rotations=1e-3, twotheta=1e-3,
                       bandwidth=1e-3, kahn=0.1)
# ... or relative to the field's largest magnitude
_RELATIVE_SCALE = dict(cell_lengths=1e-3, wavelength=1e-3, fluence=1e-2, default_F=1e-2, F_grid=1e-2)


def poisson_nll(model, observed, background=0.0):
    """Poisson negative log-likelihood less the saturated model's (see module docstring).

    Args:
      model: expected photons [...] (>= 0).
      observed: observed photons [...] (counts; non-integer values are accepted).
      background: constant added to ``model``.
    """
    mu = model + background
    seen = observed > 0
    ratio = jnp.where(seen, observed, 1.0) / jnp.where(seen, mu, 1.0)
    return jnp.sum(mu - observed + jnp.where(seen, observed * jnp.log(ratio), 0.0))


def least_squares(model, observed, weights=None, background=0.0):
    """``1/2 sum w (model + background - observed)^2`` (``w = 1`` by default)."""
    r = model + background - observed
    return 0.5 * jnp.sum(r * r if weights is None else weights * r * r)


LOSSES = {"poisson": poisson_nll, "least_squares": least_squares}


def load_observed(source, adc_offset: Optional[float] = None) -> np.ndarray:
    """Observed photons [spixels, fpixels] as float64.

    Args:
      source: an image array, or the path of an SMV file (e.g. a ``-noisefile``).
      adc_offset: subtracted from an SMV file's values; by default the header's ``ADC_OFFSET``
        (40, the reference's ``-adc`` default, when the header has none). Ignored for arrays.
    """
    if isinstance(source, (str, os.PathLike)):
        header, data = io.read_smv(source)
        if adc_offset is None:
            adc_offset = io.header_value(header, "ADC_OFFSET")
        adc = DEFAULT_ADC_OFFSET if adc_offset is None else float(adc_offset)
        return data.astype(np.float64) - adc
    return np.asarray(source, dtype=np.float64)


def default_scale(name: str, value) -> np.ndarray:
    """Optimiser scale of field ``name`` (a scalar broadcast over the field), given its start ``value``."""
    if name in _ABSOLUTE_SCALE:
        return np.asarray(_ABSOLUTE_SCALE[name])
    size = float(np.max(np.abs(np.asarray(value, np.float64))))
    return np.asarray(_RELATIVE_SCALE[name] * (size if size > 0 else 1.0))


@dataclasses.dataclass(frozen=True)
class _Packer:
    """Flattens the free fields of a Physical into ``x = (value - start) / scale`` and back."""
    names: Tuple[str, ...]
    shapes: Tuple[Tuple[int, ...], ...]
    scales: np.ndarray                     # [n] per flattened entry

    @classmethod
    def make(cls, start: Physical, free: Sequence[str], scales: Optional[Mapping[str, float]]):
        scales = dict(scales or {})
        unknown = [n for n in list(free) + list(scales) if n not in FIELDS]
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; choose from {FIELDS}")
        if len(set(free)) != len(free) or not free:
            raise ValueError(f"free must name each parameter once, got {list(free)}")
        shapes, flat = [], []
        for name in free:
            value = getattr(start, name)
            if value is None:
                raise ValueError(f"{name} is None in the start parameters and cannot be fitted")
            shape = np.shape(value)
            s = scales.get(name, None)
            s = default_scale(name, value) if s is None else np.asarray(s, np.float64)
            flat.append(np.broadcast_to(s, shape).reshape(-1).astype(np.float64))
            shapes.append(shape)
        return cls(tuple(free), tuple(shapes), np.concatenate(flat))

    @property
    def size(self) -> int:
        return int(self.scales.size)

    def slices(self):
        out, i = [], 0
        for shape in self.shapes:
            n = math.prod(shape)
            out.append(slice(i, i + n))
            i += n
        return out

    def unpack(self, x, start: Physical) -> Physical:
        dtype = jnp.asarray(start.distance).dtype
        step = x * jnp.asarray(self.scales, dtype)
        new = {name: getattr(start, name) + step[sl].reshape(shape)
               for name, shape, sl in zip(self.names, self.shapes, self.slices())}
        return start.replace(**new)

    def split(self, flat) -> Dict[str, np.ndarray]:
        return {name: np.asarray(flat[sl]).reshape(shape)
                for name, shape, sl in zip(self.names, self.shapes, self.slices())}


@dataclasses.dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
      physical: fitted parameters (the start values for the fixed fields).
      free: names of the fitted fields, in the order of ``covariance``.
      uncertainties: 1-sigma error of each free field (shape of the field, SI units).
      covariance: [n, n] covariance of the flattened free fields (SI units).
      loss: final loss.
      loss_history: [iterations + 1] loss at the start and after each iteration.
      iterations: optimiser iterations taken.
      converged: whether a convergence test (not the iteration limit) stopped the optimiser.
      message: why it stopped.
      scales: the optimiser scale of each free field.
      correlation: [n, n] correlation matrix of the free fields (covariance over the sigmas).
      experiment: the fitted :class:`jaxbragg.Experiment` (fits of an experiment; else None).
      values: free path -> fitted value [SI] (fits of an experiment).
      stages: per stage of a staged fit: oversample, iterations, loss, seconds, message.
    """
    physical: Physical
    free: Tuple[str, ...]
    uncertainties: Dict[str, np.ndarray]
    covariance: np.ndarray
    loss: float
    loss_history: np.ndarray
    iterations: int
    converged: bool
    message: str
    scales: Dict[str, np.ndarray]
    correlation: Optional[np.ndarray] = None
    experiment: Optional[object] = None
    values: Optional[Dict[str, np.ndarray]] = None
    stages: Tuple[dict, ...] = ()


def _pixel_indices(config: sim.SimConfig, base, pixels):
    """(spix, fpix) int arrays of the pixels to fit: the given ones, a boolean mask, or the ROI window."""
    if pixels is None:
        f0, f1, s0, s1 = config.roi_box()
        keep = np.zeros((config.spixels, config.fpixels), bool)
        keep[s0:s1 + 1, f0:f1 + 1] = True
        if config.use_mask:
            keep &= np.asarray(base.mask) != 0
        pixels = keep
    if isinstance(pixels, tuple):
        spix, fpix = (np.asarray(p, np.int64).reshape(-1) for p in pixels)
    else:
        spix, fpix = np.nonzero(np.asarray(pixels, bool))
    return spix.astype(np.int32), fpix.astype(np.int32)


def model_pixels(template: Template, physical: Physical, spix, fpix, subset: bool):
    """Model photons at the pixels ``(spix, fpix)``: from a full render, or with ``subset`` only those pixels.

    A full render applies the whole-image rules of :func:`jaxbragg.simulate.render` (mask, interpolation
    switch-off, phi carry-over option); a subset costs in proportion to its size.
    """
    params = to_params(template, physical)
    if subset:
        return sim.render_pixels(template.config, params, spix, fpix)
    return sim.render(template.config, params)[spix, fpix]


def minimize(fun: Callable, x0, aux=None, *, method: str = "bfgs", maxiter: int = 200, gtol: float = 1e-6,
             ftol: float = 1e-12, learning_rate: float = 0.1, callback: Optional[Callable] = None,
             value_and_grad: Optional[Callable] = None):
    """Minimise ``fun(x, aux)`` over the vector ``x`` (``aux``: a pytree of fixed arrays, traced once).

    Args:
      value_and_grad: optional jitted ``(x, aux) -> (fun, grad)`` to use instead of compiling one
        (``"bfgs"`` only).

    Returns:
      ``(x, loss_history, iterations, converged, message)``.
    """
    if method == "bfgs":
        fg = value_and_grad if value_and_grad is not None else EntryJit(jax.value_and_grad(fun))
        dtype = jnp.asarray(x0).dtype

        def host_fg(x):
            f, g = fg(jnp.asarray(x, dtype), aux)
            return float(f), np.asarray(g, np.float64)
        return _bfgs(host_fg, np.asarray(x0, np.float64), maxiter, gtol, ftol, callback)
    if method in ("adam", "lbfgs"):
        return _optax(fun, jnp.asarray(x0), aux, method, maxiter, gtol, ftol, learning_rate, callback)
    raise ValueError(f"unknown method {method!r}; expected 'bfgs', 'lbfgs' or 'adam'")


def _bfgs(fg, x, maxiter, gtol, ftol, callback):
    """BFGS with the inverse-Hessian update and a backtracking (Armijo) line search."""
    n = x.size
    f, g = fg(x)
    history = [f]
    inv_h = None
    message, converged, it = "maximum number of iterations reached", False, 0
    while it < maxiter:
        if not np.all(np.isfinite(g)) or not np.isfinite(f):
            message = "loss or gradient not finite"
            break
        if np.max(np.abs(g)) <= gtol:
            message, converged = "gradient below gtol", True
            break
        if inv_h is None:                      # first step: at most one scale unit down the gradient
            p = -g * min(1.0, 1.0 / np.linalg.norm(g))
        else:
            p = -inv_h @ g
        slope = float(g @ p)
        if slope >= 0.0:                       # not a descent direction: restart from the gradient
            inv_h = None
            p = -g * min(1.0, 1.0 / np.linalg.norm(g))
            slope = float(g @ p)
        alpha = 1.0
        for _ in range(40):
            x_new = x + alpha * p
            f_new, g_new = fg(x_new)
            if np.isfinite(f_new) and f_new <= f + 1e-4 * alpha * slope:
                break
            if np.isfinite(f_new):             # minimum of the quadratic through f, slope and f_new
                curv = 2.0 * (f_new - f - slope * alpha)
                trial = -slope * alpha * alpha / curv if curv > 0 else 0.5 * alpha
                alpha = min(max(trial, 0.1 * alpha), 0.5 * alpha)
            else:
                alpha *= 0.1
        else:
            message = "line search found no decrease (loss at its rounding level?)"
            converged = bool(np.max(np.abs(g)) <= 1e3 * gtol)
            break
        it += 1
        s, y = x_new - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
            if inv_h is None:
                inv_h = (sy / float(y @ y)) * np.eye(n)
            rho = 1.0 / sy
            v = np.eye(n) - rho * np.outer(s, y)
            inv_h = v @ inv_h @ v.T + rho * np.outer(s, s)
        decrease = f - f_new
        x, f, g = x_new, f_new, g_new
        history.append(f)
        if callback is not None:
            callback(it, x, f)
        if decrease <= ftol * max(abs(f), 1.0):
            message, converged = "relative loss decrease below ftol", True
            break
    return x, np.asarray(history), it, converged, message


def _import_optax():
    try:
        import optax
    except ImportError as err:      # pragma: no cover - depends on the environment
        raise ImportError("method 'adam'/'lbfgs' needs optax: pip install 'jaxbragg[fit]' (or optax); "
                          "method 'bfgs' needs nothing extra") from err
    return optax


def _optax(fun, x, aux, method, maxiter, gtol, ftol, learning_rate, callback):
    optax = _import_optax()
    opt = optax.adam(learning_rate) if method == "adam" else optax.lbfgs()

    def step_fn(x, state, aux):
        f = lambda y: fun(y, aux)
        if method == "lbfgs":
            value, grad = optax.value_and_grad_from_state(f)(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        else:
            value, grad = jax.value_and_grad(f)(x)
            updates, state = opt.update(grad, state, x)
        return optax.apply_updates(x, updates), state, value, grad

    step = EntryJit(step_fn)
    state = opt.init(x)
    history = []                             # loss at x_0, x_1, ...
    message, converged, it = "maximum number of iterations reached", False, 0
    while it < maxiter:
        x_new, state, value, grad = step(x, state, aux)
        history.append(float(value))
        if float(jnp.max(jnp.abs(grad))) <= gtol:
            message, converged = "gradient below gtol", True
            break
        if method == "lbfgs" and len(history) > 1 and \
                history[-2] - history[-1] <= ftol * max(abs(history[-1]), 1.0):
            message, converged = "relative loss decrease below ftol", True
            break
        x = x_new
        it += 1
        if callback is not None:
            callback(it, np.asarray(x), history[-1])
    if len(history) == it:                   # stopped by maxiter: x_it not evaluated yet
        history.append(float(EntryJit(fun)(x, aux)))
    return np.asarray(x, np.float64), np.asarray(history), it, converged, message


def _information(value_and_grad, x, aux, expected=None):
    """Information matrix [n, n] (per unit of x): the loss's Hessian with the data replaced by the model.

    With ``n = mu(x*) + b`` the terms of the Hessian that multiply the residuals vanish, leaving exactly
    ``J^T diag(1/mu) J`` (Poisson) or ``J^T W J`` (least squares). It is taken by central differences of
    the jitted gradient, which needs no second compilation; the error is O(h^2).
    """
    (_, model), _ = value_and_grad(x, aux)
    background = aux["background"]
    predicted = model + background
    at_model = dict(aux, observed=predicted if expected is None else expected(predicted))
    h = 1e-4 if x.dtype == jnp.float64 else 1e-2
    cols = []
    for j in range(x.size):
        step = jnp.zeros_like(x).at[j].set(h)
        plus = np.asarray(value_and_grad(x + step, at_model)[1], np.float64)
        minus = np.asarray(value_and_grad(x - step, at_model)[1], np.float64)
        cols.append((plus - minus) / (2.0 * h))
    info = np.stack(cols, axis=1)
    return 0.5 * (info + info.T)


def fit(template, start, observed=None, free=None, **options) -> FitResult:
    """Fit an experiment or a (template, start) pair to an observed image.

    ``fit(experiment, observed, free=[paths], ...)`` fits a :class:`jaxbragg.Experiment`
    (:func:`jaxbragg.fit_experiment.fit_experiment`: Levenberg-Marquardt, staging, dotted paths);
    ``fit(template, start, observed, free, ...)`` the :class:`~jaxbragg.parameters.Physical` fields of
    :func:`fit_template`.
    """
    from .experiment import Experiment
    if isinstance(template, Experiment):
        from .fit_experiment import fit_experiment
        if free is None:
            free = observed
        elif observed is not None:
            raise TypeError("fit(experiment, observed, free): too many positional arguments")
        return fit_experiment(template, start, free, **options)
    return fit_template(template, start, observed, free, **options)


def fit_template(template: Template, start: Physical, observed, free: Sequence[str], *, loss: str = "poisson",
        method: str = "bfgs", scales: Optional[Mapping[str, float]] = None, pixels=None, subset=None,
        background: float = 0.0, weights=None, maxiter: int = 200, gtol: float = 1e-6, ftol: float = 1e-12,
        learning_rate: float = 0.1, adc_offset: Optional[float] = None,
        callback: Optional[Callable] = None) -> FitResult:
    """Fit the ``free`` fields of ``start`` to an observed image.

    Args:
      template: the fixed half of the model (:func:`jaxbragg.parameters.from_setup`).
      start: starting parameters; fields not in ``free`` stay fixed.
      observed: observed photons [spixels, fpixels], or an SMV file path (see :func:`load_observed`).
      free: names of the fields to fit (see :class:`jaxbragg.parameters.Physical`).
      loss: ``"poisson"``, ``"least_squares"``, or a callable ``loss(model + background, observed)``
        (see the module docstring; ``observed`` is then passed on as given, e.g. in ADU).
      method: ``"bfgs"`` (no dependency), ``"lbfgs"`` or ``"adam"`` (optax).
      scales: per-field optimiser scale overriding :func:`default_scale` (SI units).
      pixels: pixels to fit: ``(spix, fpix)`` index arrays, a boolean [spixels, fpixels] mask, or ``None``
        for the ROI window (less masked-out pixels).
      subset: render only the fitted pixels (cost in proportion to their number); default: when
        ``pixels`` is given.
      background: constant photons added to the model in every pixel.
      weights: least-squares weights [spixels, fpixels].
      maxiter, gtol, ftol: iteration limit; stop when max |d loss / d x| <= gtol, or when a step lowers the
        loss by at most ``ftol * |loss|``.
      learning_rate: for ``"adam"``.
      adc_offset: for an SMV ``observed``.
      callback: ``callback(iteration, x, loss)`` after each iteration.
    """
    custom = callable(loss)
    if not custom and loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {tuple(LOSSES)} or a callable")
    dtype = jnp.asarray(start.distance).dtype
    image = load_observed(observed, adc_offset)
    spix, fpix = _pixel_indices(template.config, template.base, pixels)
    subset = pixels is not None if subset is None else bool(subset)
    packer = _Packer.make(start, tuple(free), scales)
    w = None if weights is None else jnp.asarray(np.asarray(weights)[spix, fpix], dtype)
    aux = dict(template=template, start=start, observed=jnp.asarray(image[spix, fpix], dtype),
               spix=jnp.asarray(spix), fpix=jnp.asarray(fpix), weights=w,
               background=jnp.asarray(background, dtype))

    def model_of(x, aux):
        phys = packer.unpack(x, aux["start"])
        return model_pixels(aux["template"], phys, aux["spix"], aux["fpix"], subset)

    def objective(x, aux):
        model = model_of(x, aux)
        if custom:
            return loss(model + aux["background"], aux["observed"]), model
        if loss == "poisson":
            return poisson_nll(model, aux["observed"], aux["background"]), model
        return least_squares(model, aux["observed"], aux["weights"], aux["background"]), model

    value_and_grad = EntryJit(jax.value_and_grad(objective, has_aux=True))
    x, history, iterations, converged, message = minimize(
        lambda x, aux: objective(x, aux)[0], jnp.zeros(packer.size, dtype), aux, method=method,
        maxiter=maxiter, gtol=gtol, ftol=ftol, learning_rate=learning_rate, callback=callback,
        value_and_grad=lambda x, aux: (lambda r: (r[0][0], r[1]))(value_and_grad(x, aux)))
    x = jnp.asarray(x, dtype)
    info = _information(value_and_grad, x, aux, getattr(loss, "expected", None) if custom else None)
    if loss == "least_squares":
        info = info / (2.0 * float(history[-1]) / max(spix.size - packer.size, 1))
    cov = np.linalg.pinv(info) * np.outer(packer.scales, packer.scales)
    fitted = packer.unpack(x, start)
    sig = np.sqrt(np.abs(np.diag(cov)))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sig, sig)
    return FitResult(
        physical=fitted, free=packer.names, uncertainties=packer.split(sig),
        covariance=cov, loss=float(history[-1]), loss_history=history, iterations=int(iterations),
        converged=bool(converged), message=message, scales=packer.split(packer.scales), correlation=corr)
