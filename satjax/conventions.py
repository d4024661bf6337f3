"""Time conventions: the paper's t, flow-matching time, the EDM σ and the log-SNR λ.

satjax runs time over t ∈ [0, τ] with t = 0 the data and t = τ the noise (docs/theory.md).
Samplers elsewhere use three other coordinates on the same path of a noise schedule
(m_t, σ_t) (:class:`satjax.schedules.Schedule`, transition N(m_t y, σ_t² I)):

* **flow-matching time** s = 1 − t/τ ∈ [0, 1] (s = 0 noise, s = 1 data; torchcfm, flow
  matching, rectified flow): :func:`to_flow_time`, :func:`from_flow_time`;
* **σ** = σ_t / m_t, the noise level of x/m_t (the "sigma" of EDM, k-diffusion and the diffusers
  schedulers): :func:`sigma_of_t`, :func:`t_of_sigma`. σ = 0 at t = 0 and it never decreases
  (Eq. 24). It is **infinite where m_t = 0**: at t = τ for cond-OT, cosine and the polar family.
  :func:`sigma_of_t` returns ``inf`` there (exactly at t = τ; for t < τ it is finite, e.g.
  cond-OT σ = t/(τ − t)); :func:`t_of_sigma` maps ``inf`` back to τ. Samplers that need a finite
  σ_max (the EDM ρ-grid, :mod:`satjax.steps`) cap it with :func:`sigma_max` (``cap=``) and keep
  t = τ as the first time;
* **log-SNR** λ = log(m_t² / σ_t²) = −2 log σ: +∞ at t = 0, −∞ where m_t = 0
  (:func:`log_snr_of_t`, :func:`t_of_log_snr`).

Each function checks its arguments and asks the schedule (:meth:`~satjax.schedules.Schedule.log_snr`,
:meth:`~satjax.schedules.Schedule.noise_level`, :meth:`~satjax.schedules.Schedule.t_of_log_snr`,
:meth:`~satjax.schedules.Schedule.t_of_noise_level`,
:meth:`~satjax.schedules.Schedule.m_vanishes_at_tau`). The shipped schedules answer in closed
form (derivations in their method docstrings, :mod:`satjax.schedules`):

    cond-OT   σ = t/(τ − t)                      t = τ σ/(1 + σ)
    cosine    σ = tan(πt/2τ)                     t = (2τ/π) arctan σ
    VP        σ² = e^{2A(s)} − 1, A = ½(β_min s + ½(β_max − β_min) s²), s = t/τ
              t = τ · 2L / (β_min + sqrt(β_min² + 2(β_max − β_min) L)),  L = log(1 + σ²)
    VE        σ² = σ_min²((σ_max/σ_min)^{2s} − 1)    t = τ log(1 + σ²/σ_min²) / (2 log(σ_max/σ_min))

and λ is computed in log form (no cancellation near either end). Any other schedule
(:class:`~satjax.schedules.PolarSchedule`, :func:`~satjax.schedules.from_functions`) gets
the generic methods of :class:`~satjax.schedules.Schedule`: λ and σ from m and σ², and t
by bisection of the monotone map t ↦ λ(t) on [0, τ] (to a few ulp; where σ/m is flat
any time of the flat stretch is a valid answer and one of them is returned).

All functions are pure JAX (jit-, vmap- and grad-able, elementwise in t, σ or λ); concrete
arguments outside their domain raise ``ValueError`` eagerly.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from satjax._util import as_float, is_concrete
from satjax.schedules import Schedule

__all__ = [
    "from_flow_time", "log_snr_of_sigma", "log_snr_of_t", "m_vanishes_at_tau",
    "sigma_max", "sigma_of_log_snr", "sigma_of_t", "t_of_log_snr", "t_of_sigma",
    "to_flow_time",
]

def _check_schedule(schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"`schedule` must be a satjax.schedules.Schedule (σ and log-SNR are "
                        f"defined for noise schedules only); got {type(schedule).__name__}")


def _check_range(x, lo, hi, name, what):
    if is_concrete(x):
        a = np.asarray(x, dtype=float)
        if a.size and (np.any(np.isnan(a)) or np.any(a < lo) or np.any(a > hi)):
            raise ValueError(f"`{name}` must lie in {what}; got values in "
                             f"[{np.nanmin(a) if not np.all(np.isnan(a)) else np.nan:g}, "
                             f"{np.nanmax(a) if not np.all(np.isnan(a)) else np.nan:g}]"
                             + (" (NaN present)" if np.any(np.isnan(a)) else ""))


def _tol(tau):
    return 1e-12 * max(float(tau), 1.0)


# --------------------------------------------------------------------------- flow matching


def to_flow_time(t, tau=1.0):
    """Flow-matching time s = 1 − t/τ (s = 0 noise, s = 1 data) of the paper's t ∈ [0, τ]."""
    t, tau = as_float(t), as_float(tau)
    if is_concrete(tau):
        _check_range(t, -_tol(tau), float(tau) * (1 + 1e-12), "t", f"[0, tau] = [0, {float(tau):g}]")
    return 1.0 - t / tau


def from_flow_time(s, tau=1.0):
    """The paper's t = τ(1 − s) of flow-matching time s ∈ [0, 1]."""
    s, tau = as_float(s), as_float(tau)
    _check_range(s, -1e-12, 1 + 1e-12, "s", "[0, 1]")
    return tau * (1.0 - s)


