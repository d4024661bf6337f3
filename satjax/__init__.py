"""satjax: thermodynamics and optimal transport of diffusion models in JAX.

Implements the speed-accuracy relations of Ikeda, Uda, Okanohara & Ito (arXiv:2407.04495).
Time convention: t = 0 is data, t = τ is noise.
"""

from satjax import (bound, forces, forward, geometry, mixtures, optimize, path, perturb, reverse,
                    schedules, sharding, thermo)
from satjax.forces import GeneralLinearForce, LinearForce, RotatingForce
from satjax.forward import (fields, forward_sde, log_density, marginal, marginal_and_rate,
                            sample_marginal, score, velocity)
from satjax.mixtures import GaussianMixture
from satjax.schedules import Schedule

__version__ = "0.1.0"

__all__ = [
    "bound", "forces", "forward", "geometry", "mixtures", "optimize", "path", "perturb", "reverse",
    "schedules", "sharding", "thermo",
    "GaussianMixture", "GeneralLinearForce", "LinearForce", "RotatingForce", "Schedule",
    "fields", "forward_sde", "log_density", "marginal", "marginal_and_rate", "sample_marginal",
    "score", "velocity",
]
