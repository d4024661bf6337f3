"""The tiled evaluation engine of Gaussian-mixture fields (docs/theory.md §2, Eq. 17).

For a mixture P = Σ_k w_k N(μ_k, C_k) (and, for the velocity, its time derivative (μ_k', C_k')
and the force's non-commuting part K), :func:`evaluate` returns log P, ∇ln P and the velocity
ν = Σ_k r_k(x) ν_k(x) at a batch of points, with responsibilities r_k by a streaming
log-sum-exp. Points are processed in blocks and components in chunks, so memory is
O(block × chunk), independent of the numbers of points and components; for isotropic and
diagonal components each tile is two matrix products and one exponential per entry.

The engine works on arrays (any object with ``weights``, ``means``, ``cov``, ``kind``); it is
owned by the forward process (:mod:`satjax.forces` evaluates marginals with it) and by the data
model (:meth:`satjax.mixtures.GaussianMixture.log_prob`).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from satjax.pytree import Node


class Fields(Node):
    """Fields of P_t at points: ``log_prob`` (...,), ``score`` (..., d), ``velocity`` (..., d);
    an entry is None when it was not requested."""

    log_prob: Optional[jax.Array] = None
    score: Optional[jax.Array] = None
    velocity: Optional[jax.Array] = None

    def items(self):
        """(name, array) of the computed entries."""
        return [(k, getattr(self, k)) for k in ("log_prob", "score", "velocity")
                if getattr(self, k) is not None]

    def __iter__(self):
        return iter(k for k, _ in self.items())


def full_covariances(cov, kind: str, d: int):
    """Covariances of kind iso (K,), diag (K, d) or full (K, d, d) as (K, d, d) matrices."""
    if kind == "iso":
        return cov[:, None, None] * jnp.eye(d, dtype=cov.dtype)
    if kind == "diag":
        return jax.vmap(jnp.diag)(cov)
    return cov


OUTPUTS = ("log_prob", "score", "velocity")
_TILE = 1 << 20  # elements of one (points × components) tile: 4 MiB in float32, cache-resident


def _tables(mix, rate, generator, outputs):
    """Per-component quantities that do not depend on x (computed once per t).

    Returns (kind, tab, layout): ``tab`` holds the logit coefficients and, for iso/diag, the
    feature matrix ``vals`` (K, F) whose responsibility-weighted average is needed; its first
    column is 1 (the normaliser). ``layout`` maps feature names to column slices.
    """
    d = mix.means.shape[-1]
    kind = mix.kind
    if kind == "diag" and generator is not None:
        mix = mix.replace(cov=full_covariances(mix.cov, "diag", d), kind="full")
        rate = rate.replace(cov=full_covariances(rate.cov, "diag", d), kind="full")
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
        feats["one"] = jnp.ones((mu.shape[0], 1), mu.dtype)
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
        feats["one"] = jnp.ones((mu.shape[0], 1), mu.dtype)
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


def evaluate(mix, x: Float[Array, "*batch d"], *, rate=None,
             generator=None, chunk: Optional[int] = None, block: Optional[int] = None,
             outputs=None) -> Fields:
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
      mix: the mixture P_t (any object with ``weights``, ``means``, ``cov``, ``kind`` and
        ``replace``, e.g. :class:`satjax.mixtures.GaussianMixture`).
      x: points, shape (..., d).
      rate: d mix / dt (same structure), or None for no velocity.
      generator: (d, d) matrix K or None.
      chunk: components per chunk (None: automatic, see :func:`tile_sizes`).
      block: points per block (None: automatic).
      outputs: which of "log_prob", "score", "velocity" to compute (fewer is cheaper); None:
        all that the arguments allow (no velocity without ``rate``).

    Returns:
      :class:`Fields` with the requested ``log_prob`` (...,), ``score`` (..., d), ``velocity``
      (..., d); the others are None.
    """
    x = jnp.asarray(x, dtype=mix.means.dtype)
    d = mix.means.shape[-1]
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
    K = mix.means.shape[0]
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
        # checkpointed: reverse mode recomputes a block instead of storing its tiles, so the
        # memory of a gradient stays O(block × chunk) as that of the value
        res = jax.lax.map(jax.checkpoint(run), padded.reshape(n_blocks, B, d))
        res = jax.tree_util.tree_map(lambda v: v.reshape((n_blocks * B,) + v.shape[2:])[:n], res)
    res = jax.tree_util.tree_map(lambda v: v.reshape(x.shape[:-1] + v.shape[1:]), res)
    return Fields(**res)
