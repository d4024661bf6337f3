"""Entropy production of the forward process (docs/theory.md §4; Eq. 36–50).

    T_t Ṡ_tot(t) = E_{P_t}‖ν_t‖²                                              (36)
    Ṡ_sys = −E[ν·∇ln P],   Ṡ_bath = E[f·ν]/T_t,   Ṡ_tot = Ṡ_sys + Ṡ_bath         (37–39)
    S_tot = ∫_0^τ Ṡ_tot dt,   w_D = ∫_0^τ T_t Ṡ_tot dt = ∫_0^τ E‖ν_t‖² dt       (40)

Expectations come from an estimator (:mod:`satjax.estimators`: closed form, 1-D quadrature,
2-D grid or Monte Carlo, chosen once by :func:`~satjax.estimators.resolve`); time integrals use
Gauss–Legendre nodes, which avoid the end points where ∂_t ln m or 1/T can be singular. When
T_{t0} = 0 (every schedule with σ_t ∝ t near 0, the rotating force) Ṡ_tot ~ 1/t or 1/t² and
S_tot = +∞: reported as ``inf``; for a deterministic transport (T = 0) S_tot is undefined.

The path-probability check (Eq. 41–50) is :func:`path_entropy_mc`.
"""

from __future__ import annotations

from functools import partial
import jax
import jax.numpy as jnp

from satjax import sharding as sh
from satjax._util import as_float, check_time, gauss_legendre
from satjax.estimate import Estimate
from satjax.estimators import integrate_nodes, node_means, rates_at_nodes, resolve
from satjax.forward import check
from satjax.pytree import Node


class EntropyProduction(Node):
    """Entropy production on [t0, t1] at Gauss–Legendre nodes ``ts`` with weights ``wts``.

    Rates at nodes (expectations): ``kinetic`` (T Ṡ_tot = E‖ν‖²), ``total`` (Ṡ_tot),
    ``system`` (Ṡ_sys), ``bath`` (Ṡ_bath), ``temperature``. Integrals as Estimates: ``wD`` =
    ∫ E‖ν‖² dt, ``S_tot`` (+∞ when T_{t0} = 0; NaN with ``stochastic`` False for a
    deterministic transport), ``S_sys``, ``S_bath``. ``finite``: every rate finite.
    """

    ts: jax.Array
    wts: jax.Array
    kinetic: jax.Array
    total: jax.Array
    system: jax.Array
    bath: jax.Array
    temperature: jax.Array
    wD: Estimate
    S_tot: Estimate
    S_sys: Estimate
    S_bath: Estimate
    finite: jax.Array


def interval(protocol, data, t0, t1):
    """Validated (t0, t1) (t1 defaults to τ)."""
    check(protocol, data)
    t1 = protocol.tau if t1 is None else t1
    check_time(t0, protocol.tau, "t0")
    check_time(t1, protocol.tau, "t1")
    return as_float(t0), as_float(t1)


def entropy_from_rates(protocol, r, ts, wts, t0, per_sample: bool, method: str):
    """EntropyProduction from :class:`~satjax.estimators.NodeRates` at the nodes."""
    T = jax.vmap(protocol.temperature)(ts)
    kin = node_means(r.kinetic, per_sample)
    wD, wD_se, _ = integrate_nodes(wts, r.kinetic, per_sample)
    zero = jnp.zeros_like(wD)
    sfl = node_means(r.score_flux, per_sample)
    system = -sfl if sfl is not None else jnp.full_like(kin, jnp.nan)
    S_sys = Estimate(value=wts @ system, stderr=zero, error=zero, method=method)
    if protocol.stochastic:
        ffl = node_means(r.force_flux, per_sample)
        total, bath = kin / T, ffl / T
        diverges = protocol.temperature(t0) <= 0.0  # T vanishes at the start, E‖ν‖² does not
        S_tot_v = jnp.where(diverges, jnp.inf, wts @ total)
        S_bath_v = jnp.where(diverges, jnp.inf, wts @ bath)
        S_method = method
    else:
        total = bath = jnp.full_like(kin, jnp.nan)
        S_tot_v = S_bath_v = jnp.asarray(jnp.nan, kin.dtype)
        S_method = "undefined: deterministic transport (T = 0)"
    return EntropyProduction(
        ts=ts, wts=wts, kinetic=kin, total=total, system=system, bath=bath, temperature=T,
        wD=Estimate(value=wD, stderr=wD_se, error=zero, method=method),
        S_tot=Estimate(value=S_tot_v, stderr=zero, error=zero, method=S_method),
        S_sys=S_sys, S_bath=Estimate(value=S_bath_v, stderr=zero, error=zero, method=S_method),
        finite=jnp.all(jnp.isfinite(kin)) & jnp.isfinite(wD))


