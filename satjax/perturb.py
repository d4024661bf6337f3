"""Perturbed reverse starts P̃†_0 and their Pearson divergence D_0 (PAPER.md Eq. 78, G21).

The exact reverse process starts from P†_0 = P_τ; the speed-accuracy relation compares it with a
perturbed start P̃†_0 carried by the same velocity. Perturbations of P_τ (a Gaussian mixture):

* ``shift:δ``    translate along the first axis by δ;
* ``scale:s``    scale about the mean by s (means and covariances);
* ``gaussian``   the Gaussian with P_τ's mean and covariance;
* ``samples``    a user array of samples with a kernel width (:func:`from_samples`).

D_0 = ∫ (P̃ − P)² / P dx = ∫ P̃²/P dx − 1 (Pearson χ², Eq. 78):
closed form for two Gaussians; quadrature in 1-D; Monte Carlo with exact densities in n-D
(``E_{P̃}[P̃/P] − 1`` with a standard error); or the Gaussian-KL approximation of Eq. G21,
D_0 ≈ 2 KL(N(P̃) ‖ N(P)) of moment-matched Gaussians (exact only to second order in the
perturbation). D_0 = +∞ when P̃ has heavier Gaussian tails than P (s̃² ≥ 2 s² for the widest
components): reported as ``inf``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from satjax._util import is_concrete
from satjax.mixtures import GaussianMixture, from_samples
from satjax.thermo import quadrature_grid_1d


class Perturbation(struct.PyTreeNode):
    """A perturbation of the reverse start: ``kind`` in shift | scale | gaussian | samples."""

    kind: str = struct.field(pytree_node=False)
    value: jax.Array = None  # δ for shift, s for scale
    samples: Optional[jax.Array] = None
    width: Optional[jax.Array] = None

    def apply(self, p: GaussianMixture) -> GaussianMixture:
        """P̃ from P (a mixture)."""
        if self.kind == "shift":
            return p.replace(means=p.means.at[:, 0].add(self.value))
        if self.kind == "scale":
            mu = p.mean()
            return p.replace(means=mu + self.value * (p.means - mu), cov=self.value**2 * p.cov)
        if self.kind == "gaussian":
            return GaussianMixture(weights=jnp.ones((1,), p.means.dtype), means=p.mean()[None],
                                   cov=p.covariance()[None], kind="full")
        if self.kind == "samples":
            if self.samples.shape[-1] != p.dim:
                raise ValueError(f"perturbation samples have dimension {self.samples.shape[-1]} but "
                                 f"the reverse start has dimension {p.dim}")
            return from_samples(np.asarray(self.samples), float(self.width))
        raise ValueError(f"unknown perturbation kind {self.kind!r}")

    def push_samples(self, x, p: GaussianMixture):
        """Samples of P̃ from samples x of P by the perturbation's own map (shift, scale), or
        None when the perturbation is not a map of P (gaussian, samples)."""
        if self.kind == "shift":
            return x.at[:, 0].add(self.value)
        if self.kind == "scale":
            mu = p.mean()
            return mu + self.value * (x - mu)
        return None

    def label(self) -> str:
        if self.kind in ("shift", "scale"):
            return f"{self.kind}:{float(self.value):g}"
        return self.kind


def shift(delta) -> Perturbation:
    return Perturbation(kind="shift", value=jnp.asarray(delta, dtype=float))


def scale(s) -> Perturbation:
    if float(s) <= 0:
        raise ValueError(f"scale perturbation needs s > 0; got {float(s)}")
    return Perturbation(kind="scale", value=jnp.asarray(s, dtype=float))


def gaussian() -> Perturbation:
    return Perturbation(kind="gaussian")


def samples(x, width: float) -> Perturbation:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"perturbation samples must have shape (N, d); got {x.shape}")
    if not width > 0:
        raise ValueError(f"kernel width must be > 0; got {width}")
    return Perturbation(kind="samples", samples=jnp.asarray(x), width=jnp.asarray(width))


def parse(spec: str) -> Perturbation:
    """``shift:0.1``, ``scale:1.2``, ``gaussian``, ``npy:path=FILE,width=0.05``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty perturbation spec")
    name, _, arg = spec.strip().partition(":")
    name = name.lower()
    if name in ("shift", "scale"):
        try:
            v = float(arg)
        except ValueError:
            raise ValueError(f"perturbation {spec!r}: expected {name}:NUMBER") from None
        if not np.isfinite(v):
            raise ValueError(f"perturbation {spec!r}: value must be finite")
        return shift(v) if name == "shift" else scale(v)
    if name == "gaussian" and not arg:
        return gaussian()
    if name == "npy":
        kv = dict(item.split("=", 1) for item in arg.split(",") if "=" in item)
        if "path" not in kv or "width" not in kv:
            raise ValueError(f"perturbation {spec!r}: expected npy:path=FILE,width=W")
        try:
            x = np.load(kv["path"])
        except (OSError, ValueError) as err:
            raise ValueError(f"perturbation {spec!r}: cannot read {kv['path']!r}: {err}") from None
        return samples(x, float(kv["width"]))
    raise ValueError(f"unknown perturbation {spec!r}; expected shift:δ, scale:s, gaussian or "
                     "npy:path=FILE,width=W")


# ------------------------------------------------------------------ Pearson divergence D_0


