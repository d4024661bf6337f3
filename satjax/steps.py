"""Optimal sampling times: the N + 1 times that minimise an N-step sampler's error.

A fixed-step sampler of the probability-flow ODE dx/dt = ν_t(x) (docs/theory.md §3) integrates
from t = τ (noise) down to t = 0 (data) over a grid τ = t_0 > t_1 > … > t_N = 0. Its error
depends strongly on where the N steps go. This module

* runs Euler or Heun over an **arbitrary decreasing grid** (:func:`sample_on_grid`; a
  ``lax.scan`` over the intervals, differentiable with respect to the times, the start points
  and every leaf of the field);
* builds the **standard grids** for a protocol (:func:`standard_grid`): uniform in t, uniform
  in log-SNR, the EDM ρ = 7 grid (in σ = σ_t/m_t) and equal increments of the W2 length
  L(t) = ∫_0^t sqrt(E‖ν_s‖²) ds;
* parametrises grids so they stay strictly monotone and span [0, τ] exactly
  (:func:`grid_from_logits`: increments τ · softmax(θ), cumulated);
* measures the **error** of a grid (:func:`make_problem`, :meth:`StepsProblem.error`):

  - 1-D data known exactly: W_2 between the N-step image of the midpoint quantile grid of P_τ,
    u_i = (i + ½)/M, and the data quantiles at the same levels — the sorted generated points
    against F_q⁻¹(u_i). Deterministic and differentiable; as M → ∞ it is W_2(p_N, q) for the
    generated law p_N (sorting makes it exact even where the N-step map is not monotone).
    Optimised on M = ``n_train`` levels, reported on M = ``n_test`` *other* levels;
  - n-D data known exactly (a Gaussian mixture): the debiased Sinkhorn divergence S_ε (p = 2,
    ott-jax, an estimate of W_2²) between the N-step samples from exact P_τ samples and
    samples of the data; reported as sqrt(max(S_ε, 0)). Optimised on one set of start and
    data samples, reported on an independent (held-out) set;
  - a learned (or any user) velocity: the root-mean-square distance
    sqrt(E‖x_N − x_ref‖²) between the N-step solve and a many-step RK4 reference solve of the
    same velocity from the same start points (an upper bound on W_2(p_N, p_ref)); optimised on
    one set of starts, reported on another;

* and **optimises** the grid by gradient descent (Adam on the logits) through the N-step
  solver, initialised from the best standard grid (:func:`optimize_steps`). A velocity written
  outside JAX (:class:`HostVelocity`: any ``f(x: numpy (n, d), t: float)`` in a declared time
  convention, e.g. a wrapped PyTorch model) is integrated on the host and its gradient with
  respect to the N logits is taken by central differences of the same deterministic error
  (2N + 1 solves per iteration; no gradient of the model is needed). Non-finite losses
  or gradients are survived: the step is undone, the learning rate halved and the best grid
  seen so far is what is returned.

Times are in the paper's convention (t = 0 data, t = τ noise); :class:`StepsResult` also gives
them in flow-matching time and as σ values (:mod:`satjax.conventions`).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from satjax import conventions as C
from satjax._util import as_float, is_concrete
from satjax.protocol import Protocol
from satjax.reverse import Field, as_field, exact_velocity
from satjax.schedules import Schedule

__all__ = [
    "GRIDS", "HostVelocity", "VELOCITY_CONVENTIONS", "ND_DISTANCES", "ND_TARGETS", "OBJECTIVES", "SOLVERS", "StepsProblem", "StepsResult", "edm_grid",
    "grid_from_logits", "kinetic_profile", "log_snr_grid", "logits_from_grid", "make_problem",
    "optimize_grid", "optimize_steps", "sample_on_grid", "standard_grid", "standard_grids", "uniform_grid",
    "w2_length_grid",
]

SOLVERS = ("euler", "heun")
GRIDS = ("uniform", "log-snr", "edm", "w2-length")
OBJECTIVES = ("auto", "data", "reference")

#: EDM's noise range (Karras et al. 2022): σ ∈ [0.002, 80], ρ = 7.
EDM_SIGMA_MIN = 0.002
EDM_SIGMA_MAX = 80.0
EDM_RHO = 7.0


# =============================================================================== checks


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` (the number of steps) must be an int >= 1; got {n!r}")
    return int(n)


def _check_solver(solver) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"unknown `solver` {solver!r}; expected one of {', '.join(SOLVERS)}")
    return solver


def _check_protocol(protocol):
    if not isinstance(protocol, Protocol):
        raise TypeError(f"`protocol` must be a satjax Protocol; got {type(protocol).__name__}")
    if not is_concrete(protocol.tau):
        raise ValueError("the protocol's tau must be concrete (not traced)")
    return float(protocol.tau)


def _check_grid(ts, tau: Optional[float] = None, name: str = "ts"):
    ts = as_float(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"`{name}` must be a 1-D array of at least 2 times (N + 1 for N steps); "
                         f"got shape {ts.shape}")
    if is_concrete(ts):
        a = np.asarray(ts, dtype=float)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` contains NaN or inf")
        if not np.all(np.diff(a) < 0):
            i = int(np.argmax(~(np.diff(a) < 0)))
            raise ValueError(f"`{name}` must be strictly decreasing (from t = tau, noise, to "
                             f"t = 0, data); t[{i}] = {a[i]:.6g}, t[{i + 1}] = {a[i + 1]:.6g}")
        if tau is not None:
            tol = 1e-9 * max(tau, 1.0)
            if a[0] > tau + tol or a[-1] < -tol:
                raise ValueError(f"`{name}` must lie in [0, tau] = [0, {tau:g}]; got "
                                 f"[{a[-1]:.6g}, {a[0]:.6g}]")
    return ts


# ============================================================================== sampler


def _euler_step(v, x, t0, t1):
    return x + (t1 - t0) * v(x, t0)


def _heun_step(v, x, t0, t1):
    h = t1 - t0
    k1 = v(x, t0)
    k2 = v(x + h * k1, t1)
    return x + 0.5 * h * (k1 + k2)


_STEPS = {"euler": _euler_step, "heun": _heun_step}

#: Time conventions of a :class:`HostVelocity` (as in :mod:`satjax.measure`).
VELOCITY_CONVENTIONS = ("paper", "flow-matching", "edm")


class HostVelocity:
    """A velocity written outside satjax: ``fn(x, time) -> v`` on NumPy arrays (n, d) and a float
    time, in one of :data:`VELOCITY_CONVENTIONS`, called on the host (no JAX tracing, no
    gradients of ``fn``). Calling it gives the paper's ν_t(x) = dx/dt at paper time t:

    * ``"paper"``: time t ∈ [0, τ] (0 data), ν = fn(x, t);
    * ``"flow-matching"``: time s = 1 − t/τ (0 noise, 1 data), fn = dx/ds, so ν = −fn(x, s)/τ;
    * ``"edm"``: time σ = σ_t/m_t and state y = x/m_t (EDM, k-diffusion), fn = dy/dσ, so
      ν = (∂_t ln m) x + m σ'(t) fn(x/m, σ). Needs a schedule with finite σ at t = τ.

    Raises (at construction):
      TypeError: ``fn`` not callable, ``protocol`` not a Protocol.
      ValueError: unknown convention; "edm" without a schedule of finite σ(τ).
    """

    def __init__(self, fn: Callable, protocol: Protocol, convention: str = "paper",
                 name: Optional[str] = None):
        if not callable(fn):
            raise TypeError(f"the velocity must be callable fn(x, t); got {type(fn).__name__}")
        if convention not in VELOCITY_CONVENTIONS:
            raise ValueError(f"unknown velocity convention {convention!r}; expected one of "
                             f"{', '.join(VELOCITY_CONVENTIONS)}")
        self.tau = _check_protocol(protocol)
        self.fn, self.convention = fn, convention
        self.name = name or getattr(fn, "__name__", "velocity")
        self.calls = 0
        if convention == "edm":
            if not isinstance(protocol, Schedule) or protocol.m_vanishes_at_tau():
                raise ValueError("the edm convention needs a noise schedule with finite sigma at "
                                 "t = tau (VE, VP); this protocol has none")
            sched = protocol
            self._edm = jax.jit(lambda t: (sched.m(t), sched.log_m_rate(t),
                                           sched.noise_level(t), jax.grad(sched.noise_level)(t)))

    def __call__(self, x, t) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        t = float(t)
        if self.convention == "paper":
            v = self._call(x, t)
        elif self.convention == "flow-matching":
            v = -self._call(x, 1.0 - t / self.tau) / self.tau
        else:
            m, dlogm, sig, dsig = (float(a) for a in self._edm(as_float(t)))
            v = dlogm * x + m * dsig * self._call(x / m, sig)
        return v

    def _call(self, x, time):
        try:
            v = self.fn(x, time)
        except (KeyboardInterrupt, FloatingPointError):
            raise
        except Exception as err:
            raise ValueError(f"velocity {self.name!r} failed at time {time:.6g} "
                             f"({self.convention} convention): {type(err).__name__}: {err}") \
                from err
        self.calls += 1
        v = np.asarray(v, dtype=np.float64)
        if v.shape != x.shape:
            raise ValueError(f"velocity {self.name!r} returned shape {v.shape} for x of shape "
                             f"{x.shape} (it must return dx/dt of the same shape)")
        if not np.all(np.isfinite(v)):
            raise FloatingPointError(f"velocity {self.name!r} returned NaN or inf at time "
                                     f"{time:.6g} ({self.convention} convention)")
        return v


def _host_sample(vel: HostVelocity, x, ts, solver: str, return_path: bool = False):
    """Euler/Heun of :func:`sample_on_grid` in NumPy for a :class:`HostVelocity`."""
    x = np.array(x, dtype=np.float64)
    path = [x]
    for t0, t1 in zip(np.asarray(ts, float)[:-1], np.asarray(ts, float)[1:]):
        h = t1 - t0
        k1 = vel(x, t0)
        x = x + h * k1 if solver == "euler" else x + 0.5 * h * (k1 + vel(x + h * k1, t1))
        path.append(x)
    return np.stack(path) if return_path else x


def _host_rk4(vel: HostVelocity, x, tau: float, n_steps: int):
    """Classical RK4 from t = τ to 0 in ``n_steps`` equal steps (the host reference solve)."""
    x = np.array(x, dtype=np.float64)
    h = -tau / n_steps
    for i in range(n_steps):
        t = tau + i * h
        k1 = vel(x, t)
        k2 = vel(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = vel(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = vel(x + h * k3, max(t + h, 0.0))
        x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@partial(jax.jit, static_argnames=("solver", "return_path"))
def _sample_on_grid(fld, x, ts, solver, return_path=False):
    step = _STEPS[solver]
    v = fld.batch

    def body(x, tt):
        x_new = step(v, x, tt[0], tt[1]).astype(x.dtype)
        return x_new, (x_new if return_path else None)

    pairs = jnp.stack([ts[:-1], ts[1:]], axis=1).astype(x.dtype)
    x_end, path = jax.lax.scan(body, x, pairs)
    if return_path:
        return jnp.concatenate([x[None], path], axis=0)
    return x_end


def sample_on_grid(velocity, x_tau, ts, solver: str = "heun", *, return_path: bool = False):
    """Integrate dx/dt = ν_t(x) over the decreasing grid ``ts`` with Euler or Heun.

    Step i goes from t_i to t_{i+1} (h = t_{i+1} − t_i < 0): Euler x + h ν(x, t_i); Heun
    (explicit trapezoid, EDM's second-order step, also on the last interval)
    x + h/2 [ν(x, t_i) + ν(x + h ν(x, t_i), t_{i+1})]. One ``lax.scan`` over the N intervals;
    differentiable with respect to ``ts``, ``x_tau`` and the field's leaves; ``ts`` may be
    traced (only its length is static).

    Args:
      velocity: a :class:`satjax.reverse.Field` (e.g. :func:`satjax.reverse.exact_velocity`,
        :func:`satjax.reverse.field`), a callable ``fn(x (d,), t) -> (d,)``, or a
        :class:`HostVelocity` (integrated in NumPy; returns NumPy arrays).
      x_tau: start points (M, d) at t = ts[0].
      ts: (N + 1,) strictly decreasing times (paper convention; any sub-interval of [0, τ]).
      solver: ``"euler"`` or ``"heun"``.
      return_path: also return the states at every grid time, shape (N + 1, M, d).

    Returns:
      The points (M, d) at ts[-1], or the whole path with ``return_path``.

    Raises:
      ValueError: unknown solver, ``ts`` not 1-D / not strictly decreasing / non-finite,
        ``x_tau`` not (M, d).
    """
    _check_solver(solver)
    if isinstance(velocity, HostVelocity):
        ts = _check_grid(ts, velocity.tau)
        if np.ndim(x_tau) != 2:
            raise ValueError(f"`x_tau` must have shape (M, d); got {np.shape(x_tau)}")
        return _host_sample(velocity, np.asarray(x_tau), np.asarray(ts), solver, return_path)
    fld = as_field(velocity)
    tau = getattr(fld, "tau", None)
    ts = _check_grid(ts, float(tau) if tau is not None and is_concrete(tau) else None)
    x = as_float(x_tau)
    if x.ndim != 2:
        raise ValueError(f"`x_tau` must have shape (M, d); got {x.shape}")
    return _sample_on_grid(fld, x, ts, solver, bool(return_path))


# ========================================================================= parametrisation


def _logit_range(dtype) -> float:
    """How far below the largest logit a logit may go: the smallest increment, about
    e^{−range}/N of τ, must stay far above the rounding of the cumulative sum (float64: 1e-16,
    float32: 6e-8) for the grid to stay strictly monotone in floating point."""
    return 25.0 if jnp.finfo(dtype).bits >= 64 else 10.0


def grid_from_logits(logits, tau):
    """The grid τ = t_0 > … > t_N = 0 with increments t_{i} − t_{i+1} = τ softmax(θ)_i.

    Exactly τ and 0 at the ends (the cumulative sum is closed by an explicit 1) and strictly
    decreasing for every finite θ: logits more than 25 (float32: 10) below the largest are
    raised to that floor, so no increment underflows. Differentiable; invariant to adding a
    constant to θ."""
    logits = as_float(logits)
    floor = jnp.max(logits) - _logit_range(logits.dtype)
    logits = jnp.maximum(logits, jax.lax.stop_gradient(floor))
    p = jax.nn.softmax(logits)
    c = jnp.cumsum(p)[:-1]
    frac = jnp.concatenate([jnp.zeros((1,), p.dtype), c, jnp.ones((1,), p.dtype)])
    return as_float(tau) * (1.0 - frac)


def logits_from_grid(ts):
    """Logits θ with :func:`grid_from_logits`(θ, ts[0]) = ts (``ts`` from τ down to 0)."""
    ts = _check_grid(ts)
    inc = -jnp.diff(ts)
    return jnp.log(inc / jnp.sum(inc))


# =========================================================================== standard grids


def uniform_grid(protocol: Protocol, n: int) -> np.ndarray:
    """t_i = τ(1 − i/n), i = 0 … n."""
    n = _check_n(n)
    tau = _check_protocol(protocol)
    ts = tau * (1.0 - np.arange(n + 1) / n)
    ts[-1] = 0.0
    return ts


def _sigma_limits(protocol, sigma_min, sigma_max):
    if not isinstance(protocol, Schedule):
        raise ValueError(f"grids in sigma / log-SNR need a noise schedule (m_t, sigma_t); "
                         f"{type(protocol).__name__} defines no sigma")
    if not (sigma_min > 0 and sigma_max > sigma_min):
        raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
    s_tau = float(C.sigma_max(protocol))
    hi = min(s_tau, float(sigma_max))
    if not hi > sigma_min:
        raise ValueError(f"the schedule's sigma range [0, {s_tau:.4g}] does not reach above "
                         f"sigma_min = {sigma_min:g}")
    return float(sigma_min), hi


def _ramp_to_grid(protocol, sig):
    """n ramp values σ_0 > … > σ_{n−1} (then σ_n = 0) as times; t_0 forced to τ."""
    tau = float(protocol.tau)
    ts = np.array(C.t_of_sigma(protocol, jnp.asarray(sig)), dtype=float)
    ts = np.concatenate([ts, [0.0]])
    ts[0] = tau
    return ts


def edm_grid(protocol: Protocol, n: int, *, rho: float = EDM_RHO,
             sigma_min: float = EDM_SIGMA_MIN, sigma_max: float = EDM_SIGMA_MAX) -> np.ndarray:
    """The EDM grid (Karras et al. 2022, Eq. 5) in σ = σ_t/m_t, mapped to the paper's t.

    σ_i = (σ_hi^{1/ρ} + i/(n − 1) (σ_lo^{1/ρ} − σ_hi^{1/ρ}))^ρ for i = 0 … n − 1, then σ_n = 0,
    with σ_lo = ``sigma_min`` and σ_hi = min(σ(τ), ``sigma_max``) — σ(τ) is infinite where
    m_τ = 0 (cond-OT, cosine), so it is capped there. The first time is τ itself (the sampler
    starts from exact P_τ samples), so for such schedules the first step spans σ ∈ [σ_hi, ∞].
    n = 1 gives [τ, 0].

    Raises:
      ValueError: n < 1; a protocol that is not a schedule; a σ range that misses σ_lo.
    """
    n = _check_n(n)
    tau = _check_protocol(protocol)
    if not rho > 0:
        raise ValueError(f"`rho` must be > 0; got {rho}")
    lo, hi = _sigma_limits(protocol, sigma_min, sigma_max)
    if n == 1:
        return np.array([tau, 0.0])
    i = np.arange(n) / (n - 1)
    sig = (hi ** (1 / rho) + i * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return _ramp_to_grid(protocol, sig)


def log_snr_grid(protocol: Protocol, n: int, *, sigma_min: float = EDM_SIGMA_MIN,
                 sigma_max: float = EDM_SIGMA_MAX) -> np.ndarray:
    """Uniform in log-SNR λ = log(m²/σ²) (DPM-Solver's ``logSNR`` spacing): n values λ_i
    uniform from λ(σ_hi) to λ(σ_lo), then t_n = 0 (λ = ∞), with the same clipping as
    :func:`edm_grid` (σ_lo = ``sigma_min``, σ_hi = min(σ(τ), ``sigma_max``), t_0 = τ). It is the
    ρ → ∞ limit of the EDM grid."""
    n = _check_n(n)
    tau = _check_protocol(protocol)
    lo, hi = _sigma_limits(protocol, sigma_min, sigma_max)
    if n == 1:
        return np.array([tau, 0.0])
    lam = np.linspace(-2 * math.log(hi), -2 * math.log(lo), n)
    return _ramp_to_grid(protocol, np.exp(-0.5 * lam))


def _time_nodes(tau, n_nodes):
    """Nodes on [0, τ] clustered at both ends (Chebyshev–Lobatto), ends included."""
    j = np.arange(n_nodes)
    return 0.5 * tau * (1.0 - np.cos(np.pi * j / (n_nodes - 1)))


@partial(jax.jit, static_argnames=("n_samples",))
def _kinetic_1d(protocol, data, ts, n_samples):
    u = (jnp.arange(n_samples) + 0.5) / n_samples

    def one(t):
        x = protocol.marginal(data, t).quantile(u.astype(data.means.dtype))[:, None]
        v = protocol.fields(data, x, t, ("velocity",)).velocity
        return jnp.mean(jnp.sum(v**2, -1))

    return jax.lax.map(one, ts)


@jax.jit
def _kinetic_mc(protocol, data, ts, draws):
    def one(t):
        x = protocol.sample_given(data, t, draws)
        v = protocol.fields(data, x, t, ("velocity",)).velocity
        return jnp.mean(jnp.sum(v**2, -1))

    return jax.lax.map(one, ts)


def kinetic_profile(protocol: Protocol, data, *, n_nodes: int = 129, n_samples: int = 4096,
                    key=None):
    """(t, E‖ν_t‖²) at ``n_nodes`` Chebyshev–Lobatto nodes of [0, τ] (ends included).

    1-D data with a density: the midpoint rule over ``n_samples`` quantile levels of P_t
    (deterministic, error O(1/n²) plus the tails); otherwise Monte Carlo with one set of
    ``n_samples`` common random draws at every node (smooth in t). For a conservative protocol
    (every schedule; every 1-D path) E‖ν‖² is the squared W2 speed v_2² (Eq. 67).
    """
    from satjax.protocol import draws as make_draws

    _check_protocol(protocol)
    protocol.check(data)
    tau = float(protocol.tau)
    ts = jnp.asarray(_time_nodes(tau, int(n_nodes)))
    if data.dim == 1 and protocol.has_density:
        k = _kinetic_1d(protocol, data, ts, int(n_samples))
    else:
        key = jax.random.PRNGKey(0) if key is None else key
        k = _kinetic_mc(protocol, data, ts, make_draws(key, data, int(n_samples)))
    return np.asarray(ts), np.asarray(k)


def w2_length_grid(protocol: Protocol, data, n: int, *, n_nodes: int = 129,
                   n_samples: int = 4096, key=None) -> np.ndarray:
    """Equal increments of the W2 length L(t) = ∫_0^t v_2(s) ds, v_2 = sqrt(E‖ν_s‖²)
    (conservative protocols; :func:`kinetic_profile`, trapezoid in t, inverted by linear
    interpolation): L(t_i) = (1 − i/n) L(τ)."""
    n = _check_n(n)
    tau = _check_protocol(protocol)
    ts, k = kinetic_profile(protocol, data, n_nodes=n_nodes, n_samples=n_samples, key=key)
    if not np.all(np.isfinite(k)):
        raise ValueError("the kinetic profile E|nu_t|^2 is not finite on [0, tau]; cannot build "
                         "the equal-W2-length grid")
    speed = np.sqrt(np.maximum(k, 0.0))
    L = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(ts))])
    if not L[-1] > 0:
        raise ValueError("the path has zero W2 length: no equal-length grid")
    levels = L[-1] * (1.0 - np.arange(n + 1) / n)
    out = np.interp(levels, L, ts)
    out[0], out[-1] = tau, 0.0
    return out


def standard_grid(name: str, protocol: Protocol, n: int, *, data=None, **kw) -> np.ndarray:
    """One of :data:`GRIDS` ("uniform", "log-snr", "edm", "w2-length"; the last needs ``data``)."""
    if name == "uniform":
        return uniform_grid(protocol, n)
    if name == "log-snr":
        return log_snr_grid(protocol, n, **kw)
    if name == "edm":
        return edm_grid(protocol, n, **kw)
    if name == "w2-length":
        if data is None:
            raise ValueError("the w2-length grid needs the data distribution")
        return w2_length_grid(protocol, data, n, **kw)
    raise ValueError(f"unknown grid {name!r}; expected one of {', '.join(GRIDS)}")


def standard_grids(protocol: Protocol, n: int, *, data=None):
    """({name: grid}, {name: reason}) for every grid of :data:`GRIDS` that applies: σ/log-SNR
    grids are skipped for protocols without a schedule, the W2-length grid without data."""
    grids, skipped = {}, {}
    for name in GRIDS:
        try:
            grids[name] = standard_grid(name, protocol, n, data=data)
        except ValueError as err:
            skipped[name] = str(err)
    return grids, skipped


# =============================================================================== objective


def _w2_sorted(y, target):
    y = jnp.sort(y[:, 0])
    return jnp.sqrt(jnp.mean((y - target) ** 2))


def _rms(y, ref):
    return jnp.sqrt(jnp.mean(jnp.sum((y - ref) ** 2, -1)))


def _sinkhorn_w2(y, target, epsilon):
    from satjax.geometry.distances import sinkhorn_divergence

    s = sinkhorn_divergence(y, target, p=2, epsilon=epsilon).value
    return jnp.sqrt(jnp.maximum(s, 0.0) + 1e-30)


def _host_assignment(y, target):
    from satjax.geometry.distances import ot_assignment

    y, target = np.asarray(y), np.asarray(target)
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(target))):
        return np.arange(y.shape[0], dtype=np.int32)  # the loss is non-finite anyway
    return np.asarray(ot_assignment(y, target, p=2), dtype=np.int32)


def _matched(y, target):
    """``target`` reordered by the exact optimal assignment to ``y`` (scipy, via a host
    callback on stop_gradient(y): the matching is held fixed under differentiation, which is
    Danskin's theorem for W_2² = min over matchings)."""
    perm = jax.pure_callback(_host_assignment,
                             jax.ShapeDtypeStruct((y.shape[0],), jnp.int32),
                             jax.lax.stop_gradient(y), jax.lax.stop_gradient(target))
    return target[perm]


def _host_distance(y, target, kind) -> float:
    """:func:`_distance` in NumPy (host velocities; no Sinkhorn)."""
    y, target = np.asarray(y, np.float64), np.asarray(target, np.float64)
    if kind == "quantile":
        return float(np.sqrt(np.mean((np.sort(y[:, 0]) - target) ** 2)))
    if kind == "assignment":
        target = target[_host_assignment(y, target)]
    return float(np.sqrt(np.mean(np.sum((y - target) ** 2, -1))))


def _host_loss(vel, x, target, ts, solver, kind) -> float:
    """The error of grid ``ts`` for a host velocity; NaN when the velocity fails numerically."""
    try:
        y = _host_sample(vel, np.asarray(x), np.asarray(ts, float), solver)
    except FloatingPointError:
        return math.nan
    return _host_distance(y, target, kind)


#: Step in the logits of the central differences that give a host velocity's grid gradient:
#: the error is smooth in θ, so the truncation error is O(h²) ≈ 1e-8 relative and rounding
#: (float64, ~1e-16 / h) is negligible.
FD_STEP = 1e-4


def _host_loss_and_grad(problem, logits, solver, batch):
    x, tgt = problem.minibatch(batch)
    theta = np.asarray(logits, np.float64)

    def f(th):
        ts = np.asarray(grid_from_logits(jnp.asarray(th), problem.tau), np.float64)
        return _host_loss(problem.field, x, tgt, ts, solver, problem.kind)

    g = np.empty_like(theta)
    for j in range(theta.shape[0]):
        e = np.zeros_like(theta)
        e[j] = FD_STEP
        g[j] = (f(theta + e) - f(theta - e)) / (2 * FD_STEP)
    return jnp.asarray(f(theta)), jnp.asarray(g)


def _distance(y, target, epsilon, kind):
    if kind == "quantile":
        return _w2_sorted(y, target)
    if kind == "reference":
        return _rms(y, target)
    if kind == "assignment":
        return _rms(y, _matched(y, target))
    return _sinkhorn_w2(y, target, epsilon)


@partial(jax.jit, static_argnames=("solver", "kind"))
def _loss(fld, x, target, ts, epsilon, solver, kind):
    return _distance(_sample_on_grid(fld, x, ts, solver), target, epsilon, kind)


@partial(jax.jit, static_argnames=("solver", "kind"))
def _loss_and_grad(fld, x, target, logits, tau, epsilon, solver, kind):
    def f(theta):
        return _loss(fld, x, target, grid_from_logits(theta, tau), epsilon, solver, kind)

    return jax.value_and_grad(f)(logits)


@dataclasses.dataclass
class StepsProblem:
    """What a grid's error is measured on: the field, the training pool and the held-out set
    (start points and targets), and the distance (see the module docstring).

    ``kind``: "quantile" (1-D: sorted samples against data quantiles), "assignment" (n-D: exact
    W_2 between the empirical laws of the N-step samples and of exact data samples, by an
    optimal assignment), "sinkhorn" (n-D: sqrt of the debiased Sinkhorn divergence, ott-jax)
    or "reference" (RMS distance to a many-step solve of the same field from the same starts).

    The training pool is split into ``n_train // batch`` fixed minibatches; the training error
    is sqrt(mean over minibatches of the squared error) (for "quantile" and "reference" with a
    single batch that is the plain error). The held-out error uses the whole held-out set at
    once.
    """

    field: Field
    tau: float
    kind: str
    x_train: jax.Array
    target_train: jax.Array
    x_test: jax.Array
    target_test: jax.Array
    batch: int
    epsilon: Any = None
    objective: str = ""
    method: str = ""

    @property
    def n_batches(self) -> int:
        return self.x_train.shape[0] // self.batch

    @property
    def host(self) -> bool:
        """Whether the field is a :class:`HostVelocity` (NumPy solves, gradients by differences)."""
        return isinstance(self.field, HostVelocity)

    def minibatch(self, i: int):
        """(start points, targets) of training minibatch i."""
        s = slice(i * self.batch, (i + 1) * self.batch)
        return self.x_train[s], self.target_train[s]

    def error(self, ts, solver: str = "heun", split: str = "test") -> float:
        """The error of grid ``ts`` (a distance, W_2-like, not squared) on ``split``
        ("train": the pool, by minibatches; "test": the held-out set)."""
        _check_solver(solver)
        ts = _check_grid(ts, self.tau)
        if self.host and split in ("test", "train"):
            pairs = ([(self.x_test, self.target_test)] if split == "test" else
                     [self.minibatch(i) for i in range(self.n_batches)])
            sq = [_host_loss(self.field, x, tgt, ts, solver, self.kind) ** 2 for x, tgt in pairs]
            return math.sqrt(sum(sq) / len(sq))
        if split == "test":
            return float(_loss(self.field, self.x_test, self.target_test, ts, self.epsilon,
                               solver, self.kind))
        if split != "train":
            raise ValueError(f"`split` must be 'train' or 'test'; got {split!r}")
        sq = [float(_loss(self.field, *self.minibatch(i), ts, self.epsilon, solver,
                          self.kind)) ** 2 for i in range(self.n_batches)]
        return math.sqrt(sum(sq) / len(sq))

    def samples(self, ts, solver: str = "heun", split: str = "test"):
        """The N-step samples from the start points of ``split`` over grid ``ts``."""
        _check_solver(solver)
        ts = _check_grid(ts, self.tau)
        x = self.x_test if split == "test" else self.x_train
        if self.host:
            return _host_sample(self.field, np.asarray(x), np.asarray(ts), solver)
        return _sample_on_grid(self.field, x, ts, solver)

    def loss_and_grad(self, logits, solver: str = "heun", batch: int = 0):
        """(error on training minibatch ``batch``, its gradient w.r.t. the grid's logits)."""
        if self.host:
            return _host_loss_and_grad(self, logits, solver, batch)
        x, tgt = self.minibatch(batch)
        return _loss_and_grad(self.field, x, tgt, as_float(logits), as_float(self.tau),
                              self.epsilon, solver, self.kind)


def _midpoints(m, dtype):
    return ((jnp.arange(m) + 0.5) / m).astype(dtype)


ND_TARGETS = ("flow", "samples")
ND_DISTANCES = ("assignment", "sinkhorn")


def _check_size(name, v, lo=2):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"`{name}` must be an int >= {lo}; got {v!r}")
    return int(v)


def make_problem(protocol: Protocol, data, *, velocity=None, objective: str = "auto",
                 n_train: Optional[int] = None, n_test: Optional[int] = None,
                 batch: Optional[int] = None, key=None, reference_steps: int = 512,
                 nd_target: str = "flow", nd_distance: str = "assignment",
                 epsilon=None) -> StepsProblem:
    """The error measurement of :func:`optimize_steps` (module docstring).

    Args:
      protocol: the forward protocol (gives τ and exact samples / quantiles of P_τ).
      data: the data distribution (a Gaussian mixture): P_τ and the "data" objective.
      velocity: the field the sampler integrates (a JAX field or a :class:`HostVelocity`);
        default the exact velocity of ``protocol`` on ``data``.
      objective: "data" (distance to the data), "reference" (RMS distance to a
        ``reference_steps``-step RK4 solve of ``velocity`` from the same starts) or "auto"
        ("data" for the exact velocity, "reference" for a user velocity).
      n_train: the training pool: quantile levels (1-D data objective; default 1024) or start
        samples (default 4096).
      n_test: held-out levels (default 8192) or samples (default 2048).
      batch: minibatch size (default: the whole pool in 1-D, 512 samples otherwise; the pool
        is cut to a multiple of it).
      key: PRNG key for the samples (n-D, reference).
      reference_steps: steps of the RK4 reference solves.
      nd_target: n-D data objective only: the exact data samples compared with. "flow"
        (default): the images of the same start points under the exact flow (a
        ``reference_steps``-step RK4 solve of the exact velocity, which maps P_τ onto q) —
        exact samples of q whose sampling noise is shared with the N-step samples, so the
        distance has no sampling floor when the sampler is exact; "samples": independent
        samples of q (a floor of order n^{-1/d} remains).
      nd_distance: n-D: "assignment" (exact W_2 between the empirical laws; default) or
        "sinkhorn" (debiased Sinkhorn divergence, ε = ``epsilon`` or 1 % of twice the data
        variance; about 100× slower than the assignment on CPUs).

    Raises:
      ValueError: unknown objective / nd_target / nd_distance, bad sizes; a user velocity with
        the n-D data objective and nd_target "flow" (use "samples" or "reference").
    """
    from satjax.reverse import solve_ode

    tau = _check_protocol(protocol)
    protocol.check(data)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown `objective` {objective!r}; expected one of "
                         f"{', '.join(OBJECTIVES)}")
    if nd_target not in ND_TARGETS:
        raise ValueError(f"unknown `nd_target` {nd_target!r}; expected one of "
                         f"{', '.join(ND_TARGETS)}")
    if nd_distance not in ND_DISTANCES:
        raise ValueError(f"unknown `nd_distance` {nd_distance!r}; expected one of "
                         f"{', '.join(ND_DISTANCES)}")
    user_field = velocity is not None
    host = isinstance(velocity, HostVelocity)
    if host and abs(velocity.tau - tau) > 1e-12 * max(tau, 1.0):
        raise ValueError(f"the host velocity was declared for tau = {velocity.tau:g}; the "
                         f"protocol has tau = {tau:g}")
    if host and nd_distance == "sinkhorn":
        raise ValueError("nd_distance='sinkhorn' needs a JAX velocity; a host velocity is "
                         "judged by the exact assignment")
    fld = velocity if host else as_field(velocity) if user_field else \
        exact_velocity(protocol, data)
    if objective == "auto":
        objective = "reference" if user_field else "data"
    one_d = data.dim == 1 and protocol.has_density
    if objective == "reference":
        kind = "reference"
    else:
        kind = "quantile" if one_d else nd_distance
    n_train = _check_size("n_train", 1024 if one_d else 4096) if n_train is None else \
        _check_size("n_train", n_train)
    n_test = _check_size("n_test", 8192 if kind == "quantile" else 2048) if n_test is None \
        else _check_size("n_test", n_test)
    if batch is None:
        batch = n_train if (one_d or kind == "quantile") else min(512, n_train)
    batch = _check_size("batch", batch)
    if kind == "quantile" and batch != n_train:
        raise ValueError("the 1-D quantile objective uses all levels at once: leave `batch` "
                         "unset (or equal to n_train)")
    if batch > n_train:
        raise ValueError(f"`batch` ({batch}) must not exceed `n_train` ({n_train})")
    n_train = (n_train // batch) * batch
    _check_size("reference_steps", reference_steps, 1)
    key = jax.random.PRNGKey(0) if key is None else key
    k_tr, k_te, k_dtr, k_dte = jax.random.split(key, 4)
    dtype = data.means.dtype

    if one_d:  # starts: the midpoint quantile grid of P_τ (deterministic)
        p_tau = protocol.reverse_start(data)
        x_tr = p_tau.quantile(_midpoints(n_train, dtype))[:, None]
        x_te = p_tau.quantile(_midpoints(n_test, dtype))[:, None]
        if kind == "reference" and batch < n_train:  # mix the levels over the minibatches
            x_tr = x_tr[jax.random.permutation(k_tr, n_train)]
    else:
        x_tr = protocol.sample(k_tr, data, protocol.tau, n_train)
        x_te = protocol.sample(k_te, data, protocol.tau, n_test)

    def ref(field, x):
        if host:
            return _host_rk4(field, np.asarray(x), tau, reference_steps)
        return solve_ode(field, x, t_start=tau, t_end=0.0, method="rk4",
                         n_steps=reference_steps).xs[-1]

    eps = None
    if kind == "quantile":
        t_tr = data.quantile(_midpoints(n_train, dtype))
        t_te = data.quantile(_midpoints(n_test, dtype))
        obj = "w2-data-quantiles"
        method = (f"W2 between the sorted N-step images of the midpoint quantile grid of P_tau "
                  f"and the data quantiles at the same levels; optimised on {n_train} levels, "
                  f"reported on {n_test} other levels")
    elif kind == "reference":
        t_tr, t_te = ref(fld, x_tr), ref(fld, x_te)
        obj = "rms-to-reference"
        method = (f"root-mean-square distance to a {reference_steps}-step RK4 solve of the same "
                  f"velocity from the same starts; optimised on {n_train} starts "
                  f"(minibatches of {batch}), reported on {n_test} others")
    else:
        if nd_target == "flow":
            if user_field:
                raise ValueError("nd_target='flow' flows the starts with the exact velocity; "
                                 "with a user velocity use nd_target='samples' or objective="
                                 "'reference'")
            t_tr, t_te = ref(fld, x_tr), ref(fld, x_te)
            tgt = (f"the images of the same P_tau samples under the exact flow "
                   f"({reference_steps}-step RK4), exact samples of the data")
        else:
            t_tr, t_te = data.sample(k_dtr, n_train), data.sample(k_dte, n_test)
            tgt = "independent samples of the data"
        if kind == "sinkhorn":
            from satjax.geometry.distances import DIVERGENCE_RELATIVE_EPSILON

            if epsilon is None:
                yc = t_te - jnp.mean(t_te, 0)
                eps = DIVERGENCE_RELATIVE_EPSILON * 2.0 * jnp.mean(jnp.sum(yc**2, -1))
            else:
                eps = as_float(epsilon)
            dist = "sqrt of the debiased Sinkhorn divergence (p = 2, ott-jax)"
            obj = "sinkhorn-w2-data"
        else:
            dist = ("exact W2 between the empirical laws (optimal assignment, held fixed under "
                    "differentiation)")
            obj = "w2-data-assignment"
        method = (f"{dist} between the N-step samples from exact P_tau samples and {tgt}; "
                  f"optimised on {n_train} samples (minibatches of {batch}), reported on "
                  f"{n_test} held-out samples")
    return StepsProblem(field=fld, tau=tau, kind=kind, x_train=x_tr, target_train=t_tr,
                        x_test=x_te, target_test=t_te, batch=batch, epsilon=eps,
                        objective=obj, method=method)


# ============================================================================ optimisation


@dataclasses.dataclass
class StepsResult:
    """The optimised grid and the evidence for it.

    ``t`` (N + 1,) from τ down to 0 (paper time); ``t_flow`` = 1 − t/τ (0 noise → 1 data);
    ``sigmas`` = σ_t/m_t (EDM/k-diffusion/diffusers; ``inf`` at t = τ where m_τ = 0; None when
    the protocol is not a schedule); ``log_snr`` likewise; ``error`` the held-out error of ``t``;
    ``error_uniform`` that of the uniform grid; ``errors_standard`` / ``grids_standard`` per
    standard grid (held-out); ``errors_train`` the training errors; ``init`` the standard grid
    the optimisation started from; ``history`` [(iteration, training error)] (every
    iteration with one batch, every ``eval_every`` with minibatches);
    ``best_step`` the iteration whose grid is returned (0: the initial grid); ``n_nonfinite``
    iterations that produced NaN/inf (undone).
    """

    t: np.ndarray
    t_flow: np.ndarray
    sigmas: Optional[np.ndarray]
    log_snr: Optional[np.ndarray]
    error: float
    error_uniform: float
    errors_standard: Dict[str, float]
    errors_train: Dict[str, float]
    grids_standard: Dict[str, np.ndarray]
    skipped: Dict[str, str]
    init: str
    n: int
    solver: str
    tau: float
    objective: str
    method: str
    history: List[Any]
    best_step: int
    n_nonfinite: int

    @property
    def improvement(self) -> float:
        """1 − error / error_uniform (0.3 = 30 % below the uniform grid)."""
        return 1.0 - self.error / self.error_uniform if self.error_uniform > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-ready (strict JSON: infinite σ / λ become null)."""
        def arr(a):
            if a is None:
                return None
            return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=float)]

        return {
            "n": self.n, "solver": self.solver, "tau": self.tau,
            "t": arr(self.t), "t_flow": arr(self.t_flow), "sigmas": arr(self.sigmas),
            "log_snr": arr(self.log_snr),
            "sigmas_note": (None if self.sigmas is None else
                            "sigma = sigma_t/m_t; null where infinite (t = tau, m_tau = 0)"),
            "error": self.error, "error_uniform": self.error_uniform,
            "improvement_vs_uniform": self.improvement,
            "errors_standard": dict(self.errors_standard),
            "errors_train": dict(self.errors_train),
            "grids_standard": {k: arr(v) for k, v in self.grids_standard.items()},
            "skipped": dict(self.skipped), "init": self.init,
            "objective": self.objective, "method": self.method,
            "history": [[int(i), float(h) if np.isfinite(h) else None]
                        for i, h in self.history],
            "best_step": self.best_step, "n_nonfinite": self.n_nonfinite,
        }


def optimize_grid(problem: StepsProblem, init_ts, *, solver: str = "heun", steps: int = 300,
                  lr: float = 0.05, eval_every: int = 10, seed: int = 0):
    """Adam on the logits θ of the grid (:func:`grid_from_logits`) from ``init_ts``.

    Each iteration takes the gradient on one training minibatch (cycled in a shuffled order);
    with a single batch every iteration's value is the training error, otherwise the whole
    pool is scored every ``eval_every`` iterations and at the end. The grid with the least
    training error scored wins. A non-finite loss or gradient undoes the step: θ returns to
    the best grid, Adam restarts with half the learning rate (giving up below 1e-6 of it).

    Returns:
      (grid (N + 1,) numpy, history [(iteration, training error)], best iteration,
      number of non-finite iterations).
    """
    import optax

    _check_solver(solver)
    _check_size("steps", steps, 0)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"`lr` must be a finite number > 0; got {lr!r}")
    _check_size("eval_every", eval_every, 1)
    init_ts = _check_grid(init_ts, problem.tau, "init_ts")
    theta = logits_from_grid(init_ts)
    if theta.shape[0] == 1 or steps == 0:
        return np.array(init_ts, dtype=float), [(0, problem.error(init_ts, solver, "train"))], \
            0, 0
    opt = optax.adam(1.0)  # the learning rate is applied in `update` (it may be halved)
    state = opt.init(theta)
    best_theta, best_val, best_step = theta, math.inf, 0
    history, n_bad = [], 0
    rng = np.random.default_rng(seed)
    nb = problem.n_batches
    order: List[int] = []

    @jax.jit
    def update(theta, state, g, rate):
        upd, state = opt.update(g, state, theta)
        theta = optax.apply_updates(theta, jax.tree_util.tree_map(lambda u: rate * u, upd))
        theta = theta - jnp.max(theta)
        return jnp.maximum(theta, -_logit_range(theta.dtype)), state

    def grid(th):
        return grid_from_logits(th, problem.tau)

    rate = float(lr)
    for it in range(steps + 1):
        if nb > 1 and (it % eval_every == 0 or it == steps):
            val = problem.error(grid(theta), solver, "train")
            history.append((it, val))
            if math.isfinite(val) and val < best_val:
                best_theta, best_val, best_step = theta, val, it
        if it == steps:
            break
        if not order:
            order = list(rng.permutation(nb))
        val, g = problem.loss_and_grad(theta, solver, int(order.pop()))
        val = float(val)
        finite = math.isfinite(val) and bool(jnp.all(jnp.isfinite(g)))
        if nb == 1:
            history.append((it, val))
            if finite and val < best_val:
                best_theta, best_val, best_step = theta, val, it
        if not finite:
            n_bad += 1
            rate *= 0.5
            theta, state = best_theta, opt.init(best_theta)
            if rate < 1e-6 * lr:
                break
            continue
        theta, state = update(theta, state, g, jnp.asarray(rate, theta.dtype))
    if nb == 1 and math.isfinite(best_val) is False:
        best_theta = logits_from_grid(init_ts)
    ts = np.array(grid(best_theta), dtype=float)
    ts[0], ts[-1] = problem.tau, 0.0
    return ts, history, best_step, n_bad


def optimize_steps(protocol: Protocol, data, n: int, *, solver: str = "heun", velocity=None,
                   objective: str = "auto", steps: int = 300, lr: float = 0.05, key=None,
                   n_train: Optional[int] = None, n_test: Optional[int] = None,
                   batch: Optional[int] = None, reference_steps: int = 512,
                   nd_target: str = "flow", nd_distance: str = "assignment",
                   eval_every: int = 10, grids: Optional[Dict[str, Any]] = None,
                   problem: Optional[StepsProblem] = None) -> StepsResult:
    """The N + 1 sampling times minimising the N-step sampler's error (module docstring).

    Every standard grid that applies (:func:`standard_grids`, plus ``grids``) is scored on the
    training pool; the best one initialises Adam on the grid's logits (:func:`optimize_grid`);
    the returned grid is the one with the least training error seen (so never worse on the
    training pool than the best standard grid). All grids are then scored on the held-out set.

    Args:
      protocol: the forward protocol (schedule, force, geodesic).
      data: the data (Gaussian mixture: exact data, or the data a model was trained on).
      n: number of steps N ≥ 1 (N = 1 has nothing to optimise: [τ, 0]).
      solver: "euler" or "heun".
      velocity: a learned/user field to sample with (default: the exact velocity).
      objective: "auto", "data" or "reference" (:func:`make_problem`).
      steps: Adam iterations; lr: its learning rate (on the logits; 0.05 moves a step size
        by about 5 % per iteration).
      key: PRNG key for samples (n-D, reference objective).
      n_train, n_test, batch, reference_steps, nd_target, nd_distance: :func:`make_problem`.
      eval_every: score the whole training pool every that many iterations (minibatches).
      grids: extra named grids to compare and possibly start from ({name: ts}).
      problem: a prepared :class:`StepsProblem` (then ``velocity``, ``objective``, ``key``,
        the sizes and targets are taken from it).

    Returns:
      :class:`StepsResult`.

    Raises:
      ValueError: n < 1, unknown solver / objective / targets, bad sizes, steps < 0, lr ≤ 0.
      TypeError: protocol or data of the wrong type.
    """
    n = _check_n(n)
    _check_solver(solver)
    tau = _check_protocol(protocol)
    protocol.check(data)
    _check_size("steps", steps, 0)
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0
            and math.isfinite(lr)):
        raise ValueError(f"`lr` must be a finite number > 0; got {lr!r}")
    _check_size("eval_every", eval_every, 1)
    if problem is None:
        problem = make_problem(protocol, data, velocity=velocity, objective=objective,
                               n_train=n_train, n_test=n_test, batch=batch, key=key,
                               reference_steps=reference_steps, nd_target=nd_target,
                               nd_distance=nd_distance)
    elif not isinstance(problem, StepsProblem):
        raise TypeError(f"`problem` must be a StepsProblem; got {type(problem).__name__}")
    elif abs(problem.tau - tau) > 1e-12 * max(tau, 1.0):
        raise ValueError(f"`problem` was built for tau = {problem.tau:g}, the protocol has "
                         f"tau = {tau:g}")
    std, skipped = standard_grids(protocol, n, data=data)
    for name, g in (grids or {}).items():
        std[name] = np.array(_check_grid(g, tau, f"grids[{name!r}]"), dtype=float)
        if len(std[name]) != n + 1:
            raise ValueError(f"grids[{name!r}] has {len(std[name])} times; {n} steps need "
                             f"{n + 1}")
    err_train = {k: problem.error(g, solver, "train") for k, g in std.items()}
    finite = {k: v for k, v in err_train.items() if math.isfinite(v)}
    init = min(finite, key=finite.get) if finite else "uniform"
    ts, history, best_step, n_bad = optimize_grid(problem, std[init], solver=solver,
                                                  steps=steps, lr=lr, eval_every=eval_every)
    errors = {k: problem.error(g, solver, "test") for k, g in std.items()}
    err = problem.error(ts, solver, "test")
    if isinstance(protocol, Schedule):
        sig = np.asarray(C.sigma_of_t(protocol, jnp.asarray(ts)), dtype=float)
        lam = np.asarray(C.log_snr_of_t(protocol, jnp.asarray(ts)), dtype=float)
    else:
        sig = lam = None
    return StepsResult(
        t=ts, t_flow=1.0 - ts / tau, sigmas=sig, log_snr=lam, error=err,
        error_uniform=errors["uniform"], errors_standard=errors, errors_train=err_train,
        grids_standard=std, skipped=skipped, init=init, n=n, solver=solver, tau=tau,
        objective=problem.objective, method=problem.method, history=history,
        best_step=best_step, n_nonfinite=n_bad)
