"""The cost of a forward path: w_D, c_2, path length, S_tot and the hierarchy of Eq. 68/92.

    w_D = ∫ T_t Ṡ_tot dt = ∫ E‖ν_t‖² dt  ≥  c_2 = ∫ v_2² dt  ≥  L_τ²/τ  ≥  W_2(P_0, P_τ)²/τ,
    L_τ = ∫ v_2 dt                                                           (36, 65–68, 92)

Expectations: closed form for single-Gaussian data, quadrature in 1-D, Monte Carlo with common
random numbers in n-D (standard errors reported); v_2² from :mod:`satjax.geometry.speed`.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

from satjax import thermo
from satjax._util import map_over_nodes
from satjax.forces import LinearForce
from satjax.forward import marginal_and_rate
from satjax.geometry import speed
from satjax.mixtures import GaussianMixture


class PathCost(struct.PyTreeNode):
    """Costs of a forward path on [t0, t1] (Gauss–Legendre nodes ``ts``, weights ``wts``).

    Per node: ``kinetic`` = E‖ν‖² = T Ṡ_tot, ``speed_sq`` = v_2², ``temperature``.
    Integrals: ``wD``, ``c2``, ``path_length`` (L_τ), ``S_tot`` (+∞ when T_{t0} = 0), with
    Monte-Carlo standard errors ``wD_stderr``, ``c2_stderr`` (0 when exact).
    ``method``: how expectations were taken; ``speed_exact``: whether v_2² is exact (conservative
    velocity or Gaussian P_t) or a projected lower estimate.
    """

    ts: jax.Array
    wts: jax.Array
    kinetic: jax.Array
    speed_sq: jax.Array
    temperature: jax.Array
    wD: jax.Array
    wD_stderr: jax.Array
    c2: jax.Array
    c2_stderr: jax.Array
    path_length: jax.Array
    S_tot: jax.Array
    S_tot_finite: jax.Array
    finite: jax.Array
    method: str = struct.field(pytree_node=False, default="quadrature")
    speed_exact: bool = struct.field(pytree_node=False, default=True)


def _skew(protocol, t):
    K = protocol.rotation_generator(t)
    return None if K is None else 0.5 * (K - K.T)


@partial(jax.jit, static_argnames=("n_time", "n_points", "chunk", "method", "degree", "conservative"))
def _path_cost(protocol, data, t0, t1, mcdraws, n_time, n_points, chunk, method, degree,
               conservative):
    ep = thermo._entropy_production(protocol, data, t0, t1, mcdraws, n_time, n_points, chunk,
                                    method)
    ts, wts = ep.ts, ep.wts
    corr_err = jnp.zeros_like(ep.wD)
    if conservative:
        speed_sq = ep.kinetic
    elif method == "gaussian":
        def one(t):
            marg, rate = marginal_and_rate(protocol, data, t)
            return speed.lyapunov_speed_sq(rate.means[0], marg.full_cov()[0], rate.full_cov()[0])
        speed_sq = jax.vmap(one)(ts)
    else:
        # ν = ∇(·) + K_skew x: project only the rotational part of the force (speed.py).
        def corr(t):
            marg = marginal_and_rate(protocol, data, t)[0]
            x = marg.sample_given(mcdraws.idx, mcdraws.eps)
            r = x @ _skew(protocol, t).T
            grad_part, _ = speed.project_onto_gradients(x, r, degree=degree)
            return jnp.sum(grad_part**2, -1) - jnp.sum(r**2, -1)
        c = map_over_nodes(corr, ts, mcdraws.eps.size)  # (n_time, N)
        speed_sq = ep.kinetic + c.mean(1)
        corr_err = jnp.std(wts @ c, ddof=1) / jnp.sqrt(c.shape[1])
    c2 = wts @ speed_sq
    c2_err = jnp.sqrt(ep.wD_stderr**2 + corr_err**2)
    length = wts @ jnp.sqrt(jnp.maximum(speed_sq, 0.0))
    return PathCost(ts=ts, wts=wts, kinetic=ep.kinetic, speed_sq=speed_sq,
                    temperature=ep.temperature, wD=ep.wD, wD_stderr=ep.wD_stderr, c2=c2,
                    c2_stderr=c2_err, path_length=length, S_tot=ep.S_tot,
                    S_tot_finite=ep.S_tot_finite, finite=ep.finite & jnp.isfinite(c2),
                    method=method, speed_exact=conservative or method == "gaussian")


def path_cost(protocol: LinearForce, data: GaussianMixture, *, t0=0.0, t1=None, n_time: int = 64,
              method: str = "auto", key=None, n_samples: int = 4096, n_points: int = 4096,
              degree: int = 4, chunk: Optional[int] = None, shard=False) -> PathCost:
    """w_D, c_2, L_τ and S_tot of the forward path of ``data`` under ``protocol`` (Eq. 36–40, 68).

    Args:
      protocol: schedule or linear force.
      data: q as a Gaussian mixture.
      t0, t1: interval (default [0, τ]).
      n_time: Gauss–Legendre nodes in time.
      method: "auto" | "gaussian" | "quadrature" | "mc" (see :func:`thermo.entropy_production`).
      key: PRNG key (required for "mc").
      n_samples: Monte-Carlo samples (common to all nodes).
      n_points: quadrature points (1-D).
      degree: polynomial degree of the gradient projection for rotational forces (n-D mixtures).
      chunk: components per chunk (None: automatic, memory bounded).
      shard: for "mc", split the samples over devices (``True``: all devices, or a mesh; see
        :mod:`satjax.sharding`); n_samples must be divisible by the device count.

    Returns:
      PathCost. For conservative protocols c_2 = w_D exactly (v_2 = ‖ν‖ in L²(P_t)).
    """
    if degree < 1:
        raise ValueError(f"`degree` must be >= 1; got {degree}")
    t0, t1, method, d = thermo.prepare(protocol, data, t0, t1, method, key, n_samples,
                                       shard=shard)
    conservative = bool(protocol.conservative) or data.dim == 1
    return _path_cost(protocol, data, t0, t1, d, n_time, n_points, chunk, method, int(degree),
                      conservative)


def endpoint_w2sq(protocol: LinearForce, data: GaussianMixture, *, key=None, n_samples: int = 2000):
    """W_2(P_0, P_τ)² and how it was computed: exact in 1-D, Eq. 59 for Gaussian data, and
    exact discrete OT (POT) between ``n_samples`` samples of each end otherwise (an estimate,
    biased upwards by the finite sample)."""
    from satjax.geometry import distances

    p_end = marginal_and_rate(protocol, data, protocol.tau)[0]
    if data.dim == 1:
        return float(distances.w2_squared_1d(data, p_end)), "exact-1d"
    if data.n_components == 1:
        return float(distances.w2_squared_gaussian(data.means[0], data.full_cov()[0],
                                                   p_end.means[0], p_end.full_cov()[0])), "gaussian"
    if key is None:
        raise ValueError("W2 between n-D mixtures is estimated from samples: pass a PRNG `key`")
    k1, k2 = jax.random.split(key)
    x, y = data.sample(k1, n_samples), p_end.sample(k2, n_samples)
    return float(distances.ot_cost(x, y, p=2, backend="pot").cost), f"pot-samples-{n_samples}"


def path_report(protocol: LinearForce, data: GaussianMixture, *, key=None, n_time: int = 64,
                n_samples: int = 4096) -> dict:
    """JSON-ready summary of :func:`path_cost` plus W_2(P_0, P_τ)² and the hierarchy of Eq. 68."""
    k1, k2 = jax.random.split(key) if key is not None else (None, None)
    pc = path_cost(protocol, data, key=k1, n_time=n_time, n_samples=n_samples)
    if not bool(pc.finite):
        raise FloatingPointError("path cost is not finite (NaN or inf in E‖ν‖²)")
    w2sq, w2_method = endpoint_w2sq(protocol, data, key=k2)
    tau = float(protocol.tau)
    wD, c2, L = float(pc.wD), float(pc.c2), float(pc.path_length)
    err = 4.0 * (float(pc.wD_stderr) + float(pc.c2_stderr))

    def geq(a, b, slack=0.0):
        return bool(a >= b - slack - 1e-9 * max(abs(a), abs(b)))

    hierarchy = {"wD>=c2": geq(wD, c2, err), "c2>=L^2/tau": geq(c2, L**2 / tau, err),
                 "L^2/tau>=W2^2/tau": geq(L**2 / tau, w2sq / tau, err + (0.0 if w2_method in ("exact-1d", "gaussian") else 0.05 * w2sq / tau))}
    return {
        "wD": wD, "wD_stderr": float(pc.wD_stderr), "c2": c2, "c2_stderr": float(pc.c2_stderr),
        "path_length": L, "length_sq_over_tau": L**2 / tau,
        "S_tot": float(pc.S_tot), "S_tot_finite": bool(pc.S_tot_finite),
        "W2sq": w2sq, "W2sq_over_tau": w2sq / tau, "W2sq_method": w2_method,
        "method": pc.method, "speed_exact": bool(pc.speed_exact), "hierarchy": hierarchy,
        "t": [float(v) for v in pc.ts], "kinetic": [float(v) for v in pc.kinetic],
        "speed_sq": [float(v) for v in pc.speed_sq],
    }


def flow_kinetic_energy(velocity, x_start, *, t_start, t_end=0.0, n_steps: int = 100):
    """c_2 of a (learned) flow by Monte Carlo along its trajectories (Eq. G20).

    Integrates dx/dt = u(x, t) from ``x_start`` at ``t_start`` to ``t_end`` with RK4 and returns
    (∫ E‖u_t(x_t)‖² dt over |t_end − t_start| by the trapezoid rule on the steps, its standard
    error over trajectories). For a deterministic flow from the right start this is the
    kinetic energy ∫ E_{P_t}‖u_t‖² dt, which equals c_2 when u is a gradient field.
    """
    from satjax import reverse as R

    traj = R.solve_ode(velocity, x_start, t_start=t_start, t_end=t_end, method="rk4",
                       n_steps=n_steps, n_save=n_steps)
    fld = R.as_field(velocity)
    sq = jax.vmap(lambda xs, t: jnp.sum(jax.vmap(fld, in_axes=(0, None))(xs, t) ** 2, -1))(
        traj.xs, traj.ts)  # (S, N)
    h = jnp.abs(traj.ts[1] - traj.ts[0])
    per_path = h * (jnp.sum(sq, 0) - 0.5 * (sq[0] + sq[-1]))
    n = per_path.shape[0]
    return jnp.mean(per_path), jnp.std(per_path, ddof=1) / jnp.sqrt(n)
