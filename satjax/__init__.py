"""satjax: thermodynamics and optimal transport of diffusion models in JAX.

Implements the speed-accuracy relations of Ikeda, Uda, Okanohara & Ito (arXiv:2407.04495,
Phys. Rev. X 15, 031031); the theory in the repository's own words is docs/theory.md.
Time convention: t = 0 is data, t = τ is noise.

Submodules and the main names are imported lazily (on first attribute access), so that
``import satjax`` and the command line start without importing JAX.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_SUBMODULES = (
    "bound", "distribution", "engine", "estimate", "estimators", "forces", "forward", "geometry",
    "learn", "likelihood", "measure", "mixtures", "optimize", "path", "perturb", "protocol",
    "reverse", "schedules", "sharding", "specs", "steps", "thermo", "univariate",
)
# name -> module that defines it
_NAMES = {
    "GaussianMixture": "mixtures", "Protocol": "protocol", "Schedule": "schedules",
    "LinearForce": "forces", "RotatingForce": "forces", "GeneralLinearForce": "forces",
    "Estimate": "estimate", "Exact": "estimators", "Quadrature": "estimators",
    "Grid": "estimators", "MonteCarlo": "estimators", "Particles": "estimators",
    "Atoms": "estimators", "DensityGrid": "estimators",
    "resolve": "estimators", "fields": "forward", "marginal": "forward",
    "sample_marginal": "forward", "velocity": "forward", "score": "forward",
    "log_density": "forward", "forward_sde": "forward", "path_cost": "path",
}

__all__ = list(_SUBMODULES) + list(_NAMES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"satjax.{name}")
    if name in _NAMES:
        module = importlib.import_module(f"satjax.{_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'satjax' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
