"""miniCBF output (the Pilatus file format) through fabio, optional: ``pip install 'jaxbragg[cbf]'``.

One image of signed 32-bit integer counts, byte-offset compressed, after a ``PILATUS_1.2`` text header
that XDS and DIALS read (``specs/formats.md``, "miniCBF")::

    # Detector: jaxbragg simulated pixel detector, S/N 0
    # 2026-12-02T15:00:00.000
    # Pixel_size 100e-6 m x 100e-6 m
    # Silicon sensor, thickness 0.000000 m
    # Exposure_time 1.0000000 s
    # Exposure_period 1.0000000 s
    # Tau = 0 s
    # Count_cutoff 65535 counts
    # Wavelength 1.000000 A
    # Detector_distance 0.100000 m
    # Beam_xy (51.000, 52.000) pixels
    # Start_angle 0.0000 deg.
    # Angle_increment 0.1000 deg.
    # Oscillation_axis X, CW
    # N_oscillations 1

``Beam_xy`` is the direct-beam spot in (fast, slow) pixels from the outer corner of the first pixel
(dxtbx multiplies it by the pixel size to place the beam in millimetres from that corner). The header
has no tilt: it describes a detector normal to the beam at ``Detector_distance``; a tilted or rotated
detector is written with its beam spot and its sample-to-plane (close) distance only.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import tempfile

import numpy as np

#: The extra that brings fabio.
EXTRA = "cbf"


def require():
    """The fabio module, or ImportError naming the ``cbf`` extra."""
    try:
        import fabio.cbfimage  # noqa: PLC0415  (optional dependency, imported lazily)
    except ImportError as exc:
        raise ImportError(f"writing CBF files needs fabio: pip install 'jaxbragg[{EXTRA}]' ({exc})") from exc
    return fabio


@dataclasses.dataclass(frozen=True)
class CbfHeader:
    """The values of the Pilatus header, SI (m, rad, s).

    Attributes:
      pixel_size: m; distance: m (sample to detector plane); wavelength: m.
      beam_xy: (fast, slow) pixels from the first pixel's outer corner to the direct-beam spot.
      start_angle, angle_increment: rad (the frame's spindle start and oscillation).
      exposure: s; thickness: sensor thickness, m; count_cutoff: saturation counts; detector: name.
    """
    pixel_size: float
    distance: float
    wavelength: float
    beam_xy: tuple
    start_angle: float = 0.0
    angle_increment: float = 0.0
    exposure: float = 1.0
    thickness: float = 0.0
    count_cutoff: int = 65535
    detector: str = "jaxbragg simulated pixel detector, S/N 0"

    def text(self) -> str:
        deg = 180.0 / np.pi
        um = self.pixel_size * 1e6
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        lines = [
            f"Detector: {self.detector}", stamp,
            f"Pixel_size {um:.6g}e-6 m x {um:.6g}e-6 m",
            f"Silicon sensor, thickness {self.thickness:.6f} m",
            f"Exposure_time {self.exposure:.7f} s", f"Exposure_period {self.exposure:.7f} s", "Tau = 0 s",
            f"Count_cutoff {int(self.count_cutoff)} counts",
            f"Wavelength {self.wavelength * 1e10:.6f} A", f"Detector_distance {self.distance:.6f} m",
            f"Beam_xy ({self.beam_xy[0]:.3f}, {self.beam_xy[1]:.3f}) pixels",
            f"Start_angle {self.start_angle * deg:.4f} deg.", f"Angle_increment {self.angle_increment * deg:.4f} deg.",
            "Oscillation_axis X, CW", "N_oscillations 1",
        ]
        return "\r\n".join("# " + line for line in lines)


def cbf_bytes(image, header: CbfHeader) -> bytes:
    """The miniCBF file of ``image`` [slow, fast] integer counts (stored as int32)."""
    fabio = require()
    a = np.asarray(image)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"expected [slow, fast] integer counts, got {a.dtype} of shape {a.shape}")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError("counts outside the 32-bit signed range")
    img = fabio.cbfimage.CbfImage(data=np.ascontiguousarray(a, np.int32), header={
        "_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": header.text()})
    with tempfile.TemporaryDirectory() as tmp:    # fabio writes to a path; the caller writes atomically
        path = os.path.join(tmp, "image.cbf")
        img.write(path)
        with open(path, "rb") as f:
            return f.read()


def write_cbf(path, image, header: CbfHeader) -> None:
    """Write :func:`cbf_bytes` to ``path`` all-or-nothing."""
    from ._common import atomic_write
    atomic_write(os.fspath(path), [cbf_bytes(image, header)])


def header_from_experiment(experiment, *, exposure=1.0, count_cutoff=65535) -> CbfHeader:
    """The :class:`CbfHeader` of a one-panel :class:`jaxbragg.Experiment`, from the same placed geometry
    as the NeXus writer (:func:`jaxbragg.io.nexus.setup_from_experiment`): the beam spot of the first
    panel (:func:`jaxbragg.io.nexus.beam_center`), the distance from the sample to its plane, the
    wavelength, the scan's start and whole oscillation."""
    from .nexus import beam_center, setup_from_experiment
    setup = setup_from_experiment(experiment)
    m = setup.modules[0]
    normal = np.cross(m.fast, m.slow)
    return CbfHeader(pixel_size=m.pixel_sizes()[0], distance=abs(float(np.dot(m.origin, normal))),
                     wavelength=setup.wavelength, beam_xy=beam_center(m), start_angle=setup.start,
                     angle_increment=setup.increment, exposure=float(exposure),
                     thickness=setup.sensor_thickness, count_cutoff=int(count_cutoff))
