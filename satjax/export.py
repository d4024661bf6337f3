"""Step grids in the terms other samplers take, and carried to other step counts.

A grid of :mod:`satjax.steps` is N + 1 times τ = t_0 > … > t_N = 0 in the paper's time
(docs/theory.md §1). Samplers elsewhere take it as (docs/using-grids.md):

* ``"json"``: the times themselves, ``t`` (N + 1 values, τ down to 0);
* ``"k-diffusion"``: N + 1 strictly descending σ_i = σ_{t_i}/m_{t_i} ending in 0 — the σ of
  k-diffusion's samplers (``sample_euler(model, x, sigmas)``), EDM and Align Your Steps. Needs a
  noise schedule with finite σ at t = τ (VE, VP; not cond-OT or cosine, where m_τ = 0);
* ``"comfyui"``: the same σ list as one comma-separated string, the input of ComfyUI's
  ``ManualSigmas`` node (and of KJNodes' ``CustomSigmas``);
* ``"diffusers"``: on a VP schedule (m² + σ² = 1: vp-linear, cosine), the N integer timesteps of
  a 1000-step DDPM table (``pipe(..., timesteps=[...])``) — timestep k_i is the one whose
  ᾱ_k has the log-SNR log(ᾱ_k/(1 − ᾱ_k)) nearest to λ(t_i) (:func:`ddpm_alphas_cumprod`
  names the table), the last time t_N = 0 is the scheduler's own final step to ᾱ = 1; on
  cond-OT, the N flow-matching sigmas t_i/τ without the trailing 0 for
  ``FlowMatchEulerDiscreteScheduler`` (``pipe(..., sigmas=[...])``), which applies its
  ``shift`` S to custom sigmas, σ' = Sσ/(1 + (S − 1)σ): with ``shift`` given, the exported
  values are σ = σ'/(S − (S − 1)σ'), so that the scheduler's shift lands on the grid;
* ``"flow-matching"``: N + 1 values t_i/τ from 1 (noise) to 0 (data) — the flow-matching
  time of SD3/Flux-style samplers (and, for cond-OT, their sigma); torchcfm's time, 0 noise to
  1 data, is one minus it.

:func:`interpolate_grid` carries an N-step grid to M steps log-linearly in σ, as Align Your
Steps does (Sabour et al. 2024; ComfyUI's ``loglinear_interp``).
"""

from __future__ import annotations

import math
from typing import Optional

import jax.numpy as jnp
import numpy as np

from satjax import conventions as C
from satjax.schedules import Schedule

__all__ = ["DDPM_STEPS", "FORMATS", "ddpm_alphas_cumprod", "export_grid", "interpolate_grid"]

FORMATS = ("json", "k-diffusion", "comfyui", "diffusers", "flow-matching")

#: Training timesteps of the DDPM table behind diffusers' integer timesteps.
DDPM_STEPS = 1000


def _check_ts(ts, tau: float) -> np.ndarray:
    ts = np.asarray(ts, dtype=float)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"a grid needs at least 2 times (N + 1 for N steps); got shape {ts.shape}")
    if not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) < 0):
        raise ValueError("the grid must be finite and strictly decreasing (t = tau to 0)")
    tol = 1e-9 * max(tau, 1.0)
    if abs(ts[0] - tau) > tol or abs(ts[-1]) > tol:
        raise ValueError(f"the grid must run from t = tau = {tau:g} to 0; got "
                         f"[{ts[0]:.6g}, {ts[-1]:.6g}]")
    return ts


def _schedule(protocol, fmt: str) -> Schedule:
    if not isinstance(protocol, Schedule):
        raise ValueError(f"--format {fmt} needs a noise schedule (m_t, sigma_t); "
                         f"{type(protocol).__name__} defines no sigma: use --format json or "
                         "flow-matching")
    return protocol


