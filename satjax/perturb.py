"""Perturbed reverse starts P̃_τ and their Pearson divergence D_0 (docs/theory.md §6; Eq. 78, G21).

The exact reverse process starts from P_τ; the speed-accuracy relation compares it with a
perturbed start P̃_τ carried by the same velocity. A :class:`Perturbation` turns P_τ into P̃_τ:

* :class:`Shift` (δ along the first axis) and :class:`Scale` (s about the mean) are maps of P_τ
  (samples of P̃_τ are the images of samples of P_τ: common random numbers);
* :class:`MomentGaussian` is the Gaussian with P_τ's mean and covariance;
* :class:`MeanChange` is N(μ, Cov P_τ), :class:`VarianceChange` N(E P_τ, v I) — Table I's
  "different mean" / "different variance" starts;
* :class:`Replace` is a given distribution (a Gaussian mixture, :class:`Uniform`, samples).

D_0 = ∫ (P̃ − P)²/P dx = ∫ P̃²/P dx − 1 (:func:`pearson`) is computed without truncation: it is
+∞ exactly when P̃'s Gaussian tails are at least √2 times as wide as P's (docs/theory.md §6) and
is reported as ``inf`` then; otherwise closed form for two Gaussians, an untruncated 1-D
quadrature (trapezoid rule in u with x = c + a sinh u, whose range follows the decay of the
integrand P̃²/P, not of P), a 2-D grid quadrature over the integrand's own extent, and in more
dimensions importance sampling from a heavy-tailed defensive proposal, with a standard error.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import logsumexp

from satjax._util import as_float, is_concrete
from satjax.distribution import Distribution
from satjax.estimate import Estimate
from satjax.mixtures import GaussianMixture
from satjax.pytree import Node


# ---------------------------------------------------------------------- distributions


class Uniform(Distribution):
    """The uniform distribution on the box [low, high] (arrays of shape (d,))."""

    low: jax.Array
    high: jax.Array

    @classmethod
    def create(cls, low, high) -> "Uniform":
        """Validated box; raises ValueError unless low < high, finite, same shape."""
        low, high = jnp.atleast_1d(as_float(low)), jnp.atleast_1d(as_float(high))
        if low.shape != high.shape or low.ndim != 1:
            raise ValueError(f"`low` and `high` must be vectors of one shape; got {low.shape}, "
                             f"{high.shape}")
        if is_concrete(low, high):
            lo, hi = np.asarray(low), np.asarray(high)
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
                raise ValueError(f"a uniform distribution needs finite low < high; got "
                                 f"low={lo.tolist()}, high={hi.tolist()}")
        return cls(low=low, high=high)

    @property
    def dim(self) -> int:
        return self.low.shape[0]

    def log_prob(self, x):
        x = jnp.asarray(x, self.low.dtype)
        inside = jnp.all((x >= self.low) & (x <= self.high), -1)
        return jnp.where(inside, -jnp.sum(jnp.log(self.high - self.low)), -jnp.inf)

    def sample(self, key, n: int):
        u = jax.random.uniform(key, (n, self.dim), self.low.dtype)
        return self.low + u * (self.high - self.low)

    def mean(self):
        return 0.5 * (self.low + self.high)

    def covariance(self):
        return jnp.diag((self.high - self.low) ** 2 / 12.0)

    def cdf(self, x):
        x = jnp.asarray(x, self.low.dtype)
        return jnp.clip((x - self.low[0]) / (self.high[0] - self.low[0]), 0.0, 1.0)

    def quantile(self, u):
        return self.low[0] + jnp.asarray(u, self.low.dtype) * (self.high[0] - self.low[0])

    compact_support = True

    def density_jumps(self):
        return jnp.stack([self.low[0], self.high[0]])

    def support(self, z: float = 12.0):
        return self.low, self.high

    def tail_variance(self):
        return jnp.zeros((), self.low.dtype)


# ---------------------------------------------------------------------- perturbations


class Perturbation(Node):
    """Abstract map from the exact reverse start P_τ to a perturbed start P̃_τ."""

    def start(self, p_tau: Distribution) -> Distribution:
        """P̃_τ."""
        raise NotImplementedError

    def push_samples(self, x, p_tau: Distribution):
        """Samples of P̃_τ from samples x of P_τ when P̃_τ is a map of P_τ, else None."""
        return None

    @property
    def translation(self) -> bool:
        """Whether P̃_τ is P_τ translated (every sample moved by the same vector)."""
        return False

    def label(self) -> str:
        """A short text naming the perturbation (its spec)."""
        raise NotImplementedError


class Shift(Perturbation):
    """Translate P_τ by δ along the first axis."""

    delta: jax.Array

    def start(self, p_tau):
        return p_tau.replace(means=p_tau.means.at[:, 0].add(self.delta))

    def push_samples(self, x, p_tau):
        return x.at[:, 0].add(self.delta)

    @property
    def translation(self) -> bool:
        return True

    def label(self):
        return f"shift:{float(self.delta):g}"


class Scale(Perturbation):
    """Scale P_τ about its mean by s (means and covariances)."""

    s: jax.Array

    def start(self, p_tau):
        mu = p_tau.mean()
        return p_tau.replace(means=mu + self.s * (p_tau.means - mu), cov=self.s**2 * p_tau.cov)

    def push_samples(self, x, p_tau):
        mu = p_tau.mean()
        return mu + self.s * (x - mu)

    def label(self):
        return f"scale:{float(self.s):g}"


class MomentGaussian(Perturbation):
    """The Gaussian with P_τ's mean and covariance."""

    def start(self, p_tau):
        return GaussianMixture(weights=jnp.ones((1,), p_tau.mean().dtype),
                               means=p_tau.mean()[None], cov=p_tau.covariance()[None],
                               kind="full")

    def label(self):
        return "gaussian"


