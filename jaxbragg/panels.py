"""Multi-panel detectors: the whole-detector motion, per-panel frames and rendering every panel.

A :class:`jaxbragg.Detector` holds several :class:`jaxbragg.Panel` s (each placed by its own fields, e.g.
``convention="custom"`` with ``pix0``/``fdet``/``sdet``/``odet``) and a whole-detector ``shift`` [m] and
``rotation`` [rad] that move every placed panel together, ``r -> R r + shift`` with ``R`` the rotations
about lab x, then y, then z (:func:`jaxbragg.geometry.rotate_xyz`), about the sample.

Each panel is lowered by :meth:`jaxbragg.Experiment.lower` (``panel_index=k``); panels whose static
configuration is equal (same pixel counts, pivot, sensor layers, ...) are rendered together by
:func:`jaxbragg.batch.render_batch` over their stacked :class:`~jaxbragg.simulate.Params`: one
compilation per distinct panel shape. Everything is differentiable in every panel's fields and in the
detector's shift and rotation.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import geometry


def move_detector(cfg, params, shift, rotation):
    """``(cfg, params)`` of one panel moved by the whole-detector ``shift`` [3] m and ``rotation`` [3] rad:
    the panel's placed frame rotated and shifted, as an explicit origin with unrotated axes."""
    from .simulate import detector_frame
    frame = detector_frame(cfg, params)
    rot = lambda v: geometry.rotate_xyz(v, rotation)
    zero = params.detector_rotations * 0.0
    params = params.replace(fdet=rot(frame["fdet"]), sdet=rot(frame["sdet"]), odet=rot(frame["odet"]),
                            pix0=rot(frame["pix0"]) + shift, detector_rotations=zero,
                            twotheta=params.twotheta * 0.0)
    return dataclasses.replace(cfg, explicit_pix0=True), params


def panel_frames(experiment) -> List[Dict[str, np.ndarray]]:
    """The placed frame of every panel in the experiment's lab frame (nanoBragg's; MOSFLM axes for the
    ``custom`` panels of a ``.expt``): ``origin`` (corner of pixel (0, 0)) [3] m, unit ``fast``, ``slow``,
    ``normal`` [3], ``pixel_size`` m, ``pixels`` ``(fast, slow)`` and ``distance`` m (sample to the beam spot along
    the beam), whole-detector motion included.
    :func:`to_dials` converts vectors to the DIALS lab frame (the NeXus/McStas frame is
    :func:`jaxbragg.io.nexus.mcstas_rotation`)."""
    from .simulate import detector_frame
    out = []
    for k in range(len(experiment.detector.panels)):
        cfg, p = experiment.lower(panel_index=k)
        frame = detector_frame(cfg, p)
        out.append(dict(origin=frame["pix0"], fast=frame["fdet"], slow=frame["sdet"], normal=frame["odet"],
                        pixel_size=p.pixel_size, pixels=(cfg.fpixels, cfg.spixels), distance=frame["distance"]))
    return out


#: nanoBragg (MOSFLM) lab frame -> DIALS lab frame: x_D = z_M, y_D = y_M, z_D = -x_M (a proper rotation).
MOSFLM_TO_DIALS = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


def to_dials(v):
    """Vector(s) [..., 3] from nanoBragg's MOSFLM lab frame to the DIALS lab frame."""
    return np.asarray(v, np.float64) @ MOSFLM_TO_DIALS.T


def from_dials(v):
    """Vector(s) [..., 3] from the DIALS lab frame to nanoBragg's MOSFLM lab frame."""
    return np.asarray(v, np.float64) @ MOSFLM_TO_DIALS


def _lowered(experiment, execution):
    return [experiment.lower(execution, panel_index=k) for k in range(len(experiment.detector.panels))]


def _render_groups(lowered) -> List[np.ndarray]:
    """Images of every lowered panel, rendered group by group (one batch per distinct config)."""
    from .batch import render_batch, stack_params
    images: List[Optional[object]] = [None] * len(lowered)
    groups: Dict[object, List[int]] = {}
    for k, (cfg, _) in enumerate(lowered):
        groups.setdefault(cfg, []).append(k)
    for cfg, members in groups.items():
        if len(members) == 1:               # a panel of its own shape: the plain single-image render
            from .simulate import simulate
            images[members[0]] = simulate(*lowered[members[0]])
            continue
        stacked = stack_params([lowered[k][1] for k in members])
        batch = render_batch(cfg, stacked, images_per_step=len(members))
        for i, k in enumerate(members):
            images[k] = batch[i]
    return images


def simulate_panel_images(experiment, execution=None) -> Tuple:
    """Every panel's image [slow, fast] (a tuple, panels in order); see :func:`jaxbragg.simulate`."""
    return tuple(_render_groups(_lowered(experiment, execution)))


def simulate_panels(experiment, execution=None):
    """The images of equal panels stacked: [n_panels, slow, fast] in one compiled call (ValueError when the
    panels differ in shape or another static choice; use :func:`jaxbragg.simulate` for a tuple)."""
    from .batch import render_batch, stack_params
    lowered = _lowered(experiment, execution)
    configs = {cfg for cfg, _ in lowered}
    if len(configs) != 1:
        raise ValueError(f"simulate_panels: the {len(lowered)} panels differ in pixel counts or another static "
                         f"choice; jaxbragg.simulate returns their images as a tuple")
    cfg = lowered[0][0]
    if len(lowered) == 1:
        return _render_groups(lowered)[0][None]
    return render_batch(cfg, stack_params([p for _, p in lowered]), images_per_step=len(lowered))
