"""Gaussian mixtures: the data model of satjax and every marginal P_t (PAPER.md section 2, Eq. 17).

q = Σ_k w_k N(μ_k, S_k) with covariances stored as ``iso`` (S_k = s_k I, shape (K,)),
``diag`` (shape (K, d)) or ``full`` (shape (K, d, d)); an empirical data set is N points with
kernel width ε (``iso``, s_k = ε²). Under a linear force every marginal is again such a mixture,
N(Φ_t μ_k + c_t, Φ_t S_k Φ_tᵀ + Σ_t) (Eq. 17): :meth:`GaussianMixture.push`.

Densities, scores and velocities are responsibility-weighted averages over components, computed
by a streaming log-sum-exp over chunks of components (``chunk``), so memory is O(points × chunk)
whatever the number of components. For ``iso``/``diag`` components all point-component work is a
matrix product; ``full`` components cost O(d²) each.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from satjax._util import as_float, is_concrete
from satjax.forces import FullTransition, IsoTransition

KINDS = ("iso", "diag", "full")


class GaussianMixture(struct.PyTreeNode):
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
        return _to_full(self.cov, self.kind, self.dim)

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
    def sample(self, key, n: int) -> jax.Array:
        """n samples, shape (n, d)."""
        k_comp, k_noise = jax.random.split(key)
        idx = jax.random.choice(k_comp, self.n_components, (n,), p=self.weights)
        return self.sample_given(idx, jax.random.normal(k_noise, (n, self.dim), self.means.dtype))

    def sample_given(self, idx, eps) -> jax.Array:
        """Reparameterised samples μ_idx + S_idx^{1/2} ε for component indices and N(0, I) ε."""
        mu = self.means[idx]
        if self.kind == "iso":
            return mu + jnp.sqrt(self.cov[idx])[:, None] * eps
        if self.kind == "diag":
            return mu + jnp.sqrt(self.cov[idx]) * eps
        return mu + jnp.einsum("nij,nj->ni", jnp.linalg.cholesky(self.cov)[idx], eps)

    # ------------------------------------------------------------------ transport (Eq. 17)
    def push(self, tr) -> "GaussianMixture":
        """The mixture of N(Φ μ_k + c, Φ S_k Φᵀ + Σ) for a transition N(Φ y + c, Σ) (Eq. 17)."""
        d = self.dim
        if isinstance(tr, IsoTransition):
            R = tr.rotation
            mu = self.means if R is None else self.means @ R.T
            mu = tr.scale * mu
            if tr.shift is not None:
                mu = mu + tr.shift
            phi2 = tr.scale**2
            if self.kind == "iso":
                cov, kind = phi2 * self.cov + tr.var, "iso"
            elif self.kind == "diag" and R is None:
                cov, kind = phi2 * self.cov + tr.var, "diag"
            else:
                S = self.full_cov()
                if R is not None:
                    S = jnp.einsum("ij,kjl,ml->kim", R, S, R)
                cov, kind = phi2 * S + tr.var * jnp.eye(d, dtype=S.dtype), "full"
        elif isinstance(tr, FullTransition):
            if tr.phi.shape != (d, d):
                raise ValueError(f"transition of dimension {tr.phi.shape[0]} applied to "
                                 f"{d}-dimensional data")
            mu = self.means @ tr.phi.T + tr.shift
            cov = jnp.einsum("ij,kjl,ml->kim", tr.phi, self.full_cov(), tr.phi) + tr.cov
            kind = "full"
        else:
            raise TypeError(f"expected an IsoTransition or FullTransition; got {type(tr).__name__}")
        return GaussianMixture(weights=self.weights, means=mu, cov=cov, kind=kind)

    # ------------------------------------------------------------------ densities
    def log_prob(self, x, *, chunk: Optional[int] = None) -> jax.Array:
        """log q(x) for x of shape (..., d)."""
        return evaluate(self, x, chunk=chunk)["log_prob"]

    def score(self, x, *, chunk: Optional[int] = None) -> jax.Array:
        """∇ log q(x) for x of shape (..., d)."""
        return evaluate(self, x, chunk=chunk)["score"]


def _to_full(cov, kind, d):
    if kind == "iso":
        return cov[:, None, None] * jnp.eye(d, dtype=cov.dtype)
    if kind == "diag":
        return jax.vmap(jnp.diag)(cov)
    return cov


# ---------------------------------------------------------------------- evaluation engine

OUTPUTS = ("log_prob", "score", "velocity")
_TILE = 1 << 20  # elements of one (points × components) tile: 4 MiB in float32, cache-resident


def _tables(mix: GaussianMixture, rate: Optional[GaussianMixture], generator, outputs):
    """Per-component quantities that do not depend on x (computed once per t).

    Returns (kind, tab, layout): ``tab`` holds the logit coefficients and, for iso/diag, the
    feature matrix ``vals`` (K, F) whose responsibility-weighted average is needed; its first
    column is 1 (the normaliser). ``layout`` maps feature names to column slices.
    """
    d = mix.dim
    kind = mix.kind
    if kind == "diag" and generator is not None:
        mix = mix.replace(cov=mix.full_cov(), kind="full")
        rate = rate.replace(cov=rate.full_cov(), kind="full")
        kind = "full"
    log_w = jnp.log(mix.weights)
    mu = mix.means
    log2pi = math.log(2.0 * math.pi)
    feats = {}
    if kind in ("iso", "diag"):
        c = mix.cov
        inv = 1.0 / c
        if kind == "iso":
            const = log_w - 0.5 * d * (log2pi + jnp.log(c)) - 0.5 * jnp.sum(mu**2, -1) * inv
            mu_inv = mu * inv[:, None]
        else:
            const = log_w - 0.5 * jnp.sum(log2pi + jnp.log(c), -1) - 0.5 * jnp.sum(mu**2 * inv, -1)
            mu_inv = mu * inv
        tab = {"const": const, "mu_inv": mu_inv, "inv": inv}
        col = lambda v: v[:, None] if v.ndim == 1 else v  # noqa: E731
        feats["one"] = jnp.ones((mix.n_components, 1), mu.dtype)
        if "score" in outputs:
            feats["mu_inv"], feats["inv"] = mu_inv, col(inv)
        if "velocity" in outputs:
            a = rate.cov / (2.0 * c)
            feats["lin"] = rate.means - (a[:, None] if kind == "iso" else a) * mu
            feats["a"] = col(a)
            if generator is not None:
                feats["mu"] = mu
        tab["vals"] = jnp.concatenate(list(feats.values()), axis=-1)
    else:
        C = mix.cov
        L = jnp.linalg.cholesky(C)
        eye = jnp.eye(d, dtype=C.dtype)
        P = jax.vmap(lambda l: jax.scipy.linalg.cho_solve((l, True), eye))(L)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
        tab = {"mu": mu, "prec": P, "const": log_w - 0.5 * (d * log2pi + logdet)}
        feats["one"] = jnp.ones((mix.n_components, 1), mu.dtype)
        if "score" in outputs:
            feats["grad"] = mu
        if "velocity" in outputs:
            M = 0.5 * rate.cov
            if generator is not None:
                KC = jnp.einsum("ij,kjl->kil", generator, C)
                M = M + 0.5 * (KC - jnp.swapaxes(KC, -1, -2))
            tab["B"] = jnp.einsum("kij,kjl->kil", M, P)
            tab["dmu"] = rate.means
            feats["vel"] = mu
    layout, start = {}, 0
    for name, v in feats.items():
        layout[name] = slice(start, start + v.shape[-1])
        start += v.shape[-1]
    return kind, tab, layout


def _tile_terms(kind, tab, layout, xb):
    """Logits (B, C) and the weighted-average operand for a block of points and components.

    iso/diag: the operand is the shared (C, F) feature matrix and logits come from one matrix
    product; full: per point, (B, C, F).
    """
    if kind == "iso":
        xx = jnp.sum(xb**2, -1)
        logits = tab["const"] + xb @ tab["mu_inv"].T - 0.5 * xx[:, None] * tab["inv"]
        return logits, tab["vals"]
    if kind == "diag":
        logits = tab["const"] + xb @ tab["mu_inv"].T - 0.5 * (xb**2) @ tab["inv"].T
        return logits, tab["vals"]

    def one(x):
        diff = x - tab["mu"]
        pd = jnp.einsum("kij,kj->ki", tab["prec"], diff)
        logits = tab["const"] - 0.5 * jnp.sum(diff * pd, -1)
        vals = [jnp.ones_like(logits)[:, None]]
        if "grad" in layout:
            vals.append(-pd)
        if "vel" in layout:
            vals.append(tab["dmu"] + jnp.einsum("kij,kj->ki", tab["B"], diff))
        return logits, jnp.concatenate(vals, -1)

    return jax.vmap(one)(xb)


def _rowmax(v):
    """Maximum over the last axis, as the log-sum-exp shift (no gradient: the shift cancels).

    A select-reduction (``where(a > b, a, b)``): XLA vectorises it on CPU, whereas ``jnp.max``
    (NaN-propagating) runs as a scalar loop, 5× slower on the whole kernel here. A NaN logit
    still reaches every output through exp.
    """
    v = jax.lax.stop_gradient(v)
    return jax.lax.reduce(v, jnp.array(-jnp.inf, v.dtype), lambda a, b: jnp.where(a > b, a, b),
                          (v.ndim - 1,))


def _weighted(e, vals):
    return e @ vals if vals.ndim == 2 else jnp.einsum("bc,bcf->bf", e, vals)


def _block_eval(kind, tab, layout, xb, n_chunks):
    """Streaming log-sum-exp over component chunks for a block of points xb (B, d)."""
    if n_chunks == 1:
        logits, vals = _tile_terms(kind, tab, layout, xb)
        m = _rowmax(logits)
        m = jnp.where(jnp.isfinite(m), m, 0.0)
        acc = _weighted(jnp.exp(logits - m[:, None]), vals)
        return m, acc

    def body(carry, ch):
        m_run, acc = carry
        logits, vals = _tile_terms(kind, ch, layout, xb)
        m_new = jnp.maximum(m_run, _rowmax(logits))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        e = jnp.exp(logits - m_safe[:, None])
        acc = acc * jnp.exp(m_run - m_safe)[:, None] + _weighted(e, vals)
        return (m_new, acc), None

    F = sum(s.stop - s.start for s in layout.values())
    B, dt = xb.shape[0], xb.dtype
    init = (jnp.full((B,), -jnp.inf, dt), jnp.zeros((B, F), dt))
    (m, acc), _ = jax.lax.scan(body, init, tab)
    return jnp.where(jnp.isfinite(m), m, 0.0), acc


def _finish(kind, layout, x, m, acc, skew, outputs):
    s = acc[:, 0]
    avg = {k: acc[:, v] / s[:, None] for k, v in layout.items() if k != "one"}
    out = {}
    if "log_prob" in outputs:
        out["log_prob"] = m + jnp.log(s)
    if kind == "full":
        if "score" in outputs:
            out["score"] = avg["grad"]
        if "velocity" in outputs:
            out["velocity"] = avg["vel"]
        return out
    if "score" in outputs:
        out["score"] = avg["mu_inv"] - avg["inv"] * x
    if "velocity" in outputs:
        v = avg["lin"] + avg["a"] * x
        if skew is not None:
            v = v + (x - avg["mu"]) @ skew.T
        out["velocity"] = v
    return out


def _split_chunks(tab, K, chunk):
    """Reshape the per-component tables into (n_chunks, chunk, ...), padding with dead components."""
    n_chunks = -(-K // chunk)
    pad = n_chunks * chunk - K

    def prep(name, v):
        if pad:
            fill = jnp.repeat(v[-1:], pad, axis=0)
            if name == "const":
                fill = jnp.full_like(fill, -jnp.inf)
            v = jnp.concatenate([v, fill], axis=0)
        return v.reshape((n_chunks, chunk) + v.shape[1:])

    return {k: prep(k, v) for k, v in tab.items()}


def tile_sizes(n_points: int, n_components: int, dim: int, kind: str,
               chunk: Optional[int] = None, block: Optional[int] = None):
    """(points per block, components per chunk) of the evaluation engine.

    Defaults keep one (points × components) tile near 2²⁰ elements (×d for full covariances),
    so memory is bounded independently of N and K and the tile stays in cache.
    """
    per = dim if kind == "full" else 1
    if chunk is None:
        chunk = min(n_components, 4096 if per == 1 else max(64, _TILE // (64 * per)))
    chunk = min(chunk, n_components)
    if block is None:
        block = max(8, _TILE // (chunk * per))
    return max(1, min(block, n_points)), chunk


def evaluate(mix: GaussianMixture, x, *, rate: Optional[GaussianMixture] = None,
             generator=None, chunk: Optional[int] = None, block: Optional[int] = None,
             outputs=None) -> dict:
    """log-density, score and (given the mixture's time derivative) velocity at points x.

    The velocity is that of section 2: Σ_k r_k(x) ν_k(x) with
    ν_k(x) = μ_k' + (C_k'/2 + W_k) C_k⁻¹ (x − μ_k), W_k = (K C_k − C_k Kᵀ)/2, where
    ``rate`` holds (μ_k', C_k') and ``generator`` is K (the part of the force matrix that is not
    a multiple of I; None for schedules). This equals A x + b + T C_k⁻¹(x − μ_k) but stays finite
    where ∂_t ln m is singular.

    Points are processed ``block`` at a time and components ``chunk`` at a time with a streaming
    log-sum-exp; for isotropic and diagonal mixtures each (block × chunk) tile is two matrix
    products and one exponential per entry. Memory is O(block × chunk), independent of N and K.

    Args:
      mix: the mixture (P_t).
      x: points, shape (..., d).
      rate: d mix / dt (same structure), or None for no velocity.
      generator: (d, d) matrix K or None.
      chunk: components per chunk (None: automatic, see :func:`tile_sizes`).
      block: points per block (None: automatic).
      outputs: which of "log_prob", "score", "velocity" to compute (fewer is cheaper); None:
        all that the arguments allow (no velocity without ``rate``).

    Returns:
      dict with the requested ``log_prob`` (...,), ``score`` (..., d), ``velocity`` (..., d).
    """
    x = jnp.asarray(x, dtype=mix.means.dtype)
    d = mix.dim
    if x.shape[-1:] != (d,):
        raise ValueError(f"points must have trailing dimension {d} (the data dimension); "
                         f"got shape {x.shape}")
    for name, v in (("chunk", chunk), ("block", block)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"`{name}` must be a positive int or None; got {v!r}")
    if outputs is None:
        outputs = OUTPUTS if rate is not None else OUTPUTS[:2]
    outputs = tuple(outputs)
    bad = [o for o in outputs if o not in OUTPUTS]
    if bad or not outputs:
        raise ValueError(f"`outputs` must be a non-empty subset of {OUTPUTS}; got {outputs}")
    if "velocity" in outputs and rate is None:
        raise ValueError("the velocity needs the mixture's time derivative: pass `rate`")
    kind, tab, layout = _tables(mix, rate, generator, outputs)
    skew = None
    if generator is not None and kind != "full":
        skew = 0.5 * (generator - generator.T)
    K = mix.n_components
    flat = x.reshape((-1, d))
    n = flat.shape[0]
    B, C = tile_sizes(n, K, d, kind, chunk, block)
    n_chunks = -(-K // C)
    if n_chunks > 1:
        tab = _split_chunks(tab, K, C)

    def run(xb):
        m, acc = _block_eval(kind, tab, layout, xb, n_chunks)
        return _finish(kind, layout, xb, m, acc, skew, outputs)

    if B >= n:
        res = run(flat)
    else:
        n_blocks = -(-n // B)
        padded = jnp.concatenate([flat, jnp.zeros((n_blocks * B - n, d), flat.dtype)])
        res = jax.lax.map(run, padded.reshape(n_blocks, B, d))
        res = jax.tree_util.tree_map(lambda v: v.reshape((n_blocks * B,) + v.shape[2:])[:n], res)
    return jax.tree_util.tree_map(lambda v: v.reshape(x.shape[:-1] + v.shape[1:]), res)


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
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"samples must have shape (N, d); got {x.shape}")
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
