"""The command line's two compiled stages, kept on disk between runs as loadable executables.

A warm command line spends most of its time outside XLA: importing JAX, then tracing the kernel's
Python code again (a few hundred small ``jax.numpy`` calls) and lowering it, only to find the compiled
program in the persistent compilation cache. Next to that cache we keep each stage's compiled
executable (``jax.experimental.serialize_executable``), keyed by everything it depends on: the stage,
the static ``SimConfig`` and chunk size, the structure, shapes and dtypes of the inputs, the JAX and
jaxlib versions, a digest of this package's source and the processor (an executable holds machine code
for the CPU it was compiled on). A later run with the same key loads it instead of tracing, lowering
and looking up the cache (tens of milliseconds instead of hundreds). A stage file is always made by a
real compilation (see :func:`_compile`) and carries its key, checked when it is loaded; a file that cannot be read, loaded or run is replaced, so any
failure only costs that speed. The files are pickles (as JAX's own executable serialization is), so the
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
    from .._jit import compiler_options
    return jax.jit(lambda *xs: fn(*static, treedef.unflatten(list(xs))), compiler_options=compiler_options())


def _compile(flat, leaves):
    """Compile for a stage file, bypassing the persistent compilation cache: an XLA:CPU executable
    that came out of that cache serializes without its kernels ('Function ... not found' when the
    file is loaded and run)."""
    import jax
    old = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        return flat.lower(*leaves).compile()
    finally:
        jax.config.update("jax_enable_compilation_cache", old)


#: First bytes of a stage file (the format: this tag, then a pickle of ``{"key": KEY, "exe": ...}``).
_MAGIC = b"jaxbragg-stage-1\n"


def _store(path, key, compiled) -> None:
    """Write a stage file atomically, carrying its own ``key``; failing to write only costs speed."""
    import pickle
    from jax.experimental import serialize_executable as se
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(tmp).write_bytes(_MAGIC + pickle.dumps({"key": key, "exe": se.serialize(compiled)}))
        os.replace(tmp, path)
    except Exception:             # unwritable or full: this run is unaffected
        try:
            os.remove(tmp)
        except OSError:
            pass


def _load(path, key):
    """The executable in a stage file, or ``None`` if it is missing, unreadable, from elsewhere, or made
    for another key (a file is trusted by the key it carries, not by its name: a stage of another
    configuration copied or renamed under this key is not loaded)."""
    import pickle
    from jax.experimental import serialize_executable as se
    try:
        raw = Path(path).read_bytes()
        if not raw.startswith(_MAGIC):
            return None
        record = pickle.loads(raw[len(_MAGIC):])
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        return se.deserialize_and_load(*record["exe"])
    except Exception:
        return None


def call(name, fn, static, treedef, leaves):
    """``fn(*static, tree)`` jitted, where ``tree = treedef.unflatten(leaves)``; reuses a compiled stage.

    ``static`` holds the hashable static arguments (``fn``'s leading positional arguments); ``leaves``
    are arrays or scalars.
    """
    import numpy as np
    leaves = [np.asarray(x) for x in leaves]
    flat = _jitted(fn, static, treedef)
    if _STAGE_DIR is None:
        return flat(*leaves)
    key = _key(name, static, treedef, leaves)
    path = os.path.join(_STAGE_DIR, f"{name}-{key}.xla")
    compiled = _LOADED.pop(key, None)
    fresh = compiled is None and (compiled := _load(path, key)) is not None
    if compiled is None:
        compiled = _compile(flat, leaves)
        _store(path, key, compiled)
    try:
        out = compiled(*leaves)
    except Exception:
        if not fresh:
            raise
        # a stage file that loads but does not run (damaged, or written by an older version from a
        # cached executable): replace it
        compiled = _compile(flat, leaves)
        _store(path, key, compiled)
        out = compiled(*leaves)
    _LOADED[key] = compiled
    while len(_LOADED) > _KEEP:           # a long-lived process (tests, notebooks) keeps only a few
        _LOADED.popitem(last=False)
    return out