class MeanChange(Perturbation):
    """N(μ, Cov P_τ): the "different mean" start of Table I (μ a scalar for every axis, or (d,))."""

    mean: jax.Array

    def start(self, p_tau):
        mu = jnp.broadcast_to(self.mean, (p_tau.dim,)).astype(p_tau.mean().dtype)
        return GaussianMixture(weights=jnp.ones((1,), mu.dtype), means=mu[None],
                               cov=p_tau.covariance()[None], kind="full")

    def label(self):
        m = np.atleast_1d(np.asarray(self.mean))
        return "mean:" + ";".join(f"{v:g}" for v in m)


class VarianceChange(Perturbation):
    """N(E P_τ, v I): the "different variance" start of Table I."""

    variance: jax.Array

    def start(self, p_tau):
        mu = p_tau.mean()
        return GaussianMixture(weights=jnp.ones((1,), mu.dtype), means=mu[None],
                               cov=jnp.asarray(self.variance, mu.dtype)[None], kind="iso")

    def label(self):
        return f"variance:{float(self.variance):g}"


class Replace(Perturbation):
    """A given start distribution (Gaussian mixture, :class:`Uniform`, kernel samples)."""

    dist: Distribution
    name: str = struct.field(pytree_node=False, default="given")

    def start(self, p_tau):
        if self.dist.dim != p_tau.dim:
            raise ValueError(f"the perturbed start has dimension {self.dist.dim} but the reverse "
                             f"start has dimension {p_tau.dim}")
        return self.dist

    def label(self):
        return self.name


def shift(delta) -> Shift:
    return Shift(delta=as_float(delta))


def scale(s) -> Scale:
    if is_concrete(s) and not float(s) > 0:
        raise ValueError(f"a scale perturbation needs s > 0; got {float(s)}")
    return Scale(s=as_float(s))


def moment_gaussian() -> MomentGaussian:
    return MomentGaussian()


def mean_change(mean) -> MeanChange:
    return MeanChange(mean=as_float(mean))


def variance_change(v) -> VarianceChange:
    if is_concrete(v) and not float(v) > 0:
        raise ValueError(f"a variance perturbation needs v > 0; got {float(v)}")
    return VarianceChange(variance=as_float(v))


def replace(dist: Distribution, name: str = "given") -> Replace:
    if not isinstance(dist, Distribution):
        raise TypeError(f"`dist` must be a satjax Distribution; got {type(dist).__name__}")
    return Replace(dist=dist, name=name)


