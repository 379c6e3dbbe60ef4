"""NeXus/NXmx HDF5 output (the Eiger file layout), optional: ``pip install 'jaxbragg[h5]'`` (h5py and
hdf5plugin, imported only when a file is written).

What is written (every dataset and attribute, with units: ``specs/formats.md``, "NeXus/NXmx"):

* ``/entry/data/data`` ``[n, slow, fast]`` integer counts, bitshuffle/LZ4 compressed (hdf5plugin's
  filter 32008, as Eiger files are; a reader must ``import hdf5plugin`` before reading it).
* ``/entry/instrument/detector``: NXdetector with one NXdetector_module per :class:`Module` (its
  ``data_origin``/``data_size`` hyperslab of the data array, ``module_offset``, ``fast_pixel_direction``
  and ``slow_pixel_direction`` as NXtransformations axes), a detector-level ``transformations/detector_z``
  translation every module depends on, sensor material and thickness, saturation and underload values.
* ``/entry/instrument/beam/incident_wavelength``, ``/entry/sample`` with the goniometer axis
  (``transformations/omega``: start angle of every frame, ``omega_increment_set``, ``omega_end``),
  ``/entry/source``.

Frame: NeXus uses the McStas lab frame: ``z`` along the beam (downstream), ``y`` up, ``x`` completing a
right-handed frame. A :class:`Module` and :class:`NexusSetup` take vectors in that frame.
:func:`mcstas_rotation` gives the rotation from nanoBragg's lab frame: nanoBragg prints a "DIALS origin"
``(x_D, y_D, z_D) = (z_M, y_M, -x_M)`` of its MOSFLM frame (beam along ``+x_M``); DIALS' (imgCIF) frame has
the beam along ``-z_D``, and dxtbx reads NeXus vectors through ``diag(-1, 1, -1)`` (McStas -> imgCIF), so
``(x_N, y_N, z_N) = (-z_M, y_M, x_M)``. That rotation is used as it is whenever the beam is along ``+x``
(the MOSFLM, DENZO and CUSTOM defaults); for another beam direction it is followed by the smallest
rotation that takes the beam onto ``+z_N`` (for a beam along ``+z``, the XDS, DIALS and ADXV conventions,
the whole rotation is the identity). NXmx readers assume the beam along ``+z_N``.

Positions: a module's ``origin`` is the lab position of the outer corner of its first pixel (nanoBragg's
``pix0``; dxtbx's panel origin), so pixel ``(s, f)`` has its centre at
``origin + (f + 1/2) px_f fast + (s + 1/2) px_s slow``.

Files: :func:`nexus_bytes` builds one self-contained file (data inside); :func:`data_bytes` and
:func:`master_bytes` build the Eiger pair: data files ``NAME_data_000001.h5`` holding
``/entry/data/data`` for some frames, and a master ``NAME_master.h5`` with the metadata, an external link
``/entry/data/data_000001`` per data file and a virtual dataset ``/entry/data/data`` ``[n, slow, fast]``
that reads every frame through them (frames not written yet read as 0). Lengths are SI (m, rad) in this
API and mm, angstrom and degrees in the file.
"""
from __future__ import annotations

import dataclasses
import datetime
import io as _io
import math
import os
import re
from typing import Optional, Sequence, Tuple

import numpy as np

#: The extra that brings h5py and hdf5plugin.
EXTRA = "h5"
#: Eiger's data-file naming: ``{stem}_data_{number:06d}.h5``.
DATA_DIGITS = 6


def require():
    """``(h5py, hdf5plugin)``, or ImportError naming the ``h5`` extra."""
    try:
        import h5py  # noqa: PLC0415  (optional dependency, imported lazily)
        import hdf5plugin  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"writing NeXus files needs h5py and hdf5plugin: pip install 'jaxbragg[{EXTRA}]' "
                          f"({exc})") from exc
    return h5py, hdf5plugin


# ---------------------------------------------------------------------------------------------------
# frames and the description of what is written
# ---------------------------------------------------------------------------------------------------

#: nanoBragg (MOSFLM frame) -> McStas, the reference's "DIALS origin" map followed by diag(-1, 1, -1).
MOSFLM_TO_MCSTAS = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    n = float(np.linalg.norm(v))
    if not n > 0:
        raise ValueError(f"expected a non-zero vector, got {v.tolist()}")
    return v / n