def _sigmas(protocol, ts, fmt: str) -> np.ndarray:
    """σ_i = σ_{t_i}/m_{t_i}, exactly 0 at t = 0; finite at t = τ or a clear error."""
    sched = _schedule(protocol, fmt)
    if sched.m_vanishes_at_tau():
        raise ValueError(f"--format {fmt}: sigma = sigma_t/m_t is infinite at t = tau for "
                         f"{type(sched).__name__} (m_tau = 0), so no sigma list starts the "
                         "sampler there; use --format flow-matching (or diffusers on cond-OT)")
    sig = np.array(C.sigma_of_t(sched, jnp.asarray(ts)), dtype=float)
    sig[-1] = 0.0
    if not (np.all(np.isfinite(sig)) and np.all(np.diff(sig) < 0)):
        raise ValueError(f"--format {fmt}: the sigmas of the grid are not finite and strictly "
                         "decreasing (the schedule's sigma is flat there)")
    return sig


def ddpm_alphas_cumprod(protocol):
    """(ᾱ_k for k = 0 … 999, the table's description) of the diffusers DDPM schedule that
    matches a VP ``protocol`` (:meth:`satjax.schedules.Schedule.ddpm_betas`: vp-linear's
    ``"linear"`` table with β/1000, cosine's ``"squaredcos_cap_v2"``), ᾱ_k = ∏_{j ≤ k}(1 − β_j)
    in float64.

    Raises:
      ValueError: a protocol without a diffusers table (the message names the format to use).
    """
    table = protocol.ddpm_betas(DDPM_STEPS) if isinstance(protocol, Schedule) else None
    if table is None:
        hint = ("on cond-OT the export is flow-matching sigmas" if
                getattr(protocol, "is_rectified_flow", False) else
                "use --format k-diffusion (sigmas) or flow-matching")
        raise ValueError(f"--format diffusers: integer timesteps need a VP schedule with a "
                         f"diffusers table (vp-linear, cosine); got {type(protocol).__name__}: "
                         f"{hint}")
    betas, desc = table
    return np.cumprod(1.0 - betas), f"diffusers DDPM table: {desc}"


def _diffusers_timesteps(protocol, ts):
    abar, table = ddpm_alphas_cumprod(protocol)
    lam_k = np.log(abar) - np.log1p(-abar)               # decreasing in k
    lam = np.asarray(C.log_snr_of_t(protocol, jnp.asarray(ts[:-1])), dtype=float)
    k = np.where(lam == -np.inf, DDPM_STEPS - 1,
                 np.argmin(np.abs(lam_k[None, :] - lam[:, None]), axis=1))
    if not np.all(np.diff(k) < 0):
        i = int(np.argmax(~(np.diff(k) < 0)))
        raise ValueError(f"--format diffusers: times t[{i}] = {ts[i]:.6g} and t[{i + 1}] = "
                         f"{ts[i + 1]:.6g} fall on the same DDPM timestep {k[i]} (the grid is "
                         "finer than the 1000-step table there); use --format k-diffusion")
    fin = np.isfinite(lam)
    mismatch = float(np.max(np.abs(lam_k[k[fin]] - lam[fin]))) if fin.any() else 0.0
    conv = (f"timestep k_i = argmin_k |log(abar_k/(1 - abar_k)) - lambda(t_i)| for the first N "
            f"times ({table}); t = tau with lambda = -inf maps to 999; the final step to "
            f"t_N = 0 is the scheduler's own (abar = 1); largest log-SNR mismatch "
            f"{mismatch:.3g}")
    return [int(v) for v in k], conv, mismatch