# ------------------------------------------------------------------ Pearson divergence D_0


def chi2_gaussian(mu_t, cov_t, mu, cov):
    """∫ N(μ̃, Σ̃)² / N(μ, Σ) dx − 1 in closed form; +∞ unless 2Σ̃⁻¹ − Σ⁻¹ is positive definite."""
    a = 2.0 * jnp.linalg.inv(cov_t)
    b = jnp.linalg.inv(cov)
    lam = a - b
    ev = jnp.linalg.eigvalsh(lam)
    h = a @ mu_t - b @ mu
    logdet = lambda m: jnp.linalg.slogdet(m)[1]  # noqa: E731
    safe = jnp.where(jnp.all(ev > 0), lam, jnp.eye(lam.shape[0], dtype=lam.dtype))
    log_int = (0.5 * logdet(cov) - logdet(cov_t) - 0.5 * jnp.sum(jnp.log(jnp.abs(ev)))
               + 0.5 * h @ jnp.linalg.solve(safe, h) - 0.5 * (mu_t @ a @ mu_t - mu @ b @ mu))
    return jnp.where(jnp.all(ev > 0), jnp.expm1(log_int), jnp.inf)


def kl_gaussian(mu_t, cov_t, mu, cov):
    """KL(N(μ̃, Σ̃) ‖ N(μ, Σ))."""
    d = mu.shape[0]
    inv = jnp.linalg.inv(cov)
    diff = mu - mu_t
    return 0.5 * (jnp.trace(inv @ cov_t) + diff @ inv @ diff - d
                  + jnp.linalg.slogdet(cov)[1] - jnp.linalg.slogdet(cov_t)[1])


def is_finite_divergence(start: Distribution, reference: GaussianMixture) -> bool:
    """Whether ∫ P̃²/P is finite (concrete check). For Gaussian tails the integrand decays
    like exp(−x²(1/ã − 1/(2b))) along the widest directions (ã, b the largest component
    variances of P̃ and P), so it is finite iff ã < 2b; compact starts are always finite."""
    a = float(start.tail_variance())
    b = float(reference.tail_variance())
    return a < 2.0 * b * (1.0 - 1e-12)


def _integrand_peaks(start: GaussianMixture, reference: GaussianMixture):
    """Peak locations x* (J, K, d) and widths √v (J, K) of the Gaussian factors of P̃²/P.

    For components j of P̃ (mean m̃, variance ã along each axis) and k of P (m, b), the exponent
    of N_j²/N_k is −(x − m̃)²/ã + (x − m)²/(2b): a Gaussian of variance v, 1/v = 2/ã − 1/b,
    centred at x* = v (2m̃/ã − m/b) — far from both supports when ã is close to 2b. Pairs with
    1/v ≤ 0 are dominated by wider components of P and get width 0.
    """
    a = jnp.diagonal(start.full_cov(), axis1=-2, axis2=-1)[:, None, :]  # (J, 1, d)
    b = jnp.diagonal(reference.full_cov(), axis1=-2, axis2=-1)[None, :, :]  # (1, K, d)
    inv = 2.0 / a - 1.0 / b
    ok = inv > 0
    v = jnp.where(ok, 1.0 / jnp.where(ok, inv, 1.0), 0.0)
    peak = v * (2.0 * start.means[:, None, :] / a - reference.means[None, :, :] / b)
    return jnp.where(ok, peak, 0.0), jnp.sqrt(v)


def _integrand_box(start: Distribution, reference: GaussianMixture, z: float = 12.0):
    """A box holding the mass of P̃²/P: both supports and every Gaussian factor's peak ± z√v
    (z = 12: the factor is below e^{-72} outside)."""
    lo_t, hi_t = start.support(z)
    lo_r, hi_r = reference.support(z)
    lo, hi = jnp.minimum(lo_t, lo_r), jnp.maximum(hi_t, hi_r)
    if isinstance(start, GaussianMixture):
        peak, width = _integrand_peaks(start, reference)
        lo = jnp.minimum(lo, jnp.min(peak - z * width, axis=(0, 1)))
        hi = jnp.maximum(hi, jnp.max(peak + z * width, axis=(0, 1)))
    return lo, hi


