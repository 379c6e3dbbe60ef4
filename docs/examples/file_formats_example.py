"""Write a rendered image as an NXmx (NeXus/HDF5) file and a Pilatus miniCBF, then read both back.

Run from anywhere (a few seconds; needs ``pip install -e '.[h5,cbf]'``):

    python docs/examples/file_formats_example.py [output folder, default the current one]

It renders a 24 x 16 pixel detector with the Python API, turns photons into counts with Poisson noise
(NumPy's generator) plus an offset of 40, writes ``example.h5`` with ``jaxbragg.io.nexus`` and
``example.cbf`` with ``jaxbragg.io.cbf``, and prints the geometry a DIALS-like reader (``nxmx``) finds in
the NeXus file and the header fabio finds in the CBF.
"""
import sys
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import jaxbragg as jb                                   # noqa: E402
from jaxbragg import noise                              # noqa: E402
from jaxbragg.io import cbf, nexus                      # noqa: E402


def main(out_dir):
    exp = jb.Experiment(
        crystal=jb.Crystal(cell=(40, 50, 60, 90, 90, 90), default_F=100, N=5),
        beam=jb.Beam(wavelength=1.0),
        detector=jb.Detector(pixels=(24, 16), pixel_size=0.4, distance=80.0),
        scan=jb.Scan(phi=10.0, osc=0.5))
    photons = np.asarray(jb.simulate(exp))                              # [slow, fast] photons/pixel
    drawn = np.random.default_rng(0).poisson(photons)                   # photon noise
    counts, _ = noise.to_counts(drawn.astype(np.float64), 40.0)          # + 40, uint16, clipped at 65535

    setup = nexus.setup_from_experiment(exp)            # geometry in the NeXus (McStas) frame, SI units
    nexus.write_nexus(out_dir / "example.h5", counts, setup)
    cbf.write_cbf(out_dir / "example.cbf", counts, cbf.header_from_experiment(exp))

    import fabio
    import h5py
    import hdf5plugin  # noqa: F401  (the bitshuffle/LZ4 filter must be registered to read the data)
    import nxmx
    with h5py.File(out_dir / "example.h5", "r") as f:
        det = nxmx.NXmx(f).entries[0].instruments[0].detectors[0]
        module = det.modules[0]
        chain = nxmx.get_dependency_chain(module.fast_pixel_direction.depends_on)
        origin = nxmx.get_cumulative_transformation(chain)[0, :3, 3]
        data = f["/entry/data/data"][()]
        print(f"NeXus: data {data.shape} {data.dtype}, first-pixel corner {np.round(origin, 4)} mm (McStas), "
              f"fast {module.fast_pixel_direction.vector}, slow {module.slow_pixel_direction.vector}, "
              f"beam centre ({det.beam_center_x.magnitude:.2f}, {det.beam_center_y.magnitude:.2f}) px")
        assert np.array_equal(data[0], counts)
    img = fabio.open(str(out_dir / "example.cbf"))
    assert np.array_equal(img.data, counts)
    print("CBF header:")
    print(img.header["_array_data.header_contents"].replace("\r", ""))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("."))
