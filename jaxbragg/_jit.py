"""How jaxbragg compiles its own entry points (infrastructure; no physics here).

XLA:CPU asks LLVM for 256-bit vectors by default. On processors with AVX-512 the per-sample loop of a
render runs 15-30 % faster when 512-bit vectors are preferred (docs/performance.md), so the entry points
(``simulate``, the batch renders, the command line's stages, the fitting steps) are compiled with
:func:`compiler_options`. JAX accepts compiler options only on a top-level ``jax.jit``: called inside a
caller's trace (their ``jit``, ``grad`` or ``vmap``) an entry point falls back to a plain ``jit``, and the
caller decides the options of their own top-level ``jit`` (pass them :func:`compiler_options`).

Nothing here touches global configuration: the options are given to each compilation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def compiler_options() -> dict:
    """XLA options for a top-level ``jax.jit`` of a render on the default backend.

    On CPU ``{"xla_cpu_prefer_vector_width": 512}`` (a preference: LLVM never uses vectors wider than the
    processor has); on other backends none. Use them for your own top-level ``jit`` around
    ``jaxbragg.simulate.render``, e.g. ``jax.jit(loss_and_grad, compiler_options=compiler_options())``
    (also importable as ``jaxbragg.simulate.compiler_options``).
    """
    from ._schedule import for_backend
    return dict(for_backend().options)


def _traced(args) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(args))


class EntryJit:
    """``jax.jit(fn, **kwargs)`` compiled with :func:`compiler_options` when called at top level, and
    without them when called under a caller's trace (where JAX rejects compiler options)."""

    def __init__(self, fn, **kwargs):
        self._fn, self._kwargs = fn, kwargs
        self._plain = jax.jit(fn, **kwargs)
        self._tuned = None           # built on first use: the backend is not known at import time

    def __call__(self, *args):
        if _traced(args):
            return self._plain(*args)
        if self._tuned is None:
            self._tuned = jax.jit(self._fn, compiler_options=compiler_options(), **self._kwargs)
        return self._tuned(*args)

    def _cache_size(self) -> int:
        """Compilations held (both variants), for tests that check nothing recompiles."""
        return self._plain._cache_size() + (self._tuned._cache_size() if self._tuned is not None else 0)


def strong_types(tree):
    """``tree`` with every weakly typed leaf (e.g. a Python float put in with ``params.replace``) made
    strongly typed, so that it does not trigger a recompilation of an entry point."""
    def strong(x):
        x = jnp.asarray(x)
        return jnp.asarray(x, dtype=x.dtype) if getattr(x, "weak_type", False) else x
    return jax.tree_util.tree_map(strong, tree)
