"""Gaussian mixtures: the data model of satjax and every marginal P_t (docs/theory.md §2, Eq. 17).

q = Σ_k w_k N(μ_k, S_k) with covariances stored as ``iso`` (S_k = s_k I, shape (K,)),
``diag`` (shape (K, d)) or ``full`` (shape (K, d, d)); an empirical data set is N points with
kernel width ε (``iso``, s_k = ε²). Under a linear force every marginal is again such a mixture
(Eq. 17; :func:`satjax.forces.push`).

Densities and scores use the tiled engine of :mod:`satjax.engine`; 1-D CDFs and quantiles the
kernels of :mod:`satjax.univariate`.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float, Int

from satjax import univariate
from satjax._util import as_float, is_concrete
from satjax.distribution import Distribution
from satjax.engine import evaluate, full_covariances

KINDS = ("iso", "diag", "full")


class GaussianMixture(Distribution):
    """Σ_k w_k N(μ_k, S_k); build with :meth:`create` (validates) or the data constructors."""

    weights: jax.Array  # (K,)
    means: jax.Array  # (K, d)
    cov: jax.Array  # (K,) | (K, d) | (K, d, d)
    kind: str = struct.field(pytree_node=False, default="iso")

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, weights, means, cov, *, check: bool = True) -> "GaussianMixture":
        """Validated mixture.

        Args:
          weights: (K,) non-negative, summing to 1.
          means: (K, d).
          cov: (K,) isotropic variances, (K, d) diagonal variances or (K, d, d) covariances.

        Raises:
          ValueError: shapes that do not fit, weights that are negative or do not sum to 1,
            a covariance that is not positive definite.
        """
        weights, means, cov = as_float(weights), as_float(means), as_float(cov)
        if means.ndim != 2:
            raise ValueError(f"`means` must have shape (K, d); got {means.shape}")
        K, d = means.shape
        if weights.shape != (K,):
            raise ValueError(f"`weights` must have shape ({K},) to match `means`; got {weights.shape}")
        if cov.shape == (K,):
            kind = "iso"
        elif cov.shape == (K, d):
            kind = "diag"
        elif cov.shape == (K, d, d):
            kind = "full"
        else:
            raise ValueError(
                f"`cov` must have shape ({K},) (isotropic), ({K}, {d}) (diagonal) or "
                f"({K}, {d}, {d}) (full) for {K} components in {d} dimensions; got {cov.shape}")
        if check and is_concrete(weights, means, cov):
            w = np.asarray(weights)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"`weights` must be finite and >= 0; min weight {w.min():.3g}")
            if abs(w.sum() - 1.0) > 1e-6:
                raise ValueError(f"`weights` must sum to 1; got {w.sum():.6g}")
            if not np.all(np.isfinite(np.asarray(means))):
                raise ValueError("`means` must be finite")
            c = np.asarray(cov)
            if kind in ("iso", "diag"):
                if not np.all(np.isfinite(c)) or np.any(c <= 0):
                    raise ValueError(
                        f"covariance must be positive definite: variances must be > 0; "
                        f"min variance {np.nanmin(c):.3g}")
            else:
                if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=1e-10, atol=1e-12):
                    raise ValueError("covariance matrices must be symmetric")
                ev = np.linalg.eigvalsh(c)
                if not np.all(ev > 0):
                    raise ValueError(
                        f"covariance must be positive definite; smallest eigenvalue {ev.min():.3g}")
        return cls(weights=weights, means=means, cov=cov, kind=kind)

    # ------------------------------------------------------------------ basic properties
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def full_cov(self) -> jax.Array:
        """Covariances as (K, d, d) matrices."""
        return full_covariances(self.cov, self.kind, self.dim)

    def mean(self) -> jax.Array:
        """E_q[x], shape (d,)."""
        return self.weights @ self.means

    def covariance(self) -> jax.Array:
        """Cov_q[x], shape (d, d) (law of total covariance)."""
        mu = self.mean()
        dev = self.means - mu
        within = jnp.einsum("k,kij->ij", self.weights, self.full_cov())
        return within + jnp.einsum("k,ki,kj->ij", self.weights, dev, dev)

    def second_moment(self) -> jax.Array:
        """E_q‖x‖²."""
        tr = {"iso": self.cov * self.dim, "diag": jnp.sum(self.cov, -1),
              "full": jnp.trace(self.cov, axis1=-2, axis2=-1)}[self.kind]
        return self.weights @ (tr + jnp.sum(self.means**2, -1))

    # ------------------------------------------------------------------ sampling
    def sample(self, key, n: int) -> Float[Array, "n d"]:
        """n samples, shape (n, d)."""
        k_comp, k_noise = jax.random.split(key)
        idx = jax.random.choice(k_comp, self.n_components, (n,), p=self.weights)
        return self.sample_given(idx, jax.random.normal(k_noise, (n, self.dim), self.means.dtype))

    def sample_given(self, idx: Int[Array, " n"], eps: Float[Array, "n d"]) -> Float[Array, "n d"]:
        """Reparameterised samples μ_idx + S_idx^{1/2} ε for component indices and N(0, I) ε."""
        mu = self.means[idx]
        if self.kind == "iso":
            return mu + jnp.sqrt(self.cov[idx])[:, None] * eps
        if self.kind == "diag":
            return mu + jnp.sqrt(self.cov[idx]) * eps
        return mu + jnp.einsum("nij,nj->ni", jnp.linalg.cholesky(self.cov)[idx], eps)

    # ------------------------------------------------------------------ densities
    def log_prob(self, x: Float[Array, "*batch d"], *,
                 chunk: Optional[int] = None) -> Float[Array, "*batch"]:
        """log q(x) for x of shape (..., d) (tiled engine, :mod:`satjax.engine`)."""
        return evaluate(self, x, chunk=chunk, outputs=("log_prob",)).log_prob

    def score(self, x: Float[Array, "*batch d"], *,
              chunk: Optional[int] = None) -> Float[Array, "*batch d"]:
        """∇ log q(x) for x of shape (..., d)."""
        return evaluate(self, x, chunk=chunk, outputs=("score",)).score

    # ------------------------------------------------------------------ 1-D functions
    def components_1d(self):
        """(log w_k, μ_k, s_k) of a 1-D mixture (every covariance kind is a variance in 1-D)."""
        if self.dim != 1:
            raise ValueError(f"1-D formulas need a mixture of dimension 1; got dimension "
                             f"{self.dim}")
        var = self.cov.reshape(self.n_components)
        return jnp.log(self.weights), self.means[:, 0], jnp.sqrt(var)

    def sf(self, x) -> jax.Array:
        """1 − F(x) of a 1-D mixture, as the CDF of the reflected mixture at −x (no cancellation)."""
        return self.replace(means=-self.means).cdf(-jnp.asarray(x))

    def cdf(self, x) -> jax.Array:
        """F(x) = Σ_k w_k Φ((x − μ_k)/s_k) of a 1-D mixture, for points x of any shape."""
        comp = self.components_1d()
        return univariate.cdf(comp, jnp.asarray(x, dtype=comp[1].dtype))

    def quantile(self, u) -> jax.Array:
        """F⁻¹(u) of a 1-D mixture for levels u in (0, 1) of any shape.

        Safeguarded Newton–bisection to ~16 ulp (:mod:`satjax.univariate`); differentiable by
        the implicit function theorem: dF⁻¹/du = 1/p(F⁻¹(u)), dF⁻¹/dθ = −(∂F/∂θ)/p.

        Raises:
          ValueError: a 1-D mixture is needed; concrete levels outside (0, 1).
        """
        (comp,) = univariate.padded([self.components_1d()])
        u = jnp.asarray(u, dtype=comp[1].dtype)
        if is_concrete(u):
            u_np = np.asarray(u)
            if u_np.size and not np.all((u_np > 0) & (u_np < 1)):
                raise ValueError(f"quantile levels `u` must lie in the open interval (0, 1); got "
                                 f"values in [{np.nanmin(u_np):g}, {np.nanmax(u_np):g}]")
        return univariate.quantile(comp, u)

    # ------------------------------------------------------------------ extent
    def component_sd(self) -> jax.Array:
        """Largest standard deviation of each component (K,)."""
        if self.kind == "iso":
            return jnp.sqrt(self.cov)
        if self.kind == "diag":
            return jnp.sqrt(jnp.max(self.cov, -1))
        return jnp.sqrt(jnp.linalg.eigvalsh(self.cov)[:, -1])

    def support(self, z: float = 12.0):
        """(min_k μ_k − z s_k, max_k μ_k + z s_k) per coordinate, s_k the per-coordinate sd."""
        sd = jnp.sqrt(jnp.diagonal(self.full_cov(), axis1=-2, axis2=-1))
        return jnp.min(self.means - z * sd, 0), jnp.max(self.means + z * sd, 0)

    def tail_variance(self) -> jax.Array:
        """Largest variance of any component along any direction."""
        return jnp.max(self.component_sd()) ** 2


# ---------------------------------------------------------------------- data constructors


def gaussian(mean=0.0, std=None, *, cov=None, dim: Optional[int] = None) -> GaussianMixture:
    """A single Gaussian N(mean, std² I) (or diagonal std vector, or full ``cov``)."""
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    if dim is not None:
        if mean.size == 1:
            mean = np.full((dim,), float(mean[0]))
        elif mean.size != dim:
            raise ValueError(f"`mean` has {mean.size} entries but dim={dim}")
    d = mean.size
    if cov is not None:
        if std is not None:
            raise ValueError("give either `std` or `cov`, not both")
        c = np.asarray(cov, dtype=float)
        if c.shape != (d, d):
            raise ValueError(f"`cov` must have shape ({d}, {d}); got {c.shape}")
        return GaussianMixture.create(np.ones(1), mean[None], c[None])
    std = 1.0 if std is None else std
    s = np.asarray(std, dtype=float)
    if s.ndim == 0:
        return GaussianMixture.create(np.ones(1), mean[None], np.array([s**2]))
    if s.shape != (d,):
        raise ValueError(f"`std` must be a scalar or have shape ({d},); got {s.shape}")
    return GaussianMixture.create(np.ones(1), mean[None], (s**2)[None])


def gmm(means, stds=1.0, weights=None) -> GaussianMixture:
    """Isotropic mixture: means (K,) for 1-D or (K, d); stds scalar or (K,); weights (K,)."""
    mu = np.asarray(means, dtype=float)
    if mu.ndim == 1:
        mu = mu[:, None]
    if mu.ndim != 2:
        raise ValueError(f"`means` must have shape (K,) or (K, d); got {mu.shape}")
    K = mu.shape[0]
    s = np.broadcast_to(np.asarray(stds, dtype=float), (K,)) if np.ndim(stds) == 0 else \
        np.asarray(stds, dtype=float)
    if s.shape != (K,):
        raise ValueError(f"`stds` must be a scalar or have shape ({K},); got {s.shape}")
    w = np.full(K, 1.0 / K) if weights is None else np.asarray(weights, dtype=float)
    return GaussianMixture.create(w, mu, s**2)


def from_samples(x, width: float, weights=None) -> GaussianMixture:
    """Kernel mixture of N points: Σ_i w_i N(x_i, width² I) (uniform weights by default)."""
    if np.iscomplexobj(x):
        raise ValueError("samples must be real numbers; got a complex array")
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"samples must have shape (N, d); got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples must be finite (NaN or inf found)")
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"kernel `width` must be > 0 (covariance positive definite); got {width}")
    n = x.shape[0]
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=float)
    return GaussianMixture.create(w, x, np.full(n, float(width) ** 2))


def swiss_roll(n: int = 800, noise: float = 0.3, scale: float = 0.125, width: float = 0.05,
               seed: int = 0, coords=(0, 2)) -> GaussianMixture:
    """sklearn's Swiss roll, two coordinates (default x and z: the spiral), scaled, as a kernel
    mixture of width ``width``."""
    from sklearn.datasets import make_swiss_roll

    if n < 1:
        raise ValueError(f"`n` must be >= 1; got {n}")
    pts, _ = make_swiss_roll(n_samples=int(n), noise=float(noise), random_state=int(seed))
    return from_samples(pts[:, list(coords)] * float(scale), width)


def digits(width: float = 0.1, n: Optional[int] = None) -> GaussianMixture:
    """sklearn's 8×8 digits (1797 images, 64-D) mapped to [−1, 1] (pixel/8 − 1), kernel ``width``."""
    from sklearn.datasets import load_digits

    x = load_digits().data / 8.0 - 1.0
    if n is not None:
        x = x[: int(n)]
    return from_samples(x, width)
