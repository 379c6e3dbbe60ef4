"""The gradient example of docs/nearbragg.md (docs/examples/nearbragg_example.py) runs and does what the page
says: three displaced atoms of a 27-atom cluster refined back onto their true positions."""
import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "nearbragg_example.py"


def test_refine_atom_positions_example():
    spec = importlib.util.spec_from_file_location("nearbragg_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    before, after, losses = mod.refine(n_steps=100)
    assert before > 0.05                       # A: the start is visibly off
    assert after < 0.01 * before, (before, after)
    assert losses[-1] < 1e-4 * losses[0]