@partial(jax.jit, static_argnames=("n_time",))
def _entropy_production(protocol, data, est, t0, t1, n_time):
    ts, wts = gauss_legendre(n_time, t0, t1)
    r = rates_at_nodes(est, protocol, data, ts, speed=False)
    return entropy_from_rates(protocol, r, ts, wts, t0, est.per_sample, est.method)


def entropy_production(protocol, data, *, t0=0.0, t1=None, n_time: int = 64,
                       estimator="auto", key=None) -> EntropyProduction:
    """Entropy production rates and integrals w_D, S_tot along [t0, t1] (Eq. 36–40).

    Args:
      protocol: a Protocol.
      data: q.
      t0, t1: interval (default [0, τ]).
      n_time: Gauss–Legendre nodes in time.
      estimator: "auto", a name or an Estimator (:func:`satjax.estimators.resolve`).
      key: PRNG key for Monte Carlo.

    Returns:
      EntropyProduction; S_tot = +∞ when T_{t0} = 0.
    """
    t0, t1 = interval(protocol, data, t0, t1)
    est = resolve(data, protocol, estimator, key=key)
    ts, _ = gauss_legendre(n_time, t0, t1)
    est = est.prepare(protocol, data, ts)
    return _entropy_production(protocol, data, est, t0, t1, int(n_time))


# ------------------------------------------------------------------ path probabilities (41–50)


class PathEntropy(Node):
    """Monte-Carlo path estimates of S_tot on [t0, t1] from forward SDE paths (Eq. 41–50).

    ``s_aux``: KL(P_F ‖ P_aux), P_aux the path measure of the auxiliary dynamics with drift
    f − 2ν started from the same P_{t0} (41, 44–47); per step the log-ratio of the two Gaussian
    kernels, (Δx − f dt)·ν/T + ‖ν‖² dt/T, whose mean is ‖ν‖²dt/T exactly.
    ``s_rev``: ln P_F[Γ] − ln P_B[Γ†] with time-reversed transitions (same force, reversed time)
    started from P_{t1} (48, 49): boundary term ln P_{t0}(x_0) − ln P_{t1}(x_1) plus the
    log-ratio of forward and reversed one-step kernels (O(dt) discretisation bias).
    ``ift_aux``, ``ift_rev``: E_{P_F}[exp(−s)], both 1 (Eq. 50). Each with a standard error.
    """

    s_aux: jax.Array
    s_aux_stderr: jax.Array
    s_rev: jax.Array
    s_rev_stderr: jax.Array
    ift_aux: jax.Array
    ift_aux_stderr: jax.Array
    ift_rev: jax.Array
    ift_rev_stderr: jax.Array
    finite: jax.Array


def _mean_se(v):
    return jnp.mean(v), jnp.std(v, ddof=1) / jnp.sqrt(v.shape[0])


