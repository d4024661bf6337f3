"""The speed-accuracy relation of a fixed-step sampler of the exact velocity (1-D; docs/theory.md
§6, Eq. 77).

With exact dynamics every protocol with the same end points gives the same η (docs/theory.md
§7). A real sampler integrates the probability-flow ODE with N steps of Euler, Heun or RK4, so
its generated law p_N = Φ_N # P̃_τ differs from the exact p = Φ # P̃_τ — and that difference
depends on the protocol. This module measures it with nothing else changed:

    ΔW_1(N) = W_1(q, p_N) − W_1(P_τ, P̃_τ),   η(N) = ΔW_1(N)² / (τ D_0)

D_0 and W_1(P_τ, P̃_τ) are the exact ones of :func:`satjax.bound.bound` (they do not involve the
sampler). W_1(q, p_N) = ∫₀¹ |F_{p_N}⁻¹(u) − F_q⁻¹(u)| du is the midpoint rule over M quantile
levels of the N-step images of P̃_τ's quantiles, sorted (the empirical quantiles of p_N; exact
as M → ∞ even where the N-step map is not monotone); its resolution error is the change at
M/2. Deterministic: no sampling noise.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from satjax.estimate import Estimate

__all__ = ["SOLVERS", "sampler_c2", "sampler_eta"]

SOLVERS = ("euler", "heun", "rk4")


def _check(what, data, solver, n_steps, min_steps, n_levels):
    """The arguments both samplers share: 1-D data, a known solver, int sizes."""
    if data.dim != 1:
        raise ValueError(f"{what}: 1-D data only; got dimension {data.dim}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown `solver` {solver!r}; expected one of {', '.join(SOLVERS)}")
    for name, v, lo in (("n_steps", n_steps, min_steps), ("n_levels", n_levels, 64)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"`{name}` must be an int >= {lo}; got {v!r}")


def sampler_eta(protocol, data, perturbation, *, solver: str, n_steps: int,
                n_levels: int = 8192, exact=None, velocity=None) -> dict:
    """η(N), ΔW_1(N) and W_1(q, p_N) of the N-step ``solver`` (module docstring), 1-D data.

    Args:
      protocol: a protocol with a density (schedule, force, 1-D OT geodesic).
      data: 1-D Gaussian mixture q.
      perturbation: the perturbed start (:mod:`satjax.perturb`).
      solver: "euler", "heun" or "rk4"; n_steps: N ≥ 1 equal steps in t from τ to 0.
      n_levels: quantile levels M (even; M/2 gives the resolution error).
      exact: a :class:`satjax.bound.BoundResult` of the same protocol, data and perturbation
        (computed when not given; reuse it across solvers and N).
      velocity: the field the sampler integrates (:class:`satjax.reverse.Field`, e.g. a
        trained model in the paper's time); default the protocol's exact velocity. With a
        learned field, p_N is the generator's law from P̃_τ and η(N) its η (Eq. 77): learning
        and discretisation errors together.

    Returns:
      {"eta", "dW1", "W1_end": Estimate (``error`` the change at M/2), "eta_exact", "dW1_exact",
      "W1_start", "D0": floats of the exact relation, "solver", "n_steps"}; η is NaN where D_0
      is infinite (the relation is vacuous).

    Raises:
      ValueError: data not 1-D, unknown solver, bad sizes.
    """
    from satjax import bound as B

    _check("sampler_eta computes W1 from quantiles", data, solver, n_steps, 1, n_levels)
    if n_levels % 2:
        raise ValueError(f"`n_levels` must be even; got {n_levels}")
    r = B.bound(protocol, data, perturbation) if exact is None else exact
    s = r.summary()
    start = perturbation.start(protocol.reverse_start(data))
    from satjax.learn.quality import w1_quantile_images
    from satjax.reverse import exact_velocity

    learned = velocity is not None
    velocity = exact_velocity(protocol, data) if velocity is None else velocity
    tau = float(protocol.tau)
    w_end, w_half = w1_quantile_images(velocity, start, data, tau, int(n_levels), int(n_steps),
                                       solver)
    d0 = s["D0"]
    dw1 = w_end - s["W1_start"]
    eta = dw1**2 / (tau * d0) if math.isfinite(d0) and d0 > 0 else math.nan
    err = abs(w_end - w_half)
    method = (f"{solver}, {n_steps} equal steps, {'given' if learned else 'exact'} velocity; "
              f"W1(q, p_N) by {n_levels} "
              f"quantile levels (error: change at {n_levels // 2})")
    eta_err = 2 * abs(dw1) * err / (tau * d0) if math.isfinite(eta) else math.nan
    return {"eta": Estimate(value=jnp.asarray(eta), stderr=jnp.asarray(0.0),
                            error=jnp.asarray(eta_err), method=method),
            "dW1": Estimate(value=jnp.asarray(dw1), stderr=jnp.asarray(0.0),
                            error=jnp.asarray(err), method=method),
            "W1_end": Estimate(value=jnp.asarray(w_end), stderr=jnp.asarray(0.0),
                               error=jnp.asarray(err), method=method),
            "eta_exact": s["eta"], "dW1_exact": s["dW1"], "W1_start": s["W1_start"],
            "D0": d0, "solver": solver, "n_steps": int(n_steps)}


def sampler_c2(protocol, data, *, solver: str, n_steps: int, n_levels: int = 8192,
               velocity=None) -> Estimate:
    """c_2 = ∫₀^τ E‖ν̂_t‖² dt of the flow the N-step ``solver`` generates from P_τ (Eq. G20; in 1-D
    every velocity field is a gradient, so c_2 is the kinetic cost of the trajectories).

    P_τ's midpoint quantile levels (M = ``n_levels``) are carried from τ to 0 and measured by
    :func:`satjax.measure.measure_flow` (E‖ν̂‖² at every step, trapezoid in t). Deterministic;
    ``error`` is the larger change at M/2 levels and at N/2 steps. ``velocity``: the field (a
    trained model); default the protocol's exact velocity, whose c_2 is the path's own.
    """
    from satjax.measure import measure_flow
    from satjax.reverse import exact_velocity

    _check("sampler_c2 carries quantile levels", data, solver, n_steps, 2, n_levels)
    learned = velocity is not None
    velocity = exact_velocity(protocol, data) if velocity is None else velocity
    p_end = protocol.reverse_start(data)
    tau = float(protocol.tau)

    def cost(m, n):
        x0 = p_end.quantile((jnp.arange(m) + 0.5) / m)[:, None]
        return measure_flow(velocity, x0, t_start=tau, t_end=0.0, n_steps=n,
                            method=solver)["cost"]

    m, n = int(n_levels), int(n_steps)
    value = cost(m, n)
    err = max(abs(value - cost(m // 2, n)), abs(value - cost(m, n // 2)))
    method = (f"{solver}, {n} equal steps, {'given' if learned else 'exact'} velocity, "
              f"{m} quantile levels of P_tau; trapezoid in t (error: change at {m // 2} levels "
              f"or {n // 2} steps)")
    return Estimate(value=jnp.asarray(value), stderr=jnp.asarray(0.0), error=jnp.asarray(err),
                    method=method)
