"""jaxbragg.batch: stacks, batched rendering against a loop of ``simulate``, sharding over devices.

Batched and sharded images are compared with ``rtol = 1e-12``: every image goes through the same
per-pixel code and fixed summation order as ``simulate`` (see ``kernel.tree_sum``), so on CPU they
agree to the last bit; the tolerance only leaves XLA room to contract a multiply-add differently.

The multi-device cases need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX starts, so
they run a child script in a fresh interpreter that prints its findings as JSON.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import setup_from
from jaxbragg import batch
from jaxbragg.simulate import simulate

ARGS = ("-cell 50 60 70 90 90 90 -default_F 100 -N 5 -detpixels 16 -distance 100 -lambda 1 "
        "-oversample 1 -mosaic 0.5 -mosaic_domains 3 -osc 1 -phisteps 2")
RTOL = 1e-12
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup():
    return setup_from(ARGS)


def loop(config, stacked):
    return np.stack([np.asarray(simulate(config, batch.unstack(stacked, i)))
                     for i in range(batch.batch_size(stacked))])


def assert_same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * np.abs(b).max())


# ---- stacks ------------------------------------------------------------------------------------------

def test_stack_params_shares_identical_fields(setup):
    p = setup.params
    st = batch.stack_params([p.replace(phi0=np.float64(a)) for a in (0.0, 0.1, 0.2)])
    batched, shared, n = batch.split_stack(st)
    assert n == 3 and set(batched) == {"phi0"}
    assert shared["mosaic_umats"] is p.mosaic_umats
    np.testing.assert_array_equal(batch.unstack(st, 2).phi0, 0.2)


def test_split_stack_errors(setup):
    p = setup.params
    with pytest.raises(ValueError, match="no Params field"):
        batch.split_stack(p)
    with pytest.raises(ValueError, match="disagree"):
        batch.split_stack(p.replace(phi0=jnp.zeros(3), fluence=jnp.ones(4)))
    with pytest.raises(ValueError, match="rank"):
        batch.split_stack(p.replace(lattice=jnp.zeros((2, 2, 3, 3))))


def test_random_orientations_are_rotations_and_reproducible():
    u = batch.random_orientations(11, 6)
    np.testing.assert_allclose(u @ np.swapaxes(u, 1, 2), np.broadcast_to(np.eye(3), u.shape), atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(u), 1.0, atol=1e-14)
    np.testing.assert_array_equal(batch.random_orientations(11, 3, first=3), u[3:])   # depends on (seed, k)
    assert not np.allclose(batch.random_orientations(12, 1), u[:1])
    with pytest.raises(ValueError):
        batch.random_orientations(-1, 1)


def test_helpers_build_the_documented_fields(setup):
    p = setup.params
    u = batch.random_orientations(1, 2)
    st = batch.with_orientations(p, u)
    np.testing.assert_allclose(st.lattice[1], (u[1] @ np.asarray(p.lattice).T).T, rtol=1e-14)
    st = batch.with_phi_windows(p, [0.1, 0.2], phistep=0.01)
    assert st.phi0.shape == (2,) and st.phistep.shape == (2,)
    st = batch.with_wavelengths(p, [1e-10, 2e-10])
    np.testing.assert_allclose(st.source_lambda[:, 0], [1e-10, 2e-10], rtol=1e-15)


# ---- batched rendering -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["orientations", "phi", "wavelength", "mixed"])
def test_render_batch_equals_loop(setup, kind):
    cfg, p = setup.config, setup.params
    if kind == "orientations":
        st = batch.with_orientations(p, batch.random_orientations(3, 3))
    elif kind == "phi":
        st = batch.with_phi_windows(p, np.radians([0.0, 5.0, 10.0]))
    elif kind == "wavelength":
        st = batch.with_wavelengths(p, [0.9e-10, 1.0e-10, 1.2e-10])
    else:   # several fields at once, through stack_params
        st = batch.stack_params([p.replace(phi0=np.float64(i * 0.05), distance=p.distance * (1 + 0.1 * i))
                                 for i in range(3)])
    assert_same(batch.render_batch(cfg, st), loop(cfg, st))


def test_images_per_step_padding_does_not_change_images(setup):
    cfg, p = setup.config, setup.params
    st = batch.with_orientations(p, batch.random_orientations(5, 3))
    assert_same(batch.render_batch(cfg, st, images_per_step=2), loop(cfg, st))   # 2 steps, 1 image padded
    assert 1 <= batch.default_images_per_step(cfg, 3) <= 3
    assert batch.default_images_per_step(dataclasses.replace(cfg, sample_budget=1), 3) == 1


def test_new_values_do_not_recompile(setup):
    cfg, p = setup.config, setup.params
    batch.render_batch(cfg, batch.with_phi_windows(p, [0.0, 0.1]), images_per_step=2)
    size = batch._render_batch_jit._cache_size()
    batch.render_batch(cfg, batch.with_phi_windows(p, [0.3, 0.4]), images_per_step=2)
    assert batch._render_batch_jit._cache_size() == size


def test_gradient_through_a_batch_matches_finite_differences(setup):
    cfg, p = setup.config, setup.params

    def totals(ph):         # photons per image [2]
        return batch.render_batch(cfg, batch.with_phi_windows(p, ph), images_per_step=2).sum(axis=(1, 2))

    phis, h = jnp.array([0.01, 0.03]), 1e-6
    grad = jax.grad(lambda ph: totals(ph).sum())(phis)
    fd = (totals(phis + h) - totals(phis - h)) / (2 * h)      # image i depends on phi0[i] only
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_float32_survives(setup):
    cfg = setup.config
    p32 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), setup.params)
    out = batch.render_batch(cfg, batch.with_phi_windows(p32, [0.0, 0.1]))
    assert out.dtype == jnp.float32
    ref = np.stack([np.asarray(simulate(cfg, p32.replace(phi0=jnp.float32(a)))) for a in (0.0, 0.1)])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * ref.max())


def test_render_sharded_on_one_device(setup):
    cfg, p = setup.config, setup.params
    st = batch.with_orientations(p, batch.random_orientations(2, 3))
    out = batch.render_sharded(cfg, st)
    assert out.shape == (3, cfg.spixels, cfg.fpixels)
    assert_same(out, batch.render_batch(cfg, st))
    assert [i for i, _ in batch.local_images(out)] == [0, 1, 2]


# ---- several devices (child processes) ---------------------------------------------------------------

CHILD = """
import dataclasses, json, sys
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, {tests!r})
import numpy as np
from helpers import setup_from
from jaxbragg import batch

