"""The forward Fokker–Planck process: marginals P_t, fields, samples and the forward SDE.

    ∂_t P_t = −∇·(ν_t P_t),   ν_t = f_t − T_t ∇ln P_t                                  (1)
    dx = f_t(x) dt + sqrt(2 T_t) dB_t                                                  (2)

Functional entry points over any :class:`~satjax.protocol.Protocol` and data distribution
(docs/theory.md §1–2): they validate the arguments eagerly and call the protocol, which for a
linear force evaluates the exact Gaussian-mixture marginal with the tiled engine
(:mod:`satjax.engine`, Eq. 17). Points have shape (N, d); ``t`` is a scalar in [0, τ].
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp

from satjax import sharding as sh
from satjax._util import as_float, check_time
from satjax.engine import Fields
from satjax.protocol import OUTPUTS, Protocol, draws
from satjax.pytree import Node


def check(protocol, data, t=None) -> None:
    """Eager TypeError/ValueError for a protocol and data that do not fit (and t ∉ [0, τ])."""
    if not isinstance(protocol, Protocol):
        raise TypeError(f"`protocol` must be a satjax Protocol (schedule, force or OT "
                        f"geodesic); got {type(protocol).__name__}")
    protocol.check(data)
    if t is not None:
        check_time(t, protocol.tau)


def marginal(protocol: Protocol, data, t):
    """The exact marginal P_t as a Distribution (a Gaussian mixture for linear forces, Eq. 17)."""
    check(protocol, data, t)
    return protocol.marginal(data, as_float(t))


@partial(jax.jit, static_argnames=("outputs",))
def _fields(protocol, data, x, t, outputs):
    return protocol.fields(data, x, as_float(t), outputs)


def fields(protocol: Protocol, data, x, t, *, outputs=OUTPUTS) -> Fields:
    """log P_t(x), ∇ln P_t(x) and ν_t(x) in one pass (docs/theory.md §2).

    Args:
      protocol: a Protocol.
      data: the data distribution q = P_0.
      x: points (..., d).
      t: time in [0, τ].
      outputs: the subset of ("log_prob", "score", "velocity") to compute (fewer is cheaper).

    Returns:
      :class:`satjax.engine.Fields` with the requested entries.
    """
    check(protocol, data, t)
    x = jnp.asarray(x)
    if x.shape[-1:] != (data.dim,):
        raise ValueError(f"points must have trailing dimension {data.dim}; got shape {x.shape}")
    outputs = tuple(outputs)
    bad = [o for o in outputs if o not in OUTPUTS]
    if bad or not outputs:
        raise ValueError(f"`outputs` must be a non-empty subset of {OUTPUTS}; got {outputs}")
    return _fields(protocol, data, x, t, outputs)


def log_density(protocol, data, x, t):
    """log P_t(x) (Eq. 17)."""
    return fields(protocol, data, x, t, outputs=("log_prob",)).log_prob


def score(protocol, data, x, t):
    """∇ ln P_t(x)."""
    return fields(protocol, data, x, t, outputs=("score",)).score


def velocity(protocol, data, x, t):
    """ν_t(x) = f_t(x) − T_t ∇ ln P_t(x) (Eq. 1), in the stable form of docs/theory.md §2."""
    return fields(protocol, data, x, t, outputs=("velocity",)).velocity


@partial(jax.jit, static_argnames=("n", "mesh"))
def _sample(key, protocol, data, t, n, mesh):
    return sh.constrain(protocol.sample(key, data, t, n), mesh)


def sample_marginal(key, protocol: Protocol, data, t, n: int, *,
                    shard: sh.ShardSpec = False) -> jax.Array:
    """n exact samples of P_t, shape (n, d).

    ``shard``: split the samples over devices (``True``: all, or a mesh; see
    :mod:`satjax.sharding`); the numbers equal the unsharded ones; n must be divisible by the
    device count.
    """
    check(protocol, data, t)
    mesh = sh.resolve(shard)
    sh.check_divisible(n, mesh)
    return _sample(key, protocol, data, as_float(t), int(n), mesh)


class Trajectory(Node):
    """Saved states of a simulation: ``ts`` (S,), ``xs`` (S, N, d), ``finite`` flag."""

    ts: jax.Array
    xs: jax.Array
    finite: jax.Array


@partial(jax.jit, static_argnames=("n_steps", "n_save", "mesh"))
def _forward_sde(key, protocol, x0, t0, t1, n_steps, n_save, mesh=None):
    dt = (t1 - t0) / n_steps
    every = n_steps // n_save

    def step(x, inp):
        i, k = inp
        t = t0 + i * dt
        drift = jax.vmap(protocol.force, in_axes=(0, None))(x, t)
        noise = sh.constrain(jax.random.normal(k, x.shape, x.dtype), mesh)
        x = sh.constrain(x + drift * dt + protocol.diffusion(t) * jnp.sqrt(dt) * noise, mesh)
        return x, x

    keys = jax.random.split(key, n_steps)
    _, xs = jax.lax.scan(step, x0, (jnp.arange(n_steps), keys))
    idx = jnp.arange(1, n_save + 1) * every - 1
    saved = jnp.concatenate([x0[None], xs[idx]], axis=0)
    ts = t0 + jnp.concatenate([jnp.zeros((1,), dt.dtype), (idx + 1) * dt])
    return Trajectory(ts=ts, xs=saved, finite=jnp.all(jnp.isfinite(saved)))


def forward_sde(key, protocol: Protocol, x0, *, t0=0.0, t1=None, n_steps: int = 1000,
                n_save: int = 10, shard: sh.ShardSpec = False) -> Trajectory:
    """Euler–Maruyama for dx = f_t(x) dt + sqrt(2 T_t) dB (Eq. 2) from t0 to t1.

    Args:
      key: PRNG key.
      protocol: a diffusion (``protocol.stochastic``): schedule or linear force.
      x0: initial points (N, d) at time t0.
      t0, t1: start and end times in [0, τ] (t1 defaults to τ; schedules with m_τ = 0 have a
        singular force at τ: stop short of it).
      n_steps: Euler–Maruyama steps (weak order 1).
      n_save: number of saved states after t0 (``n_steps`` must be a multiple of it).
      shard: split the N paths over devices (``True``: all, or a mesh; see
        :mod:`satjax.sharding`); N must be divisible by the device count.

    Returns:
      Trajectory with ``ts`` (n_save + 1,), ``xs`` (n_save + 1, N, d) and ``finite``.
    """
    if not isinstance(protocol, Protocol) or not protocol.stochastic:
        raise TypeError("the forward SDE needs a diffusion protocol (schedule or linear force); "
                        f"got {type(protocol).__name__}")
    t1 = protocol.tau if t1 is None else t1
    check_time(t0, protocol.tau, "t0")
    check_time(t1, protocol.tau, "t1")
    x0 = jnp.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"`x0` must have shape (N, d); got {x0.shape}")
    if protocol.dim is not None and x0.shape[1] != protocol.dim:
        raise ValueError(f"protocol acts in {protocol.dim} dimensions but x0 has {x0.shape[1]}")
    if n_steps < 1 or n_save < 1 or n_steps % n_save:
        raise ValueError(f"`n_steps` ({n_steps}) must be a positive multiple of `n_save` ({n_save})")
    mesh = sh.resolve(shard)
    x0 = sh.shard_samples(x0, mesh)
    return _forward_sde(key, protocol, x0, as_float(t0), as_float(t1), n_steps, n_save, mesh)


__all__ = ["Fields", "Trajectory", "check", "draws", "fields", "forward_sde", "log_density",
           "marginal", "sample_marginal", "score", "velocity"]
