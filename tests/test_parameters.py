"""jaxbragg.parameters: the Physical <-> Params map, its parity with the CLI, gradients, subsets, vmap.

Compilation dominates the run time (a reverse-mode kernel takes ~15 s to compile on 2 cores), so the
tests share a few jitted functions whose template is an argument: changing the template's values (not its
config or shapes) reuses them.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbragg import beam, geometry, rng
from jaxbragg import parameters as P
from jaxbragg import simulate as sim
from jaxbragg.fit import default_scale

from helpers import setup_from

TRICLINIC = ("-cell 50 60 70 80 95 100 -misset 5 10 15 -default_F 100 -N 4 -lambda 1.0 -distance 60 "
             "-detpixels 16 -pixel 0.4 -oversample 1 -phi 1 -osc 1 -phisteps 2 -mosaic 0.3 -mosaic_domains 3 "
             "-dispersion 1 -dispsteps 3")
# the gradient case adds a structure-factor grid (default_F outside it) and polarization
GRADIENT = ("-cell 50 60 70 80 95 100 -misset 5 10 15 -hkl f.hkl -default_F 30 -N 4 -lambda 1.0 -distance 60 "
            "-detpixels 16 -pixel 0.5 -oversample 1 -phi 1 -osc 1 -phisteps 2 -mosaic 0.3 -mosaic_domains 3 "
            "-dispersion 1 -dispsteps 3 -polar 0.8")


@pytest.fixture(scope="module")
def triclinic():
    setup = setup_from(TRICLINIC)
    template, physical = P.from_setup(setup)
    return setup, template, physical


# ----------------------------------------------------------------------------------------- rotations

def test_rotvec_matrix_is_the_axis_angle_rotation():
    rs = np.random.default_rng(0)
    for scale in (1e-5, 3e-3, 0.2, 2.5):          # both sides of the Taylor switch at |r| = 0.01
        r = rs.normal(size=3)
        r *= scale / np.linalg.norm(r)
        m = np.asarray(P.rotvec_matrix(jnp.asarray(r)))
        ref = np.asarray(geometry.axis_matrix(r / np.linalg.norm(r), np.linalg.norm(r)))
        np.testing.assert_allclose(m, ref, rtol=0, atol=1e-15)
        np.testing.assert_allclose(m @ m.T, np.eye(3), rtol=0, atol=1e-15)
        assert np.linalg.det(m) == pytest.approx(1.0, abs=1e-15)


def test_rotvec_matrix_derivative_at_zero_is_the_generator():
    jac = np.asarray(jax.jit(jax.jacfwd(P.rotvec_matrix))(jnp.zeros(3)))        # [3, 3, 3(r)]
    gens = [np.asarray(geometry.axis_matrix(np.eye(3)[i], 1e-8) - np.eye(3)) / 1e-8 for i in range(3)]
    for i in range(3):
        np.testing.assert_allclose(jac[..., i], gens[i], atol=1e-7)
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.hessian(P.rotvec_matrix))(jnp.zeros(3)))))


def test_cell_round_trip():
    lengths, angles = np.array([50e-10, 60e-10, 70e-10]), np.radians([80.0, 95.0, 100.0])
    got = P.cell_from_lattice(P.cell_lattice(lengths, angles))
    np.testing.assert_allclose(got[0], lengths, rtol=1e-15)
    np.testing.assert_allclose(got[1], angles, rtol=1e-14)


# ---------------------------------------------------------------------------------- CLI parity

def test_from_setup_reproduces_the_cli_image(triclinic):
    setup, template, physical = triclinic
    ref = np.asarray(sim.simulate(setup.config, setup.params))
    img = np.asarray(sim.simulate(template.config, P.to_params(template, physical)))
    assert ref.max() > 0
    assert np.max(np.abs(img - ref)) <= 1e-10 * ref.max()


@pytest.mark.parametrize("args", [
    TRICLINIC,
    "-cell 40 40 60 90 90 120 -misset random -misset_seed 7 -default_F 1 -N 3 -xds -twotheta 10 "
    "-detector_rotx 1 -detector_roty -2 -detector_rotz 3 -distance 80 -detpixels 8 -phistep 0.3 -osc 1 "
    "-mosaic 1 -mosaic_domains 5 -mosaic_seed 3 -dispersion 2 -dispsteps 4 -lambda 1.3 -divergence 1 "
    "-divsteps 2 -polar 0.5",
    "-cell 30 30 30 90 90 90 -default_F 1 -N 2 -detpixels 8 -phisteps 3 -mosaic 0 -dispsteps 1",
])
def test_to_params_rebuilds_the_cli_params(args):
    setup = setup_from(args)
    template, physical = P.from_setup(setup)
    got = P.to_params(template, physical)
    for field in dataclasses.fields(setup.params):
        want = getattr(setup.params, field.name)
        if want is None:
            assert getattr(got, field.name) is None
            continue
        want = np.asarray(want)
        err = np.max(np.abs(np.asarray(getattr(got, field.name)) - want), initial=0.0)
        assert err <= 1e-12 * max(np.max(np.abs(want), initial=0.0), 1e-300), field.name


def test_osc_is_the_range_the_samples_cover():
    # -phistep with -osc: ceil(osc / phistep) steps of phistep, so osc becomes steps * phistep
    setup = setup_from("-cell 30 30 30 90 90 90 -default_F 1 -detpixels 4 -osc 1 -phistep 0.3")
    _, physical = P.from_setup(setup)
    assert setup.config.phisteps == 4
    assert float(physical.osc) == pytest.approx(np.radians(1.2), rel=1e-14)


def test_mosaic_axes_angles_rebuild_the_generator_matrices():
    axes, angles = rng.mosaic_axes_angles(np.radians(0.5), 7, -11)
    rebuilt = np.stack([geometry.axis_matrix(a, w) for a, w in zip(axes, angles)])
    np.testing.assert_array_equal(rebuilt, rng.mosaic_umats(np.radians(0.5), 7, -11))
    np.testing.assert_allclose(np.linalg.norm(axes, axis=1), 1.0, rtol=1e-15)
    # a template from the seed equals one read off the matrices
    setup = setup_from("-cell 30 30 30 90 90 90 -default_F 1 -detpixels 4 -mosaic 0.5 -mosaic_domains 7 "
                       "-mosaic_seed 11")
    from_seed, _ = P.from_params(setup.config, setup.params, mosaic_spread=np.radians(0.5), mosaic_seed=-11)
    read_off, _ = P.from_setup(setup)
    np.testing.assert_allclose(read_off.mosaic_unit_angles, from_seed.mosaic_unit_angles, rtol=1e-12)
    np.testing.assert_allclose(read_off.mosaic_axes[1:], from_seed.mosaic_axes[1:], rtol=1e-12, atol=1e-15)


def test_mosaic_spread_scales_the_generator_angles():
    seed, n, spread0, spread = -5, 6, np.radians(0.3), np.radians(0.7)
    setup = setup_from(f"-cell 30 30 30 90 90 90 -default_F 1 -detpixels 4 -mosaic 0.3 -mosaic_domains {n} "
                       f"-mosaic_seed 5")
    template, physical = P.from_setup(setup)
    assert float(physical.mosaic_spread) == pytest.approx(spread0)
    umats = P.to_params(template, physical.replace(mosaic_spread=jnp.asarray(spread))).mosaic_umats
    # the generator rounds its angle to float32: equal to that rounding
    np.testing.assert_allclose(umats, rng.mosaic_umats(spread, n, seed), rtol=0, atol=1e-9)


def test_mosaic_spread_can_grow_from_zero():
    n = 4
    config = sim.SimConfig(fpixels=4, spixels=4, mosaic_domains=n)
    params = setup_from("-cell 30 30 30 90 90 90 -default_F 1 -detpixels 4").params
    params = params.replace(mosaic_umats=np.broadcast_to(np.eye(3), (n, 3, 3)).copy())
    template, physical = P.from_params(config, params, mosaic_spread=0.0, mosaic_seed=-9)
    np.testing.assert_array_equal(P.to_params(template, physical).mosaic_umats, params.mosaic_umats)
    grown = P.to_params(template, physical.replace(mosaic_spread=jnp.asarray(0.01))).mosaic_umats
    np.testing.assert_allclose(grown, rng.mosaic_umats(0.01, n, -9), atol=1e-9)
    d = jax.jit(jax.jacfwd(lambda s: P.to_params(template, physical.replace(mosaic_spread=s)).mosaic_umats))(
        np.asarray(0.0))
    assert np.all(np.isfinite(d)) and np.max(np.abs(d[1:])) > 0.1 and np.max(np.abs(d[0])) == 0


def test_bandwidth_scales_the_dispersion_grid():
    setup = setup_from("-cell 30 30 30 90 90 90 -default_F 1 -detpixels 4 -lambda 1.5 -dispersion 1 "
                       "-dispsteps 5")
    template, physical = P.from_setup(setup)
    assert float(physical.bandwidth) == pytest.approx(0.01)
    lam = P.to_params(template, physical.replace(bandwidth=jnp.asarray(0.03))).source_lambda
    div = beam.divergence_grid(0.0, 0.0, 1, 0.0, 0.0, 1, True)
    _, want = beam.make_sources(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), 1.5e-10, div, 0.03, 0.0075, 5)
    np.testing.assert_allclose(lam, want, rtol=1e-14)


# ------------------------------------------------------------------------------------- gradients

@pytest.fixture(scope="module")
def gradient_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hkl")
    lines = [f"{h} {k} {l} {10 + abs(h) + 2 * abs(k) + 3 * abs(l) + (h * k) % 5}"
             for h in range(-3, 4) for k in range(-3, 4) for l in range(-3, 4)]
    (folder / "f.hkl").write_text("\n".join(lines) + "\n")
    setup = setup_from(GRADIENT, str(folder))
    template, physical = P.from_setup(setup)
    weights = jax.random.uniform(jax.random.PRNGKey(0), (16, 16), dtype=jnp.float64)

    def loss(t, q):
        return jnp.sum(weights.astype(q.distance.dtype) * P.render(t, q)) / 1e3

    keys = jax.random.split(jax.random.PRNGKey(1), len(P.FIELDS))
    directions = {name: np.asarray(jax.random.normal(k, np.shape(getattr(physical, name)), jnp.float64))
                  * default_scale(name, getattr(physical, name)) for name, k in zip(P.FIELDS, keys)}
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=1))
    eps = 1e-3
    fd = {}
    for name in P.FIELDS:
        x0 = getattr(physical, name)
        plus = value_and_grad(template, physical.replace(**{name: x0 + eps * directions[name]}))[0]
        minus = value_and_grad(template, physical.replace(**{name: x0 - eps * directions[name]}))[0]
        fd[name] = float(plus - minus) / (2 * eps)
    return dict(template=template, physical=physical, loss=loss, directions=directions, fd=fd,
                value_and_grad=value_and_grad)


def test_gradients_match_central_differences_float64(gradient_case):
    c = gradient_case
    _, grad = c["value_and_grad"](c["template"], c["physical"])
    for name in P.FIELDS:
        ad = float(jnp.sum(getattr(grad, name) * c["directions"][name]))
        assert abs(c["fd"][name]) > 1e-8, name          # every parameter moves the image
        assert ad == pytest.approx(c["fd"][name], rel=1e-5), name


def test_gradients_match_central_differences_float32(gradient_case):
    # forward mode in float32; the reference is the float64 central difference (a float32 difference
    # would mostly measure float32 rounding)
    c = gradient_case
    t32, p32 = P.astype(c["template"], np.float32), P.astype(c["physical"], np.float32)
    zero = jax.tree_util.tree_map(jnp.zeros_like, p32)
    jvp = jax.jit(lambda t, q, d: jax.jvp(lambda x: c["loss"](t, x), (q,), (d,)))
    for name in P.FIELDS:
        tangent = zero.replace(**{name: jnp.asarray(c["directions"][name], jnp.float32)})
        value, ad = jvp(t32, p32, tangent)
        assert value.dtype == jnp.float32 and ad.dtype == jnp.float32
        assert float(ad) == pytest.approx(c["fd"][name], rel=1e-3), name


def _all_finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))


def test_gradients_finite_at_integer_index_and_phi_zero(gradient_case):
    # unrotated default orientation: c is exactly along z (the MOSFLM fast axis and spindle), so on the
    # detector column whose fast coordinate equals the beam centre q_z = 0 and l = 0 exactly, for every
    # phi step; phi0 = 0 makes the first spindle rotation exactly the identity
    c = gradient_case
    px = 0.5e-3
    template = dataclasses.replace(c["template"], orientation=np.eye(3))
    physical = c["physical"].replace(phi0=np.asarray(0.0), beam_center=np.asarray([px * 8 + px / 2, px * 5]))
    lattice = P.to_params(template, physical).lattice
    assert float(lattice[2, 0]) == 0.0 and float(lattice[2, 1]) == 0.0
    value, grad = c["value_and_grad"](template, physical)
    assert np.isfinite(float(value)) and _all_finite(grad)


def test_gradients_finite_at_the_direct_beam(gradient_case):
    c = gradient_case
    px = 0.5e-3
    physical = c["physical"].replace(phi0=np.asarray(0.0), beam_center=np.asarray([px * 8.5, px * 5.5]))
    value, grad = c["value_and_grad"](c["template"], physical)
    assert np.isfinite(float(value)) and _all_finite(grad)


# ------------------------------------------------------------------------------- subsets and vmap

def test_pixel_subset_equals_the_full_image_there(triclinic):
    setup, template, physical = triclinic
    full = np.asarray(sim.simulate(template.config, P.to_params(template, physical)))
    rs = np.random.default_rng(3)
    s, f = rs.integers(0, 16, 40), rs.integers(0, 16, 40)
    got = np.asarray(P.simulate_pixels(template, physical, s, f))
    np.testing.assert_allclose(got, full[s, f], rtol=1e-12, atol=1e-12 * full.max())


def test_pixel_subset_cost_scales_with_the_pixels(triclinic):
    # compile-free check on the lowered program: the work of a subset is proportional to its size
    _, template, physical = triclinic

    def flops(n):
        s = jnp.zeros(n, jnp.int32)
        cost = jax.jit(P.render_pixels).lower(template, physical, s, s).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return cost["flops"]

    small, large = flops(16), flops(256)
    assert 10 < large / small < 20


def test_vmap_over_orientations_and_cells_equals_individual_renders(triclinic):
    _, template, physical = triclinic
    batch = [physical.replace(rotvec=jnp.asarray(r), cell_lengths=physical.cell_lengths * k)
             for r, k in (([0.0, 0.0, 0.0], 1.0), ([0.01, -0.02, 0.005], 1.002), ([-0.03, 0.0, 0.02], 0.997))]
    images = jax.jit(jax.vmap(P.render, in_axes=(None, 0)))(template, P.stack(batch))
    for img, one in zip(images, batch):
        single = sim.simulate(template.config, P.to_params(template, one))
        np.testing.assert_allclose(img, single, rtol=1e-10, atol=1e-10 * float(jnp.max(single)))
