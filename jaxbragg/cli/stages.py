"""The command line's two compiled stages, kept on disk between runs as loadable executables.

A warm command line spends most of its time outside XLA: importing JAX, then tracing the kernel's
Python code again (a few hundred small ``jax.numpy`` calls) and lowering it, only to find the compiled
program in the persistent compilation cache. Next to that cache we keep each stage's compiled
executable (``jax.experimental.serialize_executable``), keyed by everything it depends on: the stage,
the static ``SimConfig`` and chunk size, the structure, shapes and dtypes of the inputs, the JAX and
jaxlib versions, a digest of this package's source and the processor (an executable holds machine code
for the CPU it was compiled on). A later run with the same key loads it instead of tracing, lowering
and looking up the cache (tens of milliseconds instead of hundreds). Any failure to read or write the
file only costs that speed. The files are pickles (as JAX's own executable serialization is), so the
cache directory must be as trusted as the user's home.
"""
from __future__ import annotations

import functools
import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Optional

_STAGE_DIR: Optional[str] = None
_LOADED: "OrderedDict[str, object]" = OrderedDict()     # executables loaded in this process, newest last
_KEEP = 8


def set_stage_dir(path: Optional[str]) -> None:
    """Where compiled stages live (``None``: compile in the usual way every time)."""
    global _STAGE_DIR
    _STAGE_DIR = path


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """The processor model and feature flags (Linux), else what ``platform`` knows."""
    import platform
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [l for l in lines if l.split(":")[0].strip() in ("model name", "flags", "Features")]
        return "|".join(dict.fromkeys(keep))
    except OSError:
        return f"{platform.machine()}|{platform.processor()}"


def _key(name, static, treedef, leaves) -> str:
    import jax
    import jaxlib
    h = hashlib.sha256()
    for part in (name, repr(static), repr(treedef), jax.__version__, jaxlib.__version__, _source_digest(),
                 str(jax.config.jax_enable_x64), jax.default_backend(), repr(jax.devices()), _machine()):
        h.update(part.encode())
        h.update(b"\0")
    for x in leaves:
        h.update(f"{x.shape}{x.dtype};".encode())
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=32)
def _jitted(fn, static, treedef):
    """One jitted flat function per stage and static arguments, so repeated calls in a process (the
    chunks of a long run) reuse its compilation."""
    import jax
    return jax.jit(lambda *xs: fn(*static, treedef.unflatten(list(xs))))


def call(name, fn, static, treedef, leaves):
    """``fn(*static, tree)`` jitted, where ``tree = treedef.unflatten(leaves)``; reuses a compiled stage.

    ``static`` holds the hashable static arguments (``fn``'s leading positional arguments); ``leaves``
    are arrays or scalars.
    """
    import pickle
    import numpy as np
    from jax.experimental import serialize_executable as se
    leaves = [np.asarray(x) for x in leaves]
    flat = _jitted(fn, static, treedef)
    if _STAGE_DIR is None:
        return flat(*leaves)
    key = _key(name, static, treedef, leaves)
    compiled = _LOADED.get(key)
    path = os.path.join(_STAGE_DIR, f"{name}-{key}.xla")
    if compiled is None:
        try:
            compiled = se.deserialize_and_load(*pickle.loads(Path(path).read_bytes()))
        except Exception:         # missing, unreadable or from another version: compile anew
            compiled = None
    if compiled is None:
        compiled = flat.lower(*leaves).compile()
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(_STAGE_DIR, exist_ok=True)
            Path(tmp).write_bytes(pickle.dumps(se.serialize(compiled)))
            os.replace(tmp, path)
        except Exception:         # unwritable or full: this run is unaffected
            try:
                os.remove(tmp)
            except OSError:
                pass
    _LOADED[key] = compiled
    _LOADED.move_to_end(key)
    while len(_LOADED) > _KEEP:           # a long-lived process (tests, notebooks) keeps only a few
        _LOADED.popitem(last=False)
    return compiled(*leaves)
