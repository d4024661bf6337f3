"""Schedule optimisation with optax over the learnable polar family (docs/theory.md §7).

Objectives for a schedule (m_t, σ_t) on data q:

* ``c2`` — c_2 = ∫ v_2² dt of the exact forward path (Eq. 68; = w_D for schedules, whose force
  is conservative), by the path estimator (closed form, quadrature, grid or Monte Carlo with
  fixed common random numbers);
* ``wD`` — w_D = ∫ E‖ν_t‖² dt (identical to c2 for schedules; kept for forces);
* ``conditional`` — the conditional kinetic energy n_d ∫ (m'² + σ'²) dt (Eq. 93), minimised by
  cond-OT (free family, 2 n_d/τ) and cosine under m² + σ² = 1 ((π/2)² n_d/τ) (Eq. 94, 95);
* ``eta`` / ``c1`` — η or c_1 of the speed-accuracy relation for a given reverse-start
  perturbation (:func:`satjax.bound.bound_kernel`: exact CDFs in 1-D, the deterministic density
  grid in 2-D, importance-weighted atoms with fixed random numbers in 3 to 16 dimensions,
  particles above), differentiated through the transport. On the grid and the atoms the c_1
  objective is the upper end of c_1's bracket, c_1 + its resolution error, so the descent
  cannot exploit the estimator's resolution. Under the exact dynamics η is the same for every
  schedule of the polar family (docs/theory.md §7: one ODE in λ = σ/m), so descending ``eta``
  here only reduces the solver's discretisation error; ``c1`` does depend on the
  schedule (docs/optimal-schedules.md).

The lower limit of c_2 over all protocols is W_2(q, P_τ)²/τ, reached by the geodesic (Eq. 69,
70). Parameters are unconstrained (Legendre coefficients), so every step is a valid schedule. A
step with a non-finite objective or gradient stops the run; the best schedule so far is
returned with ``diverged=True``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from satjax import schedules as S
from satjax._util import compile_within, gauss_legendre
from satjax.estimators import Atoms, DensityGrid, resolve
from satjax.pytree import Node

OBJECTIVES = ("c2", "wD", "conditional", "eta", "c1")
FAMILIES = ("free", "vp")


def conditional_energy(schedule: S.Schedule, dim: int, n_time: int = 64):
    """n_d ∫_0^τ (m'² + σ'²) dt by Gauss–Legendre (Eq. 93)."""
    ts, w = gauss_legendre(n_time, 0.0, schedule.tau)
    return dim * (w @ jax.vmap(schedule.kinetic_energy_rate)(ts))


class OptimizeResult(Node):
    """Optimised schedule, objective history and diagnostics."""

    schedule: S.PolarSchedule
    initial: S.PolarSchedule
    history: jax.Array
    best_value: jax.Array
    diverged: bool = struct.field(pytree_node=False, default=False)
    steps: int = struct.field(pytree_node=False, default=0)


def make_objective(data, objective: str, template: S.Schedule, *, key=None, n_time: int = 32,
                   estimator="auto", perturbation=None, transport="auto") -> Callable:
    """A function schedule -> scalar objective, differentiable in the schedule's leaves.

    ``template`` fixes the family (its class and shapes) for the estimator's preparation; the
    random numbers (``key``) are drawn once, so the objective is a smooth deterministic function.

    Raises:
      ValueError: unknown objective, eta/c1 without a perturbation, estimators that do not apply.
    """
    if callable(objective):
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if objective == "conditional":
        if getattr(template, "log_edge", None) is not None and template.log_edge.shape[0]:
            raise ValueError("the conditional energy (Eq. 93) is infinite with the arcsine edge "
                             "component (θ' ∝ s^-1/2); use a schedule built with edge=False")
        return lambda sch: conditional_energy(sch, data.dim, n_time)
    from satjax import bound as B
    from satjax import path as P

    keys = [None] * 3 if key is None else jax.random.split(key, 3)
    est = resolve(data, template, estimator, key=keys[0])
    ts, _ = gauss_legendre(n_time, 0.0, template.tau)
    est = est.prepare(template, data, ts)
    if objective in ("c2", "wD"):
        def value(sch):
            pc = P.path_cost_kernel(sch, data, est, jnp.zeros_like(sch.tau), sch.tau, n_time)
            return pc.c2.value if objective == "c2" else pc.wD.value

        return value
    if perturbation is None:
        raise ValueError(f"objective {objective!r} needs a reverse-start `perturbation`")
    tr = B.resolve_transport(transport, data, None, keys[1],
                             **B.cdf_context(template, data, perturbation))
    # the 2-D density grid: c_1 is descended at the upper end of its bracket, c_1 plus its
    # resolution error (change on the n/2 grid and on every other saved time), so that a
    # schedule gains nothing by moving its fast part where the estimator does not resolve it
    # (plain c_1 was gamed so: docs/optimal-schedules.md)
    # (the same with the atoms of d >= 3, whose error is the change from n/2 atoms)
    upper = isinstance(tr, (DensityGrid, Atoms)) and objective == "c1"
    if isinstance(tr, DensityGrid) and not upper:
        tr = tr.replace(check_coarse=False)
    if isinstance(tr, Atoms) and not upper:
        tr = tr.replace(check_half=False)
    if isinstance(tr, (Atoms, DensityGrid)):  # derivatives need the exact linear program
        if tr.lp == "sinkhorn":
            raise ValueError("the Sinkhorn linear program (lp='sinkhorn') carries no "
                             "derivative; optimise with lp='simplex' or 'auto'")
        tr = tr.replace(lp="simplex")

    def value(sch):
        r = B.bound_kernel(sch, data, perturbation, None, est, tr, n_time, keys[2])
        if objective == "eta":
            return r.eta.value
        return r.c1.value + r.c1.error if upper else r.c1.value

    return value


def _finite_tree(tree):
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(tree)]))


def optimize_schedule(data, *, family: str = "free", objective: str = "c2", tau: float = 1.0,
                      n_basis: int = 6, steps: int = 300, learning_rate: float = 0.05, key=None,
                      init: Optional[S.PolarSchedule] = None, n_time: int = 32,
                      estimator="auto", perturbation=None, transport="auto",
                      progress: Optional[Callable[[int, float], None]] = None,
                      max_bytes: Optional[float] = None) -> OptimizeResult:
    """Minimise ``objective`` over the polar family with Adam.

    Args:
      data: q.
      family: "free" (m, σ independent) or "vp" (m² + σ² = 1; with the arcsine edge component).
      objective: one of ``OBJECTIVES`` or a callable schedule -> scalar.
      tau: protocol duration.
      n_basis: Legendre coefficients for the angle (and radius).
      steps: Adam steps.
      learning_rate: Adam step size (finite, > 0).
      key: PRNG key for Monte-Carlo objectives.
      init: starting schedule (default: cosine, plus the edge component for "vp" unless the
        objective is "conditional", whose value is infinite with it).
      n_time: Gauss–Legendre nodes.
      estimator, perturbation, transport: see :func:`make_objective`.
      progress: called as ``progress(step, value)`` after each step.
      max_bytes: refuse (ValueError) before the first step when XLA's estimate of one step's
        peak memory (value and gradient) exceeds it; None: no limit.

    Returns:
      OptimizeResult with the best schedule seen (``diverged`` if a step went non-finite).

    Raises:
      ValueError: unknown family, steps < 1, a learning rate that is not finite and > 0.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose 'free' or 'vp'")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1; got {steps!r}")
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
            and learning_rate > 0):
        raise ValueError(f"`learning_rate` must be a finite number > 0; got {learning_rate!r}")
    edge = family == "vp" and objective != "conditional"
    sch0 = init if init is not None else S.polar(n_basis, n_basis, vp=family == "vp", tau=tau,
                                                 edge=edge)
    fn = make_objective(data, objective, sch0, key=key, n_time=n_time, estimator=estimator,
                        perturbation=perturbation, transport=transport)
    params = {"angle": sch0.angle, "log_radius": sch0.log_radius, "log_edge": sch0.log_edge}

    def loss(p):
        return fn(sch0.replace(**p))

    opt = optax.adam(learning_rate)

    @jax.jit
    def step(p, state):
        val, g = jax.value_and_grad(loss)(p)
        upd, state = opt.update(g, state, p)
        return optax.apply_updates(p, upd), state, val, jnp.isfinite(val) & _finite_tree(g)

    state = opt.init(params)
    step = compile_within(step, (params, state), max_bytes, "one optimisation step",
                          "use fewer time nodes (n_time), grid cells, atoms or particles")
    best_p, best_v = params, np.inf
    history = []
    diverged = False
    for i in range(steps):
        new_p, state, val, ok = step(params, state)
        v = float(val)
        if not bool(ok):
            diverged = True
            break
        history.append(v)
        if v < best_v:
            best_v, best_p = v, params
        params = new_p
        if progress is not None:
            progress(i, v)
    if not diverged:
        final = float(loss(params))
        if np.isfinite(final) and final < best_v:
            best_v, best_p = final, params
    return OptimizeResult(schedule=sch0.replace(**best_p), initial=sch0,
                          history=jnp.asarray(history), best_value=jnp.asarray(best_v),
                          diverged=diverged, steps=len(history))