def mcstas_rotation(beam) -> np.ndarray:
    """[3, 3] rotation from nanoBragg's lab frame to NeXus' McStas frame, for the beam direction ``beam``
    (nanoBragg's ``beam_vector``, source -> sample): :data:`MOSFLM_TO_MCSTAS`, then the smallest
    rotation taking the beam onto ``+z`` (a half turn about ``y`` if it points along ``-z``)."""
    R0 = MOSFLM_TO_MCSTAS
    b = R0 @ _unit(beam)
    z = np.array([0.0, 0.0, 1.0])
    c = float(b @ z)
    axis = np.cross(b, z)
    s = float(np.linalg.norm(axis))
    if s < 1e-12:
        return R0 if c > 0 else np.diag([-1.0, 1.0, -1.0]) @ R0
    from ..geometry import axis_matrix
    return np.asarray(axis_matrix(axis / s, math.atan2(s, c))) @ R0


@dataclasses.dataclass(frozen=True)
class Module:
    """One detector module (panel), in the McStas frame.

    Attributes:
      origin: [3] m, lab position of the outer corner of pixel (0, 0).
      fast, slow: [3] unit vectors of increasing fast and slow pixel index.
      pixel_size: m, or ``(fast, slow)`` m.
      shape: ``(slow, fast)`` pixel counts.
      data_origin: ``(slow, fast)`` index of this module's first pixel in the detector's data array.
      name: the NXdetector_module group name (default :func:`module_name`).
    """
    origin: Tuple[float, float, float]
    fast: Tuple[float, float, float]
    slow: Tuple[float, float, float]
    pixel_size: object
    shape: Tuple[int, int]
    data_origin: Tuple[int, int] = (0, 0)
    name: Optional[str] = None

    def pixel_sizes(self) -> Tuple[float, float]:
        px = np.broadcast_to(np.asarray(self.pixel_size, np.float64), (2,))
        return float(px[0]), float(px[1])


def module_name(index: int, count: int) -> str:
    """NXdetector_module group name: ``module`` for a one-module detector, else ``module_p00``,
    ``module_p01``, ... (the ``_pNN`` suffix of the per-panel files, :func:`jaxbragg.io.naming.panel_path`)."""
    from .naming import panel_suffix
    return "module" + panel_suffix(index, count)


def stack_modules(modules: Sequence[Module]) -> Tuple[Module, ...]:
    """The modules with ``data_origin`` set so their images lie one below the other (along slow) in one
    data array as wide as the widest module; returns the new modules."""
    out, s0 = [], 0
    for m in modules:
        out.append(dataclasses.replace(m, data_origin=(s0, 0)))
        s0 += int(m.shape[0])
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class NexusSetup:
    """Everything but the pixels: geometry (McStas frame, SI), beam, goniometer scan and counts type.

    Attributes:
      modules: the detector's :class:`Module` s.
      wavelength: m.
      axis: [3] unit rotation axis of the goniometer (right-handed for increasing angle).
      start: rad, angle at the start of frame 0; increment: rad per frame (the oscillation).
      distance: m, sample to the direct-beam spot along the beam (NXdetector/distance; also the value of
        the shared ``detector_z`` axis, which the module offsets are measured from).
      sensor_material, sensor_thickness [m]: the sensor (dxtbx knows Si, CdTe, GaAs).
      saturation_value, underload_value: counts at and above / at and below which pixels are not valid.
      count_time: s per frame, or None. axis_name: the goniometer axis' name.
    """
    modules: Tuple[Module, ...]
    wavelength: float
    axis: Tuple[float, float, float] = (-1.0, 0.0, 0.0)
    start: float = 0.0
    increment: float = 0.0
    distance: float = 0.0
    sensor_material: str = "Si"
    sensor_thickness: float = 0.0
    saturation_value: int = 65535
    underload_value: int = -1
    count_time: Optional[float] = None
    axis_name: str = "omega"
    description: str = "jaxbragg simulated detector"

    def data_shape(self) -> Tuple[int, int]:
        """(slow, fast) size of the data array holding every module."""
        return (max(m.data_origin[0] + m.shape[0] for m in self.modules),
                max(m.data_origin[1] + m.shape[1] for m in self.modules))


