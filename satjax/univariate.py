"""1-D distribution functions of Gaussian mixtures: CDF, survival function, density, quantile.

Kernels on the components ``(log w_k, μ_k, s_k)`` (three arrays of shape (K,)), used by
:class:`satjax.mixtures.GaussianMixture` (``cdf``, ``quantile``) and by the exact 1-D Wasserstein
integrals of :mod:`satjax.geometry.distances` (docs/theory.md §5).

The quantile F⁻¹(u) is a root of an increasing function, found by safeguarded Newton–bisection
(:func:`newton_bisect`) in the exact bracket [min_k μ_k + s_k Φ⁻¹(u), max_k μ_k + s_k Φ⁻¹(u)];
below the median in log F, above it in log S = log(1 − F), so tails (u ~ 1e-300) keep their
digits. Roots are differentiable by the implicit function theorem (:func:`root`), never by
differentiating the loop.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, logsumexp, ndtri

MAX_NEWTON = 100


def padded(comps):
    """Components of several mixtures padded with zero weights to one power-of-two count (≥ 2),
    so that mixtures of 1, 2, 3, 4, 5, ... components share compiled code."""
    K = max(2, 1 << (max(c[0].shape[0] for c in comps) - 1).bit_length())

    def pad(c):
        n = K - c[0].shape[0]
        log_w, mu, sd = c
        return (jnp.concatenate([log_w, jnp.full((n,), -jnp.inf, log_w.dtype)]),
                jnp.concatenate([mu, jnp.repeat(mu[:1], n)]),
                jnp.concatenate([sd, jnp.repeat(sd[:1], n)]))

    return [pad(c) for c in comps]


def log_cdf(comp, x):
    """log F(x) for one point x."""
    log_w, mu, sd = comp
    return logsumexp(log_w + log_ndtr((x - mu) / sd))


def log_sf(comp, x):
    """log(1 − F(x)) for one point x."""
    log_w, mu, sd = comp
    return logsumexp(log_w + log_ndtr((mu - x) / sd))


def log_pdf(comp, x):
    """log p(x) for one point x."""
    log_w, mu, sd = comp
    z = (x - mu) / sd
    return logsumexp(log_w - 0.5 * z**2 - jnp.log(sd) - 0.5 * math.log(2.0 * math.pi))


def level_bracket(comp, z):
    """[min_k μ_k + s_k z, max_k μ_k + s_k z] contains the quantile at level Φ(z): at the left
    end every component CDF is ≤ Φ(z), at the right end every one is ≥ Φ(z)."""
    _, mu, sd = comp
    return jnp.min(mu + sd * z), jnp.max(mu + sd * z)


def newton_bisect(fun, args, lo, hi, scale):
    """Root of an increasing scalar function in [lo, hi] (fun(lo) ≤ 0 ≤ fun(hi)).

    As in Numerical Recipes' ``rtsafe``, a Newton step is replaced by bisection when it leaves
    the current bracket or does not halve the step before last, so the bracket shrinks at least
    geometrically; it stops when a step is below ~16 ulp of |x| + scale.
    """
    tol = 16 * jnp.finfo(lo.dtype).eps

    def cond(state):
        i, _, _, x, dx, _ = state
        return (i < MAX_NEWTON) & (jnp.abs(dx) > tol * (jnp.abs(x) + scale))

    def body(state):
        i, lo, hi, x, dx, dx_old = state
        h, slope = jax.jvp(lambda v: fun(v, args), (x,), (jnp.ones_like(x),))
        below = h < 0
        lo, hi = jnp.where(below, x, lo), jnp.where(below, hi, x)
        x_new = x - h / slope
        # (inclusive bounds: a converged step rounds to x itself, which is a bracket end)
        newton_ok = (x_new >= lo) & (x_new <= hi) & (jnp.abs(x_new - x) < 0.5 * jnp.abs(dx_old))
        x_new = jnp.where(newton_ok, x_new, 0.5 * (lo + hi))
        x_new = jnp.where(h == 0, x, x_new)
        return i + 1, lo, hi, x_new, x_new - x, dx

    x0 = 0.5 * (lo + hi)
    inf = jnp.full_like(x0, jnp.inf)
    return jax.lax.while_loop(cond, body, (0, lo, hi, x0, inf, inf))[3]


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def root(fun, args, lo, hi, scale):
    """:func:`newton_bisect` with derivatives by the implicit function theorem."""
    return newton_bisect(fun, args, lo, hi, scale)


@root.defjvp
def _root_jvp(fun, primals, tangents):
    # dx*/dθ = −(∂fun/∂θ) / (∂fun/∂x) at the root x*(θ) of fun(x, θ) = 0; the loop itself is
    # never differentiated.
    args, lo, hi, scale = primals
    x = root(fun, args, lo, hi, scale)
    _, d_args = jax.jvp(lambda a: fun(x, a), (args,), (tangents[0],))
    _, slope = jax.jvp(lambda v: fun(v, args), (x,), (jnp.ones_like(x),))
    return x, -d_args / slope


def _quantile_residual(x, args):
    # log F(x) − log u below the median and log(1 − u) − log S(x) above it: both increase in x.
    comp, log_u, log_v = args
    return jnp.where(log_u < log_v, log_cdf(comp, x) - log_u, log_v - log_sf(comp, x))


def quantile_at(comp, log_u, log_v, z):
    """Quantile at one level u given log u, log(1 − u) and z = Φ⁻¹(u) (z: the bracket only)."""
    lo, hi = level_bracket(comp, jax.lax.stop_gradient(z))
    scale = jax.lax.stop_gradient(jnp.min(comp[2]))
    return root(_quantile_residual, (comp, log_u, log_v), lo, hi, scale)


def level_table(comp, n: int = 4096):
    """(x, log F(x), log S(x)) on n points spanning min μ_k − 12 s_k … max μ_k + 12 s_k: brackets
    one table cell wide for :func:`quantile_from_logs` (not differentiated)."""
    comp = jax.lax.stop_gradient(comp)
    _, mu, sd = comp
    x = jnp.linspace(jnp.min(mu - 12.0 * sd), jnp.max(mu + 12.0 * sd), n)
    return x, jax.vmap(lambda v: log_cdf(comp, v))(x), jax.vmap(lambda v: log_sf(comp, v))(x)


def quantile_from_logs(comp, log_u, log_v, table=None):
    """The quantile at the level u with log u = ``log_u`` and log(1 − u) = ``log_v`` (one point;
    both given so that either tail keeps its digits). ``table`` (:func:`level_table` of
    ``comp``) narrows the level bracket to at most three table cells, so Newton converges in a
    few steps instead of bisecting a wide support of many narrow components."""
    below = log_u < log_v
    log_level = jnp.minimum(jnp.where(below, log_u, log_v), 0.0)
    z = ndtri(jnp.exp(jax.lax.stop_gradient(log_level)))
    lo, hi = level_bracket(comp, jnp.where(below, z, -z))
    if table is not None:
        x, lF, lS = table
        n = x.shape[0]
        sg = jax.lax.stop_gradient
        # the residual is increasing in x: x[j − 1] < root <= x[j]; one more cell each side
        # absorbs rounding between the table's sums and the solver's
        j = jnp.where(below, jnp.searchsorted(lF, sg(log_u)), jnp.searchsorted(-lS, -sg(log_v)))
        lo = jnp.where(j >= 2, jnp.maximum(lo, x[jnp.clip(j - 2, 0, n - 1)]), lo)
        hi = jnp.where(j <= n - 2, jnp.minimum(hi, x[jnp.clip(j + 1, 0, n - 1)]), hi)
    scale = jax.lax.stop_gradient(jnp.min(comp[2]))
    return root(_quantile_residual, (comp, log_u, log_v), lo, hi, scale)


@jax.jit
def quantile(comp, u):
    """F⁻¹(u) for levels u of any shape; NaN outside (0, 1). Differentiable in u and comp."""
    valid = (u > 0) & (u < 1)
    u_safe = jnp.where(valid, u, 0.5)
    z = ndtri(u_safe)
    solve = lambda *a: quantile_at(comp, *a)  # noqa: E731
    x = jax.vmap(solve)(jnp.log(u_safe).ravel(), jnp.log1p(-u_safe).ravel(), z.ravel())
    return jnp.where(valid, x.reshape(u.shape), jnp.nan)


def cdf(comp, x):
    """F(x) = Σ_k w_k Φ((x − μ_k)/s_k) for points of any shape."""
    log_w, mu, sd = comp
    return jax.scipy.special.ndtr((x[..., None] - mu) / sd) @ jnp.exp(log_w)
