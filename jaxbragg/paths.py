"""Fields of an experiment named by dotted paths: ``"crystal.cell_lengths"``, ``"detector.distance"``.

A path walks attributes of the model's pytree nodes (:mod:`jaxbragg.experiment`). A :class:`Detector`
forwards a field it does not have to its first panel, so ``"detector.distance"`` is the distance of the
detector's (only) panel, as ``Detector.__getattr__`` does for reading. :func:`set_path` returns a copy with
one stored (SI) field replaced, unchecked, which is what ``Experiment.set`` and the fitting code use to put
traced values into an experiment.

A few names users reach for are aliases of stored fields (:data:`ALIASES`): ``crystal.N`` is
``crystal.ncells``, ``crystal.orientation`` is ``crystal.rotvec`` (a rotation vector [rad] applied after
the misset, zero at construction: the well-conditioned way to free an orientation), and ``scale`` is
``beam.fluence`` (an overall intensity scale).
"""
from __future__ import annotations

from typing import Tuple

#: user spellings -> stored paths
ALIASES = {"crystal.N": "crystal.ncells", "crystal.orientation": "crystal.rotvec", "scale": "beam.fluence",
           "beam.scale": "beam.fluence", "crystal.F_grid": "crystal.F", "crystal.hkl": "crystal.F"}


def canonical(path: str) -> str:
    """The stored path of ``path`` (aliases resolved)."""
    return ALIASES.get(path, path)


def _parts(path: str) -> Tuple[str, ...]:
    parts = tuple(canonical(path).split("."))
    if not all(parts):
        raise ValueError(f"bad field path {path!r}: expected names separated by dots, e.g. 'detector.distance'")
    return parts


def _forwards(node, name: str) -> bool:
    """Whether ``node`` is a detector that keeps ``name`` on its first panel (every field but the
    detector's own: ``panels``, ``shift``, ``rotation``)."""
    from .experiment import Detector
    return isinstance(node, Detector) and name not in _fields(node)


def _fields(node):
    return tuple(getattr(node, "_leaves", ())) + tuple(getattr(node, "_static", ()))


def _index(items: tuple, name: str, path: str) -> int:
    """The item number ``name`` of a tuple field (panels, parts); ValueError naming the path."""
    if not name.isdigit() or int(name) >= len(items):
        raise ValueError(f"unknown field {path!r}: {name!r} is not an item number below {len(items)}")
    return int(name)


def get_path(tree, path: str):
    """The value at ``path`` (ValueError naming the path when a name does not exist)."""
    node = tree
    for i, name in enumerate(_parts(path)):
        if isinstance(node, tuple):         # "detector.panels.1", "parts.0": an item
            node = node[_index(node, name, path)]
            continue
        if _forwards(node, name):
            node = node.panels[0]
        if name not in _fields(node):
            where = ".".join(_parts(path)[:i]) or type(tree).__name__
            raise ValueError(f"unknown field {path!r}: {where} has no field {name!r} "
                             f"(fields: {', '.join(_fields(node))})")
        node = getattr(node, name)
    return node


def set_path(tree, path: str, value):
    """A copy of ``tree`` with the field at ``path`` replaced by ``value`` (stored SI units, unchecked)."""
    return _set(tree, _parts(path), value, path)


def _set(node, parts, value, path):
    name, rest = parts[0], parts[1:]
    if isinstance(node, tuple):             # "detector.panels.1.pix0", "parts.0.thickness", "parts.0"
        items = list(node)
        k = _index(node, name, path)
        items[k] = _set(items[k], rest, value, path) if rest else value
        return tuple(items)
    if _forwards(node, name):
        panels = list(node.panels)
        panels[0] = _set(panels[0], parts, value, path)
        return node.replace(panels=tuple(panels))
    if name not in _fields(node):
        raise ValueError(f"unknown field {path!r}: {type(node).__name__} has no field {name!r}")
    if not rest:
        return node.replace(**{name: value})
    return node.replace(**{name: _set(getattr(node, name), rest, value, path)})