def beam_center(module: Module) -> Tuple[float, float]:
    """(fast, slow) pixel coordinates (from the first pixel's outer corner) where the beam (+z through
    the sample) meets the module's plane; NaN if the beam runs parallel to it."""
    f, s, o = (np.asarray(v, np.float64) for v in (module.fast, module.slow, module.origin))
    n = np.cross(f, s)
    if abs(n[2]) < 1e-12:
        return math.nan, math.nan
    hit = np.array([0.0, 0.0, float(n @ o) / n[2]])
    pf, ps = module.pixel_sizes()
    return float((hit - o) @ f) / pf, float((hit - o) @ s) / ps


# ---------------------------------------------------------------------------------------------------
# from a jaxbragg experiment
# ---------------------------------------------------------------------------------------------------

def panel_frames(experiment):
    """``[(pix0, fdet, sdet, odet, distance)]`` of every panel of ``experiment`` placed in nanoBragg's lab
    frame (SI; :func:`jaxbragg.panels.panel_frames`, whole-detector motion included)."""
    from ..panels import panel_frames as frames
    return [tuple(np.asarray(fr[k], np.float64) for k in ("origin", "fast", "slow", "normal"))
            + (float(fr["distance"]),) for fr in frames(experiment)]


def setup_from_experiment(experiment, *, start=None, increment=None, saturation_value=65535,
                          underload_value=-1, count_time=None, sensor_material="Si") -> NexusSetup:
    """The :class:`NexusSetup` of a :class:`jaxbragg.Experiment`: every panel as a module (stacked along
    slow, :func:`stack_modules`), rotated into the McStas frame (:func:`mcstas_rotation`); the scan's
    spindle as the goniometer axis; ``start`` [rad] (default the scan's phi) and ``increment`` [rad per
    frame] (default the scan's whole oscillation, ``phisteps * phistep``); the first panel's sensor
    thickness (``thicksteps * thickstep``)."""
    beam, _, spindle = experiment.vectors()
    R = mcstas_rotation(beam)
    frames = panel_frames(experiment)
    modules = []
    panels = experiment.detector.panels
    for i, (panel, (pix0, f, s, _, _)) in enumerate(zip(panels, frames)):
        modules.append(Module(origin=tuple(R @ pix0), fast=tuple(R @ f), slow=tuple(R @ s),
                              pixel_size=float(panel.pixel_size), shape=(panel.spixels, panel.fpixels),
                              name=module_name(i, len(panels))))
    sc, p0 = experiment.scan, panels[0]
    return NexusSetup(
        modules=stack_modules(modules), wavelength=float(experiment.beam.wavelength),
        axis=tuple(R @ _unit(spindle)), start=float(sc.phi0) if start is None else float(start),
        increment=float(sc.phistep) * sc.phisteps if increment is None else float(increment),
        distance=frames[0][4], sensor_material=sensor_material,
        sensor_thickness=float(p0.thickstep) * p0.thicksteps if p0.thick_sensor else 0.0,
        saturation_value=int(saturation_value), underload_value=int(underload_value), count_time=count_time)


# ---------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------

def compression():
    """h5py dataset keywords of Eiger's compression: bitshuffle with LZ4 (hdf5plugin)."""
    _, hdf5plugin = require()
    return dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))


def _counts(images) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected images [n, slow, fast] or [slow, fast], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"expected integer counts, got {a.dtype} (convert to counts first)")
    return a


def _text(group, name, value, **attrs):
    ds = group.create_dataset(name, data=np.bytes_(value.encode()))
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


def _number(group, name, value, units=None, dtype=np.float64):
    ds = group.create_dataset(name, data=np.asarray(value, dtype))
    if units is not None:
        ds.attrs["units"] = units
    return ds


def _group(parent, name, nx_class):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _axis(group, name, values, kind, vector, depends_on, units, offset=(0.0, 0.0, 0.0)):
    ds = _number(group, name, values, units)
    ds.attrs["transformation_type"] = kind
    ds.attrs["vector"] = np.asarray(vector, np.float64)
    ds.attrs["offset"] = np.asarray(offset, np.float64)
    ds.attrs["offset_units"] = "mm"
    ds.attrs["depends_on"] = depends_on
    return ds


def _data_chunks(images: np.ndarray) -> dict:
    return dict(chunks=(1,) + images.shape[1:], **compression())


