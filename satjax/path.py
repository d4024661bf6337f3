"""The cost of a forward path: w_D, c_2, the path length and the hierarchy of Eq. 68 / 92.

    w_D = ∫ T_t Ṡ_tot dt = ∫ E‖ν_t‖² dt  ≥  c_2 = ∫ v_2² dt  ≥  L_τ²/τ  ≥  W_2(P_0, P_τ)²/τ,
    L_τ = ∫ v_2 dt                                                     (36, 65–68, 92)

One function, :func:`path_cost`, for every protocol and data; the estimator
(:mod:`satjax.estimators`) decides how expectations and the W2 speed are computed and each
integral comes back as an :class:`~satjax.estimate.Estimate` (docs/theory.md §5, §8).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from satjax._util import gauss_legendre
from satjax.estimate import Estimate, Verdict, compare
from satjax.estimators import integrate_nodes, node_means, rates_at_nodes, resolve
from satjax.pytree import Node
from satjax.thermo import entropy_from_rates, interval


class PathCost(Node):
    """Costs of a forward path on [t0, t1] (Gauss–Legendre nodes ``ts``, weights ``wts``).

    Per node: ``kinetic`` = E‖ν‖² = T Ṡ_tot, ``speed_sq`` = v_2², ``temperature``.
    Integrals (Estimates): ``wD``, ``c2`` (kind "lower" with ``upper`` = w_D when the speed is
    a projection estimate), ``path_length`` (L_τ), ``S_tot``. ``c2_wD_covariance``: Cov of the
    two Monte-Carlo integrals (shared draws; 0 otherwise). ``rotational_gap``: held-out minus
    in-sample rotational part of a projection, integrated (its over-fitting; 0 otherwise).
    """

    ts: jax.Array
    wts: jax.Array
    kinetic: jax.Array
    speed_sq: jax.Array
    temperature: jax.Array
    wD: Estimate
    c2: Estimate
    path_length: Estimate
    S_tot: Estimate
    c2_wD_covariance: jax.Array
    rotational_gap: jax.Array
    finite: jax.Array
    converged: jax.Array


def path_cost_kernel(protocol, data, est, t0, t1, n_time: int) -> PathCost:
    """The traceable core of :func:`path_cost` for a prepared estimator (no eager checks):
    for use inside ``jax.jit``/``jax.grad`` (e.g. schedule optimisation)."""
    ts, wts = gauss_legendre(n_time, t0, t1)
    r = rates_at_nodes(est, protocol, data, ts, speed=True)
    per = est.per_sample
    ep = entropy_from_rates(protocol, r, ts, wts, t0, per, est.method)
    c2, c2_se, c2_paths = integrate_nodes(wts, r.speed_sq, per)
    speed_sq = node_means(r.speed_sq, per)
    zero = jnp.zeros_like(c2)
    wD_err = zero if r.kinetic_change is None else jnp.abs(wts @ r.kinetic_change)
    c2_err = zero if r.speed_change is None else jnp.abs(wts @ r.speed_change)
    kind = est.speed_kind(protocol, data)
    cov = zero
    gap = zero
    if per:
        _, _, wd_paths = integrate_nodes(wts, r.kinetic, per)
        n = wd_paths.shape[0]
        cov = jnp.cov(c2_paths, wd_paths)[0, 1] / n
    if r.rotational_in_sample is not None:
        held = jnp.mean(r.kinetic - r.speed_sq, -1)
        gap = wts @ (held - r.rotational_in_sample)
    speed = jnp.sqrt(jnp.maximum(speed_sq, 0.0))
    length = wts @ speed
    if per:  # delta method per path: L_i ≈ Σ_t w_t v_2(t)² paths / (2 v_2(t)) + const
        lin = wts @ (r.speed_sq / (2.0 * jnp.maximum(speed, 1e-300))[:, None])
        length_se = jnp.std(lin, ddof=1) / jnp.sqrt(lin.shape[0])
    else:
        length_se = zero
    wD = ep.wD.replace(error=wD_err)
    c2_est = Estimate(value=c2, stderr=c2_se, error=c2_err, method=est.method, kind=kind,
                      upper=wD.value if kind == "lower" else None)
    return PathCost(ts=ts, wts=wts, kinetic=ep.kinetic, speed_sq=speed_sq,
                    temperature=ep.temperature, wD=wD, c2=c2_est,
                    path_length=Estimate(value=length, stderr=length_se, error=zero,
                                         method=est.method, kind=kind),
                    S_tot=ep.S_tot, c2_wD_covariance=cov, rotational_gap=gap,
                    finite=ep.finite & jnp.isfinite(c2),
                    converged=jnp.all(r.converged) if r.converged is not None
                    else jnp.asarray(True))


_path_cost = jax.jit(path_cost_kernel, static_argnames=("n_time",))


def path_cost(protocol, data, *, t0=0.0, t1=None, n_time: int = 32, estimator="auto",
              key=None, check_time: bool = True) -> PathCost:
    """w_D, c_2, L_τ and S_tot of the forward path of ``data`` under ``protocol``
    (Eq. 36–40, 65–68).

    Args:
      protocol: a Protocol (schedule, force, geodesic).
      data: q.
      t0, t1: interval (default [0, τ]).
      n_time: Gauss–Legendre nodes in time.
      estimator: "auto", "exact", "quadrature", "grid", "mc" or an Estimator object
        (:func:`satjax.estimators.resolve`).
      key: PRNG key for Monte Carlo.
      check_time: also integrate with n_time // 2 nodes (same estimator, same draws) and add
        the change to the ``error`` of w_D, c_2 and L_τ (the time-resolution check).

    Returns:
      :class:`PathCost`; differentiable with respect to the protocol's and data's leaves.

    Raises:
      ValueError, TypeError: mismatched protocol and data, bad interval, an estimator that
        does not apply.
    """
    t0, t1 = interval(protocol, data, t0, t1)
    if not isinstance(n_time, int) or n_time < 2:
        raise ValueError(f"`n_time` must be an int >= 2; got {n_time!r}")
    est = resolve(data, protocol, estimator, key=key)
    ts, _ = gauss_legendre(n_time, t0, t1)
    est = est.prepare(protocol, data, ts)
    pc = _path_cost(protocol, data, est, t0, t1, n_time)
    if check_time and n_time >= 8:
        half = _path_cost(protocol, data, est, t0, t1, n_time // 2)

        def widen(e, e_half):
            return e.replace(error=jnp.maximum(e.error, jnp.abs(e.value - e_half.value)))

        pc = pc.replace(wD=widen(pc.wD, half.wD), c2=widen(pc.c2, half.c2),
                        path_length=widen(pc.path_length, half.path_length))
    return pc


def endpoint_w2sq(protocol, data, *, key=None, n_samples: int = 2000) -> Estimate:
    """W_2(P_0, P_τ)²: exact in 1-D (comonotone quadrature), Eq. 59 for Gaussian ends, else
    exact discrete OT (POT) between ``n_samples`` samples of each end — an estimate biased
    upwards by the finite sample, reported with kind "upper"."""
    from satjax.geometry import distances

    p_end = protocol.reverse_start(data)
    if data.dim == 1:
        return Estimate.exact(distances.w2_squared_1d(data, p_end), "quadrature-1d")
    if data.n_components == 1 and getattr(p_end, "n_components", 0) == 1:
        v = distances.w2_squared_gaussian(data.means[0], data.full_cov()[0], p_end.means[0],
                                          p_end.full_cov()[0])
        return Estimate.exact(v, "closed-form (Eq. 59)")
    if key is None:
        raise ValueError("W2 between n-D mixtures is estimated from samples: pass a PRNG `key`")
    k1, k2 = jax.random.split(key)
    x, y = data.sample(k1, n_samples), p_end.sample(k2, n_samples)
    v = distances.ot_cost(x, y, p=2, backend="pot").cost
    return Estimate(value=v, stderr=jnp.zeros_like(v), error=jnp.zeros_like(v),
                    method=f"pot-samples (n={n_samples}; biased upward)", kind="upper")


def hierarchy(pc: PathCost, w2sq: Estimate, tau) -> dict:
    """The falsifiable part of Eq. 68: L_τ²/τ ≥ W_2²/τ (Benamou–Brenier), with the end-point
    W_2² computed independently of the path. (w_D ≥ c_2 and c_2 ≥ L_τ²/τ are identities of the
    projection and of Cauchy–Schwarz and are not checks.)"""
    L2 = Estimate(value=pc.path_length.value**2 / tau,
                  stderr=2 * pc.path_length.value * pc.path_length.stderr / tau,
                  error=2 * pc.path_length.value * pc.path_length.error / tau,
                  method=pc.path_length.method)
    W = w2sq.replace(value=w2sq.value / tau, stderr=w2sq.stderr / tau, error=w2sq.error / tau)
    v = compare(W, L2)
    if v.status == "violated" and (w2sq.kind == "upper" or pc.path_length.kind == "lower"):
        v = Verdict(status="inconclusive", margin=v.margin, se=v.se,
                    reason="W2² is a sample estimate biased upward or L a lower estimate")
    return {"L^2/tau>=W2^2/tau": v}


__all__ = ["PathCost", "endpoint_w2sq", "hierarchy", "path_cost", "path_cost_kernel"]
