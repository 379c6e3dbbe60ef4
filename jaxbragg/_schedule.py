"""How the kernel is scheduled on each backend (infrastructure: no physics here).

The kernel (:mod:`jaxbragg.kernel`) is written once; this module holds everything it does only to steer
how XLA compiles it, so a reader of the physics can skip it and a port to another backend changes one
file. :func:`for_backend` picks a :class:`Schedule`:

* ``CPU`` (XLA:CPU). XLA:CPU fuses greedily and duplicates cheap producers into every consumer: left to
  itself it recomputes per-pixel quantities (a square root, a division, index arithmetic) inside the
  per-sample loop, once per phi x mosaic sample, and it ignores ``optimization_barrier``. A ``lax.cond``
  on a predicate that is always true but not a compile-time constant cannot be fused across, so its
  outputs are computed once and written out (:meth:`Schedule.materialise`, :meth:`Schedule.once`). The
  same conditional around a whole tile's values keeps the last per-pixel steps of a one-tile image out of
  the image assembly (:meth:`Schedule.tile_barrier`). The compiler prefers 512-bit vectors (15-30 % on
  AVX-512 processors; docs/performance.md).
* ``PLAIN`` (every other backend): no conditionals, no compiler options; XLA schedules as it likes.

Two rounding pins are kept on every backend, because they are numerical guarantees rather than
scheduling: :func:`fma_free_mul` and :func:`fma_free` make a product round on its own, never merged
with a neighbouring addition into a fused multiply-add. Whether LLVM contracts ``x * y + z`` depends on
which kernel the two operations land in, and that depends on how many pixels are rendered together; with
the pins a pixel's value does not depend on the tile size (on CPU, bit for bit; tests/test_hardening.py),
and it rounds as the reference C, which is compiled without FMA. ``geometry.mul`` and
``geometry.rounded`` are these two functions.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp


def fma_free_mul(a, b):
    """``a * b`` rounded on its own: whichever of ``a * b`` and ``a * 0`` LLVM contracts with the addition,
    the sum is ``round(a * b)`` exactly (finite ``a``). Works on NumPy and JAX inputs."""
    return a * b + a * 0.0


def fma_free(x):
    """``x`` unchanged, but the product or quotient that produced it can no longer be merged into a
    following addition (XLA rewrites ``a / b`` as ``a * (1 / b)``); see :func:`fma_free_mul`."""
    return x + x * 0.0


def _cond_once(token, fn, *args):
    shapes = jax.eval_shape(fn, *args)
    # the untaken branch must differ, or XLA simplifies the conditional away
    zeros = lambda *_: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return jax.lax.cond(token, fn, zeros, *args)


def _cond_materialise(token, tree):
    return _cond_once(token, lambda t: t, tree)


def _cpu_token(spix):
    # always true, but not a compile-time constant (a one-tile image has constant indices)
    return jnp.min(spix) >= 0


def _cpu_tile_barrier(values):
    lowest = jnp.min(jax.tree_util.tree_leaves(values)[0])
    return _cond_materialise(~(lowest < -jnp.inf), values)     # always true, whatever the values (NaN too)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Backend-specific scheduling hooks of the kernel.

    Attributes:
      name: ``"cpu"`` or ``"plain"``.
      token: ``token(spix)``, a runtime value the hooks below condition on (``None`` if unused).
      materialise: ``materialise(token, tree)``: ``tree`` unchanged, computed in full before its
        consumers run.
      once: ``once(token, fn, *args)``: ``fn(*args)``, computed in full (inside the conditional's branch,
        so the results are written once instead of computed and then copied).
      tile_barrier: ``tile_barrier(values)``: a tile's (or image's) pixel values unchanged, finished before
        the image is assembled from them.
      options: XLA compiler options for a top-level ``jax.jit`` of a render.
    """
    name: str
    token: Callable
    materialise: Callable
    once: Callable
    tile_barrier: Callable
    options: dict


CPU = Schedule(name="cpu", token=_cpu_token, materialise=_cond_materialise, once=_cond_once,
               tile_barrier=_cpu_tile_barrier, options={"xla_cpu_prefer_vector_width": 512})

PLAIN = Schedule(name="plain", token=lambda spix: None, materialise=lambda token, tree: tree,
                 once=lambda token, fn, *args: fn(*args), tile_barrier=lambda values: values, options={})


def for_backend(backend: Optional[str] = None) -> Schedule:
    """The schedule of ``backend`` (default: JAX's default backend, read when the kernel is traced)."""
    return CPU if (backend or jax.default_backend()) == "cpu" else PLAIN