def shards(a):
    return sorted((s.device.id, list(s.data.shape), s.index[0].start or 0) for s in a.addressable_shards
                  if s.replica_id == 0)

def diff(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())

s = setup_from({args!r})
cfg, p = s.config, s.params
res = {{"devices": jax.device_count()}}
st8 = batch.with_orientations(p, batch.random_orientations(7, 8))
ref8 = batch.render_batch(cfg, st8)
out = batch.render_sharded(cfg, st8)
res["even"] = dict(diff=diff(out, ref8), spec=list(out.sharding.spec), shards=shards(out))
st6 = batch.with_orientations(p, batch.random_orientations(7, 6))
out = batch.render_sharded(cfg, st6)
kept = batch.render_sharded(cfg, st6, keep_padding=True)
res["padded"] = dict(diff=diff(out, ref8[:6]), shape=list(out.shape), kept_shape=list(kept.shape),
                     kept_spec=list(kept.sharding.spec), kept_diff=diff(kept[:6], ref8[:6]))
# each image split over 2 devices; its ROI of 13 x 11 = 143 pixels does not divide by 2, so the last
# range wraps around and the extra value is dropped
roi = dataclasses.replace(cfg, roi=(1, 13, 2, 12))
ref = batch.render_batch(roi, st8)
out = batch.render_sharded(roi, st8, mesh=batch.make_mesh(pixels=2))
res["pixels2"] = dict(diff=diff(out, ref), shards=shards(out),
                      zero_outside=bool(np.all(np.asarray(out)[:, 0, :] == 0)))
try:
    batch.render_sharded(cfg, st8, mesh=jax.make_mesh((2, 2), ("batch", "model")))
    res["foreign_axis"] = "accepted"
except ValueError as e:
    res["foreign_axis"] = str(e)
