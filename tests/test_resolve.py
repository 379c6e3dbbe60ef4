"""Set-up arithmetic is float64 whatever the JAX configuration (regression: float32 lattice)."""
import jax
import numpy as np

from helpers import setup_from

ARGS = ("-cell 70 80 90 75 85 95 -misset 10 20 30 -default_F 100 -N 5 -lambda 1 -distance 100 "
        "-detpixels 64 -pixel 0.1 -detector_rotx 3 -twotheta 5")


def test_setup_is_double_precision_even_with_x64_off():
    ref = setup_from(ARGS)
    with jax.enable_x64(False):
        low = setup_from(ARGS)
    np.testing.assert_allclose(low.params.lattice, ref.params.lattice, rtol=1e-14, atol=0)
    assert low.info["distance"] == ref.info["distance"]
    # and the lattice really is the reference's triclinic construction, to double precision
    a = np.linalg.norm(ref.params.lattice, axis=1)
    np.testing.assert_allclose(a, [70e-10, 80e-10, 90e-10], rtol=1e-15)