def export_grid(protocol, ts, fmt: str, *, shift: Optional[float] = None) -> dict:
    """The grid ``ts`` (paper time, τ down to 0) in format ``fmt`` (module docstring).

    Returns:
      {"format", "export" (the list, string or object to paste), "conversion" (the exact
      rule used), "n" (steps)} and, for diffusers timesteps, "log_snr_mismatch".

    Raises:
      ValueError: unknown format; a format the protocol cannot express (named in the message);
        ``shift`` outside cond-OT's diffusers export, or ≤ 0.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    tau = float(protocol.tau)
    ts = _check_ts(ts, tau)
    n = ts.shape[0] - 1
    out = {"format": fmt, "n": n}
    flow = getattr(protocol, "is_rectified_flow", False)
    if shift is not None and not (fmt == "diffusers" and flow):
        raise ValueError("--shift applies to --format diffusers on cond-OT only (the shift of "
                         "FlowMatchEulerDiscreteScheduler)")
    if fmt == "json":
        out.update(export=[float(v) for v in ts],
                   conversion="t in the paper's time (t = 0 data, t = tau noise), tau down to 0")
    elif fmt in ("k-diffusion", "comfyui"):
        sig = _sigmas(protocol, ts, fmt)
        conv = ("sigma_i = sigma_t/m_t at the N + 1 times (0 at t = 0), strictly descending; the "
                "noise level of x/m_t as in EDM and k-diffusion")
        if fmt == "k-diffusion":
            out.update(export=[float(v) for v in sig], conversion=conv)
        else:
            out.update(export=", ".join(repr(float(v)) for v in sig),
                       conversion=conv + "; comma-separated for ComfyUI's ManualSigmas node")
    elif fmt == "flow-matching":
        out.update(export=[float(v) for v in ts / tau],
                   conversion="t_i/tau from 1 (noise) to 0 (data): flow-matching time of "
                              "SD3/Flux-style samplers (for cond-OT also their sigma); "
                              "torchcfm time (0 noise, 1 data) is 1 minus it")
    elif flow:
        s = 1.0 if shift is None else float(shift)
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"--shift must be a finite number > 0; got {shift}")
        target = ts[:-1] / tau
        pre = target / (s - (s - 1.0) * target)
        out.update(export={"sigmas": [float(v) for v in pre]},
                   conversion=(f"sigmas = t_i/tau for the first N times (no trailing 0: "
                               f"FlowMatchEulerDiscreteScheduler appends it), pre-compensated "
                               f"for the scheduler's shift S = {s:g}: sigma = sigma'/(S - (S - 1)"
                               f" sigma') so that its S sigma/(1 + (S - 1) sigma) gives t_i/tau"),
                   shift=s)
    else:
        k, conv, mismatch = _diffusers_timesteps(protocol, ts)
        out.update(export={"timesteps": k}, conversion=conv, log_snr_mismatch=mismatch)
    return out


def interpolate_grid(protocol, ts, m: int) -> np.ndarray:
    """The N-step grid ``ts`` carried to ``m`` steps log-linearly in σ (Align Your Steps).

    The positive finite σ of the grid, σ_0 > … > σ_{N−1} (σ_1 … σ_{N−1} where σ_0 = ∞, m_τ = 0),
    are taken as samples of log σ at equally spaced positions and interpolated linearly to as
    many positions as the M-step grid has positive finite σ; σ_M = 0 (and σ_0 = ∞ where it was)
    is kept. End points stay where they were (t_0 = τ, t_M = 0, and the first and last
    positive σ); the result is strictly decreasing because the input is.

    Raises:
      ValueError: m < 2, a protocol without σ, fewer than two positive finite σ to interpolate.
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2:
        raise ValueError(f"--interpolate M must be an int >= 2; got {m!r}")
    sched = _schedule(protocol, "interpolation")
    tau = float(sched.tau)
    ts = _check_ts(ts, tau)
    sig = np.array(C.sigma_of_t(sched, jnp.asarray(ts)), dtype=float)
    lead_inf = bool(np.isinf(sig[0]))
    pos = sig[1:-1] if lead_inf else sig[:-1]
    if pos.shape[0] < 2:
        raise ValueError(f"interpolation needs at least two positive finite sigmas; the "
                         f"{ts.shape[0] - 1}-step grid has {pos.shape[0]}")
    n_new = m - 1 if lead_inf else m
    new = np.exp(np.interp(np.linspace(0.0, 1.0, n_new), np.linspace(0.0, 1.0, pos.shape[0]),
                           np.log(pos)))
    new[0], new[-1] = pos[0], pos[-1]
    out = np.array(C.t_of_sigma(sched, jnp.asarray(new)), dtype=float)
    out = np.concatenate([[tau] if lead_inf else [], out, [0.0]])
    out[0], out[-1] = tau, 0.0
    if not np.all(np.diff(out) < 0):
        raise ValueError("the interpolated grid is not strictly decreasing in t (the schedule's "
                         "sigma is flat there)")
    return out
