"""Tests for jaxbragg.structure_factors: tricubic interpolation, its range test and the fallback."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxbragg import structure_factors as sf

jax.config.update("jax_enable_x64", True)

# jitted entry points (one compiled program each instead of op-by-op dispatch; keeps the tests fast)
tricubic = jax.jit(sf.lookup_tricubic, static_argnums=(2,))
nearest = jax.jit(sf.lookup_nearest, static_argnums=(2,))
in_range = jax.jit(sf.interpolation_in_range, static_argnums=(1, 2))
cutoff_of = jax.jit(sf.interpolation_cutoff, static_argnums=(1, 2))
fallback = jax.jit(sf.lookup_with_fallback, static_argnums=(2,))


# ----------------------------------------------------------- slow scalar reference (nested polint)
def _ref_polint(xa, ya, x):
    t0 = (x - xa[1]) * (x - xa[2]) * (x - xa[3]) * ya[0] / ((xa[0] - xa[1]) * (xa[0] - xa[2]) * (xa[0] - xa[3]))
    t1 = (x - xa[0]) * (x - xa[2]) * (x - xa[3]) * ya[1] / ((xa[1] - xa[0]) * (xa[1] - xa[2]) * (xa[1] - xa[3]))
    t2 = (x - xa[0]) * (x - xa[1]) * (x - xa[3]) * ya[2] / ((xa[2] - xa[0]) * (xa[2] - xa[1]) * (xa[2] - xa[3]))
    t3 = (x - xa[0]) * (x - xa[1]) * (x - xa[2]) * ya[3] / ((xa[3] - xa[0]) * (xa[3] - xa[1]) * (xa[3] - xa[2]))
    return t0 + t1 + t2 + t3


def _ref_polin2(x1a, x2a, ya, x1, x2):
    tmp = [_ref_polint(x2a, ya[j], x2) for j in range(4)]
    return _ref_polint(x1a, tmp, x1)


def _ref_polin3(x1a, x2a, x3a, ya, x1, x2, x3):
    tmp = [_ref_polin2(x2a, x3a, ya[j], x2, x3) for j in range(4)]
    return _ref_polint(x1a, tmp, x1)


def _ref_tricubic(h, k, l, grid, hkl_min):
    """Per-sample transcription: 4 nodes floor-1..floor+2 per axis, then polin3."""
    nodes = [[float(math.floor(x)) + d for d in (-1, 0, 1, 2)] for x in (h, k, l)]
    sub = [[[grid[int(a) - hkl_min[0], int(b) - hkl_min[1], int(c) - hkl_min[2]]
             for c in nodes[2]] for b in nodes[1]] for a in nodes[0]]
    return _ref_polin3(nodes[0], nodes[1], nodes[2], sub, h, k, l)


HKL_MIN = (-4, -3, -5)
SHAPE = (10, 9, 11)


def _index_axes():
    return [np.arange(m, m + n, dtype=np.float64) for m, n in zip(HKL_MIN, SHAPE)]


def _random_inside(rng, n):
    """Fractional points well inside the interpolation range."""
    lo = np.asarray(HKL_MIN) + 2.0
    hi = np.asarray(HKL_MIN) + np.asarray(SHAPE) - 3.0
    return rng.uniform(lo, hi, size=(n, 3))


def _cubic(h, k, l):
    return (0.3 * h**3 - 1.1 * h**2 * k + 0.7 * h * k * l + 0.25 * l**3 - 0.9 * k**2 * l
            + 2.0 * h - 0.5 * k + 0.125 * l + 3.0 + 0.02 * h**3 * k**3 * l**3)


def test_reproduces_tricubic_polynomial():
    # the tensor-product interpolant is exact for anything cubic in each axis separately
    h, k, l = np.meshgrid(*_index_axes(), indexing="ij")
    grid = jnp.asarray(_cubic(h, k, l))
    pts = _random_inside(np.random.default_rng(0), 200)
    got = np.asarray(tricubic(jnp.asarray(pts), grid, HKL_MIN, 0.0))
    want = _cubic(pts[:, 0], pts[:, 1], pts[:, 2])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)


def test_integer_points_return_grid_values():
    rng = np.random.default_rng(1)
    grid = rng.uniform(0.5, 100.0, size=SHAPE)
    pts = np.round(_random_inside(rng, 50))
    got = np.asarray(tricubic(jnp.asarray(pts), jnp.asarray(grid), HKL_MIN, 0.0))
    idx = pts.astype(int) - np.asarray(HKL_MIN)
    np.testing.assert_allclose(got, grid[idx[:, 0], idx[:, 1], idx[:, 2]], rtol=1e-14)


def test_matches_nested_polint_reference():
    rng = np.random.default_rng(2)
    grid = rng.uniform(0.0, 1000.0, size=SHAPE)
    pts = _random_inside(rng, 300).reshape(15, 20, 3)   # extra batch axis exercises broadcasting
    got = np.asarray(tricubic(jnp.asarray(pts), jnp.asarray(grid), HKL_MIN, 0.0))
    want = np.array([_ref_tricubic(*p, grid, HKL_MIN) for p in pts.reshape(-1, 3)]).reshape(15, 20)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_gradient_wrt_grid():
    rng = np.random.default_rng(3)
    grid = jnp.asarray(rng.uniform(1.0, 10.0, size=SHAPE))
    pts = jnp.asarray(_random_inside(rng, 7))
    w = jnp.asarray(rng.normal(size=7))

    def f(g):
        return jnp.sum(w * tricubic(pts, g, HKL_MIN, 0.0) ** 2)

    check_grads(f, (grid,), order=1, modes=("rev", "fwd"), eps=1e-4)


def test_gradient_wrt_hkl():
    rng = np.random.default_rng(4)
    grid = jnp.asarray(rng.uniform(1.0, 10.0, size=SHAPE))
    pts = jnp.asarray(_random_inside(rng, 5))
    check_grads(lambda p: tricubic(p, grid, HKL_MIN, 0.0), (pts,), order=1,
                modes=("rev",), eps=1e-6)


def test_range_test_hand_picked():
    # grid h in [-4, 5] (n=10), k in [-3, 5] (n=9), l in [-5, 5] (n=11)
    # allowed h: h - 2 >= -4 and h + 4 + 3 <= 10  ->  -2 <= h <= 3 ; k: -1..3 ; l: -3..3
    pts = np.array([
        [0.0, 0.0, 0.0],      # centre: in
        [-2.0, -1.0, -3.0],   # exactly on the low edges: in
        [3.0, 3.0, 3.0],      # exactly on the high edges: in
        [-2.001, 0, 0],       # h just below: out
        [3.001, 0, 0],        # h just above: out (floor+2 = 5 would still be in the grid)
        [0, -1.5, 0],         # k below: out (its nodes -3..0 would still be in the grid)
        [0, 0, 3.5],          # l above: out
        [2.999, 2.999, -2.999],
    ])
    want = [True, True, True, False, False, False, False, True]
    got = np.asarray(in_range(jnp.asarray(pts), HKL_MIN, SHAPE))
    assert got.tolist() == want


def test_tricubic_out_of_range_gives_default():
    grid = jnp.ones(SHAPE)
    pts = jnp.asarray([[0.2, 0.3, 0.4], [9.0, 0.0, 0.0], [-3.5, 0.0, 0.0]])
    got = np.asarray(tricubic(pts, grid, HKL_MIN, 7.0))
    np.testing.assert_allclose(got, [1.0, 7.0, 7.0])


def test_fallback_before_at_after_cutoff():
    rng = np.random.default_rng(5)
    grid = rng.uniform(1.0, 100.0, size=SHAPE)
    pts = _random_inside(rng, 12)
    pts[5] = [4.6, 0.3, 0.2]    # first out-of-range sample (h > 3); its nearest node (5) is in the grid
    pts[9] = [0.1, 0.2, 40.0]   # another one, outside the grid altogether
    order = jnp.arange(12, dtype=jnp.int64)
    hkl = jnp.asarray(pts)
    g = jnp.asarray(grid)
    default_f = 0.5

    cutoff = cutoff_of(hkl, HKL_MIN, SHAPE, order)
    assert int(cutoff) == 5

    got = np.asarray(fallback(hkl, g, HKL_MIN, default_f, order, cutoff))
    tri = np.asarray(tricubic(hkl, g, HKL_MIN, default_f))
    near = np.asarray(nearest(hkl, g, HKL_MIN, default_f))
    np.testing.assert_array_equal(got[:5], tri[:5])
    # the offending sample: the reference sets default_F, then its nearest branch overwrites it
    assert got[5] == near[5] == grid[9, 3, 5]
    np.testing.assert_array_equal(got[6:], near[6:])
    assert got[9] == default_f
    assert not np.allclose(tri[6:9], near[6:9])   # the switch is visible

    # scalar transcription of the reference's per-sample state machine
    interpolate = True
    want = []
    for p in pts:
        f_cell = None
        if interpolate and not bool(in_range(jnp.asarray(p), HKL_MIN, SHAPE)):
            f_cell = default_f
            interpolate = False
        if interpolate:
            f_cell = _ref_tricubic(*p, grid, HKL_MIN)
        if not interpolate:
            f_cell = float(nearest(jnp.asarray(p), g, HKL_MIN, default_f))
        want.append(f_cell)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_fallback_no_cutoff_and_no_grid():
    rng = np.random.default_rng(6)
    grid = jnp.asarray(rng.uniform(1.0, 100.0, size=SHAPE))
    hkl = jnp.asarray(_random_inside(rng, 6))
    order = jnp.arange(6, dtype=jnp.int64)
    cutoff = cutoff_of(hkl, HKL_MIN, SHAPE, order)
    assert int(cutoff) == np.iinfo(np.int64).max
    np.testing.assert_array_equal(
        fallback(hkl, grid, HKL_MIN, 0.0, order, cutoff),
        tricubic(hkl, grid, HKL_MIN, 0.0))
    np.testing.assert_array_equal(
        fallback(hkl, None, HKL_MIN, 2.0, order, cutoff), np.full(6, 2.0))


def test_jit_and_broadcast_order_index():
    rng = np.random.default_rng(7)
    grid = jnp.asarray(rng.uniform(1.0, 100.0, size=SHAPE))
    hkl = jnp.asarray(_random_inside(rng, 8).reshape(2, 4, 3))
    order = jnp.arange(4, dtype=jnp.int64)[None, :] + 4 * jnp.arange(2, dtype=jnp.int64)[:, None]
    fn = jax.jit(lambda h, g, c: fallback(h, g, HKL_MIN, 0.0, order, c))
    got = fn(hkl, grid, jnp.int64(3))
    assert got.shape == (2, 4)
    np.testing.assert_array_equal(got.reshape(-1)[:3], tricubic(hkl, grid, HKL_MIN, 0.0).reshape(-1)[:3])
    np.testing.assert_array_equal(got.reshape(-1)[3:], nearest(hkl, grid, HKL_MIN, 0.0).reshape(-1)[3:])
