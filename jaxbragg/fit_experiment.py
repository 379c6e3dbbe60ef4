"""Fitting a :class:`jaxbragg.Experiment` to an observed image: free fields by path, Levenberg-Marquardt,
coarse-to-fine staging, Fisher uncertainties and correlations.

``jb.fit(experiment, observed, free=["crystal.cell_lengths", "crystal.orientation", "detector.distance",
"detector.beam_center", "crystal.N"])`` (:func:`fit_experiment`; :func:`jaxbragg.fit.fit` dispatches here
when its first argument is an experiment). Each free name is a dotted path into the experiment
(:mod:`jaxbragg.paths`, aliases included). The optimiser sees ``x`` with ``value = start + x * scale`` and
one scale per field (:func:`scale_of`: about a typical error, e.g. 0.1 mm for the distance, 0.1 % of a cell
edge, 1 mrad for an orientation), so its numbers are O(1).

Methods: ``"lm"`` (default; :mod:`jaxbragg.lm` on ``jax.jacfwd`` of the model pixels) or the
gradient-only optimisers of :mod:`jaxbragg.fit` (``"bfgs"``, ``"lbfgs"``, ``"adam"``) on the same loss.
Likelihoods: ``"poisson"``, ``"poisson_readout"`` (with ``readout=`` photons rms), ``"least_squares"``.

Sampling. A spot narrower than a pixel, sampled at ``oversample`` points per pixel edge below the
reference's rule (:func:`jaxbragg.recommended_oversample`), makes the model a poor and rugged function of
the geometry: :class:`SamplingWarning` says so. With ``staging="auto"`` such a fit (and any fit whose
start is far, see :func:`plan_stages`) first runs at the recommended oversample, where the image is
a smooth average over each pixel, and then at the experiment's own sampling, so the last stage fits the
model the data were taken with. The Fisher uncertainties come from that last stage.

Uncertainties: the covariance is ``(J^T W J)^-1`` at the optimum (``W`` the likelihood's Fisher weights;
least squares scaled by the residual variance ``2 L / (P - k)``), in SI units; ``correlation`` is the
covariance normalised by the sigmas.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import experiment as exp_mod
from . import lm as lm_mod
from . import paths
from .fit import FitResult, _ABSOLUTE_SCALE, _Packer, _RELATIVE_SCALE, load_observed


class SamplingWarning(UserWarning):
    """The pixels are sampled more coarsely than the spots need (oversample below the reference's rule)."""


#: experiment field name -> the name of its scale in fit's tables (where they differ)
_SCALE_NAMES = {"rotations": "detector_rotations", "F": "F_grid", "phistep": "osc"}
#: amorphous parts (jaxbragg.sample.Amorphous): a background model's amounts are known to some 10 %
_PART_SCALE = dict(thickness=0.1, scale=0.1, density=0.1, width=0.1, height=0.1, molar_mass=0.1)


def scale_of(path: str, value) -> np.ndarray:
    """Optimiser scale of the field at ``path`` [its SI unit] given its start ``value`` (a scalar)."""
    name = paths.canonical(path).rsplit(".", 1)[-1]
    name = _SCALE_NAMES.get(name, name)
    if name == "ncells":
        return np.asarray(0.05 * float(np.max(np.abs(value))))
    if name in _ABSOLUTE_SCALE:
        return np.asarray(_ABSOLUTE_SCALE[name])
    size = float(np.max(np.abs(np.asarray(value, np.float64)))) if np.size(value) else 1.0
    if paths.canonical(path).startswith("parts.") and name in _PART_SCALE:
        return np.asarray(_PART_SCALE[name] * (size if size > 0 else 1.0))
    return np.asarray(_RELATIVE_SCALE.get(name, 1e-3) * (size if size > 0 else 1.0))


@dataclasses.dataclass(frozen=True)
class Packer:
    """The free fields of an experiment as one vector ``x`` (``value = start + x * scale``)."""
    paths: Tuple[str, ...]
    shapes: Tuple[Tuple[int, ...], ...]
    scales: np.ndarray                  # [k]
    start: Tuple[np.ndarray, ...]

    @classmethod
    def make(cls, experiment, free: Sequence[str], scales: Optional[Mapping[str, float]] = None):
        free = tuple(free)
        if not free or len({paths.canonical(p) for p in free}) != len(free):
            raise ValueError(f"free must name each field once, got {list(free)}")
        scales = dict(scales or {})
        shapes, flat, start = [], [], []
        for p in free:
            value = paths.get_path(experiment, p)
            if value is None:
                raise ValueError(f"{p} is None in this experiment and cannot be fitted")
            value = np.asarray(value, np.float64)
            s = scales.get(p)
            s = scale_of(p, value) if s is None else np.asarray(s, np.float64)
            flat.append(np.broadcast_to(s, value.shape).reshape(-1))
            shapes.append(value.shape)
            start.append(value)
        return cls(free, tuple(shapes), np.concatenate(flat).astype(np.float64), tuple(start))

    size = _Packer.size                 # the same flattening rules as the template fit's packer
    slices = _Packer.slices

    def values(self, x, base=None, scales=None):
        """Field values {path: array} at ``x`` (NumPy or JAX), stepped from ``base``'s values (default: the
        start's) by ``scales`` (default: the packer's)."""
        xp = jnp if isinstance(x, jax.Array) else np
        step = x * (xp.asarray(self.scales) if scales is None else scales)
        start = self.start if base is None else [paths.get_path(base, p) for p in self.paths]
        return {p: s0 + step[sl].reshape(shape)
                for p, shape, sl, s0 in zip(self.paths, self.shapes, self.slices(), start)}

    def apply(self, experiment, x, scales=None):
        """``experiment`` with each free field moved by ``x`` (in units of the scales) from its own value."""
        for p, v in self.values(x, experiment, scales).items():
            experiment = paths.set_path(experiment, p, v)
        return experiment

    def split(self, flat) -> Dict[str, np.ndarray]:
        return {p: np.asarray(flat[sl]).reshape(shape) for p, shape, sl in zip(self.paths, self.shapes, self.slices())}


def pixel_indices(experiment, pixels=None):
    """(spix, fpix) int32 of the pixels to fit: given index arrays, a boolean mask, or the ROI window
    less masked pixels (None)."""
    from .fit import _pixel_indices
    cfg, params = experiment.lower()
    return _pixel_indices(cfg, params, pixels)


def check_sampling(experiment, stacklevel: int = 3) -> int:
    """The recommended oversample; warns :class:`SamplingWarning` when the experiment's is below it."""
    rec = exp_mod.recommended_oversample(experiment)
    if experiment.oversample < rec:
        warnings.warn(f"oversample={experiment.oversample} is below the reference's recommended {rec} for "
                      f"these spots (3 x crystal size / reciprocal pixel): the model is a rugged function of "
                      f"the geometry; staging='auto' fits at oversample={rec} first", SamplingWarning,
                      stacklevel=stacklevel)
    return rec


#: fields that set spot intensities and widths rather than positions: held at the start in a coarse stage
SHAPE_FIELDS = ("crystal.ncells", "beam.fluence", "crystal.F", "crystal.default_F", "crystal.mosaic_spread",
                "crystal.fudge")


def plan_stages(experiment, free: Sequence[str], staging="auto", recommended: Optional[int] = None):
    """Stages ``[(oversample, free paths), ...]`` of a fit.

    ``"auto"``: when the experiment's oversample is below the recommended one, first the geometry (the free
    paths less :data:`SHAPE_FIELDS`) at the recommended oversample (at most 6), where each pixel averages
    its spot and the loss is smooth in the geometry (the spot widths and intensities of a pixel-averaged
    model differ from point-sampled data, so fitting N there would only bias it), then the geometry again
    at the experiment's own oversample, then everything there; otherwise one stage. ``"none"``/None: one stage. A list: oversample
    values, or ``(oversample, paths)`` pairs.
    """
    own, free = experiment.oversample, tuple(free)
    if staging in (None, "none", False):
        return [(own, free)]
    if staging == "auto":
        rec = exp_mod.recommended_oversample(experiment) if recommended is None else recommended
        if own >= rec:
            return [(own, free)]
        geometry = tuple(p for p in free if paths.canonical(p) not in SHAPE_FIELDS) or free
        return [(min(rec, 6), geometry), (own, geometry), (own, free)] if geometry != free else \
            [(min(rec, 6), free), (own, free)]
    return [(int(s), free) if isinstance(s, (int, np.integer)) else (int(s[0]), tuple(s[1])) for s in staging]


def _jitted(free, shapes, lik, execution, background):
    """Jitted ``(evaluate, loss)`` of ``(x, n, scales, base, spix, fpix)`` for the likelihood ``lik``."""
    packer = Packer(free, shapes, np.ones(sum(math.prod(s) for s in shapes)), ())

    def model(x, scales, base, spix, fpix):
        image = exp_mod.simulate(packer.apply(base, x, scales), execution)
        return image[spix, fpix] + background
    return (jax.jit(lm_mod.normal_equations(model, lik)),
            jax.jit(lambda x, n, *a: jnp.sum(lik.nll(model(x, *a), n))))


@functools.lru_cache(maxsize=32)
def _compiled(free: Tuple[str, ...], shapes, loss: str, readout: float, execution, background: float):
    """:func:`_jitted`, cached so that fits of the same structure (paths, likelihood, static experiment
    fields) compile once."""
    return _jitted(free, shapes, lm_mod.likelihood(loss, readout=readout), execution, background)


def _covariance(h, scales, loss_name, loss, n_pix):
    cov = np.linalg.pinv(h) * np.outer(scales, scales)
    if loss_name == "least_squares":
        cov = cov * (2.0 * loss / max(n_pix - scales.size, 1))
    sig = np.sqrt(np.abs(np.diag(cov)))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sig, sig)
    return cov, sig, corr


