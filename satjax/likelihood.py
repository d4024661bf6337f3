"""Log-likelihood of a probability-flow model by the instantaneous change of variables.

Along the flow dx/dt = ν_t(x) (Eq. 1 read as a transport equation) the density obeys
d/dt ln P_t(x_t) = −∇·ν_t(x_t), so for a data point x = x_0

    ln q_model(x) = ln P_τ(x_τ) + ∫_0^τ ∇·ν_t(x_t) dt,

integrated in a single pass (augmented state (x, ℓ), fixed-step RK4/Heun/Euler in ``lax.scan``,
forward time 0 → τ). The divergence is exact (trace of the Jacobian, d forward-mode passes) or
Hutchinson's estimator εᵀ(∂ν/∂x)ε with ``n_probes`` Rademacher probes fixed along the path; each
probe gives its own estimate of ln q, and the standard error is their spread / sqrt(n_probes).
Differentiable in x and in every leaf of the field (reverse mode through the scan).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from satjax import sharding as _sh
from satjax.pytree import Node
from satjax.reverse import Field, as_field

_STEPPERS = ("euler", "heun", "rk4")


class LogLikelihood(Node):
    """``log_prob`` (N,), its ``stderr`` (N,; 0 for the exact divergence), end points ``x_end``."""

    log_prob: jax.Array
    stderr: jax.Array
    x_end: jax.Array
    finite: jax.Array


def _div_exact(fld, x, t):
    return jnp.trace(jax.jacfwd(lambda y: fld(y, t))(x))


def _div_hutch(fld, x, t, probes):
    v, jvp = jax.linearize(lambda y: fld(y, t), x)
    return jax.vmap(lambda e: e @ jvp(e))(probes)


class LogDensityFlow(Node):
    """Points and log-density increments along a flow: ``ts`` (S,) saved times, ``xs`` (S, N, d)
    and ``ells`` (S, N, P) = ∫_{t_start}^{t} ∇·ν dt (P probe estimates; P = 1 when exact)."""

    ts: jax.Array
    xs: jax.Array
    ells: jax.Array


@partial(jax.jit, static_argnames=("n_steps", "n_save", "method", "exact"))
def _flow(fld, x, probes, t0, t1, n_steps, n_save, method, exact):
    dt = (t1 - t0) / n_steps
    every = n_steps // n_save

    def rhs(x, t, pr):
        v = fld(x, t)
        if exact:
            return v, _div_exact(fld, x, t)[None]
        return v, _div_hutch(fld, x, t, pr)

    def one(xi, pr):
        def step(carry, i):
            x, ell = carry
            t = t0 + i * dt
            if method == "euler":
                v, dv = rhs(x, t, pr)
                return (x + dt * v, ell + dt * dv), None
            if method == "heun":
                v1, d1 = rhs(x, t, pr)
                v2, d2 = rhs(x + dt * v1, t + dt, pr)
                return (x + 0.5 * dt * (v1 + v2), ell + 0.5 * dt * (d1 + d2)), None
            v1, d1 = rhs(x, t, pr)
            v2, d2 = rhs(x + 0.5 * dt * v1, t + 0.5 * dt, pr)
            v3, d3 = rhs(x + 0.5 * dt * v2, t + 0.5 * dt, pr)
            v4, d4 = rhs(x + dt * v3, t + dt, pr)
            return (x + dt / 6 * (v1 + 2 * v2 + 2 * v3 + v4),
                    ell + dt / 6 * (d1 + 2 * d2 + 2 * d3 + d4)), None

        def block(carry, j):
            carry, _ = jax.lax.scan(step, carry, j * every + jnp.arange(every))
            return carry, carry

        n_est = 1 if exact else pr.shape[0]
        init = (xi, jnp.zeros((n_est,), xi.dtype))
        _, (xs, ells) = jax.lax.scan(block, init, jnp.arange(n_save))
        return (jnp.concatenate([xi[None], xs]),
                jnp.concatenate([jnp.zeros((1, n_est), xi.dtype), ells]))

    xs, ells = jax.vmap(one)(x, probes)  # (N, S, d), (N, S, P)
    ts = t0 + (t1 - t0) * (jnp.arange(n_save + 1) / n_save).astype(x.dtype)
    return LogDensityFlow(ts=ts, xs=jnp.swapaxes(xs, 0, 1), ells=jnp.swapaxes(ells, 0, 1))


def flow_with_log_density(velocity, x, *, t_start, t_end, n_steps: int = 200,
                          n_save: int = 1, method: str = "rk4", divergence: str = "exact",
                          key=None, n_probes: int = 8, shard: _sh.ShardSpec = False):
    """Carry points along dx/dt = ν_t(x) with ∫ ∇·ν dt (instantaneous change of variables).

    For a density p at t_start, ln p_t(x_t) = ln p(x_start) − ells (the flow pushes p forward).
    Arguments as :func:`log_likelihood`; ``n_save`` saved states (a divisor of ``n_steps``).

    Returns:
      :class:`LogDensityFlow`.
    """
    fld = as_field(velocity)
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"`x` must have shape (N, d); got {x.shape}")
    if method not in _STEPPERS:
        raise ValueError(f"`method` must be one of {_STEPPERS}; got {method!r}")
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"`divergence` must be 'exact' or 'hutchinson'; got {divergence!r}")
    if n_steps < 1 or n_save < 1 or n_steps % n_save:
        raise ValueError(f"`n_steps` ({n_steps}) must be a positive multiple of `n_save` "
                         f"({n_save})")
    exact = divergence == "exact"
    mesh = _sh.resolve(shard)
    if exact:
        probes = jnp.zeros((x.shape[0], 1, x.shape[1]), x.dtype)
    else:
        if key is None:
            raise ValueError("Hutchinson's estimator needs a PRNG `key`")
        if n_probes < 2:
            raise ValueError(f"`n_probes` must be >= 2 for a standard error; got {n_probes}")
        probes = _probes(key, (x.shape[0], n_probes, x.shape[1]), x.dtype, mesh)
    x, probes = _sh.shard_samples((x, probes), mesh)
    return _flow(fld, x, probes, jnp.asarray(t_start, x.dtype), jnp.asarray(t_end, x.dtype),
                 int(n_steps), int(n_save), method, exact)


def _probes(key, shape, dtype, mesh):
    if mesh is None:
        return jax.random.rademacher(key, shape).astype(dtype)
    _sh.check_divisible(shape[0], mesh, "points")
    return _probes_sharded(key, shape, dtype, mesh)


@partial(jax.jit, static_argnames=("shape", "dtype", "mesh"))
def _probes_sharded(key, shape, dtype, mesh):
    return _sh.constrain(jax.random.rademacher(key, shape).astype(dtype), mesh)


def log_likelihood(velocity: Field | Callable, x, *, prior_log_prob: Callable, t_start=0.0,
                   t_end, n_steps: int = 200, method: str = "rk4", divergence: str = "exact",
                   key=None, n_probes: int = 8, shard: _sh.ShardSpec = False) -> LogLikelihood:
    """ln q_model(x) = ln P_{t_end}(x(t_end)) + ∫ ∇·ν dt along the flow from ``t_start``.

    Args:
      velocity: field ν(x, t) for one point (a :mod:`satjax.reverse` Field or a callable).
      x: points (N, d) at time ``t_start`` (usually 0, the data end).
      prior_log_prob: ln density at ``t_end`` for points (N, d) -> (N,) (e.g.
        ``P_tau.log_prob`` for the exact end marginal).
      t_start, t_end: integration interval in forward time.
      n_steps: fixed steps.
      method: "euler", "heun" or "rk4".
      divergence: "exact" (Jacobian trace) or "hutchinson" (needs ``key``).
      n_probes: Rademacher probes for Hutchinson (≥ 2, for a standard error).
      shard: split the N points (and their probes) over devices (``True``: all, or a mesh; see
        :mod:`satjax.sharding`); N must be divisible by the device count.

    Returns:
      LogLikelihood with per-point ``log_prob`` and ``stderr``.
    """
    if not callable(prior_log_prob):
        raise TypeError("`prior_log_prob` must be a callable y -> ln P(y)")
    fl = flow_with_log_density(velocity, x, t_start=t_start, t_end=t_end, n_steps=n_steps,
                               n_save=1, method=method, divergence=divergence, key=key,
                               n_probes=n_probes, shard=shard)
    xe, ell = fl.xs[-1], fl.ells[-1]
    est = prior_log_prob(xe)[:, None] + ell  # (N, P)
    n_est = est.shape[1]
    se = (jnp.zeros_like(est[:, 0]) if n_est == 1
          else jnp.std(est, axis=1, ddof=1) / jnp.sqrt(n_est))
    lp = jnp.mean(est, axis=1)
    return LogLikelihood(log_prob=lp, stderr=se, x_end=xe,
                         finite=jnp.all(jnp.isfinite(lp)) & jnp.all(jnp.isfinite(xe)))