# ------------------------------------------------------------------------------- σ and λ


def m_vanishes_at_tau(schedule: Schedule) -> bool:
    """Whether m_τ = 0 (σ infinite, λ = −∞ at t = τ): cond-OT, cosine, polar; decided by the
    schedule's class where it is known, else from the concrete value |m_τ| < 1e-12
    (:meth:`~satjax.schedules.Schedule.m_vanishes_at_tau`)."""
    _check_schedule(schedule)
    return schedule.m_vanishes_at_tau()


def _check_t(schedule, t):
    if is_concrete(schedule.tau):
        tau = float(schedule.tau)
        _check_range(t, -_tol(tau), tau * (1 + 1e-12), "t", f"[0, tau] = [0, {tau:g}]")


def log_snr_of_t(schedule: Schedule, t):
    """λ(t) = log(m_t²/σ_t²): +inf at t = 0, −inf at t = τ where m_τ = 0
    (:meth:`~satjax.schedules.Schedule.log_snr`)."""
    _check_schedule(schedule)
    t = as_float(t)
    _check_t(schedule, t)
    return schedule.log_snr(jnp.clip(t, 0.0, schedule.tau))


def sigma_of_t(schedule: Schedule, t):
    """σ = σ_t/m_t (EDM / k-diffusion / diffusers sigma): 0 at t = 0; ``inf`` exactly at
    t = τ where m_τ = 0 (finite for every t < τ) (:meth:`~satjax.schedules.Schedule.noise_level`).

    Closed forms: cond-OT t/(τ − t); cosine tan(πt/2τ); VP sqrt(e^{2A} − 1); VE
    σ_min sqrt((σ_max/σ_min)^{2t/τ} − 1).
    """
    _check_schedule(schedule)
    t = as_float(t)
    _check_t(schedule, t)
    return schedule.noise_level(jnp.clip(t, 0.0, schedule.tau))


def sigma_max(schedule: Schedule, cap=None):
    """σ at t = τ (``inf`` where m_τ = 0), or ``min(σ(τ), cap)`` with a cap."""
    sig = sigma_of_t(schedule, schedule.tau)
    return sig if cap is None else jnp.minimum(sig, cap)


def log_snr_of_sigma(sigma):
    """λ = −2 log σ (σ = 0 ↦ +inf, σ = inf ↦ −inf)."""
    sigma = as_float(sigma)
    _check_range(sigma, 0.0, np.inf, "sigma", "[0, inf]")
    return -2.0 * jnp.log(sigma)


def sigma_of_log_snr(lam):
    """σ = exp(−λ/2)."""
    lam = as_float(lam)
    if is_concrete(lam) and np.any(np.isnan(np.asarray(lam))):
        raise ValueError("`lam` contains NaN")
    return jnp.exp(-0.5 * lam)


def _lam_range_check(schedule, lam):
    """Eager check that concrete λ lie within [λ(τ), +inf]."""
    if not (is_concrete(lam) and is_concrete(schedule)):
        return
    a = np.asarray(lam, dtype=float)
    if np.any(np.isnan(a)):
        raise ValueError("`lam` (or `sigma`) contains NaN")
    if schedule.m_vanishes_at_tau():
        lo = -np.inf
    else:
        lo = float(schedule.log_snr(as_float(schedule.tau)))
    if a.size and np.any(a < lo - 1e-9 * max(1.0, abs(lo))):
        raise ValueError(f"log-SNR below the schedule's range: lambda(tau) = {lo:.6g} (sigma_max "
                         f"= {np.exp(-0.5 * lo):.6g}); got min {a.min():.6g}")


def t_of_log_snr(schedule: Schedule, lam):
    """The t ∈ [0, τ] with λ(t) = ``lam`` (closed forms for cond-OT, cosine, VP, VE; bisection
    otherwise; :meth:`~satjax.schedules.Schedule.t_of_log_snr`). λ = +inf ↦ 0, λ = −inf ↦ τ
    (where m_τ = 0).

    Raises:
      ValueError: concrete λ below λ(τ) (a noise level the schedule never reaches), or NaN.
    """
    _check_schedule(schedule)
    lam = as_float(lam)
    _lam_range_check(schedule, lam)
    return schedule.t_of_log_snr(lam)


def t_of_sigma(schedule: Schedule, sigma):
    """The t ∈ [0, τ] with σ_t/m_t = ``sigma`` (σ = 0 ↦ 0, σ = inf ↦ τ where m_τ = 0;
    :meth:`~satjax.schedules.Schedule.t_of_noise_level`).

    Closed forms: cond-OT τσ/(1 + σ); cosine (2τ/π) arctan σ; VP from L = log(1 + σ²)
    (β_min s + ½Δβ s² = L solved without cancellation); VE τ log(1 + σ²/σ_min²)/(2 log(σ_max/σ_min));
    bisection in λ otherwise.

    Raises:
      ValueError: concrete σ < 0, NaN, or above the schedule's σ(τ).
    """
    _check_schedule(schedule)
    sigma = as_float(sigma)
    _check_range(sigma, 0.0, np.inf, "sigma", "[0, inf]")
    _lam_range_check(schedule, log_snr_of_sigma(sigma))
    return schedule.t_of_noise_level(sigma)