print("RESULT " + json.dumps(res))
"""


MULTIHOST = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
jax.distributed.initialize(coordinator_address={addr!r}, num_processes=2, process_id=int(sys.argv[1]))
sys.path.insert(0, {tests!r})
from helpers import setup_from
from jaxbragg import batch
s = setup_from({args!r})
st = batch.with_orientations(s.params, batch.random_orientations(9, 8))
out = batch.render_sharded(s.config, st)
mine = batch.local_images(out)
print("RESULT " + json.dumps(dict(devices=jax.device_count(), local=jax.local_device_count(),
                                  images={{i: im.tolist() for i, im in mine}})))
"""


class Children:
    """The child processes, started together when the module's first test runs so that they overlap
    with the in-process tests (each child spends most of its time compiling)."""

    def __init__(self, tmp):
        tests = os.path.join(REPO, "tests")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        (tmp / "four.py").write_text(CHILD.format(tests=tests, args=ARGS))
        (tmp / "host.py").write_text(MULTIHOST.format(addr=f"127.0.0.1:{port}", tests=tests, args=ARGS))
        self.procs = {"four": self._start(tmp, ["four.py"], 4)}
        for i in range(2):   # jax.distributed on CPU: 2 processes x 2 devices
            self.procs[f"host{i}"] = self._start(tmp, ["host.py", str(i)], 2)

    @staticmethod
    def _start(tmp, args, devices):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   JAX_PLATFORMS="cpu")
        return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=tmp)

    def result(self, name, timeout=300):
        out, err = self.procs[name].communicate(timeout=timeout)
        assert self.procs[name].returncode == 0, err[-3000:]
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT "):])

    def kill(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


CHILD_TESTS = {"test_sharded_equals_unsharded_on_four_devices", "test_two_processes_split_the_batch"}


@pytest.fixture(scope="module", autouse=True)
def children(request, tmp_path_factory):
    if not any(getattr(item, "originalname", "") in CHILD_TESTS for item in request.session.items):
        yield None
        return
    kids = Children(tmp_path_factory.mktemp("children"))
    yield kids
    kids.kill()


def test_sharded_equals_unsharded_on_four_devices(children):
    res = children.result("four")
    assert res["devices"] == 4
    even = res["even"]
    assert even["diff"] <= RTOL
    assert even["spec"] == ["batch"]
    # the work is split: each device holds (and rendered) its own 2 of the 8 images
    assert even["shards"] == [[0, [2, 16, 16], 0], [1, [2, 16, 16], 2], [2, [2, 16, 16], 4],
                              [3, [2, 16, 16], 6]]
    pad = res["padded"]
    assert pad["diff"] <= RTOL and pad["kept_diff"] <= RTOL
    assert pad["shape"] == [6, 16, 16] and pad["kept_shape"] == [8, 16, 16]
    assert pad["kept_spec"] == ["batch"]
    assert res["pixels2"]["diff"] <= RTOL and res["pixels2"]["zero_outside"]
    # two batch groups of two devices; one copy of each image per group
    assert [s[1][0] for s in res["pixels2"]["shards"]] == [4, 4]
    assert "'model'" in res["foreign_axis"]


def test_two_processes_split_the_batch(children, setup):
    """Each of 2 processes (2 devices each) holds its own 4 of the 8 images, equal to render_batch."""
    results = [children.result(f"host{i}") for i in range(2)]
    assert all(r["devices"] == 4 and r["local"] == 2 for r in results)
    assert [sorted(int(k) for k in r["images"]) for r in results] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    ref = np.asarray(batch.render_batch(setup.config, batch.with_orientations(
        setup.params, batch.random_orientations(9, 8))))
    for r in results:
        for k, im in r["images"].items():
            assert_same(np.array(im), ref[int(k)])


def test_one_image_per_step_is_bit_identical_to_simulate():
    # batch assembles each image as simulate.render does (same set-up, tiling rule and tile-invariance
    # barrier): several sources, a one-tile image, float32 per-sample stage
    s = setup_from("-cell 50 50 50 90 90 90 -default_F 100 -N 5 -detpixels 16 -divergence 1 -divsteps 2")
    cfg = dataclasses.replace(s.config, precision="float32")
    st = batch.with_phi_windows(s.params, [0.0, 0.01])
    images = np.asarray(batch.render_batch(cfg, st, images_per_step=1))
    assert images.max() > 0
    np.testing.assert_array_equal(images[1], np.asarray(simulate(cfg, batch.unstack(st, 1))))
