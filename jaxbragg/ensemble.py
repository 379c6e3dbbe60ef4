"""Many still shots at once: one structure-factor grid (or any shared field) refined with per-shot fields.

``jb.fit_ensemble(experiments, observed_list, free_per_shot=["crystal.orientation", "scale"],
shared=["crystal.F"])``: shot ``s`` renders ``experiments[s]`` with its own values of the
``free_per_shot`` paths and the common values of the ``shared`` paths (started from ``experiments[0]``'s).
The loss is the sum over shots of the per-pixel likelihood (:mod:`jaxbragg.lm`).

Parameters: ``x = [x_shared (m), x_shot_0 (k), ..., x_shot_{S-1} (k)]`` in units of the scales of
:func:`jaxbragg.fit_experiment.scale_of`. Entries of a shared array that no pixel of any shot depends on
(e.g. reflections outside every shot's resolution) are left out of ``x`` and keep their start values
(``active``: the non-zero entries of the gradient of the total photons).

Each shot's Jacobian ``J_s = d mu_s / d(x_shared, x_s)`` comes from ``jax.jacfwd``, vmapped over the
shots (``jb.stack``) and split over the devices of a mesh (``jax.shard_map`` along
:data:`jaxbragg.batch.BATCH_AXIS`, as :func:`jaxbragg.batch.render_sharded`), each device returning its
shots' ``(loss_s, g_s, H_s)``. The host assembles the arrow-shaped Gauss-Newton matrix (the shared block
summed over shots, one shared-by-shot block per shot, the per-shot blocks on the diagonal) and takes
Levenberg-Marquardt steps on it (:func:`jaxbragg.lm.levenberg_marquardt`).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from . import batch, lm as lm_mod, paths
from . import experiment as exp_mod
from .fit import load_observed
from .fit_experiment import Packer, pixel_indices


@dataclasses.dataclass(frozen=True)
class EnsembleResult:
    """Outcome of :func:`fit_ensemble`.

    Attributes:
      experiments: the fitted experiment of each shot.
      shared: shared path -> fitted value [SI]; shared_sigma: its 1-sigma errors (inf where inactive).
      per_shot: per-shot path -> [S, ...] fitted values; per_shot_sigma: their 1-sigma errors.
      active: shared path -> boolean mask of the fitted entries.
      loss, loss_history, iterations, converged, message: as :class:`jaxbragg.fit.FitResult`.
    """
    experiments: List[object]
    shared: Dict[str, np.ndarray]
    shared_sigma: Dict[str, np.ndarray]
    per_shot: Dict[str, np.ndarray]
    per_shot_sigma: Dict[str, np.ndarray]
    active: Dict[str, np.ndarray]
    loss: float
    loss_history: np.ndarray
    iterations: int
    converged: bool
    message: str


def _shared_values(shared: Packer, active_idx, xg, scales_g):
    """{path: value} of the shared fields at ``xg`` [m] (only the active entries move)."""
    flat = jnp.zeros(shared.size, xg.dtype).at[active_idx].set(xg * scales_g)
    return {p: jnp.asarray(s0) + flat[sl].reshape(shape)
            for p, shape, sl, s0 in zip(shared.paths, shared.shapes, shared.slices(), shared.start)}


def fit_ensemble(experiments: Sequence, observed_list, free_per_shot: Sequence[str],
                 shared: Sequence[str] = ("crystal.F",), *, loss: str = "poisson", readout: float = 0.0,
                 scales=None, pixels=None, maxiter: int = 50, dtol: float = 1e-10, ftol: float = 1e-13,
                 max_step: Optional[float] = None, execution=None, mesh=None, callback=None) -> EnsembleResult:
    """Fit ``free_per_shot`` of every shot and the ``shared`` fields common to all (module docstring).

    Args:
      experiments: one :class:`jaxbragg.Experiment` per shot, all with the same static fields (pixels,
        sampling, F-grid shape, ...).
      observed_list: one observed image (array or SMV path) per shot.
      free_per_shot, shared: dotted paths (:mod:`jaxbragg.paths`).
      loss, readout: the likelihood (:func:`jaxbragg.lm.likelihood`).
      scales: path -> optimiser scale [SI].
      pixels: the pixels fitted in every shot (as :func:`jaxbragg.fit_experiment.fit_experiment`).
      mesh: a device mesh with a ``'batch'`` axis (default :func:`jaxbragg.batch.make_mesh`: all devices).
      callback: ``callback(iteration, x, loss)``.
    """
    exps = list(experiments)
    if len(exps) != len(observed_list):
        raise ValueError(f"fit_ensemble: {len(exps)} experiments but {len(observed_list)} observed images")
    if set(map(paths.canonical, free_per_shot)) & set(map(paths.canonical, shared)):
        raise ValueError("fit_ensemble: a path is both per shot and shared")
    sh = Packer.make(exps[0], shared, scales)
    shots = [Packer.make(e, free_per_shot, scales) for e in exps]
    for p, v in zip(sh.paths, sh.start):                      # every shot starts from the common values
        exps = [paths.set_path(e, p, v) for e in exps]
    spix, fpix = pixel_indices(exps[0], pixels)
    n_obs = np.stack([load_observed(o)[spix, fpix] for o in observed_list])
    lik = lm_mod.likelihood(loss, readout=readout)
    per = shots[0]
    k, n_shots = per.size, len(exps)
    mesh = batch.make_mesh() if mesh is None else mesh
    n_dev = int(mesh.shape[batch.BATCH_AXIS])
    total = -(-n_shots // n_dev) * n_dev
    stacked = exp_mod.stack(exps)
    stacked = jax.tree_util.tree_map(lambda v: batch._pad_rows(jnp.asarray(v), total), stacked)
    n_pad = batch._pad_rows(jnp.asarray(n_obs), total)
    keep = jnp.arange(total) < n_shots                           # padding shots count for nothing
    scales_s = batch._pad_rows(jnp.asarray(np.stack([s.scales for s in shots])), total)
    si, fi = jnp.asarray(spix), jnp.asarray(fpix)

    def shot_model(z, exp_s, scales_g, scale_s, active_idx, m):
        xg, xs = z[:m], z[m:]
        for p, v in _shared_values(sh, active_idx, xg, scales_g).items():
            exp_s = paths.set_path(exp_s, p, v)
        exp_s = per.apply(exp_s, xs, scale_s)
        return exp_mod.simulate(exp_s, execution)[si, fi]

    # which shared entries matter: the gradient of the total photons over all shots
    def total_photons(flat):
        def one(exp_s):
            for p, v in _shared_values(sh, jnp.arange(sh.size), flat, jnp.ones(sh.size)).items():
                exp_s = paths.set_path(exp_s, p, v)
            return jnp.sum(exp_mod.simulate(exp_s, execution)[si, fi])
        return jnp.sum(jax.vmap(one)(stacked))
    grad0 = np.abs(np.asarray(jax.jit(jax.grad(total_photons))(jnp.zeros(sh.size))))
    active = grad0 > 1e-12 * max(float(grad0.max()), 1e-300)
    active_idx = jnp.asarray(np.nonzero(active)[0])
    m = int(active.sum())
    scales_g = jnp.asarray(sh.scales[active])

    def local(z_shared, z_shots, exp_b, n_b, keep_b, scale_b):
        def one(zs, exp_s, n_s, keep_s, scale_s):
            f = lambda z: shot_model(z, exp_s, scales_g, scale_s, active_idx, m)
            loss_s, g_s, h_s, _ = lm_mod.normal_equations(lambda z: f(z), lik)(
                jnp.concatenate([z_shared, zs]), n_s)
            return keep_s * loss_s, keep_s * g_s, keep_s * h_s
        return jax.vmap(one)(z_shots, exp_b, n_b, keep_b, scale_b)

    spec = P(batch.BATCH_AXIS)
    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec, spec, spec, spec),
                            out_specs=(spec, spec, spec), check_vma=False)
    evaluate_shots = jax.jit(sharded)

    def loss_local(z_shared, z_shots, exp_b, n_b, keep_b, scale_b):
        def one(zs, exp_s, n_s, keep_s, scale_s):
            mu = shot_model(jnp.concatenate([z_shared, zs]), exp_s, scales_g, scale_s, active_idx, m)
            return keep_s * jnp.sum(lik.nll(mu, n_s))
        return jax.vmap(one)(z_shots, exp_b, n_b, keep_b, scale_b)
    loss_shots = jax.jit(jax.shard_map(loss_local, mesh=mesh, in_specs=(P(), spec, spec, spec, spec, spec),
                                       out_specs=spec, check_vma=False))

    def split(x):
        zs = np.zeros((total, k))
        zs[:n_shots] = x[m:].reshape(n_shots, k)
        return jnp.asarray(x[:m]), jnp.asarray(zs)

    def evaluate(x):
        zg, zs = split(np.asarray(x))
        ls, gs, hs = (np.asarray(v, np.float64)[:n_shots] for v in
                      evaluate_shots(zg, zs, stacked, n_pad, keep, scales_s))
        size = m + n_shots * k
        g, h = np.zeros(size), np.zeros((size, size))
        g[:m] = gs[:, :m].sum(0)
        h[:m, :m] = hs[:, :m, :m].sum(0)
        for s in range(n_shots):
            b = slice(m + s * k, m + (s + 1) * k)
            g[b] = gs[s, m:]
            h[b, b] = hs[s, m:, m:]
            h[:m, b] = hs[s, :m, m:]
            h[b, :m] = hs[s, m:, :m]
        return float(ls.sum()), g, h

    def loss_of(x):
        zg, zs = split(np.asarray(x))
        return float(np.asarray(loss_shots(zg, zs, stacked, n_pad, keep, scales_s))[:n_shots].sum())

    res = lm_mod.levenberg_marquardt(evaluate, loss_of, np.zeros(m + n_shots * k), maxiter=maxiter, dtol=dtol,
                                     ftol=ftol, callback=callback, max_step=max_step)
    cov = np.linalg.pinv(res.hessian)
    sig = np.sqrt(np.abs(np.diag(cov)))
    x = res.x
    flat_g = np.zeros(sh.size)
    flat_g[active] = x[:m] * sh.scales[active]
    sig_g = np.full(sh.size, np.inf)
    sig_g[active] = sig[:m] * sh.scales[active]
    shared_vals = {p: s0 + flat_g[sl].reshape(shape)
                   for p, shape, sl, s0 in zip(sh.paths, sh.shapes, sh.slices(), sh.start)}
    fitted, per_vals, per_sig = [], {p: [] for p in per.paths}, {p: [] for p in per.paths}
    for s, e in enumerate(exps):
        xs = x[m + s * k: m + (s + 1) * k]
        for p, v in shared_vals.items():
            e = paths.set_path(e, p, v)
        e = per.apply(e, xs, shots[s].scales)
        fitted.append(e)
        for p, sl in zip(per.paths, per.slices()):
            per_vals[p].append(np.asarray(paths.get_path(e, p)))
            per_sig[p].append((sig[m + s * k: m + (s + 1) * k] * shots[s].scales)[sl].reshape(per.shapes[
                per.paths.index(p)]))
    return EnsembleResult(
        experiments=fitted, shared=shared_vals,
        shared_sigma={p: sig_g[sl].reshape(shape) for p, shape, sl in zip(sh.paths, sh.shapes, sh.slices())},
        per_shot={p: np.stack(v) for p, v in per_vals.items()},
        per_shot_sigma={p: np.stack(v) for p, v in per_sig.items()},
        active={p: active[sl].reshape(shape) for p, shape, sl in zip(sh.paths, sh.shapes, sh.slices())},
        loss=float(res.loss_history[-1]), loss_history=res.loss_history, iterations=res.iterations,
        converged=res.converged, message=res.message)