def _file(handle, h5py):
    f = h5py.File(handle, "w", libver=("v110", "latest"))
    f.attrs["creator"] = "jaxbragg"
    f.attrs["file_time"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    f.attrs["NX_class"] = "NXroot"
    return f


def _bytes_of(build) -> bytes:
    h5py, _ = require()
    buf = _io.BytesIO()
    with _file(buf, h5py) as f:
        build(f, h5py)
    return buf.getvalue()


def _metadata(f, setup: NexusSetup, n: int):
    """Everything of the NXmx entry but the data; returns the NXdata group."""
    entry = _group(f, "entry", "NXentry")
    entry.attrs["default"] = "data"
    _text(entry, "definition", "NXmx")
    _text(entry, "start_time", f.attrs["file_time"])
    data = _group(entry, "data", "NXdata")
    data.attrs["signal"] = "data"
    src = _group(entry, "source", "NXsource")
    _text(src, "name", "jaxbragg simulation", short_name="jaxbragg")

    inst = _group(entry, "instrument", "NXinstrument")
    _text(inst, "name", "jaxbragg simulation", short_name="jaxbragg")
    beam = _group(inst, "beam", "NXbeam")
    _number(beam, "incident_wavelength", setup.wavelength * 1e10, "angstrom")

    det = _group(inst, "detector", "NXdetector")
    base = "/entry/instrument/detector/transformations/detector_z"
    _text(det, "depends_on", base)
    _text(det, "description", setup.description)
    _text(det, "type", "pixel")
    _number(det, "distance", setup.distance * 1e3, "mm")
    bx, by = beam_center(setup.modules[0])
    _number(det, "beam_center_x", bx, "pixel")
    _number(det, "beam_center_y", by, "pixel")
    _text(det, "sensor_material", setup.sensor_material)
    _number(det, "sensor_thickness", setup.sensor_thickness * 1e3, "mm")
    _number(det, "saturation_value", setup.saturation_value, dtype=np.int64)
    _number(det, "underload_value", setup.underload_value, dtype=np.int64)
    _number(det, "pixel_mask_applied", False, dtype=np.bool_)
    if setup.count_time is not None:
        _number(det, "count_time", setup.count_time, "s")
        _number(det, "frame_time", setup.count_time, "s")
    dtr = _group(det, "transformations", "NXtransformations")
    d_mm = setup.distance * 1e3
    _axis(dtr, "detector_z", [d_mm], "translation", (0.0, 0.0, 1.0), ".", "mm")
    for i, m in enumerate(setup.modules):
        name = m.name or module_name(i, len(setup.modules))
        mod = _group(det, name, "NXdetector_module")
        _number(mod, "data_origin", m.data_origin, dtype=np.int64)
        _number(mod, "data_size", m.shape, dtype=np.int64)
        _number(mod, "data_stride", (1, 1), dtype=np.int64)
        offset = np.asarray(m.origin, np.float64) * 1e3 - np.array([0.0, 0.0, d_mm])
        size = float(np.linalg.norm(offset))
        vec = offset / size if size > 0 else np.array([1.0, 0.0, 0.0])
        _axis(mod, "module_offset", [size], "translation", vec, base, "mm")
        here = f"/entry/instrument/detector/{name}/module_offset"
        pf, ps = m.pixel_sizes()
        _axis(mod, "fast_pixel_direction", [pf * 1e3], "translation", _unit(m.fast), here, "mm")
        _axis(mod, "slow_pixel_direction", [ps * 1e3], "translation", _unit(m.slow), here, "mm")

    sample = _group(entry, "sample", "NXsample")
    _text(sample, "name", "simulated crystal")
    _text(sample, "depends_on", f"/entry/sample/transformations/{setup.axis_name}")
    sample["beam"] = f["/entry/instrument/beam"]            # hard link: the beam at the sample
    tr = _group(sample, "transformations", "NXtransformations")
    deg = 180.0 / math.pi
    starts = (setup.start + setup.increment * np.arange(n)) * deg
    _axis(tr, setup.axis_name, starts, "rotation", _unit(setup.axis), ".", "deg")
    _number(tr, f"{setup.axis_name}_increment_set", setup.increment * deg, "deg")
    _number(tr, f"{setup.axis_name}_end", starts + setup.increment * deg, "deg")
    return data


def nexus_bytes(images, setup: NexusSetup) -> bytes:
    """One self-contained NXmx file: ``images`` [n, slow, fast] (or [slow, fast]) integer counts of the
    whole data array (:meth:`NexusSetup.data_shape`) compressed in ``/entry/data/data``."""
    images = _counts(images)
    _check_shape(images, setup)

    def build(f, h5py):
        data = _metadata(f, setup, images.shape[0])
        data.create_dataset("data", data=images, **_data_chunks(images))
        f["/entry/instrument/detector/data"] = data["data"]
    return _bytes_of(build)


def _check_shape(images, setup):
    if tuple(images.shape[1:]) != setup.data_shape():
        raise ValueError(f"images of {images.shape[1:]} pixels (slow, fast) do not match the detector's "
                         f"{setup.data_shape()}")


def data_bytes(images, frames: Sequence[int], series: str = "") -> bytes:
    """An Eiger-style data file: ``/entry/data/data`` [k, slow, fast] compressed, with attributes
    ``image_nr_low``/``image_nr_high`` (1-based numbers of its first and last frame, as Eiger's),
    ``frames`` (the 0-based frame index of each image, which need not be consecutive) and ``series``
    (a label the writer uses to recognise its own files)."""
    images = _counts(images)
    frames = np.asarray(frames, np.int64)
    if frames.shape != (images.shape[0],):
        raise ValueError(f"{images.shape[0]} images but {frames.size} frame numbers")

    def build(f, h5py):
        entry = _group(f, "entry", "NXentry")
        data = _group(entry, "data", "NXdata")
        data.attrs["signal"] = "data"
        ds = data.create_dataset("data", data=images, **_data_chunks(images))
        ds.attrs["image_nr_low"] = int(frames.min()) + 1
        ds.attrs["image_nr_high"] = int(frames.max()) + 1
        ds.attrs["frames"] = frames
        ds.attrs["series"] = series
    return _bytes_of(build)


def master_bytes(setup: NexusSetup, n: int, data_files: Sequence[Tuple[str, Sequence[int]]],
                 dtype="uint16") -> bytes:
    """The master file of ``n`` frames whose pixels are in ``data_files``: ``[(file name relative to the
    master's directory, frame indices it holds)]``.

    It holds a link ``/entry/data/data_NNNNNN`` to each file (``NNNNNN`` the number in a name
    ``..._data_NNNNNN.h5``, else the position in the list, from 1) and the virtual ``/entry/data/data``
    [n, slow, fast] of type ``dtype`` that maps each frame to its file (a frame in several files: the
    last one; frames in none read as 0)."""
    shape = (int(n),) + setup.data_shape()

    def build(f, h5py):
        data = _metadata(f, setup, n)
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        for j, (name, frames) in enumerate(data_files):
            m = re.search(r"_data_(\d+)\.h5$", name)
            number = int(m.group(1)) if m else j + 1
            data[f"data_{number:0{DATA_DIGITS}d}"] = h5py.ExternalLink(name, "/entry/data/data")
            frames = list(frames)
            source = h5py.VirtualSource(name, "/entry/data/data", shape=(len(frames),) + shape[1:])
            for i, k in enumerate(frames):
                layout[int(k)] = source[i]
        data.create_virtual_dataset("data", layout, fillvalue=0)
        f["/entry/instrument/detector/data"] = data["data"]
    return _bytes_of(build)


def data_file_name(stem: str, number: int) -> str:
    """Eiger's data-file name ``{stem}_data_{number:06d}.h5`` (``stem`` may include a directory)."""
    return f"{stem}_data_{number:0{DATA_DIGITS}d}.h5"


def master_file_name(stem: str) -> str:
    """Eiger's master-file name ``{stem}_master.h5``."""
    return f"{stem}_master.h5"


def read_data_file(path) -> Tuple[np.ndarray, str]:
    """``(frames [k] 0-based, series label)`` of a data file written by :func:`data_bytes` (the pixels
    are not read). Raises OSError/KeyError for a file that is not one."""
    h5py, _ = require()
    with h5py.File(path, "r") as f:
        ds = f["/entry/data/data"]
        return np.asarray(ds.attrs["frames"], np.int64), str(ds.attrs.get("series", ""))


def write_nexus(path, images, setup: NexusSetup) -> None:
    """Write :func:`nexus_bytes` to ``path`` all-or-nothing (:func:`jaxbragg.io._common.atomic_write`)."""
    from ._common import atomic_write
    atomic_write(os.fspath(path), [nexus_bytes(images, setup)])
