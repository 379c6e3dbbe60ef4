"""Test-suite set-up: float64 everywhere (the reference computes in double), shared fixtures."""
import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Run the test inside its own scratch directory (the CLI writes its default files to the cwd)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True, scope="session")
def _private_compilation_cache(tmp_path_factory):
    """The command line keeps compiled stages in ``$JAXBRAGG_CACHE_DIR``: give the test session its own,
    so tests neither read nor fill the user's cache (child processes inherit it)."""
    import os
    old = os.environ.get("JAXBRAGG_CACHE_DIR")
    os.environ["JAXBRAGG_CACHE_DIR"] = str(tmp_path_factory.mktemp("jaxbragg-cache"))
    yield
    if old is None:
        os.environ.pop("JAXBRAGG_CACHE_DIR", None)
    else:
        os.environ["JAXBRAGG_CACHE_DIR"] = old
