"""Rotations and small vector helpers (lab frame, right-handed, SI units).

Equations
---------
* ``rotate_xyz(v, rx, ry, rz) = Rz(rz) @ Ry(ry) @ Rx(rx) @ v`` — rotations about the lab x axis first,
  then y, then z, each right-handed (C routine ``rotate``).
* ``rotate_axis(v, u, phi) = u (u.v)(1-cos phi) + v cos phi + (u x v) sin phi`` — Rodrigues rotation of
  ``v`` by ``phi`` about the unit axis ``u`` (C routine ``rotate_axis``).
* ``axis_matrix(u, phi)`` is the same rotation as a 3x3 matrix, so a stack of angles gives a stack of
  matrices that ``vmap``/``einsum`` can apply to many vectors at once.

All functions are pure. Called with JAX arrays (or under a trace) they use ``jax.numpy``; called with
NumPy arrays / Python numbers only they use NumPy in float64, so set-up code (CLI, source generation)
keeps double precision whatever the JAX configuration. Angles are radians.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._schedule import fma_free, fma_free_mul


def _xp(*args):
    """NumPy when every argument is a NumPy array or Python number, else ``jax.numpy``."""
    return jnp if any(isinstance(a, jax.Array) for a in args) else np


def rot_x(angle):
    """Right-handed rotation matrix about the x axis [3, 3]."""
    xp = _xp(angle)
    c, s = xp.cos(angle), xp.sin(angle)
    one, zero = xp.ones_like(c), xp.zeros_like(c)
    return xp.stack([xp.stack([one, zero, zero]),
                      xp.stack([zero, c, -s]),
                      xp.stack([zero, s, c])])


def rot_y(angle):
    """Right-handed rotation matrix about the y axis [3, 3]."""
    xp = _xp(angle)
    c, s = xp.cos(angle), xp.sin(angle)
    one, zero = xp.ones_like(c), xp.zeros_like(c)
    return xp.stack([xp.stack([c, zero, s]),
                      xp.stack([zero, one, zero]),
                      xp.stack([-s, zero, c])])


def rot_z(angle):
    """Right-handed rotation matrix about the z axis [3, 3]."""
    xp = _xp(angle)
    c, s = xp.cos(angle), xp.sin(angle)
    one, zero = xp.ones_like(c), xp.zeros_like(c)
    return xp.stack([xp.stack([c, -s, zero]),
                      xp.stack([s, c, zero]),
                      xp.stack([zero, zero, one])])


def xyz_matrix(angles):
    """Matrix of ``rotate_xyz``: x first, then y, then z. ``angles`` [3] radians -> [3, 3]."""
    xp = _xp(angles)
    angles = xp.asarray(angles)
    return rot_z(angles[2]) @ rot_y(angles[1]) @ rot_x(angles[0])


def rotate_xyz(v, angles):
    """Rotate vector(s) ``v`` [..., 3] about x, then y, then z by ``angles`` [3] (radians)."""
    xp = _xp(v, angles)
    return xp.einsum("ij,...j->...i", xyz_matrix(angles), v)


def axis_matrix(axis, angle):
    """Rodrigues rotation matrix [..., 3, 3] for unit ``axis`` [3] and ``angle`` [...] radians."""
    xp = _xp(axis, angle)
    axis = xp.asarray(axis)
    angle = xp.asarray(angle)
    c = xp.cos(angle)[..., None, None]
    s = xp.sin(angle)[..., None, None]
    x, y, z = axis[0], axis[1], axis[2]
    k = xp.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=xp.result_type(axis, angle))
    uu = xp.outer(axis, axis)
    eye = xp.eye(3, dtype=k.dtype)
    return c * eye + s * k + (1.0 - c) * uu


def rotate_axis(v, axis, angle):
    """Rotate ``v`` [..., 3] by ``angle`` about unit ``axis`` [3] (Rodrigues form, as the C does it)."""
    xp = _xp(v, axis, angle)
    v = xp.asarray(v)
    axis = xp.asarray(axis)
    c, s = xp.cos(angle), xp.sin(angle)
    along = dot(axis, v)[..., None] * (1.0 - c)
    return mul(axis, along) + mul(v, c) + mul(cross(axis, v), s)


# Products rounded on their own, never contracted into a fused multiply-add, so a pixel's value does not
# depend on the tile size it is rendered in (and rounds as the reference C, built without FMA); the
# rule and its reason are in jaxbragg._schedule.
mul = fma_free_mul
rounded = fma_free


def dot(a, b):
    """Dot product over the last axis (length 3), summed in a fixed order ``x + y + z`` of products
    rounded on their own (:func:`mul`).

    Written out rather than ``sum(a * b, -1)``: XLA may reduce a short axis in a shape-dependent order,
    which would make results depend (in the last bit) on how many pixels are rendered together.
    """
    return mul(a[..., 0], b[..., 0]) + mul(a[..., 1], b[..., 1]) + mul(a[..., 2], b[..., 2])


def cross(a, b):
    """Cross product over the last axis, products rounded on their own (:func:`mul`)."""
    xp = _xp(a, b)
    a, b = xp.asarray(a), xp.asarray(b)
    a, b = xp.broadcast_arrays(a, b)
    return xp.stack([mul(a[..., 1], b[..., 2]) - mul(a[..., 2], b[..., 1]),
                     mul(a[..., 2], b[..., 0]) - mul(a[..., 0], b[..., 2]),
                     mul(a[..., 0], b[..., 1]) - mul(a[..., 1], b[..., 0])], axis=-1)


def norm(v):
    """Euclidean length over the last axis."""
    xp = _xp(v)
    return xp.sqrt(dot(v, v))


def unitize(v):
    """Unit vector along ``v`` [..., 3]; the zero vector stays zero (as in the C ``unitize``)."""
    xp = _xp(v)
    n = norm(v)[..., None]
    safe = xp.where(n == 0, 1.0, n)
    return xp.where(n == 0, 0.0, v / safe)


def unitize_safe(v):
    """:func:`unitize` for set-up values (NumPy, float64): rows whose norm would over- or underflow are
    scaled by their largest component first; other rows go through :func:`unitize` unchanged, bit for
    bit. Used for every vector a user gives (the command line's and the experiment model's)."""
    v = np.asarray(v, float)
    with np.errstate(all="ignore"):
        n = np.sqrt(np.sum(v * v, axis=-1, keepdims=True))
    ok = np.isfinite(n) & (n > 1e-150) & (n < 1e150)
    if np.all(ok):
        return np.asarray(unitize(v))
    big = np.max(np.abs(v), axis=-1, keepdims=True)
    scaled = np.where(ok | (big == 0), v, v / np.where(big == 0, 1.0, big))
    return np.asarray(unitize(scaled))
