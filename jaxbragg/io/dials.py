"""DIALS experiment lists (``.expt``, the JSON written by dxtbx) -> geometry in nanoBragg's lab frame.

Read (specs/formats.md lists every field): the ``experiment`` list's entry ``index`` and, through its
integer indices, its ``beam``, ``detector``, ``crystal``, ``goniometer`` and ``scan`` (the last three may
be absent). The detector's ``hierarchy`` is flattened: every node's ``origin``/``fast_axis``/``slow_axis``
is local to its parent's frame (origin ``o + x f + y s + z n``, axes ``x f + y s + z n`` with
``n = f x s``); a node ``{"panel": i}`` places ``panels[i]``. Without a hierarchy the panels are in the lab
frame.

Frames: DIALS's lab frame (beam ``direction`` points from the sample towards the source) maps to
nanoBragg's MOSFLM frame (beam travels along +x) as ``x_D = z_M, y_D = y_M, z_D = -x_M``
(:data:`jaxbragg.panels.MOSFLM_TO_DIALS`). Polarization: the E vector is ``beam x polarization_normal``
and Kahn's factor is ``2 f - 1`` for ``polarization_fraction`` f. Units are converted to the experiment
model's (mm, um, A, deg). Pure NumPy; problems raise :class:`~jaxbragg.errors.InputError` naming the
file and field.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import InputError


@dataclasses.dataclass
class ExptPanel:
    """One panel, DIALS lab frame: ``origin`` [3] mm (corner of pixel (0, 0)), unit ``fast``/``slow``,
    ``pixel_size`` (fast, slow) mm, ``image_size`` (fast, slow) pixels, ``thickness`` mm, ``mu`` 1/mm,
    ``material`` and ``name`` (metadata)."""
    name: str
    origin: np.ndarray
    fast: np.ndarray
    slow: np.ndarray
    pixel_size: tuple
    image_size: tuple
    thickness: float
    mu: float
    material: str


@dataclasses.dataclass
class ExptModel:
    """One experiment of a ``.expt`` file in the DIALS lab frame (mm, A, deg), as read."""
    path: str
    index: int
    count: int
    panels: List[ExptPanel]
    beam_direction: np.ndarray          # towards the source, unit
    wavelength: float                   # A
    polarization_normal: np.ndarray
    polarization_fraction: float
    real_space: Optional[np.ndarray]    # [3, 3] rows a, b, c in A, or None
    space_group: Optional[str]
    mosaicity: float                    # deg (full spread)
    rotation_axis: Optional[np.ndarray]
    fixed_rotation: np.ndarray          # [3, 3]
    setting_rotation: np.ndarray        # [3, 3]
    oscillation: Optional[tuple]        # (start, width) deg
    image_range: Optional[tuple]

    @property
    def metadata(self) -> Dict[str, Any]:
        """What the model does not use: panel names and materials, the space group."""
        return dict(panel_names=[p.name for p in self.panels], materials=[p.material for p in self.panels],
                    space_group=self.space_group, image_range=self.image_range)


def _field(path, where, d, key, default=None, required=True):
    if not isinstance(d, dict):
        raise InputError(f"{path}: {where} is not a JSON object")
    if key not in d or d[key] is None:
        if required:
            raise InputError(f"{path}: {where}.{key} is missing")
        return default
    return d[key]


def _vec(path, name, value, n=3):
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{path}: {name} must be {n} numbers, got {value!r}") from None
    if v.size != n or not np.all(np.isfinite(v)):
        raise InputError(f"{path}: {name} must be {n} finite numbers, got {value!r}")
    return v


def _num(path, name, value):
    return float(_vec(path, name, value, 1)[0])


def _unit(path, name, value):
    v = _vec(path, name, value)
    n = float(np.linalg.norm(v))
    if not n > 0:
        raise InputError(f"{path}: {name} must be a non-zero vector")
    return v / n


def _pick(path, lists, kind, entry, where, required):
    i = entry.get(kind)
    if i is None:
        if required:
            raise InputError(f"{path}: {where}.{kind} is missing")
        return None
    items = lists.get(kind) or []
    if not isinstance(i, int) or not 0 <= i < len(items):
        raise InputError(f"{path}: {where}.{kind} = {i!r} is not an index into the {len(items)} {kind} models")
    return items[i]


def _flatten(path, det) -> List[tuple]:
    """(panel index, origin, fast, slow) in the lab frame for every panel of a detector dict."""
    panels = _field(path, "detector", det, "panels")
    if not isinstance(panels, list) or not panels:
        raise InputError(f"{path}: detector.panels must be a non-empty list")
    out = {}

    def frame(node, where):
        return (_vec(path, f"{where}.origin", _field(path, where, node, "origin")),
                _unit(path, f"{where}.fast_axis", _field(path, where, node, "fast_axis")),
                _unit(path, f"{where}.slow_axis", _field(path, where, node, "slow_axis")))

    def walk(node, parent, where):
        o, f, s = parent
        n = np.cross(f, s)
        place = lambda o_l, f_l, s_l: (o + o_l[0] * f + o_l[1] * s + o_l[2] * n,
                                       f_l[0] * f + f_l[1] * s + f_l[2] * n, s_l[0] * f + s_l[1] * s + s_l[2] * n)
        if isinstance(node, dict) and "panel" in node:
            i = node["panel"]
            if not isinstance(i, int) or not 0 <= i < len(panels):
                raise InputError(f"{path}: {where}.panel = {i!r} is not an index into the {len(panels)} panels")
            out[i] = place(*frame(panels[i], f"detector.panels[{i}]"))
            return
        mine = place(*frame(node, where))
        for j, child in enumerate(_field(path, where, node, "children", [], required=False)):
            walk(child, mine, f"{where}.children[{j}]")

    hierarchy = det.get("hierarchy")
    if hierarchy:
        lab = (np.zeros(3), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
        walk(hierarchy, lab, "detector.hierarchy")
        missing = [i for i in range(len(panels)) if i not in out]
        if missing:
            raise InputError(f"{path}: detector.hierarchy does not place panel {missing[0]}")
    else:
        for i, p in enumerate(panels):
            out[i] = frame(p, f"detector.panels[{i}]")
    return [(i, *out[i]) for i in range(len(panels))]


def read_expt(path, index: int = 0) -> ExptModel:
    """Experiment ``index`` of the DIALS experiment list ``path`` (see the module docstring)."""
    path = os.fspath(path)
    try:
        with open(path, "r", encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as e:
        raise InputError(f"{path}: cannot read the experiment list ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a JSON experiment list ({e})") from None
    experiments = _field(path, "the file", doc, "experiment")
    if not isinstance(experiments, list) or not experiments:
        raise InputError(f"{path}: experiment must be a non-empty list")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(experiments):
        raise InputError(f"{path}: experiment index {index!r} is not one of 0..{len(experiments) - 1}")
    entry = experiments[index]
    where = f"experiment[{index}]"
    if not isinstance(entry, dict):
        raise InputError(f"{path}: {where} is not a JSON object")
    beam = _pick(path, doc, "beam", entry, where, True)
    det = _pick(path, doc, "detector", entry, where, True)
    xtal = _pick(path, doc, "crystal", entry, where, False)
    gonio = _pick(path, doc, "goniometer", entry, where, False)
    scan = _pick(path, doc, "scan", entry, where, False)

    panels = []
    for i, origin, fast, slow in _flatten(path, det):
        p = det["panels"][i]
        w = f"detector.panels[{i}]"
        size = _vec(path, f"{w}.image_size", _field(path, w, p, "image_size"), 2)
        if not np.all(size >= 1) or not np.all(size == np.round(size)):
            raise InputError(f"{path}: {w}.image_size must be two positive integers, got {p['image_size']!r}")
        px = _vec(path, f"{w}.pixel_size", _field(path, w, p, "pixel_size"), 2)
        if not np.all(px > 0):
            raise InputError(f"{path}: {w}.pixel_size must be positive, got {p['pixel_size']!r} mm")
        thick = _num(path, f"{w}.thickness", _field(path, w, p, "thickness", 0.0, False))
        mu = _num(path, f"{w}.mu", _field(path, w, p, "mu", 0.0, False))
        if thick < 0 or mu < 0:
            raise InputError(f"{path}: {w}.thickness and mu must not be negative")
        panels.append(ExptPanel(name=str(p.get("name", "")), origin=origin, fast=fast, slow=slow,
                                pixel_size=tuple(float(x) for x in px), image_size=tuple(int(x) for x in size),
                                thickness=thick, mu=mu, material=str(p.get("material", ""))))

    lam = _num(path, "beam.wavelength", _field(path, "beam", beam, "wavelength"))
    if not lam > 0:
        raise InputError(f"{path}: beam.wavelength must be positive, got {lam!r} A")
    direction = _unit(path, "beam.direction", _field(path, "beam", beam, "direction"))
    normal = _unit(path, "beam.polarization_normal",
                   _field(path, "beam", beam, "polarization_normal", [0.0, 1.0, 0.0], False))
    fraction = _num(path, "beam.polarization_fraction",
                    _field(path, "beam", beam, "polarization_fraction", 0.5, False))
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"{path}: beam.polarization_fraction must lie in [0, 1], got {fraction!r}")
    if float(np.linalg.norm(np.cross(direction, normal))) < 1e-9:
        raise InputError(f"{path}: beam.polarization_normal is parallel to beam.direction")

    real = group = None
    mosaic = 0.0
    if xtal is not None:
        real = np.stack([_vec(path, f"crystal.real_space_{k}", _field(path, "crystal", xtal, f"real_space_{k}"))
                         for k in "abc"])
        if not abs(float(np.linalg.det(real))) > 0:
            raise InputError(f"{path}: crystal.real_space_a/b/c are coplanar (zero cell volume)")
        group = xtal.get("space_group_hall_symbol")
        if xtal.get("mosaicity") is not None:
            mosaic = _num(path, "crystal.mosaicity", xtal["mosaicity"])
        elif xtal.get("ML_half_mosaicity_deg") is not None:
            mosaic = 2.0 * _num(path, "crystal.ML_half_mosaicity_deg", xtal["ML_half_mosaicity_deg"])
        if mosaic < 0:
            raise InputError(f"{path}: crystal mosaicity must not be negative, got {mosaic!r} deg")

    axis = None
    fixed = setting = np.eye(3)
    if gonio is not None:
        axis = _unit(path, "goniometer.rotation_axis", _field(path, "goniometer", gonio, "rotation_axis"))
        fixed = _vec(path, "goniometer.fixed_rotation", gonio.get("fixed_rotation", np.eye(3).ravel()), 9).reshape(3, 3)
        setting = _vec(path, "goniometer.setting_rotation",
                       gonio.get("setting_rotation", np.eye(3).ravel()), 9).reshape(3, 3)
    osc = rng = None
    if scan is not None:
        props = scan.get("properties") if isinstance(scan.get("properties"), dict) else scan
        osc = tuple(_vec(path, "scan.oscillation", _field(path, "scan", props, "oscillation"), 2))
        if "image_range" in scan:
            rng = tuple(int(x) for x in _vec(path, "scan.image_range", scan["image_range"], 2))
    return ExptModel(path=path, index=index, count=len(experiments), panels=panels, beam_direction=direction,
                     wavelength=lam, polarization_normal=normal, polarization_fraction=fraction, real_space=real,
                     space_group=group, mosaicity=mosaic, rotation_axis=axis, fixed_rotation=fixed,
                     setting_rotation=setting, oscillation=osc, image_range=rng)


# ---------------------------------------------------------------------------------------------------
# conversion to nanoBragg's MOSFLM frame
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class MosflmFrame:
    """An :class:`ExptModel` in nanoBragg's MOSFLM lab frame and units (mm, um, A, deg): what both the
    Python model (:func:`experiment_from_expt`) and the command line (``-expt``) are built from."""
    panels: List[Dict[str, Any]]        # pix0 [mm], fdet, sdet, odet, pixel [mm], pixels (f, s), thickness
                                        # [um] (0 without mu), attenuation [um] or None
    beam: np.ndarray                    # travel direction (source -> sample)
    polar_vector: np.ndarray
    kahn: float
    wavelength: float                   # A
    lattice: Optional[np.ndarray]       # [3, 3] rows a, b, c [A] at phi = 0
    spindle: np.ndarray
    phi: float
    osc: float
    mosaic_spread: float


def to_mosflm(m: ExptModel) -> MosflmFrame:
    from ..panels import from_dials
    panels = []
    for i, p in enumerate(m.panels):
        if abs(p.pixel_size[0] - p.pixel_size[1]) > 1e-12 * max(p.pixel_size):
            raise InputError(f"{m.path}: detector.panels[{i}].pixel_size {p.pixel_size} mm: nanoBragg pixels are "
                             f"square")
        fdet, sdet = from_dials(p.fast), from_dials(p.slow)
        absorbs = p.thickness > 0 and p.mu > 0      # mu = 0: no absorption model (the sensor is off)
        panels.append(dict(pix0=from_dials(p.origin), fdet=fdet, sdet=sdet, odet=np.cross(fdet, sdet),
                           pixel=p.pixel_size[0], pixels=p.image_size,
                           thickness=p.thickness * 1000.0 if absorbs else 0.0,
                           attenuation=1000.0 / p.mu if absorbs else None, material=p.material))
    beam = from_dials(-m.beam_direction)
    e = np.cross(beam, from_dials(m.polarization_normal))
    lattice = None
    if m.real_space is not None:
        lattice = from_dials(m.real_space @ m.fixed_rotation.T @ m.setting_rotation.T)
    axis = np.array([1.0, 0.0, 0.0]) if m.rotation_axis is None else m.rotation_axis
    spindle = from_dials(m.setting_rotation @ axis)
    phi, osc = (0.0, 0.0) if m.oscillation is None else m.oscillation
    return MosflmFrame(panels=panels, beam=beam, polar_vector=e / np.linalg.norm(e),
                       kahn=2.0 * m.polarization_fraction - 1.0, wavelength=m.wavelength, lattice=lattice,
                       spindle=spindle, phi=float(phi), osc=float(osc), mosaic_spread=m.mosaicity)


def mosflm_matrix(lattice_A: np.ndarray, wavelength_A: float) -> np.ndarray:
    """MOSFLM ``A`` (rows a*, b*, c* times the wavelength, dimensionless) of real-space rows [A]."""
    return np.linalg.inv(lattice_A).T * wavelength_A


def experiment_from_expt(path, index: int = 0, *, N=1, default_F=0.0, hkl=None, hkl_origin=None, shape="square",
                         fluence=None, phisteps=1, mosaic_domains=None, mosaic_seed=None, thicksteps=1,
                         oversample=1, wavelength=None):
    """The :class:`jaxbragg.Experiment` of experiment ``index`` of a ``.expt`` file, with what the file
    lacks given here (``N``, ``default_F``/``hkl``, ``fluence``, step counts; ``wavelength`` [A] replaces
    the file's). ``mosaic_domains`` defaults to 10 with a mosaicity (the command line's rule), else 1.
    Every panel is ``convention="custom"`` with an explicit ``pix0``."""
    from ..experiment import Beam, Crystal, Detector, Experiment, Panel, Scan
    model = read_expt(path, index)
    fr = to_mosflm(model)
    if fr.lattice is None:
        raise InputError(f"{model.path}: experiment[{index}] has no crystal (real_space_a/b/c)")
    lam = fr.wavelength if wavelength is None else float(wavelength)
    panels = [Panel(p["pixels"], p["pixel"], convention="custom", fdet=p["fdet"], sdet=p["sdet"], odet=p["odet"],
                    pix0=p["pix0"], thickness=p["thickness"], thicksteps=thicksteps,
                    attenuation=p["attenuation"])
              for p in fr.panels]
    domains = mosaic_domains if mosaic_domains is not None else (10 if fr.mosaic_spread > 0 else 1)
    crystal = Crystal(A=mosflm_matrix(fr.lattice, lam), N=N, default_F=default_F, hkl=hkl, hkl_origin=hkl_origin,
                      shape=shape, mosaic_spread=fr.mosaic_spread, mosaic_domains=domains, mosaic_seed=mosaic_seed)
    beam = Beam(lam, fluence=fluence, polarization=fr.kahn, polar_vector=fr.polar_vector, direction=fr.beam)
    scan = Scan(phi=fr.phi, osc=fr.osc, phisteps=phisteps, spindle_axis=fr.spindle)
    return Experiment(crystal, beam, Detector.from_panels(*panels), scan, oversample=oversample)
