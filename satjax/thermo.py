"""Entropy production of the forward process (PAPER.md section 4, Eq. 36–50).

    T_t Ṡ_tot(t) = E_{P_t}‖ν_t‖²                                              (36)
    Ṡ_sys = −E[ν·∇ln P],   Ṡ_bath = E[f·ν]/T_t,   Ṡ_tot = Ṡ_sys + Ṡ_bath         (37–39)
    S_tot = ∫_0^τ Ṡ_tot dt,   w_D = ∫_0^τ T_t Ṡ_tot dt = ∫_0^τ E‖ν_t‖² dt       (40)

Expectations under P_t are taken
  * in 1-D by deterministic quadrature: the trapezoid rule on a fine grid covering every
    component to ±12 standard deviations (the integrand is analytic and decays like a Gaussian,
    so the rule converges exponentially; 1e-10 relative with the default 4096 points);
  * in n-D by Monte Carlo with common random numbers: fixed component indices and N(0, I) draws,
    pushed through the exact marginal (reparameterised, so gradients flow), with standard errors
    computed per path (the same draws at every time node).
Time integrals use Gauss–Legendre nodes, which avoid the end points (where ∂_t ln m or 1/T can be
singular). When T_0 = 0 (every schedule with σ_t ∝ t near 0, the rotating force) Ṡ_tot ~ 1/t or
1/t² near t = 0 and S_tot = +∞: reported as ``inf`` with ``S_tot_finite = False``.

The path-probability check (Eq. 41–50) is :func:`path_entropy_mc`.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

from satjax import sharding as _sh
from satjax._util import as_float, check_time, gauss_legendre, map_over_nodes
from satjax.forces import LinearForce
from satjax.forward import _check, marginal_and_rate
from satjax.mixtures import GaussianMixture, evaluate, tile_sizes


class Rates(struct.PyTreeNode):
    """Expectations at one time t (arrays share a leading batch axis when vmapped over t).

    ``kinetic`` = E‖ν‖² = T Ṡ_tot; ``score_flux`` = E[ν·∇ln P] = −Ṡ_sys; ``force_flux`` = E[f·ν]
    = T Ṡ_bath; ``*_stderr`` are Monte-Carlo standard errors (0 for quadrature).
    """

    kinetic: jax.Array
    score_flux: jax.Array
    force_flux: jax.Array
    temperature: jax.Array
    kinetic_stderr: jax.Array


def quadrature_grid_1d(mix: GaussianMixture, n_points: int = 4096):
    """Nodes and weights (x_i, w_i) with Σ w_i g(x_i) ≈ ∫ g(x) P(x) dx for a 1-D mixture.

    Trapezoid rule on [min μ_k − 12 s_k, max μ_k + 12 s_k]; weights include the density.
    """
    sd = jnp.sqrt(mix.full_cov()[:, 0, 0])
    mu = mix.means[:, 0]
    lo, hi = jnp.min(mu - 12.0 * sd), jnp.max(mu + 12.0 * sd)
    x = jnp.linspace(lo, hi, n_points)
    h = (hi - lo) / (n_points - 1)
    trap = jnp.ones((n_points,), x.dtype).at[jnp.array([0, -1])].set(0.5)
    return x[:, None], h * trap * jnp.exp(mix.log_prob(x[:, None]))


def _fields_at(protocol, data, x, t, chunk):
    marg, rate = marginal_and_rate(protocol, data, t)
    out = evaluate(marg, x, rate=rate, generator=protocol.rotation_generator(t), chunk=chunk)
    out["force"] = jax.vmap(protocol.force, in_axes=(0, None))(x, t)
    return marg, out


def rates_1d(protocol: LinearForce, data: GaussianMixture, t, *, n_points: int = 4096,
             chunk: Optional[int] = None) -> Rates:
    """Exact (quadrature) E‖ν_t‖², E[ν·∇ln P_t], E[f·ν_t] for 1-D data (Eq. 36–39)."""
    t = as_float(t)
    marg, rate = marginal_and_rate(protocol, data, t)
    x, w = quadrature_grid_1d(marg, n_points)
    out = evaluate(marg, x, rate=rate, generator=protocol.rotation_generator(t), chunk=chunk)
    nu = out["velocity"][:, 0]
    f = jax.vmap(protocol.force, in_axes=(0, None))(x, t)[:, 0]
    return Rates(kinetic=jnp.sum(w * nu**2), score_flux=jnp.sum(w * nu * out["score"][:, 0]),
                 force_flux=jnp.sum(w * f * nu), temperature=protocol.temperature(t),
                 kinetic_stderr=jnp.zeros_like(t))


def rates_gaussian(protocol: LinearForce, data: GaussianMixture, t) -> Rates:
    """Closed-form rates when q (hence every P_t) is a single Gaussian N(μ_t, C_t).

    ν = μ' + B(x − μ) with B = (C'/2 + W) C⁻¹ (section 2), so E‖ν‖² = ‖μ'‖² + tr(B C Bᵀ),
    E[ν·∇ln P] = −tr B, and E[f·ν] = E‖ν‖² + T E[ν·∇ln P] (f = ν + T∇ln P).
    """
    t = as_float(t)
    marg, rate = marginal_and_rate(protocol, data, t)
    C, dC, dmu = marg.full_cov()[0], rate.full_cov()[0], rate.means[0]
    M = 0.5 * dC
    K = protocol.rotation_generator(t)
    if K is not None:
        M = M + 0.5 * (K @ C - C @ K.T)
    B = jnp.linalg.solve(C.T, M.T).T  # M C⁻¹
    kin = dmu @ dmu + jnp.trace(B @ C @ B.T)
    sfl = -jnp.trace(B)
    T = protocol.temperature(t)
    return Rates(kinetic=kin, score_flux=sfl, force_flux=kin + T * sfl, temperature=T,
                 kinetic_stderr=jnp.zeros_like(t))


class Draws(struct.PyTreeNode):
    """Common random numbers for Monte Carlo under P_t: component indices and N(0, I) draws."""

    idx: jax.Array
    eps: jax.Array


def _draws(key, data, n):
    k1, k2 = jax.random.split(key)
    idx = jax.random.choice(k1, data.n_components, (n,), p=data.weights)
    return Draws(idx=idx, eps=jax.random.normal(k2, (n, data.dim), data.means.dtype))


@partial(jax.jit, static_argnames=("n", "mesh"))
def _draws_sharded(key, data, n, mesh):
    return _sh.constrain(_draws(key, data, n), mesh)  # each device draws its own block


def draws(key, data: GaussianMixture, n: int, *, shard: _sh.ShardSpec = False) -> Draws:
    """n common random draws (component index, standard normal) for ``data``'s mixture.

    ``shard``: split the n draws over devices (``True``: all; or a mesh with a ``"samples"``
    axis; see :mod:`satjax.sharding`). Each device generates its own block; the numbers equal
    the unsharded ones. Jit-compiled consumers (:func:`entropy_production`, ``path_cost``) then
    keep per-sample work on the owning device and reduce over devices. n must be divisible by
    the device count.
    """
    if n < 2:
        raise ValueError(f"need at least 2 Monte-Carlo samples; got {n}")
    mesh = _sh.resolve(shard)
    if mesh is None:
        return _draws(key, data, n)
    _sh.check_divisible(n, mesh)
    return _draws_sharded(key, data, n, mesh)


def per_sample_mc(protocol, data, t, d: Draws, chunk=None):
    """Per-sample (‖ν‖², ν·∇ln P, f·ν) at x = reparameterised samples of P_t (Eq. 36–39)."""
    t = as_float(t)
    marg, rate = marginal_and_rate(protocol, data, t)
    x = marg.sample_given(d.idx, d.eps)
    out = evaluate(marg, x, rate=rate, generator=protocol.rotation_generator(t), chunk=chunk)
    nu = out["velocity"]
    f = jax.vmap(protocol.force, in_axes=(0, None))(x, t)
    return jnp.sum(nu**2, -1), jnp.sum(nu * out["score"], -1), jnp.sum(f * nu, -1)


def rates_mc(protocol, data, t, d: Draws, *, chunk=None) -> Rates:
    """Monte-Carlo E‖ν_t‖², E[ν·∇ln P_t], E[f·ν_t] with common random numbers ``d``."""
    k, s, f = per_sample_mc(protocol, data, t, d, chunk)
    n = k.shape[0]
    return Rates(kinetic=jnp.mean(k), score_flux=jnp.mean(s), force_flux=jnp.mean(f),
                 temperature=protocol.temperature(as_float(t)),
                 kinetic_stderr=jnp.std(k, ddof=1) / jnp.sqrt(n))


class EntropyProduction(struct.PyTreeNode):
    """Entropy production along [t0, t1] at Gauss–Legendre nodes ``ts`` with weights ``wts``.

    Rates at nodes: ``kinetic`` (T Ṡ_tot = E‖ν‖²), ``total`` (Ṡ_tot), ``system`` (Ṡ_sys),
    ``bath`` (Ṡ_bath), ``temperature``. Integrals: ``wD`` = ∫ E‖ν‖² dt (with ``wD_stderr``),
    ``S_tot`` (+∞ when it diverges, ``S_tot_finite`` False), ``S_sys``, ``S_bath``.
    """

    ts: jax.Array
    wts: jax.Array
    kinetic: jax.Array
    total: jax.Array
    system: jax.Array
    bath: jax.Array
    temperature: jax.Array
    wD: jax.Array
    wD_stderr: jax.Array
    S_tot: jax.Array
    S_tot_finite: jax.Array
    S_sys: jax.Array
    S_bath: jax.Array
    finite: jax.Array


@partial(jax.jit, static_argnames=("n_time", "n_points", "chunk", "method"))
def _entropy_production(protocol, data, t0, t1, mcdraws, n_time, n_points, chunk, method):
    ts, wts = gauss_legendre(n_time, t0, t1)
    if method == "mc":
        n, K = mcdraws.eps.shape[0], data.n_components
        b, c = tile_sizes(n, K, data.dim, data.kind, chunk)
        per_node = max(mcdraws.eps.size, b * c)  # samples, or one tile of the engine
        k, s, f = map_over_nodes(lambda t: per_sample_mc(protocol, data, t, mcdraws, chunk), ts,
                                 per_node)
        n = k.shape[1]
        kin, sfl, ffl = k.mean(1), s.mean(1), f.mean(1)
        wd_paths = wts @ k  # per-sample path integrals (common random numbers)
        wd_err = jnp.std(wd_paths, ddof=1) / jnp.sqrt(n)
    else:
        if method == "gaussian":
            r = jax.vmap(lambda t: rates_gaussian(protocol, data, t))(ts)
        else:
            r = map_over_nodes(lambda t: rates_1d(protocol, data, t, n_points=n_points,
                                                  chunk=chunk), ts, n_points)
        kin, sfl, ffl = r.kinetic, r.score_flux, r.force_flux
        wd_err = jnp.zeros_like(t0)
    T = jax.vmap(protocol.temperature)(ts)
    total, system, bath = kin / T, -sfl, ffl / T
    # Divergence of S_tot: T vanishes at the start while E‖ν‖² does not.
    T0 = protocol.temperature(t0)
    diverges = T0 <= 0.0
    S_tot = jnp.where(diverges, jnp.inf, wts @ total)
    S_bath = jnp.where(diverges, jnp.inf, wts @ bath)
    wD = wts @ kin
    finite = jnp.all(jnp.isfinite(kin)) & jnp.isfinite(wD)
    return EntropyProduction(ts=ts, wts=wts, kinetic=kin, total=total, system=system, bath=bath,
                             temperature=T, wD=wD, wD_stderr=wd_err, S_tot=S_tot,
                             S_tot_finite=~diverges, S_sys=wts @ system, S_bath=S_bath,
                             finite=finite)


def resolve_method(data: GaussianMixture, method: str) -> str:
    """'auto' → 'gaussian' (one component), 'quadrature' (1-D) or 'mc'; validates the choice."""
    if method not in ("auto", "quadrature", "gaussian", "mc"):
        raise ValueError(f"`method` must be 'auto', 'quadrature', 'gaussian' or 'mc'; got {method!r}")
    if method == "auto":
        return "gaussian" if data.n_components == 1 else ("quadrature" if data.dim == 1 else "mc")
    if method == "quadrature" and data.dim != 1:
        raise ValueError(f"quadrature expectations need 1-D data; got dimension {data.dim} "
                         "(use method='mc')")
    if method == "gaussian" and data.n_components != 1:
        raise ValueError(f"method 'gaussian' needs single-Gaussian data; got {data.n_components} "
                         "components")
    return method


def entropy_production(protocol: LinearForce, data: GaussianMixture, *, t0=0.0, t1=None,
                       n_time: int = 64, method: str = "auto", key=None, n_samples: int = 4096,
                       n_points: int = 4096, chunk: Optional[int] = None,
                       shard: _sh.ShardSpec = False) -> EntropyProduction:
    """Entropy production rates and integrals w_D, S_tot along [t0, t1] (Eq. 36–40).

    Args:
      protocol: schedule or linear force.
      data: q as a Gaussian mixture.
      t0, t1: interval (default [0, τ]).
      n_time: Gauss–Legendre nodes in time.
      method: "quadrature" (1-D only, deterministic), "gaussian" (single-Gaussian data, closed
        form), "mc" (Monte Carlo, any dimension), "auto" (gaussian, else quadrature in 1-D,
        else mc).
      key: PRNG key for "mc" (required there).
      n_samples: Monte-Carlo samples (shared by all time nodes).
      n_points: quadrature points in 1-D.
      chunk: components per chunk for large mixtures.
      shard: for "mc", split the samples over devices (``True``: all devices, or a mesh; see
        :mod:`satjax.sharding`); n_samples must be divisible by the device count. Ignored by
        the deterministic methods.

    Returns:
      EntropyProduction; S_tot = +∞ when T_{t0} = 0.

    Raises:
      ValueError: unknown method, quadrature for d > 1, missing key, bad interval.
    """
    t0, t1, method, d = prepare(protocol, data, t0, t1, method, key, n_samples, shard=shard)
    return _entropy_production(protocol, data, t0, t1, d, n_time, n_points, chunk, method)


def prepare(protocol, data, t0, t1, method, key, n_samples, *, shard=False):
    """Validate the common arguments of path integrals; returns (t0, t1, method, draws).

    ``shard`` is passed to :func:`draws` (Monte Carlo only).
    """
    _check(protocol, data)
    t1 = protocol.tau if t1 is None else t1
    check_time(t0, protocol.tau, "t0")
    check_time(t1, protocol.tau, "t1")
    method = resolve_method(data, method)
    if method == "mc" and key is None:
        raise ValueError("method 'mc' needs a PRNG `key`")
    d = draws(key, data, n_samples, shard=shard) if method == "mc" else None
    return as_float(t0), as_float(t1), method, d


# ------------------------------------------------------------------ path probabilities (41–50)


class PathEntropy(struct.PyTreeNode):
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


@partial(jax.jit, static_argnames=("n_paths", "n_steps", "chunk", "mesh"))
def _path_entropy(key, protocol, data, t0, t1, n_paths, n_steps, chunk, mesh=None):
    dt = (t1 - t0) / n_steps
    k0, kp = jax.random.split(key)
    x0 = _sh.constrain(marginal_and_rate(protocol, data, t0)[0].sample(k0, n_paths), mesh)
    force = jax.vmap(protocol.force, in_axes=(0, None))

    def nu(x, t):
        marg, rate = marginal_and_rate(protocol, data, t)
        return evaluate(marg, x, rate=rate, generator=protocol.rotation_generator(t),
                        chunk=chunk)["velocity"]

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
        noise = _sh.constrain(jax.random.normal(k, x.shape, x.dtype), mesh)
        x_new = x + f * dt + jnp.sqrt(2.0 * T * dt) * noise
        v = nu(x, t)
        s_aux = s_aux + jnp.sum((x_new - x - f * dt) * v, -1) / T + jnp.sum(v**2, -1) * dt / T
        s_rev = s_rev + log_kernel(x_new, x, f, T) - log_kernel(x, x_new, force(x_new, t_next), T_next)
        return _sh.constrain((x_new, s_aux, s_rev), mesh), None

    zeros = _sh.constrain(jnp.zeros((n_paths,), x0.dtype), mesh)
    keys = jax.random.split(kp, n_steps)
    (x1, s_aux, s_rev), _ = jax.lax.scan(step, (x0, zeros, zeros), (jnp.arange(n_steps), keys))
    s_rev = (s_rev + marginal_and_rate(protocol, data, t0)[0].log_prob(x0)
             - marginal_and_rate(protocol, data, t1)[0].log_prob(x1))
    (a, a_se), (r, r_se) = _mean_se(s_aux), _mean_se(s_rev)
    (ia, ia_se), (ir, ir_se) = _mean_se(jnp.exp(-s_aux)), _mean_se(jnp.exp(-s_rev))
    return PathEntropy(s_aux=a, s_aux_stderr=a_se, s_rev=r, s_rev_stderr=r_se, ift_aux=ia,
                       ift_aux_stderr=ia_se, ift_rev=ir, ift_rev_stderr=ir_se,
                       finite=jnp.all(jnp.isfinite(s_aux)) & jnp.all(jnp.isfinite(s_rev)))


def path_entropy_mc(key, protocol: LinearForce, data: GaussianMixture, *, t0, t1=None,
                    n_paths: int = 4096, n_steps: int = 500, chunk: Optional[int] = None,
                    shard: _sh.ShardSpec = False) -> PathEntropy:
    """Path-probability estimates of S_tot and the fluctuation theorem (Eq. 41–50).

    Needs T > 0 on [t0, t1] (finite S_tot): start at t0 > 0 for schedules with σ_0 = 0 and
    T_0 = 0. Compare with :func:`entropy_production` ``S_tot`` on the same interval.
    ``shard`` splits the paths over devices (``True``: all, or a mesh; :mod:`satjax.sharding`):
    each device draws and simulates its own paths; n_paths must be divisible by the device count.
    """
    _check(protocol, data)
    t1 = protocol.tau if t1 is None else t1
    check_time(t0, protocol.tau, "t0")
    check_time(t1, protocol.tau, "t1")
    if float(protocol.temperature(as_float(t0))) <= 0.0:
        raise ValueError(f"T_t0 = 0 at t0 = {float(t0):g}: S_tot diverges; start at t0 > 0")
    if n_paths < 2 or n_steps < 1:
        raise ValueError("need n_paths >= 2 and n_steps >= 1")
    mesh = _sh.resolve(shard)
    _sh.check_divisible(n_paths, mesh, "paths")
    return _path_entropy(key, protocol, data, as_float(t0), as_float(t1), n_paths, n_steps, chunk,
                         mesh)
