"""Many images in one call: batches of parameter sets, tiled over images and pixels, sharded over devices.

A *stack* is a :class:`~jaxbragg.simulate.Params` in which some fields carry a leading batch axis of
length ``N`` (image ``i`` uses ``field[i]``) and the others do not (every image shares them). Which is
which is read from the rank: ``lattice`` is [3, 3] for one image and [N, 3, 3] for a stack, ``phi0`` is
[] or [N], and so on (:data:`BASE_RANK`). Sharing the large fields (``F_grid``, ``mask``) keeps a stack of
a thousand orientations as small as a thousand 3 x 3 matrices.

Memory is bounded at two levels. :func:`jaxbragg.simulate.pixel_values` already walks an image in tiles
of about ``config.sample_budget`` pixel-samples; here ``lax.map`` walks the batch in steps of
``images_per_step`` images and ``vmap`` renders the images of one step together, so one step holds about
``images_per_step x tile x samples_per_pixel`` values. The default step fills the same sample budget:
several small images per step, one large image per step.

:func:`render_sharded` spreads the same computation over a device mesh with ``jax.shard_map``. Its
``'batch'`` axis splits the images (no communication); an optional ``'pixels'`` axis splits each image's
pixels into contiguous ranges (one ``all_gather`` per step), for a few large images on many devices.
After ``jax.distributed.initialize()`` the mesh spans every process's devices and the inputs are built
as global arrays, so one call renders on several hosts (docs/scaling.md).

Every image is rendered by the same code as :func:`jaxbragg.simulate.render` (``pixel_values`` then
``assemble_image``: the same per-image set-up, tiling rule and tile-invariance barrier), so a batch equals a loop of ``simulate`` calls to the last bit or close to it
(``tests/test_batch.py`` states the tolerance).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ._jit import EntryJit, strong_types
from .simulate import (PARAM_RANK, Params, SimConfig, _choose_tile, _empty_values, assemble_image,
                       finish_image, pixel_values)

#: Rank of each ``Params`` field for one image; a stacked field has one more (the leading batch axis).
BASE_RANK: Dict[str, int] = PARAM_RANK

BATCH_AXIS = "batch"
PIXEL_AXIS = "pixels"


# ---------------------------------------------------------------------------------------------------
# building stacks
# ---------------------------------------------------------------------------------------------------

def _fields(p: Params) -> Dict[str, object]:
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}


def split_stack(stacked: Params) -> Tuple[Dict[str, jax.Array], Dict[str, object], int]:
    """Split a stack into ``(batched fields, shared fields, N)``.

    Raises:
      ValueError: a field has neither its single-image rank nor one more, batched fields disagree on
        ``N``, or no field is batched.
    """
    batched, shared, sizes = {}, {}, set()
    for name, value in _fields(stacked).items():
        if name not in BASE_RANK:
            raise ValueError(f"batch: Params field {name!r} has no entry in batch.BASE_RANK")
        if value is None:
            shared[name] = None
            continue
        rank = jnp.ndim(value)
        if rank == BASE_RANK[name] + 1:
            batched[name] = value
            sizes.add(jnp.shape(value)[0])
        elif rank == BASE_RANK[name]:
            shared[name] = value
        else:
            raise ValueError(f"batch: Params.{name} has rank {rank}; expected {BASE_RANK[name]} (shared) "
                             f"or {BASE_RANK[name] + 1} (one per image)")
    if not batched:
        raise ValueError("batch: no Params field has a leading batch axis (use stack_params or a with_* "
                         "helper)")
    if len(sizes) != 1:
        raise ValueError(f"batch: batched Params fields disagree on the number of images: {sorted(sizes)}")
    return batched, shared, sizes.pop()


def batch_size(stacked: Params) -> int:
    """Number of images ``N`` in a stack."""
    return split_stack(stacked)[2]


def unstack(stacked: Params, i: int) -> Params:
    """The single-image ``Params`` of image ``i`` of a stack."""
    batched, shared, _ = split_stack(stacked)
    return Params(**shared, **{k: v[i] for k, v in batched.items()})


def stack_params(params_list: Sequence[Params]) -> Params:
    """Stack single-image ``Params`` into one stack.

    A field that is the same object in every element (e.g. an untouched ``F_grid`` after
    ``p.replace(phi0=...)``) is kept once, shared; every other field is stacked along a new axis 0.
    """
    if not params_list:
        raise ValueError("stack_params: empty list")
    dicts = [_fields(p) for p in params_list]
    out = {}
    for name, first in dicts[0].items():
        values = [d[name] for d in dicts]
        if all(v is first for v in values):
            out[name] = first
        elif any(v is None for v in values):
            raise ValueError(f"stack_params: Params.{name} is None in some elements only")
        else:
            out[name] = jnp.stack([jnp.asarray(v) for v in values])
    result = Params(**out)
    split_stack(result)
    return result


def with_lattices(params: Params, lattices) -> Params:
    """Stack of ``params`` with ``lattice`` [N, 3, 3] (rows a, b, c in metres) per image."""
    return params.replace(lattice=jnp.asarray(lattices, jnp.result_type(params.lattice)))


def with_orientations(params: Params, umats) -> Params:
    """Stack of ``params`` rotated by each ``U`` of ``umats`` [N, 3, 3]: ``a_i = U_i a`` (same for b, c).

    The rotation acts on the phi = 0 lattice about the laboratory origin, like a mosaic-domain matrix or
    a misset, before the spindle rotation.
    """
    umats = jnp.asarray(umats, jnp.result_type(params.lattice))
    return params.replace(lattice=jnp.einsum("nij,vj->nvi", umats, params.lattice))


def with_phi_windows(params: Params, phi0s, phistep=None) -> Params:
    """Stack of ``params`` with spindle start angles ``phi0s`` [N] (radians).

    ``phistep`` (radians, scalar or [N]) replaces the step between the ``config.phisteps`` samples of each
    window; by default every image keeps ``params.phistep``. Image ``i`` then covers
    ``[phi0s[i], phi0s[i] + phisteps * phistep)``, one frame of a rotation series.
    """
    dtype = jnp.result_type(params.phi0)
    phi0s = jnp.asarray(phi0s, dtype).reshape(-1)
    out = params.replace(phi0=phi0s)
    if phistep is not None:
        step = jnp.asarray(phistep, dtype)
        out = out.replace(phistep=jnp.broadcast_to(step, phi0s.shape) if step.ndim == 0 else step)
    return out


def with_wavelengths(params: Params, wavelengths) -> Params:
    """Stack of ``params`` with a different beam spectrum per image.

    ``wavelengths`` [N, S] sets ``source_lambda`` (metres) directly. ``wavelengths`` [N] gives each image's
    mean wavelength: every spectrum is ``params.source_lambda`` scaled by ``wavelengths[i] / mean``, which
    keeps the relative bandwidth of a ``-dispersion`` beam (and is exact for one source).
    """
    lam = jnp.asarray(wavelengths, jnp.result_type(params.source_lambda))
    if lam.ndim == 1:
        base = params.source_lambda
        lam = base[None, :] * (lam[:, None] / jnp.mean(base))
    return params.replace(source_lambda=lam)


def random_orientations(seed: int, count: int, first: int = 0) -> np.ndarray:
    """Rotation matrices [count, 3, 3] uniform on SO(3), for images ``first .. first + count - 1``.

    Image ``k`` draws from its own NumPy stream ``default_rng([seed, k])``: a unit quaternion from four
    normal deviates (uniform on the 3-sphere, hence a Haar-uniform rotation). Its matrix depends only on
    ``(seed, k)``, so a resumed or partial series reproduces the same orientations.
    """
    if seed < 0:
        raise ValueError("random_orientations: seed must be >= 0")
    out = np.empty((count, 3, 3))
    for i in range(count):
        w, x, y, z = _unit_quaternion(seed, first + i)
        out[i] = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    return out


def _unit_quaternion(seed: int, k: int) -> np.ndarray:
    q = np.random.default_rng([seed, k]).standard_normal(4)
    return q / np.linalg.norm(q)


# ---------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------

def _window_pixels(config: SimConfig) -> int:
    f0, f1, s0, s1 = config.roi_box()
    return max(f1 - f0 + 1, 0) * max(s1 - s0 + 1, 0)


def default_images_per_step(config: SimConfig, n_images: int, pixel_parts: int = 1) -> int:
    """Images rendered together (``vmap``) in one step so that a step holds about ``sample_budget``
    pixel-samples, as one pixel tile of a single image does: 1 for a large image, more for small ones."""
    count = max(-(-_window_pixels(config) // pixel_parts), 1)
    # a step holds one tile of each of its images, padding included (the kernel's own tiling rule)
    per_image = _choose_tile(config, count) * max(config.samples_per_pixel, 1)
    return max(1, min(n_images, config.execution.sample_budget // per_image))


def _pad_rows(x, total: int):
    """Pad axis 0 to ``total`` rows by repeating the last row (valid inputs, so no NaN in the padding)."""
    n = x.shape[0]
    if n == total:
        return x
    return jnp.concatenate([x, jnp.broadcast_to(x[-1:], (total - n,) + x.shape[1:])])


def _render_local(config: SimConfig, batched, shared, chunk: int, pixel_parts: int):
    """Images [n, spixels, fpixels] of the ``n`` parameter sets in ``batched``, ``chunk`` per step.

    With ``pixel_parts > 1`` this runs inside ``shard_map`` over a ``'pixels'`` mesh axis of that size:
    each member renders its contiguous range of the ROI window, and the ranges are gathered before the
    whole-image steps (mask, interpolation switch-off, carry-over) of ``finish_image``.
    """
    n = next(iter(batched.values())).shape[0]
    n_pix = _window_pixels(config)
    count = -(-n_pix // pixel_parts)
    start = jax.lax.axis_index(PIXEL_AXIS) * count if pixel_parts > 1 else 0

    def one(b):
        p = Params(**shared, **b)
        if n_pix == 0:
            return finish_image(config, p, _empty_values(p))
        values = pixel_values(config, p, start, count)
        if pixel_parts > 1:
            values = jax.tree_util.tree_map(
                lambda v: jax.lax.all_gather(v, PIXEL_AXIS, axis=0, tiled=True), values)
        # the same assembly (tile-invariance barrier included) as simulate.render
        return assemble_image(config, p, jax.tree_util.tree_map(lambda v: v[:n_pix], values))

    # one image per step: plain lax.map, no vmap bookkeeping
    step = one if chunk == 1 else jax.vmap(one)
    total = -(-n // chunk) * chunk
    lead = (total,) if chunk == 1 else (total // chunk, chunk)
    steps = jax.tree_util.tree_map(lambda x: _pad_rows(x, total).reshape(lead + x.shape[1:]), batched)
    images = jax.lax.map(step, steps)
    return images.reshape((total,) + images.shape[-2:])[:n]


def _step_size(config: SimConfig, n: int, requested: Optional[int], pixel_parts: int = 1) -> int:
    chunk = requested or default_images_per_step(config, n, pixel_parts)
    return max(1, min(int(chunk), n))


_render_batch_jit = EntryJit(_render_local, static_argnums=(0, 3, 4))


def render_batch(config: SimConfig, stacked: Params, images_per_step: Optional[int] = None):
    """Render every image of a stack: [N, spixels, fpixels] photons per pixel, in one jitted call.

    Args:
      config: the static config shared by every image.
      stacked: a stack (module docstring); fields without a batch axis are shared.
      images_per_step: images rendered together in one ``lax.map`` step; default
        :func:`default_images_per_step`. Larger is faster until memory runs out.

    One compilation per (config, set of batched fields, N, step); values never recompile. Composes with
    ``jax.grad`` (e.g. with respect to every image's ``phi0``).
    """
    batched, shared, n = split_stack(stacked)
    chunk = _step_size(config, n, images_per_step)
    batched, shared = strong_types((batched, shared))
    return _render_batch_jit(config, batched, shared, chunk, 1)


# ---------------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------------

def make_mesh(pixels: int = 1, devices=None) -> Mesh:
    """A mesh over ``devices`` (default: every device of every process) with axes ``('batch', 'pixels')``.

    ``pixels`` devices share each image (the fastest-varying axis of the device list, so on several
    hosts a pixel group stays within one host); the rest split the images.
    """
    devices = list(jax.devices() if devices is None else devices)
    if pixels < 1 or len(devices) % pixels:
        raise ValueError(f"make_mesh: {len(devices)} devices cannot be split into groups of {pixels}")
    return Mesh(np.array(devices).reshape(len(devices) // pixels, pixels), (BATCH_AXIS, PIXEL_AXIS))


def _axis_size(mesh: Mesh, name: str) -> int:
    return int(mesh.shape[name]) if name in mesh.axis_names else 1


def _global(x, sharding):
    """A global array with ``sharding`` from a host value every process holds in full (works on one or
    several processes: each fills only its own devices' shards)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _sharded(config, mesh, chunk, pixel_parts, n, batched, shared):
    spec = P(BATCH_AXIS) if BATCH_AXIS in mesh.axis_names else P()
    fn = jax.shard_map(lambda b, s: _render_local(config, b, s, chunk, pixel_parts), mesh=mesh,
                       in_specs=(spec, P()), out_specs=spec, check_vma=False)
    return fn(batched, shared)[:n]


_sharded_jit = EntryJit(_sharded, static_argnums=(0, 1, 2, 3, 4))


def render_sharded(config: SimConfig, stacked: Params, mesh: Optional[Mesh] = None,
                   images_per_step: Optional[int] = None, keep_padding: bool = False):
    """:func:`render_batch` spread over a device mesh: [N, spixels, fpixels], sharded along axis 0.

    Args:
      mesh: a ``jax.sharding.Mesh`` whose axes are ``'batch'`` (splits the images) and/or ``'pixels'``
        (splits each image's pixels); default ``make_mesh()``, all devices along ``'batch'``. Any other
        axis must have size 1.
      images_per_step: images per ``lax.map`` step on each device (default from the sample budget).
      keep_padding: return all ``N'`` rendered images (see below) instead of the first ``N``.

    ``N`` is padded to ``N'``, a multiple of the number of ``'batch'`` devices, by repeating the last
    image; each device renders ``N' / devices`` images. The result is a global ``jax.Array`` sharded
    along axis 0 when ``N' == N`` (choose ``N`` so), or with ``keep_padding``; otherwise dropping the
    padding leaves XLA an uneven split, which it resolves by replicating the images on every device.
    On one process ``np.asarray`` reads the result; on several, each process reads its own images with
    :func:`local_images`.
    """
    mesh = make_mesh() if mesh is None else mesh
    for name in mesh.axis_names:
        if name not in (BATCH_AXIS, PIXEL_AXIS) and mesh.shape[name] != 1:
            raise ValueError(f"render_sharded: mesh axis {name!r} must be 'batch' or 'pixels'")
    n_batch, n_pixels = _axis_size(mesh, BATCH_AXIS), _axis_size(mesh, PIXEL_AXIS)
    batched, shared, n = split_stack(stacked)
    per_device = -(-n // n_batch)
    chunk = _step_size(config, per_device, images_per_step, n_pixels)
    total = per_device * n_batch
    row = NamedSharding(mesh, P(BATCH_AXIS) if BATCH_AXIS in mesh.axis_names else P())
    whole = NamedSharding(mesh, P())
    batched, shared = strong_types((batched, shared))
    batched = {k: _global(_pad_rows(v, total), row) for k, v in batched.items()}
    shared = {k: None if v is None else _global(v, whole) for k, v in shared.items()}
    return _sharded_jit(config, mesh, chunk, n_pixels, total if keep_padding else n, batched, shared)


def local_images(images):
    """``[(index, image [spixels, fpixels] NumPy)]`` for the images this process holds, each once.

    On one process that is every image; after ``jax.distributed.initialize()`` each process gets its own
    share of a :func:`render_sharded` result, so each can write its own files.
    """
    out = {}
    for shard in images.addressable_shards:
        if shard.replica_id != 0:
            continue
        start = shard.index[0].start or 0
        data = np.asarray(shard.data)
        for j in range(data.shape[0]):
            out[start + j] = data[j]
    return sorted(out.items())
