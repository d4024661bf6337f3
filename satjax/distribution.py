"""The Distribution interface: what satjax needs of a probability distribution on R^d.

Data q, every marginal P_t, the reverse start P_τ and its perturbations P̃_τ are
Distributions (docs/theory.md §1, §6): immutable pytrees with a log-density, a sampler, the
first two moments and, in 1-D, the CDF and quantile function that the exact 1-D route of the
speed-accuracy relation uses. Implementations: :class:`satjax.mixtures.GaussianMixture`,
:class:`satjax.perturb.Uniform`, and the displacement interpolant of the exact 1-D geodesic
(:mod:`satjax.geometry.ot_protocol`).
"""

from __future__ import annotations

import jax

from satjax.pytree import Node


class Distribution(Node):
    """Abstract distribution on R^d; points have shape (..., d)."""

    @property
    def dim(self) -> int:
        """The dimension d."""
        raise NotImplementedError

    def log_prob(self, x) -> jax.Array:
        """ln p(x) for points x of shape (..., d); returns shape (...,)."""
        raise NotImplementedError

    def sample(self, key, n: int) -> jax.Array:
        """n independent samples, shape (n, d)."""
        raise NotImplementedError

    def mean(self) -> jax.Array:
        """E[x], shape (d,)."""
        raise NotImplementedError

    def covariance(self) -> jax.Array:
        """Cov[x], shape (d, d)."""
        raise NotImplementedError

    def cdf(self, x) -> jax.Array:
        """1-D only: F(x) for points of any shape (each entry one point)."""
        raise NotImplementedError(f"{type(self).__name__} has no CDF")

    def sf(self, x) -> jax.Array:
        """1-D only: the survival function 1 − F(x), accurate where F is close to 1."""
        return 1.0 - self.cdf(x)

    def quantile(self, u) -> jax.Array:
        """1-D only: F⁻¹(u) for levels u in (0, 1) of any shape."""
        raise NotImplementedError(f"{type(self).__name__} has no quantile function")

    def support(self, z: float = 12.0):
        """(lo, hi), arrays of shape (d,): a box holding all but a negligible mass, e.g. the
        extreme component means ± z standard deviations (used for quadrature grids)."""
        raise NotImplementedError

    #: whether the support is bounded (a structural fact, known under jit)
    compact_support = False

    def density_jumps(self):
        """1-D: the points (k,) where the density jumps (its CDF has a kink), or None for a
        continuous density. Quadrature rules split their panels there (docs/theory.md §6)."""
        return None

    def tail_variance(self) -> jax.Array:
        """The largest variance along any direction with which the density decays at infinity
        (for a Gaussian mixture, the largest eigenvalue of any component covariance; 0 for a
        compact support). Decides whether a Pearson divergence against this distribution is
        finite (docs/theory.md §6)."""
        raise NotImplementedError