def chi2_quadrature_1d(start: Distribution, reference: GaussianMixture, *,
                       n_points: int = 8192) -> jax.Array:
    """∫ P̃²/P dx − 1 for 1-D distributions with no truncation of the tails.

    Trapezoid rule in u for x = c + a sinh(u): spacing a du near the centre c (a the narrowest
    component scale) and relative spacing du far out, up to where the integrand P̃²/P has
    decayed by e^{-72} beyond every Gaussian factor's peak (:func:`_integrand_box`). For a compact
    start (:class:`Uniform`) the same rule runs on its interval. Exponentially convergent for
    these smooth integrands; call :func:`is_finite_divergence` first (infinite D_0 has no
    quadrature).
    """
    if start.compact_support:  # structural, so this traces under jit and grad
        lo_t, hi_t = (v[0] for v in start.support())
        u, du = np.linspace(0.0, 1.0, n_points, retstep=True)
        x = lo_t + (hi_t - lo_t) * jnp.asarray(u)
        w = (hi_t - lo_t) * du * jnp.ones((n_points,), x.dtype).at[jnp.array([0, -1])].set(0.5)
    else:
        lo_r, hi_r = (v[0] for v in reference.support(12.0))
        lo, hi = (v[0] for v in _integrand_box(start, reference))
        c = 0.5 * (lo_r + hi_r)  # dense where P_τ has structure, geometric towards both ends
        reach = jnp.maximum(hi - c, c - lo)
        a = jnp.sqrt(jnp.minimum(_min_variance(start), _min_variance(reference))) / 4.0
        umax = jnp.arcsinh(reach / a)
        u = jnp.linspace(-1.0, 1.0, n_points) * umax
        du = 2.0 * umax / (n_points - 1)  # not u[1] − u[0]: that difference loses ~n/2 ulps
        x = c + a * jnp.sinh(u)
        w = du * a * jnp.cosh(u)
    lr = 2.0 * start.log_prob(x[:, None]) - reference.log_prob(x[:, None])
    return jnp.sum(w * jnp.exp(lr)) - 1.0


def _min_variance(dist: Distribution):
    if isinstance(dist, GaussianMixture):
        return jnp.min(jnp.diagonal(dist.full_cov(), axis1=-2, axis2=-1))
    lo, hi = dist.support()
    return jnp.min((hi - lo) ** 2) / 12.0


def chi2_grid_2d(start: Distribution, reference: GaussianMixture, *, n: int = 512) -> jax.Array:
    """∫ P̃²/P dx − 1 in 2-D by the midpoint rule on an n × n grid covering the integrand
    (the union of both supports widened by its slowest Gaussian factor)."""
    lo, hi = _integrand_box(start, reference)
    h = (hi - lo) / n
    g = [lo[i] + h[i] * (jnp.arange(n) + 0.5) for i in range(2)]
    X, Y = jnp.meshgrid(*g, indexing="ij")
    x = jnp.stack([X.ravel(), Y.ravel()], -1)
    lr = 2.0 * start.log_prob(x) - reference.log_prob(x)
    return jnp.exp(logsumexp(lr)) * h[0] * h[1] - 1.0