class Divergence(struct.PyTreeNode):
    """D_0 with its ``stderr`` (Monte Carlo) and the ``method`` used."""

    value: jax.Array
    stderr: jax.Array
    method: str = struct.field(pytree_node=False)


def chi2_gaussian(mu_t, cov_t, mu, cov):
    """∫ N(μ̃, Σ̃)² / N(μ, Σ) dx − 1 in closed form; +∞ unless 2Σ̃⁻¹ − Σ⁻¹ is positive definite."""
    a = 2.0 * jnp.linalg.inv(cov_t)
    b = jnp.linalg.inv(cov)
    lam = a - b
    ev = jnp.linalg.eigvalsh(lam)
    h = a @ mu_t - b @ mu
    logdet = lambda m: jnp.linalg.slogdet(m)[1]  # noqa: E731
    log_int = (0.5 * logdet(cov) - logdet(cov_t) - 0.5 * jnp.sum(jnp.log(jnp.abs(ev)))
               + 0.5 * h @ jnp.linalg.solve(lam, h) - 0.5 * (mu_t @ a @ mu_t - mu @ b @ mu))
    return jnp.where(jnp.all(ev > 0), jnp.expm1(log_int), jnp.inf)


def _heavier_tails(pt: GaussianMixture, p: GaussianMixture) -> bool:
    """True when ∫P̃²/P diverges: the widest P̃ component has ≥ 2× the widest P variance along
    some direction (exact for isotropic / 1-D components, conservative check for full)."""
    ct = np.linalg.eigvalsh(np.asarray(pt.full_cov())).max()
    c = np.linalg.eigvalsh(np.asarray(p.full_cov())).max()
    return bool(ct >= 2.0 * c * (1 - 1e-12))


def kl_gaussian(mu_t, cov_t, mu, cov):
    """KL(N(μ̃, Σ̃) ‖ N(μ, Σ))."""
    d = mu.shape[0]
    inv = jnp.linalg.inv(cov)
    diff = mu - mu_t
    return 0.5 * (jnp.trace(inv @ cov_t) + diff @ inv @ diff - d
                  + jnp.linalg.slogdet(cov)[1] - jnp.linalg.slogdet(cov_t)[1])


def pearson(pt: GaussianMixture, p: GaussianMixture, *, method: str = "auto", key=None,
            n_samples: int = 20000, n_points: int = 8192) -> Divergence:
    """D_0 = ∫ (P̃ − P)²/P dx (Eq. 78) between two mixtures.

    Args:
      pt: the perturbed start P̃.
      p: the exact start P = P_τ.
      method: "gaussian" (closed form, both single Gaussians), "quadrature" (1-D), "mc"
        (exact densities, E_{P̃}[P̃/P] − 1), "gaussian-kl" (Eq. G21: 2 KL of moment fits),
        "auto" (closed form, else quadrature in 1-D, else mc).
    """
    if pt.dim != p.dim:
        raise ValueError(f"perturbed start has dimension {pt.dim}, exact start {p.dim}")
    if method == "auto":
        method = ("gaussian" if pt.n_components == 1 and p.n_components == 1
                  else "quadrature" if p.dim == 1 else "mc")
    zero = jnp.zeros((), p.means.dtype)
    if method == "gaussian-kl":
        v = 2.0 * kl_gaussian(pt.mean(), pt.covariance(), p.mean(), p.covariance())
        return Divergence(value=v, stderr=zero, method=method)
    if method == "gaussian":
        if pt.n_components != 1 or p.n_components != 1:
            raise ValueError("method 'gaussian' needs single-Gaussian starts")
        v = chi2_gaussian(pt.means[0], pt.full_cov()[0], p.means[0], p.full_cov()[0])
        return Divergence(value=v, stderr=zero, method=method)
    if is_concrete(pt, p) and _heavier_tails(pt, p):
        return Divergence(value=jnp.asarray(jnp.inf, p.means.dtype), stderr=zero, method=method)
    if method == "quadrature":
        if p.dim != 1:
            raise ValueError("quadrature D_0 needs 1-D starts (use method='mc')")
        both = GaussianMixture(weights=jnp.concatenate([p.weights, pt.weights]) / 2,
                               means=jnp.concatenate([p.means, pt.means]),
                               cov=jnp.concatenate([p.full_cov(), pt.full_cov()]), kind="full")
        x, _ = quadrature_grid_1d(both, n_points)
        h = x[1, 0] - x[0, 0]
        lr = 2.0 * pt.log_prob(x) - p.log_prob(x)
        trap = jnp.ones((n_points,), x.dtype).at[jnp.array([0, -1])].set(0.5)
        return Divergence(value=h * jnp.sum(trap * jnp.exp(lr)) - 1.0, stderr=zero, method=method)
    if method == "mc":
        if key is None:
            raise ValueError("method 'mc' needs a PRNG `key`")
        x = pt.sample(key, n_samples)
        r = jnp.exp(pt.log_prob(x) - p.log_prob(x))
        return Divergence(value=jnp.mean(r) - 1.0, stderr=jnp.std(r, ddof=1) / jnp.sqrt(n_samples),
                          method=method)
    raise ValueError(f"unknown D_0 method {method!r}; use auto, gaussian, quadrature, mc or gaussian-kl")
