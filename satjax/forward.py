"""The forward Fokker–Planck process of Gaussian-mixture data under a linear force.

P_t = Σ_k w_k N(Φ_t μ_k + c_t, Φ_t S_k Φ_tᵀ + Σ_t) (Eq. 17), with its log-density, score
∇ ln P_t and probability velocity ν_t = f_t − T_t ∇ ln P_t (Eq. 1) evaluated in the stable
responsibility-weighted form of PAPER.md section 2. All functions are pure and jit-compiled; the
protocol and the data are pytree arguments, so new parameter values never recompile.
Points have shape (..., d); ``t`` is a scalar in [0, τ].

Also the forward SDE dx = f_t(x) dt + sqrt(2 T_t) dB (Eq. 2) by Euler–Maruyama in ``lax.scan``.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

from satjax import sharding as _sh
from satjax._util import as_float, check_time
from satjax.forces import LinearForce
from satjax.mixtures import OUTPUTS, GaussianMixture, evaluate


def _check(protocol: LinearForce, data: GaussianMixture, t=None):
    if not isinstance(protocol, LinearForce):
        raise TypeError(f"`protocol` must be a LinearForce (schedule or force); "
                        f"got {type(protocol).__name__}")
    if not isinstance(data, GaussianMixture):
        raise TypeError(f"`data` must be a GaussianMixture; got {type(data).__name__}")
    if protocol.dim is not None and protocol.dim != data.dim:
        raise ValueError(f"protocol acts in {protocol.dim} dimensions but data has "
                         f"dimension {data.dim}")
    if t is not None:
        check_time(t, protocol.tau)


def marginal(protocol: LinearForce, data: GaussianMixture, t) -> GaussianMixture:
    """The exact marginal P_t as a Gaussian mixture (Eq. 17)."""
    _check(protocol, data, t)
    return data.push(protocol.transition(as_float(t)))


def marginal_and_rate(protocol: LinearForce, data: GaussianMixture, t):
    """(P_t, ∂_t P_t) as mixtures: the rate holds the components' mean and covariance velocities."""
    _check(protocol, data, t)
    tr, dtr = protocol.transition_and_rate(as_float(t))
    return jax.jvp(data.push, (tr,), (dtr,))


@partial(jax.jit, static_argnames=("chunk", "outputs"))
def _fields(protocol, data, x, t, chunk, outputs=OUTPUTS):
    t = as_float(t)
    marg, rate = jax.jvp(data.push, *[(v,) for v in protocol.transition_and_rate(t)])
    return evaluate(marg, x, rate=rate, generator=protocol.rotation_generator(t), chunk=chunk,
                    outputs=outputs)


def fields(protocol: LinearForce, data: GaussianMixture, x, t, *, chunk: Optional[int] = None,
           outputs=OUTPUTS):
    """log P_t(x), ∇ ln P_t(x) and ν_t(x) in one pass (PAPER.md section 2).

    Args:
      protocol: schedule or linear force.
      data: the data distribution q = P_0 as a Gaussian mixture.
      x: points (..., d).
      t: time in [0, τ].
      chunk: components per chunk of the streaming log-sum-exp (None: automatic, memory bounded).
      outputs: the subset of ("log_prob", "score", "velocity") to compute (fewer is cheaper).

    Returns:
      dict with the requested ``log_prob`` (...,), ``score`` (..., d), ``velocity`` (..., d).
    """
    _check(protocol, data, t)
    x = jnp.asarray(x)
    if x.shape[-1:] != (data.dim,):
        raise ValueError(f"points must have trailing dimension {data.dim}; got shape {x.shape}")
    return _fields(protocol, data, x, t, chunk, tuple(outputs))


def log_density(protocol, data, x, t, *, chunk=None):
    """log P_t(x) (Eq. 17)."""
    return fields(protocol, data, x, t, chunk=chunk, outputs=("log_prob",))["log_prob"]


def score(protocol, data, x, t, *, chunk=None):
    """∇ ln P_t(x)."""
    return fields(protocol, data, x, t, chunk=chunk, outputs=("score",))["score"]


def velocity(protocol, data, x, t, *, chunk=None):
    """ν_t(x) = f_t(x) − T_t ∇ ln P_t(x) (Eq. 1), in the stable form of section 2."""
    return fields(protocol, data, x, t, chunk=chunk, outputs=("velocity",))["velocity"]


@partial(jax.jit, static_argnames=("n", "mesh"))
def _sample_sharded(key, marg, n, mesh):
    return _sh.constrain(marg.sample(key, n), mesh)  # each device draws its own block


def sample_marginal(key, protocol, data, t, n: int, *, shard: _sh.ShardSpec = False) -> jax.Array:
    """n exact samples of P_t (Eq. 17), shape (n, d).

    ``shard``: split the samples over devices (``True``: all, or a mesh; see
    :mod:`satjax.sharding`); each device draws its own block, the numbers equal the unsharded
    ones; n must be divisible by the device count.
    """
    marg = marginal(protocol, data, t)
    mesh = _sh.resolve(shard)
    if mesh is None:
        return marg.sample(key, n)
    _sh.check_divisible(n, mesh)
    return _sample_sharded(key, marg, n, mesh)


class Trajectory(struct.PyTreeNode):
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
        noise = _sh.constrain(jax.random.normal(k, x.shape, x.dtype), mesh)
        x = _sh.constrain(x + drift * dt + protocol.diffusion(t) * jnp.sqrt(dt) * noise, mesh)
        return x, x

    keys = jax.random.split(key, n_steps)
    _, xs = jax.lax.scan(step, x0, (jnp.arange(n_steps), keys))
    idx = jnp.arange(1, n_save + 1) * every - 1
    saved = jnp.concatenate([x0[None], xs[idx]], axis=0)
    ts = t0 + jnp.concatenate([jnp.zeros((1,), dt.dtype), (idx + 1) * dt])
    return Trajectory(ts=ts, xs=saved, finite=jnp.all(jnp.isfinite(saved)))


def forward_sde(key, protocol: LinearForce, x0, *, t0=0.0, t1=None, n_steps: int = 1000,
                n_save: int = 10, shard: _sh.ShardSpec = False) -> Trajectory:
    """Euler–Maruyama for dx = f_t(x) dt + sqrt(2 T_t) dB (Eq. 2) from t0 to t1.

    Args:
      key: PRNG key.
      protocol: schedule or linear force.
      x0: initial points (N, d) at time t0.
      t0, t1: start and end times in [0, τ] (t1 defaults to τ; schedules with m_τ = 0 have a
        singular force at τ: stop short of it).
      n_steps: Euler–Maruyama steps (weak order 1).
      n_save: number of saved states after t0 (``n_steps`` must be a multiple of it).
      shard: split the N paths over devices (``True``: all, or a mesh; see
        :mod:`satjax.sharding`): x0 is placed with its rows split, each device draws the noise
        of its own paths (the same numbers as unsharded), and ``xs`` stays split along N.
        N must be divisible by the device count.

    Returns:
      Trajectory with ``ts`` (n_save + 1,), ``xs`` (n_save + 1, N, d) and ``finite``.
    """
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
    mesh = _sh.resolve(shard)
    x0 = _sh.shard_samples(x0, mesh)
    return _forward_sde(key, protocol, x0, as_float(t0), as_float(t1), n_steps, n_save, mesh)
