"""jaxbragg: a differentiable JAX reimplementation of the nanoBragg diffraction simulator.

The public API (``import jaxbragg as jb``)::

    exp = jb.Experiment(crystal=jb.Crystal(cell=(55, 65, 75, 80, 100, 110), N=6, default_F=100.0),
                        beam=jb.Beam(wavelength=0.9), detector=jb.Detector(pixels=160, distance=90.0))
    image = jb.simulate(exp)                  # [slow, fast] photons per pixel

``jb.simulate`` also takes the kernel's ``(SimConfig, Params)``, and is the kernel module
(``jaxbragg.simulate``) at the same time: ``jb.simulate.render`` etc. See docs/tutorial.md and
specs/model.md.

Everything is imported on first use (PEP 562 ``__getattr__``), so ``import jaxbragg`` does not import JAX
and the command line starts quickly.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

#: public name -> submodule that defines it
_EXPORTS = {
    "Experiment": "experiment", "Crystal": "experiment", "Beam": "experiment", "Detector": "experiment",
    "Panel": "experiment", "Scan": "experiment", "Execution": "experiment", "stack": "experiment",
    "simulate_pixels": "experiment", "recommended_oversample": "experiment",
    "PlausibilityWarning": "experiment",
    "Amorphous": "sample", "simulate_parts": "sample",
    "SimConfig": "simulate", "Params": "simulate",
    "Physical": "parameters", "Template": "parameters", "to_params": "parameters",
    "from_experiment": "parameters",
    "InputError": "errors", "PhysicsError": "errors", "ResourceError": "errors",
    "simulate_panels": "panels", "panel_frames": "panels",
    "fit_experiment": "fit_experiment", "SamplingWarning": "fit_experiment", "fit_ensemble": "ensemble",
}

__all__ = sorted(_EXPORTS) + ["simulate", "fit", "__version__"]


class _SimulateModule(types.ModuleType):
    """The kernel module ``jaxbragg.simulate``, callable: ``jb.simulate(experiment)`` renders an
    :class:`~jaxbragg.Experiment`, ``jb.simulate(config, params)`` the kernel inputs."""

    def __call__(self, *args, **kwargs):
        from .experiment import Experiment, simulate
        if args and isinstance(args[0], Experiment):
            return simulate(*args, **kwargs)
        return self.simulate(*args, **kwargs)


class _FitModule(types.ModuleType):
    """The module ``jaxbragg.fit``, callable: ``jb.fit(experiment, observed, free)`` is ``jaxbragg.fit.fit``."""

    def __call__(self, *args, **kwargs):
        return self.fit(*args, **kwargs)


_CALLABLE_MODULES = {"simulate": _SimulateModule, "fit": _FitModule}


class _Package(types.ModuleType):
    # Importing the submodule ``jaxbragg.simulate`` binds it as this package's attribute ``simulate``;
    # it is made callable right there, so ``jb.simulate`` is one object whoever imported it first.
    def __setattr__(self, name, value):
        kind = _CALLABLE_MODULES.get(name)
        if kind is not None and isinstance(value, types.ModuleType) and not isinstance(value, kind):
            value.__class__ = kind
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name in _CALLABLE_MODULES:
        return importlib.import_module("." + name, __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxbragg' has no attribute {name!r}")
    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
