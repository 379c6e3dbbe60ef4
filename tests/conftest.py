"""Test-suite set-up: float64 everywhere (the reference computes in double), shared helpers."""
import jax

jax.config.update("jax_enable_x64", True)
