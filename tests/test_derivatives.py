"""The kernel's derivative rules (jaxbragg.derivatives) against central differences, and the two AD modes
against each other.

Every physical parameter moves along one random direction of about a typical error's size; the image's
derivative along it (forward mode through the rules) must match a Richardson-extrapolated central
difference of the float64 image: 1e-6 relative to the derivative's largest pixel in float64, 1 % in
float32 (whose reference is the float64 difference). Smooth configurations only: a uniform default_F
(nearest lookup of a grid is piecewise constant in h), and tricubic interpolation for the grid.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import parameters as P
from jaxbragg.fit import default_scale

from helpers import setup_from

# 16 x 16 pixels reaching 2theta ~ 17 degrees; 2 wavelengths x 2 phi steps x 2 domains
SMOOTH = ("-cell 30 32 34 88 92 91 -misset 10 20 30 -default_F 100 -N 5 -lambda 1.0 -distance 40 "
          "-detpixels 16 -pixel 0.8 -oversample 1 -phi 1 -osc 0.4 -phisteps 2 -mosaic 0.3 -mosaic_domains 2 "
          "-dispersion 1 -dispsteps 2 -polar 0.9")
GEOMETRY = tuple(n for n in P.FIELDS if n != "F_grid")


def _directions(physical, names, seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(names))
    return {name: np.asarray(jax.random.normal(k, np.shape(getattr(physical, name)), jnp.float64))
            * default_scale(name, getattr(physical, name)) for name, k in zip(names, keys)}


def _along(physical, directions, names, x):
    """``physical`` moved by ``x[i]`` along the direction of ``names[i]``."""
    return physical.replace(**{name: getattr(physical, name) + x[i] * jnp.asarray(directions[name], x.dtype)
                               for i, name in enumerate(names)})


def _central_differences(image, n, h=1e-3):
    """d image / d x_i at 0 for every i, Richardson-extrapolated central differences (error O(h^4))."""
    cols = []
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        d = lambda s: (np.asarray(image(jnp.asarray(s * e))) - np.asarray(image(jnp.asarray(-s * e)))) / (2 * s)
        cols.append((4.0 * d(h / 2) - d(h)) / 3.0)
    return np.stack(cols, axis=-1)                               # [spixels, fpixels, n]


def _case(args, names, folder=None, config=None):
    setup = setup_from(args, str(folder) if folder else ".")
    template, physical = P.from_setup(setup)
    if config is not None:
        template = dataclasses.replace(template, config=config(template.config))
    directions = _directions(physical, names, seed=len(names))
    image = jax.jit(lambda x: P.render(template, _along(physical, directions, names, x)))
    fd = _central_differences(image, len(names))
    jac = jax.jit(jax.jacfwd(lambda x: P.render(template, _along(physical, directions, names, x))))(
        jnp.zeros(len(names)))
    return dict(template=template, physical=physical, names=names, directions=directions, fd=fd,
                jac=np.asarray(jac))


@pytest.fixture(scope="module")
def smooth():
    return _case(SMOOTH, GEOMETRY)


@pytest.fixture(scope="module")
def tricubic(tmp_path_factory):
    # a grid that covers the detector's reflections with interpolation room (the reference's range test)
    folder = tmp_path_factory.mktemp("hkl")
    lines = [f"{h} {k} {l} {60 + 7 * np.cos(h + 2 * k) + 5 * np.sin(3 * l - k) + abs(h)}"
             for h in range(-8, 9) for k in range(-8, 9) for l in range(-8, 9)]
    (folder / "f.hkl").write_text("\n".join(lines) + "\n")
    names = ("F_grid", "cell_lengths", "distance")
    return _case(SMOOTH.replace("-default_F 100", "-hkl f.hkl -default_F 10 -interpolate"), names, folder)


def _relative_errors(jac, fd, names):
    return {name: float(np.max(np.abs(jac[..., i] - fd[..., i])) / np.max(np.abs(fd[..., i])))
            for i, name in enumerate(names)}


def test_forward_mode_matches_central_differences_float64(smooth):
    errors = _relative_errors(smooth["jac"], smooth["fd"], smooth["names"])
    for i, name in enumerate(smooth["names"]):
        assert np.max(np.abs(smooth["fd"][..., i])) > 1e-6, name      # every parameter moves the image
    assert max(errors.values()) <= 1e-6, errors


def test_forward_mode_matches_central_differences_with_tricubic_F(tricubic):
    # F_grid entries (the lookup is linear in them) and the geometry through dF/dh of the interpolant
    errors = _relative_errors(tricubic["jac"], tricubic["fd"], tricubic["names"])
    assert max(errors.values()) <= 1e-6, errors


def test_forward_mode_float32_within_one_percent(smooth):
    t32 = P.astype(smooth["template"], np.float32)
    t32 = dataclasses.replace(t32, config=dataclasses.replace(t32.config, precision="float32"))
    p32 = P.astype(smooth["physical"], np.float32)
    names = smooth["names"]
    jac = jax.jit(jax.jacfwd(lambda x: P.render(t32, _along(p32, smooth["directions"], names, x))))(
        jnp.zeros(len(names), jnp.float32))
    assert jac.dtype == jnp.float32
    errors = _relative_errors(np.asarray(jac, np.float64), smooth["fd"], names)
    assert max(errors.values()) <= 1e-2, errors


def test_reverse_mode_equals_forward_mode(smooth):
    # jacrev (one vjp per row) == jacfwd on a subset of pixels, hence <v, J u> is the same both ways
    names, t, ph, dirs = smooth["names"], smooth["template"], smooth["physical"], smooth["directions"]
    rows = jax.jit(jax.jacrev(lambda x: P.render(t, _along(ph, dirs, names, x))[::4, ::3]))(
        jnp.zeros(len(names)))
    fwd = smooth["jac"][::4, ::3]
    np.testing.assert_allclose(rows, fwd, rtol=1e-10, atol=1e-10 * np.max(np.abs(fwd)))
    v = np.asarray(jax.random.normal(jax.random.PRNGKey(7), fwd.shape[:2], jnp.float64))
    u = np.asarray(jax.random.normal(jax.random.PRNGKey(8), (len(names),), jnp.float64))
    vjp = np.einsum("sf,sfi->i", v, np.asarray(rows))
    assert float(vjp @ u) == pytest.approx(float(np.sum(v * (fwd @ u))), rel=1e-10)