@partial(jax.jit, static_argnames=("n_paths", "n_steps", "mesh"))
def _path_entropy(key, protocol, data, t0, t1, n_paths, n_steps, mesh=None):
    dt = (t1 - t0) / n_steps
    k0, kp = jax.random.split(key)
    x0 = sh.constrain(protocol.marginal(data, t0).sample(k0, n_paths), mesh)
    force = jax.vmap(protocol.force, in_axes=(0, None))

    def nu(x, t):
        return protocol.fields(data, x, t, ("velocity",)).velocity

    def log_kernel(y, x, drift, T):
        """ln N(y | x + drift·dt, 2T dt I)."""
        d = y.shape[-1]
        return (-jnp.sum((y - x - drift * dt) ** 2, -1) / (4.0 * T * dt)
                - 0.5 * d * jnp.log(4.0 * jnp.pi * T * dt))

    def step(carry, inp):
        x, s_aux, s_rev = carry
        i, k = inp
        t, t_next = t0 + i * dt, t0 + (i + 1) * dt
        T, T_next = protocol.temperature(t), protocol.temperature(t_next)
        f = force(x, t)
        noise = sh.constrain(jax.random.normal(k, x.shape, x.dtype), mesh)
        x_new = x + f * dt + jnp.sqrt(2.0 * T * dt) * noise
        v = nu(x, t)
        s_aux = s_aux + jnp.sum((x_new - x - f * dt) * v, -1) / T + jnp.sum(v**2, -1) * dt / T
        s_rev = s_rev + log_kernel(x_new, x, f, T) - log_kernel(x, x_new, force(x_new, t_next), T_next)
        return sh.constrain((x_new, s_aux, s_rev), mesh), None

    zeros = sh.constrain(jnp.zeros((n_paths,), x0.dtype), mesh)
    keys = jax.random.split(kp, n_steps)
    (x1, s_aux, s_rev), _ = jax.lax.scan(step, (x0, zeros, zeros), (jnp.arange(n_steps), keys))
    s_rev = (s_rev + protocol.marginal(data, t0).log_prob(x0)
             - protocol.marginal(data, t1).log_prob(x1))
    (a, a_se), (r, r_se) = _mean_se(s_aux), _mean_se(s_rev)
    (ia, ia_se), (ir, ir_se) = _mean_se(jnp.exp(-s_aux)), _mean_se(jnp.exp(-s_rev))
    return PathEntropy(s_aux=a, s_aux_stderr=a_se, s_rev=r, s_rev_stderr=r_se, ift_aux=ia,
                       ift_aux_stderr=ia_se, ift_rev=ir, ift_rev_stderr=ir_se,
                       finite=jnp.all(jnp.isfinite(s_aux)) & jnp.all(jnp.isfinite(s_rev)))


def path_entropy_mc(key, protocol, data, *, t0, t1=None, n_paths: int = 4096,
                    n_steps: int = 500, shard: sh.ShardSpec = False) -> PathEntropy:
    """Path-probability estimates of S_tot and the fluctuation theorem (Eq. 41–50).

    Needs T > 0 on [t0, t1] (finite S_tot): start at t0 > 0 for schedules with σ_0 = 0 and
    T_0 = 0. Compare with :func:`entropy_production` ``S_tot`` on the same interval.
    ``shard`` splits the paths over devices (``True``: all, or a mesh; :mod:`satjax.sharding`):
    each device draws and simulates its own paths; n_paths must be divisible by the device count.
    """
    if not protocol.stochastic:
        raise ValueError("path probabilities need a diffusion (T > 0); the protocol is a "
                         "deterministic transport")
    t0, t1 = interval(protocol, data, t0, t1)
    if float(protocol.temperature(as_float(t0))) <= 0.0:
        raise ValueError(f"T_t0 = 0 at t0 = {float(t0):g}: S_tot diverges; start at t0 > 0")
    if n_paths < 2 or n_steps < 1:
        raise ValueError("need n_paths >= 2 and n_steps >= 1")
    mesh = sh.resolve(shard)
    sh.check_divisible(n_paths, mesh, "paths")
    return _path_entropy(key, protocol, data, as_float(t0), as_float(t1), n_paths, n_steps, mesh)