def chi2_mc(key, start: Distribution, reference: GaussianMixture, *, n_samples: int = 20_000):
    """(D_0, standard error) by importance sampling from the defensive mixture
    ½ P̃ + ½ P̃ widened ×1.5 in scale about its mean (heavier tails than P̃, so the weights
    P̃²/(P q) stay bounded in the tails whenever D_0 is finite up to ã < 1.55 b). The integrand
    is (P̃ − P)²/(P q) = (P/q)(P̃/P − 1)², not P̃²/(P q) − 1: the same mean, without the
    variance of the 1 that the difference cancels (for a small perturbation most of it)."""
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = start.sample(k1, n_samples)
    mu = start.mean()
    x2 = mu + 1.5 * (start.sample(k2, n_samples) - mu)
    pick = jax.random.bernoulli(k3, 0.5, (n_samples, 1))
    x = jnp.where(pick, x1, x2)
    lt = start.log_prob(x)
    d = x.shape[-1]
    lt_wide = start.log_prob(mu + (x - mu) / 1.5) - d * math.log(1.5)
    lq = jnp.logaddexp(lt, lt_wide) - math.log(2.0)
    lp = reference.log_prob(x)
    # ln|e^z − 1| without overflow (z = ln P̃/P can be hundreds in high dimension)
    z = lt - lp
    pos = z > 0
    zp, zn = jnp.where(pos, z, 1.0), jnp.where(pos, -1.0, z)
    log_abs = jnp.where(pos, zp + jnp.log1p(-jnp.exp(-zp)), jnp.log(-jnp.expm1(zn)))
    r = jnp.exp(lp - lq + 2.0 * log_abs)
    return jnp.mean(r), jnp.std(r, ddof=1) / jnp.sqrt(n_samples)


def pearson(start: Distribution, reference: GaussianMixture, *, key=None,
            n_samples: int = 20_000, method: str = "auto") -> Estimate:
    """D_0 = ∫ (P̃ − P)²/P dx (Eq. 78) as an :class:`~satjax.estimate.Estimate`.

    Args:
      start: the perturbed start P̃.
      reference: the exact start P = P_τ (a Gaussian mixture).
      key: PRNG key, needed for the Monte-Carlo route (d ≥ 3, non-Gaussian).
      n_samples: importance samples of the Monte-Carlo route.
      method: "auto" (closed form for two Gaussians, else 1-D quadrature, 2-D grid, n-D Monte
        Carlo) or "gaussian-kl": 2 KL of moment-matched Gaussians (Eq. G21; second order in the
        perturbation only, reported as such).

    Returns:
      Estimate with value ``inf`` when D_0 diverges (method "tails: P̃ wider than √2 P").

    Raises:
      ValueError: dimensions differ; Monte Carlo without a key; unknown method.
    """
    if start.dim != reference.dim:
        raise ValueError(f"the perturbed start has dimension {start.dim}, the exact start "
                         f"{reference.dim}")
    if method == "gaussian-kl":
        v = 2.0 * kl_gaussian(start.mean(), start.covariance(), reference.mean(),
                              reference.covariance())
        return Estimate.exact(v, "gaussian-kl (Eq. G21, second order)")
    if method != "auto":
        raise ValueError(f"unknown D_0 method {method!r}; use 'auto' or 'gaussian-kl'")
    both_gaussian = (isinstance(start, GaussianMixture) and start.n_components == 1
                     and reference.n_components == 1)
    if both_gaussian:
        v = chi2_gaussian(start.means[0], start.full_cov()[0], reference.means[0],
                          reference.full_cov()[0])
        return Estimate.exact(v, "closed-form")
    if is_concrete(start, reference) and not is_finite_divergence(start, reference):
        return Estimate.exact(jnp.asarray(jnp.inf, reference.means.dtype),
                              "tails: P̃ has Gaussian tails at least √2 times wider than P_τ")
    if reference.dim == 1:
        return Estimate.exact(chi2_quadrature_1d(start, reference), "quadrature-1d (untruncated)")
    if reference.dim == 2:
        return Estimate.exact(chi2_grid_2d(start, reference), "grid-2d")
    if key is None:
        raise ValueError("D_0 in more than 2 dimensions is a Monte-Carlo estimate: pass a `key`")
    v, se = chi2_mc(key, start, reference, n_samples=n_samples)
    return Estimate(value=v, stderr=se, error=jnp.zeros_like(v), method="importance-sampling")


__all__ = ["MeanChange", "MomentGaussian", "Perturbation", "Replace", "Scale", "Shift",
           "Uniform", "VarianceChange", "chi2_gaussian", "chi2_grid_2d", "chi2_mc",
           "chi2_quadrature_1d", "is_finite_divergence", "kl_gaussian",
           "mean_change", "moment_gaussian", "pearson", "replace", "scale", "shift",
           "variance_change"]
