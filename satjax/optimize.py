"""Schedule optimisation with optax over the learnable polar family (PAPER.md section 7).

Objectives for a schedule (m_t, σ_t) on data q:
  * ``c2``          c_2 = ∫ v_2² dt of the exact forward path (Eq. 68; = w_D for schedules, whose
                    force is conservative), by quadrature in 1-D, closed form for Gaussian data and
                    Monte Carlo with fixed common random numbers in n-D;
  * ``wD``          w_D = ∫ E‖ν_t‖² dt (identical to c2 for schedules; kept for forces);
  * ``conditional`` the conditional kinetic energy n_d ∫ (m'² + σ'²) dt (Eq. 93), whose minimiser
                    is cond-OT (free family, value 2 n_d/τ) and cosine under m² + σ² = 1 (value
                    (π/2)² n_d/τ) (94, 95).
The lower limit of c_2 over all protocols is W_2(q, P_τ)²/τ, reached by the geodesic (69, 70).

Parameters are unconstrained (Legendre coefficients of the polar family), so every optax step
is a valid schedule. A step that produces a non-finite objective or gradient stops the run; the
best schedule so far is returned with ``diverged=True``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from satjax import path as sjpath
from satjax import schedules as S
from satjax._util import gauss_legendre
from satjax.mixtures import GaussianMixture

OBJECTIVES = ("c2", "wD", "conditional")
FAMILIES = ("free", "vp")


def conditional_energy(schedule: S.Schedule, dim: int, n_time: int = 64):
    """n_d ∫_0^τ (m'² + σ'²) dt by Gauss–Legendre (Eq. 93)."""
    ts, w = gauss_legendre(n_time, 0.0, schedule.tau)
    return dim * (w @ jax.vmap(schedule.kinetic_energy_rate)(ts))


class OptimizeResult(struct.PyTreeNode):
    """Optimised schedule, objective history and diagnostics."""

    schedule: S.PolarSchedule
    initial: S.PolarSchedule
    history: jax.Array
    best_value: jax.Array
    diverged: bool = struct.field(pytree_node=False, default=False)
    steps: int = struct.field(pytree_node=False, default=0)


def make_objective(data: GaussianMixture, objective: str, *, key=None, n_time: int = 48,
                   n_samples: int = 2048, n_points: int = 2048):
    """A function schedule -> scalar objective (differentiable in the schedule's leaves)."""
    if callable(objective):
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if objective == "conditional":
        return lambda sch: conditional_energy(sch, data.dim, n_time)
    method = "gaussian" if data.n_components == 1 else ("quadrature" if data.dim == 1 else "mc")
    if method == "mc" and key is None:
        raise ValueError(f"objective {objective!r} on {data.dim}-D mixture data is a Monte-Carlo "
                         "estimate: pass a PRNG `key` (its draws are fixed for the whole run)")
    from satjax import thermo

    draws = thermo.draws(key, data, n_samples) if method == "mc" else None

    def value(sch):
        pc = sjpath._path_cost(sch, data, jnp.zeros(()), sch.tau, draws, n_time, n_points, None,
                               method, 2, True)
        return pc.c2 if objective == "c2" else pc.wD

    return value


def optimize_schedule(data: GaussianMixture, *, family: str = "free", objective: str = "c2",
                      tau: float = 1.0, n_basis: int = 6, steps: int = 300,
                      learning_rate: float = 0.05, key=None, init: Optional[S.PolarSchedule] = None,
                      n_time: int = 48, n_samples: int = 2048, progress: bool = False,
                      **objective_kw) -> OptimizeResult:
    """Minimise ``objective`` over the polar family with Adam.

    Args:
      data: q as a Gaussian mixture.
      family: "free" (m, σ independent) or "vp" (m² + σ² = 1).
      objective: "c2", "wD", "conditional", or a callable schedule -> scalar.
      tau: protocol duration.
      n_basis: Legendre coefficients for the angle (and radius).
      steps: Adam steps.
      learning_rate: Adam step size.
      key: PRNG key for Monte-Carlo objectives (n-D mixtures).
      init: starting schedule (default: cosine).
      progress: show a tqdm progress bar.

    Returns:
      OptimizeResult with the best schedule seen (``diverged`` if a step went non-finite).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose 'free' or 'vp'")
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1; got {steps}")
    fn = make_objective(data, objective, key=key, n_time=n_time, n_samples=n_samples,
                        **objective_kw)
    sch0 = init if init is not None else S.polar(n_basis, n_basis, vp=family == "vp", tau=tau)
    params = {"angle": sch0.angle, "log_radius": sch0.log_radius}

    def loss(p):
        return fn(sch0.replace(**p))

    opt = optax.adam(learning_rate)

    @jax.jit
    def step(p, state):
        val, g = jax.value_and_grad(loss)(p)
        upd, state = opt.update(g, state, p)
        ok = jnp.isfinite(val) & jnp.all(jnp.asarray(jax.tree_util.tree_map(
            lambda v: jnp.all(jnp.isfinite(v)), jax.tree_util.tree_leaves(g))))
        return optax.apply_updates(p, upd), state, val, ok

    state = opt.init(params)
    best_p, best_v = params, np.inf
    history = []
    diverged = False
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"optimise {family}/{objective}")
    for _ in it:
        new_p, state, val, ok = step(params, state)
        v = float(val)
        if not bool(ok):
            diverged = True
            break
        history.append(v)
        if v < best_v:
            best_v, best_p = v, params
        params = new_p
        if progress:
            it.set_postfix(objective=f"{v:.5g}")
    if not diverged:
        final = float(loss(params))
        if np.isfinite(final) and final < best_v:
            best_v, best_p = final, params
    return OptimizeResult(schedule=sch0.replace(**best_p), initial=sch0,
                          history=jnp.asarray(history), best_value=jnp.asarray(best_v),
                          diverged=diverged, steps=len(history))
