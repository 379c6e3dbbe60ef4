"""Test-suite set-up: float64 everywhere (the reference computes in double), shared fixtures."""
import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Run the test inside its own scratch directory (the CLI writes its default files to the cwd)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