def fit_experiment(experiment, observed, free: Sequence[str], *, loss: str = "poisson", readout: float = 0.0,
                   weights=None, method: str = "lm", staging="auto", scales: Optional[Mapping[str, float]] = None,
                   pixels=None, background: float = 0.0, maxiter: int = 300, stage_maxiter: int = 100, dtol: float = 1e-10,
                   ftol: float = 1e-13, max_step: Optional[float] = 1.0, gtol: float = 1e-6, execution=None, adc_offset: Optional[float] = None,
                   callback: Optional[Callable] = None, warn: bool = True) -> FitResult:
    """Fit the ``free`` fields of ``experiment`` to ``observed`` (module docstring).

    Args:
      experiment: the start model (a :class:`jaxbragg.Experiment`; fixed fields keep its values).
      observed: photons [spixels, fpixels] or an SMV path (:func:`jaxbragg.fit.load_observed`).
      free: dotted field paths (:mod:`jaxbragg.paths`).
      loss: ``"poisson"``, ``"poisson_readout"`` (``readout`` [photons rms]) or ``"least_squares"``
        (``weights`` [spixels, fpixels], default 1).
      method: ``"lm"`` or ``"bfgs"``/``"lbfgs"``/``"adam"`` (:func:`jaxbragg.fit.minimize`).
      staging: ``"auto"``, ``"none"`` or a list of oversample values (:func:`plan_stages`).
      scales: per-path optimiser scale [SI] overriding :func:`scale_of`.
      pixels: ``(spix, fpix)``, a boolean mask, or None (ROI window less masked pixels).
      background: constant photons added to every model pixel.
      maxiter: iterations of the last (full-model) stage; stage_maxiter: of each earlier, coarse stage (it
        only needs to bring the start into the basin; the last stage of a far start may take a few hundred
        damped steps along the cell-distance valley); dtol, ftol: LM stopping rules (:func:`jaxbragg.lm.levenberg_marquardt`);
        max_step: largest LM step per iteration, in units of the scales (a trust radius: the cell and the
          distance are nearly degenerate, and an undamped step along that valley can leave the basin);
          None: unlimited. gtol: for the gradient methods.
      execution: :class:`jaxbragg.Execution` (e.g. ``precision="float32"``).
      callback: ``callback(stage, iteration, x, loss)``.
      warn: emit :class:`SamplingWarning`.

    Returns:
      a :class:`jaxbragg.fit.FitResult` with ``experiment`` (the fitted model), ``values`` (path -> fitted
      value, SI), ``uncertainties`` and ``covariance``/``correlation`` (flattened free fields, SI, in the
      order of ``free``), and ``stages`` (oversample, iterations, loss, seconds of each stage);
      ``physical`` is None.
    """
    rec = check_sampling(experiment, stacklevel=4) if warn else None
    image = load_observed(observed, adc_offset)
    spix, fpix = pixel_indices(experiment, pixels)
    n = jnp.asarray(image[spix, fpix])
    w = None if weights is None else jnp.asarray(np.asarray(weights, np.float64)[spix, fpix])
    lm_mod.likelihood(loss)                                   # rejects an unknown name here
    packer = Packer.make(experiment, free, scales)
    if w is not None and loss != "least_squares":
        raise ValueError(f"weights are for loss='least_squares', not {loss!r}")
    if w is None:
        evaluate, loss_of = _compiled(packer.paths, packer.shapes, loss, float(readout), execution,
                                      float(background))
    else:
        evaluate, loss_of = _jitted(packer.paths, packer.shapes, lm_mod.likelihood("least_squares", weights=w),
                                    execution, float(background))
    x = np.zeros(packer.size)
    histories, stages, result = [], [], None
    si, fi = jnp.asarray(spix), jnp.asarray(fpix)
    plan = plan_stages(experiment, packer.paths, staging, rec)
    for k, (oversample, stage_free) in enumerate(plan):
        its_max = maxiter if k == len(plan) - 1 else min(stage_maxiter, maxiter)
        base = experiment if oversample == experiment.oversample else \
            exp_mod.Experiment._si(**{**{f: getattr(experiment, f) for f in
                                         exp_mod.Experiment._leaves + exp_mod.Experiment._static},
                                      "oversample": int(oversample)})
        args = (n, jnp.asarray(packer.scales), base, si, fi)
        idx = np.concatenate([np.arange(packer.size)[sl] for p, sl in zip(packer.paths, packer.slices())
                              if p in stage_free])
        full = lambda y, x=x, idx=idx: jnp.asarray(x).at[idx].set(jnp.asarray(y))
        cb = None if callback is None else (lambda it, xx, f, k=k: callback(k, it, xx, f))
        t0 = time.perf_counter()
        if method == "lm":
            def ev(y, full=full, idx=idx, args=args):
                f, g, h = evaluate(full(y), *args)[:3]
                return f, g[idx], h[idx][:, idx]
            result = lm_mod.levenberg_marquardt(ev, lambda y, full=full, args=args: loss_of(full(y), *args),
                                                x[idx], maxiter=its_max, dtol=dtol, ftol=ftol, callback=cb,
                                                max_step=max_step)
            y, hist, its, conv, msg = result.x, result.loss_history, result.iterations, result.converged, \
                result.message
        else:
            from .fit import minimize
            y, hist, its, conv, msg = minimize(lambda y, a: loss_of(full(y), *a), jnp.asarray(x[idx]), args,
                                               method=method, maxiter=its_max, gtol=gtol, ftol=ftol,
                                               callback=cb)
        x = np.asarray(full(y), np.float64)
        stages.append(dict(oversample=int(oversample), free=tuple(stage_free), iterations=int(its),
                           loss=float(hist[-1]), seconds=time.perf_counter() - t0, message=msg))
        histories.append(np.asarray(hist))
    final_loss, g, h = (np.asarray(v, np.float64) for v in evaluate(jnp.asarray(x), *args)[:3])
    cov, sig, corr = _covariance(h, packer.scales, loss, float(final_loss), spix.size)
    fitted = packer.apply(experiment, np.asarray(x))
    values = {p: np.asarray(paths.get_path(fitted, p)) for p in packer.paths}
    return FitResult(physical=None, free=packer.paths, uncertainties=packer.split(sig), covariance=cov,
                     loss=float(final_loss), loss_history=np.concatenate(histories), iterations=int(sum(
                         s["iterations"] for s in stages)), converged=bool(conv), message=msg,
                     scales=packer.split(packer.scales), correlation=corr, experiment=fitted, values=values,
                     stages=tuple(stages))
