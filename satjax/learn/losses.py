"""Training objectives (docs/theory.md §3): DSM (Eq. 18), CFM (Eq. 19, B2), OT-CFM, residuals.

Conditional Gaussian path. For a linear force (Eq. 16) the transition is
P^c_t(x|y) = N(μ_t(y), Σ_t) with μ_t(y) = Φ_t y + c_t (B3, B4). With ε ~ N(0, I) and
Σ_t^{1/2} = σ_t I (isotropic transitions) or the Cholesky factor L_t (full transitions),

    x_t = Φ_t y + c_t + Σ_t^{1/2} ε
    ∇ ln P^c_t(x|y) = −Σ_t⁻¹ (x − μ_t(y))                                            (18)
    ν^c_t(x|y) = (A_t + T_t Σ_t⁻¹)(x − μ_t) + A_t μ_t + b_t                          (19, B2)

The velocity is evaluated in the form that stays finite where A_t is singular (∂_t ln m → −∞ at
m = 0 for cosine/cond-OT at t = τ):

    ν^c = Φ'_t y + c'_t + (Σ'_t/2 + W_t) Σ_t⁻¹ (x − μ_t),   W_t = (K_t Σ_t − Σ_t K_tᵀ)/2

with K_t = ``protocol.rotation_generator(t)`` (A_t = a_t I + K_t; None for schedules) and the
rates Φ', c', Σ' from ``protocol.transition_and_rate(t)`` — the same identity
``satjax.engine.evaluate`` uses for the marginal velocity (Σ'/2 + W = AΣ + T I). For a
schedule it is ν^c = m' y + σ' ε; for the rotating force (Eq. 99) it adds σ (K − Kᵀ)/2 ε.

Because Σ_0 = 0, times are drawn uniformly on [t_min, τ − t_min] with a small ``t_min``
(default 10⁻³ τ).

DSM weighting. The DSM target has size ‖Σ⁻¹(x − μ)‖ ~ 1/σ_t, so the objective is
E_t λ(t) E‖s_θ − ∇ ln P^c_t‖² with λ(t) = tr Σ_t / d (= σ_t² for schedules): the usual
ε-prediction weighting, λ‖s_θ − s^c‖² = ‖σ s_θ + ε‖² for isotropic transitions. CFM is
unweighted, as in Eq. 19. Both are averages over the batch of ‖·‖² summed over dimensions.

OT-CFM. Data y (B, d) and noise ε (B, d) ~ N(0, I) are paired by an exact optimal assignment
for the squared distance (a permutation, so both marginals are kept exactly), then the
conditional path of the schedule is used with the paired noise; for cond-OT this is the straight
interpolant x_t = (1 − t/τ) y + (t/τ) ε_π(y) with velocity (ε_π(y) − y)/τ. Exact assignment is not
jittable: the pairing is done on the host per batch (:func:`ot_pair`) and the jitted step gets
the permuted noise.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from satjax import forward
from satjax._util import as_float, gauss_legendre, is_concrete
from satjax.forces import FullTransition, IsoTransition, LinearForce
from satjax.mixtures import GaussianMixture
from satjax.pytree import Node
from satjax.schedules import Schedule

LOSSES = ("dsm", "cfm", "ot-cfm")


# ---------------------------------------------------------------------- conditional path


class Conditional(Node):
    """One conditional sample and its targets: ``x`` = x_t, ``score`` = ∇ln P^c_t(x|y),
    ``velocity`` = ν^c_t(x|y) (None when not asked for), ``weight`` = λ(t) = tr Σ_t / d."""

    x: jax.Array
    score: jax.Array
    velocity: Optional[jax.Array]
    weight: jax.Array


def _phi_y(tr, y):
    if isinstance(tr, IsoTransition):
        v = y if tr.rotation is None else tr.rotation @ y
        return tr.scale * v
    return tr.phi @ y


def _phi_rate_y(tr, dtr, y):
    """Φ'_t y from the transition and its time derivative (same pytree structure)."""
    if isinstance(tr, IsoTransition):
        if tr.rotation is None:
            return dtr.scale * y
        return dtr.scale * (tr.rotation @ y) + tr.scale * (dtr.rotation @ y)
    return dtr.phi @ y


def _shift(tr, y):
    return jnp.zeros_like(y) if tr.shift is None else tr.shift


def _conditional(protocol: LinearForce, y, eps, t, with_velocity: bool) -> Conditional:
    if with_velocity:
        tr, dtr = protocol.transition_and_rate(t)
    else:
        tr, dtr = protocol.transition(t), None
    d = y.shape[-1]
    mu = _phi_y(tr, y) + _shift(tr, y)
    vel = None
    if isinstance(tr, IsoTransition):
        sd = jnp.sqrt(tr.var)
        dev = sd * eps  # x − μ
        score = -eps / sd  # −Σ⁻¹(x − μ) = −ε/σ
        weight = tr.var
        if with_velocity:
            # (Σ'/2)Σ⁻¹(x − μ) = var'/(2σ) ε = σ' ε: finite at t > 0 for every schedule.
            vel = _phi_rate_y(tr, dtr, y) + _shift(dtr, y) + (dtr.var / (2.0 * sd)) * eps
            K = protocol.rotation_generator(t)
            if K is not None:
                # W Σ⁻¹ = (K − Kᵀ)/2 for Σ = var I.
                vel = vel + sd * (0.5 * (K - K.T) @ eps)
    elif isinstance(tr, FullTransition):
        L = jnp.linalg.cholesky(tr.cov)
        dev = L @ eps
        prec_dev = jax.scipy.linalg.solve_triangular(L.T, eps, lower=False)  # Σ⁻¹(x − μ)
        score = -prec_dev
        weight = jnp.trace(tr.cov) / d
        if with_velocity:
            M = 0.5 * dtr.cov
            K = protocol.rotation_generator(t)
            if K is not None:
                M = M + 0.5 * (K @ tr.cov - tr.cov @ K.T)
            vel = _phi_rate_y(tr, dtr, y) + dtr.shift + M @ prec_dev
    else:
        raise TypeError(f"protocol.transition returned {type(tr).__name__}; expected an "
                        "IsoTransition or FullTransition")
    dt = y.dtype
    return Conditional(x=(mu + dev).astype(dt), score=score.astype(dt),
                       velocity=None if vel is None else vel.astype(dt),
                       weight=jnp.asarray(weight).astype(dt))


def _check_protocol(protocol, dim=None):
    if not isinstance(protocol, LinearForce):
        raise TypeError(f"`protocol` must be a LinearForce (schedule or linear force); "
                        f"got {type(protocol).__name__}")
    if dim is not None and protocol.dim is not None and protocol.dim != dim:
        raise ValueError(f"protocol acts in {protocol.dim} dimensions but the points have "
                         f"dimension {dim}")


def _check_point(protocol, y, eps, t):
    _check_protocol(protocol)
    y, eps = as_float(y), as_float(eps)
    if y.ndim != 1 or eps.shape != y.shape:
        raise ValueError(f"`y` and `eps` must be single points of one shape (d,); "
                         f"got {y.shape} and {eps.shape}")
    _check_protocol(protocol, y.shape[0])
    if jnp.ndim(t) != 0:
        raise ValueError(f"`t` must be a scalar; got shape {jnp.shape(t)}")
    if is_concrete(t, protocol.tau):
        tf, tau = float(t), float(protocol.tau)
        if not 0.0 < tf <= tau:
            raise ValueError(f"`t` must lie in (0, tau] = (0, {tau:g}] (Sigma_0 = 0); got {tf:g}")
    return y, eps, as_float(t)


def conditional_sample(protocol: LinearForce, y, eps, t) -> jax.Array:
    """x_t = Φ_t y + c_t + Σ_t^{1/2} ε, a sample of P^c_t(·|y) (B3, B4).

    Args:
      protocol: schedule or linear force.
      y: data point (d,).
      eps: standard normal noise (d,).
      t: scalar time in (0, τ].

    Returns:
      x_t, shape (d,).
    """
    y, eps, t = _check_point(protocol, y, eps, t)
    return _conditional(protocol, y, eps, t, False).x


def conditional_score(protocol: LinearForce, y, eps, t) -> jax.Array:
    """DSM target ∇ ln P^c_t(x|y) = −Σ_t⁻¹(x − μ_t(y)) at x = x_t(y, ε) (Eq. 18); shape (d,)."""
    y, eps, t = _check_point(protocol, y, eps, t)
    return _conditional(protocol, y, eps, t, False).score


def conditional_velocity(protocol: LinearForce, y, eps, t) -> jax.Array:
    """CFM target ν^c_t(x|y) (Eq. 19, B2) at x = x_t(y, ε), in the stable form of the module
    docstring (Φ' y + c' + (Σ'/2 + W) Σ⁻¹(x − μ)); for schedules m' y + σ' ε. Shape (d,)."""
    y, eps, t = _check_point(protocol, y, eps, t)
    return _conditional(protocol, y, eps, t, True).velocity


def conditional(protocol: LinearForce, y, eps, t) -> Conditional:
    """x_t, the DSM and CFM targets and the weight λ(t) in one pass (Eq. 18, 19)."""
    y, eps, t = _check_point(protocol, y, eps, t)
    return _conditional(protocol, y, eps, t, True)


# ---------------------------------------------------------------------- objectives


class LossTerms(Node):
    """Unreduced loss: ``per_sample`` (B,), times ``t`` (B,), points ``x`` (B, d), ``target``
    (B, d) and the model output ``pred`` (B, d)."""

    per_sample: jax.Array
    t: jax.Array
    x: jax.Array
    target: jax.Array
    pred: jax.Array


def sample_times(key, protocol: LinearForce, n: int, *, t_min=None, dtype=None) -> jax.Array:
    """n times uniform on [t_min, τ − t_min] (Σ_0 = 0 excludes t = 0); t_min default 10⁻³ τ."""
    tau = protocol.tau
    t_min = 1e-3 * tau if t_min is None else t_min
    dtype = dtype or jnp.result_type(float)
    u = jax.random.uniform(key, (n,), dtype=dtype)
    return (t_min + u * (tau - 2.0 * t_min)).astype(dtype)


def _check_batch(protocol, y, eps, t_min):
    _check_protocol(protocol)
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    if y.ndim != 2 or y.shape[0] < 1:
        raise ValueError(f"`y` must be a batch of data points (B, d); got shape {y.shape}")
    _check_protocol(protocol, y.shape[1])
    if eps is not None:
        eps = jnp.asarray(eps, dtype=y.dtype)
        if eps.shape != y.shape:
            raise ValueError(f"`eps` must have the shape of `y` {y.shape}; got {eps.shape}")
    if t_min is not None and is_concrete(t_min, protocol.tau):
        if not 0.0 < float(t_min) < 0.5 * float(protocol.tau):
            raise ValueError(f"`t_min` must lie in (0, tau/2); got {float(t_min):g} "
                             f"(tau = {float(protocol.tau):g})")
    return y, eps


def _terms(key, fn, protocol, y, eps, t_min, objective):
    k_t, k_eps = jax.random.split(key)
    if eps is None:
        eps = jax.random.normal(k_eps, y.shape, y.dtype)
    t = sample_times(k_t, protocol, y.shape[0], t_min=t_min, dtype=y.dtype)
    cond = jax.vmap(lambda yi, ei, ti: _conditional(protocol, yi, ei, ti,
                                                    objective == "cfm"))(y, eps, t)
    pred = fn(cond.x, t)
    if pred.shape != y.shape:
        raise ValueError(f"model output must have shape {y.shape}; got {pred.shape}")
    if objective == "cfm":
        target = cond.velocity
        per = jnp.sum((pred - target) ** 2, axis=-1)
    else:
        target = cond.score
        per = cond.weight * jnp.sum((pred - target) ** 2, axis=-1)
    return LossTerms(per_sample=per, t=t, x=cond.x, target=target, pred=pred)


def dsm_loss(key, score_fn: Callable, protocol: LinearForce, y, *, eps=None, t_min=None,
             reduce: bool = True):
    """Denoising score matching (Eq. 18), weighted by λ(t) = tr Σ_t / d.

    L = E_{t, y, ε} λ(t) ‖s_θ(x_t, t) + Σ_t⁻¹(x_t − μ_t(y))‖²,  t ~ U[t_min, τ − t_min].

    Args:
      key: PRNG key; split into (times, noise) in that order.
      score_fn: s_θ(x (B, d), t (B,)) -> (B, d).
      protocol: schedule or linear force.
      y: data batch (B, d).
      eps: optional noise (B, d) (drawn from ``key`` when None).
      t_min: smallest time (default 10⁻³ τ).
      reduce: False returns the :class:`LossTerms` instead of the batch mean.

    Returns:
      Scalar loss (or LossTerms).
    """
    y, eps = _check_batch(protocol, y, eps, t_min)
    terms = _terms(key, score_fn, protocol, y, eps, t_min, "dsm")
    return jnp.mean(terms.per_sample) if reduce else terms


def cfm_loss(key, velocity_fn: Callable, protocol: LinearForce, y, *, eps=None, t_min=None,
             reduce: bool = True):
    """Conditional flow matching (Eq. 19, B2): L = E_{t, y, ε} ‖u_θ(x_t, t) − ν^c_t(x_t|y)‖².

    Its gradient equals that of the marginal FM loss E‖u_θ − ν_t‖² (App. A): the two differ by
    E‖ν^c‖² − E‖ν‖², which does not depend on θ.

    Args:
      key: PRNG key; split into (times, noise) in that order.
      velocity_fn: u_θ(x (B, d), t (B,)) -> (B, d).
      protocol: schedule or linear force.
      y: data batch (B, d).
      eps: optional noise (B, d), e.g. OT-paired (:func:`ot_pair`); drawn from ``key`` if None.
      t_min: smallest time (default 10⁻³ τ).
      reduce: False returns the :class:`LossTerms` instead of the batch mean.

    Returns:
      Scalar loss (or LossTerms).
    """
    y, eps = _check_batch(protocol, y, eps, t_min)
    terms = _terms(key, velocity_fn, protocol, y, eps, t_min, "cfm")
    return jnp.mean(terms.per_sample) if reduce else terms


def loss_fn(name: str) -> Callable:
    """The objective for a loss name: ``"dsm"`` -> :func:`dsm_loss`; ``"cfm"`` and ``"ot-cfm"``
    -> :func:`cfm_loss` (OT-CFM differs only by the paired noise it is given)."""
    return {"dsm": dsm_loss, "cfm": cfm_loss, "ot-cfm": cfm_loss}[check_loss_name(name)]


def check_loss_name(name) -> str:
    if not isinstance(name, str) or name.lower() not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
    return name.lower()


# ---------------------------------------------------------------------- OT pairing


def hungarian_coupling(y, z):
    """Exact OT assignment ``(perm, info)`` by the Hungarian algorithm of
    ``scipy.optimize.linear_sum_assignment`` on the squared-distance matrix (CPU, O(B³));
    y[i] ↔ z[perm[i]]. A ``coupling_fn`` for :func:`ot_pair` independent of
    :mod:`satjax.geometry`."""
    from scipy.optimize import linear_sum_assignment

    cost = np.sum((y[:, None, :] - z[None, :, :]) ** 2, axis=-1)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm, {"backend": "scipy.linear_sum_assignment"}


def default_coupling(y, z):
    """Exact OT assignment of two equal-size point sets: (perm, info), y[i] ↔ z[perm[i]].

    Uses ``satjax.geometry.distances.ot_assignment`` when that module can be imported, else the
    exact Hungarian algorithm of ``scipy.optimize.linear_sum_assignment`` on the squared-distance
    matrix (also exact; CPU only). The choice is recorded in ``info["backend"]``.
    """
    try:
        from satjax.geometry.distances import ot_assignment
    except ImportError:
        return hungarian_coupling(np.asarray(y), np.asarray(z))
    res = ot_assignment(jnp.asarray(y), jnp.asarray(z))
    info = {"backend": "satjax.geometry.distances.ot_assignment"}
    if isinstance(res, tuple):
        res, extra = res[0], res[1:]
        if extra and isinstance(extra[0], dict):
            info.update(extra[0])
    for attr in ("perm", "permutation", "assignment"):
        if hasattr(res, attr):
            res = getattr(res, attr)
            break
    return np.asarray(res), info


def _pair_cost(y, z):
    return np.mean(np.sum((y - z) ** 2, axis=-1))


def ot_pair(y, z, coupling_fn: Optional[Callable] = None):
    """Pair data with noise by an exact minibatch OT assignment (host side, not jittable).

    Args:
      y: data batch (B, d).
      z: noise batch (B, d) (e.g. ε ~ N(0, I), the endpoint of a schedule with m_τ = 0, σ_τ = 1;
        for the squared distance the optimal assignment does not change when z is scaled).
      coupling_fn: ``coupling_fn(y, z) -> (perm, info)`` with y[i] paired with z[perm[i]];
        default :func:`default_coupling`.

    Returns:
      (z[perm] (B, d), info) where info holds ``cost`` = mean ‖y_i − z_perm(i)‖²,
      ``independent_cost`` = mean ‖y_i − z_i‖², ``marginal_error`` (max deviation of the
      coupling's marginals from uniform; 0 for a permutation), ``backend`` and whatever the
      coupling reported.

    Raises:
      ValueError: when the coupling does not return a permutation of range(B), returns
        non-finite values, or its pairing costs more than its own inverse (a flipped index
        convention); there is never a silent fallback to independent pairs.
    """
    y_np = np.asarray(y, dtype=np.float64)
    z_np = np.asarray(z, dtype=np.float64)
    if y_np.ndim != 2 or z_np.shape != y_np.shape:
        raise ValueError(f"`y` and `z` must be batches of one shape (B, d); got "
                         f"{y_np.shape} and {z_np.shape}")
    if not (np.all(np.isfinite(y_np)) and np.all(np.isfinite(z_np))):
        raise ValueError("OT pairing got non-finite data or noise")
    fn = default_coupling if coupling_fn is None else coupling_fn
    try:
        out = fn(y, z)
    except Exception as err:  # a failed coupling must never become independent pairs
        raise ValueError(f"the OT coupling failed: {type(err).__name__}: {err}") from err
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError("`coupling_fn` must return (perm, info)")
    perm, info = out
    perm = np.asarray(perm)
    B = y_np.shape[0]
    if perm.shape != (B,):
        raise ValueError(f"the OT coupling returned shape {perm.shape}; expected a permutation "
                         f"of shape ({B},)")
    if not np.issubdtype(perm.dtype, np.integer):
        if not np.all(np.isfinite(perm)):
            raise ValueError("the OT coupling returned non-finite indices")
        if not np.all(perm == np.round(perm)):
            raise ValueError("the OT coupling returned non-integer indices")
        perm = perm.astype(np.int64)
    counts = np.bincount(perm, minlength=B) if np.all((perm >= 0) & (perm < B)) else None
    if counts is None or counts.shape != (B,):
        raise ValueError(f"the OT coupling returned indices outside [0, {B})")
    marginal_error = float(np.max(np.abs(counts - 1)) / B)
    if marginal_error > 0:
        raise ValueError(f"the OT coupling is not a permutation (marginal error "
                         f"{marginal_error:.3g}); duplicated or missing indices")
    cost = _pair_cost(y_np, z_np[perm])
    inv_cost = _pair_cost(y_np, z_np[np.argsort(perm)])
    indep = _pair_cost(y_np, z_np)
    if not np.isfinite(cost):
        raise ValueError("the OT pairing cost is not finite")
    if inv_cost < cost * (1 - 1e-9) - 1e-12:
        raise ValueError(
            f"the coupling's inverse pairing is cheaper ({inv_cost:.6g} < {cost:.6g}): "
            "`coupling_fn` must return perm with y[i] paired to z[perm[i]]")
    report = dict(info or {})
    report.update(cost=float(cost), independent_cost=float(indep),
                  marginal_error=marginal_error)
    report.setdefault("backend", "custom")
    return jnp.asarray(np.asarray(z)[perm]), report


def check_ot_protocol(protocol) -> None:
    """OT-CFM pairs data with the terminal noise of a schedule: ValueError for other protocols."""
    if not isinstance(protocol, Schedule):
        raise ValueError(
            "OT-CFM pairs data with the noise endpoint of a schedule (x_τ = m_τ y + σ_τ ε with "
            f"m_τ = 0 for cond-OT/cosine); got {type(protocol).__name__}, use loss='cfm'")


def ot_cfm_loss(key, velocity_fn: Callable, protocol: LinearForce, y, *, t_min=None,
                coupling_fn: Optional[Callable] = None):
    """OT-CFM: cfm_loss with noise paired to the data by an exact minibatch OT assignment.

    Eager (the pairing runs on the host). For cond-OT the path is the straight interpolant
    x_t = (1 − t/τ) y + (t/τ) ε_π(y). The learned field transports q to N(0, I) along
    straighter paths than the protocol's own marginals when m_τ = 0.

    Args:
      key: PRNG key; split into (times, noise).
      velocity_fn: u_θ(x (B, d), t (B,)) -> (B, d).
      protocol: a schedule (m_τ = 0 for the endpoint to be N(0, σ_τ² I)).
      y: data batch (B, d).
      t_min: smallest time (default 10⁻³ τ).
      coupling_fn: see :func:`ot_pair`.

    Returns:
      (loss, info) with the pairing report of :func:`ot_pair`.
    """
    check_ot_protocol(protocol)
    y, _ = _check_batch(protocol, y, None, t_min)
    k_t, k_eps = jax.random.split(key)
    eps = jax.random.normal(k_eps, y.shape, y.dtype)
    eps, info = ot_pair(y, eps, coupling_fn)
    return cfm_loss(key, velocity_fn, protocol, y, eps=eps, t_min=t_min), info


# ---------------------------------------------------------------------- conversions


def _pointwise(fn_point, x, t, v):
    """vmap fn_point(x_i, t_i, v_i) over points; x, v (d,) or (N, d); t scalar or (N,)."""
    x = jnp.asarray(x)
    v = jnp.asarray(v)
    single = x.ndim == 1
    xb, vb = (x[None], v[None]) if single else (x, v)
    t = jnp.asarray(t)
    tb = jnp.broadcast_to(t, xb.shape[:1]) if t.ndim == 0 else t
    out = jax.vmap(fn_point)(xb, tb, vb)
    return out[0] if single else out


def velocity_from_score(protocol: LinearForce, score_fn: Callable) -> Callable:
    """ν̂_t(x) = f_t(x) − T_t s_θ(x, t) (Eq. 11): a score model used as a velocity.

    The returned ``fn(x, t)`` takes x (d,) or (N, d) and t scalar or (N,). Where f_t is singular
    (m_t = 0: cond-OT and cosine at t = τ) the result is not finite; stop short of τ.
    """
    _check_protocol(protocol)

    def point(xi, ti, si):
        return protocol.force(xi, ti) - protocol.temperature(ti) * si

    def fn(x, t):
        return _pointwise(point, x, t, score_fn(x, t))

    return fn


def score_from_velocity(protocol: LinearForce, velocity_fn: Callable) -> Callable:
    """s_t(x) = (f_t(x) − u_θ(x, t)) / T_t (Eq. 1 solved for the score); valid where T_t > 0.

    At T_t = 0 (t = 0 for every schedule with σ_0 = 0) the score is not determined by the
    velocity and the result is not finite.
    """
    _check_protocol(protocol)

    def point(xi, ti, vi):
        return (protocol.force(xi, ti) - vi) / protocol.temperature(ti)

    def fn(x, t):
        return _pointwise(point, x, t, velocity_fn(x, t))

    return fn


# ---------------------------------------------------------------------- residual (L_α)


class Residual(Node):
    """L_α = (1/τ)∫ E_{P_t}‖model − exact‖² dt (the loss of Eq. 100) with its Monte-Carlo
    standard error. ``integral`` = τ L_α, ``reference`` = (1/τ)∫ E‖exact‖² dt, ``relative`` =
    value / reference; ``ts`` and ``per_time`` give E‖model − exact‖² at each time node."""

    value: jax.Array
    stderr: jax.Array
    integral: jax.Array
    reference: jax.Array
    relative: jax.Array
    ts: jax.Array
    per_time: jax.Array
    finite: jax.Array


def residual(key, model_fn: Callable, protocol: LinearForce, data: GaussianMixture,
             kind: str = "velocity", n_samples: int = 2048, n_time: int = 32, *,
             t_min: float = 0.0, quadrature: str = "gauss-legendre") -> Residual:
    """Residual L_α = (1/τ)∫_0^τ E_{x~P_t}‖u_θ(x, t) − ν_t(x)‖² dt (α = FM; Eq. 100), or with
    ``kind="score"`` ‖s_θ − ∇ ln P_t‖² (α = SM), against the exact fields of
    ``satjax.forward.velocity`` / ``score`` for Gaussian-mixture data.

    Args:
      key: PRNG key.
      model_fn: ``fn(x (N, d), t scalar) -> (N, d)``.
      protocol: schedule or linear force.
      data: the data mixture q.
      kind: ``"velocity"`` or ``"score"``.
      n_samples: exact samples of P_t per time node.
      n_time: number of time nodes.
      t_min: integrate over [t_min, τ − t_min] (the average is still per unit time of that span).
      quadrature: ``"gauss-legendre"`` (nodes exclude the end points; stderr from the
        per-node sample variances) or ``"uniform"`` (random times; stderr from the spread of the
        per-time means, which includes the time variation).

    Returns:
      :class:`Residual`.

    Raises:
      ValueError: unknown ``kind``/``quadrature``, bad sizes, a model output of the wrong shape.
      TypeError: protocol or data of the wrong type.
    """
    if kind not in ("velocity", "score"):
        raise ValueError(f"`kind` must be 'velocity' or 'score'; got {kind!r}")
    if quadrature not in ("gauss-legendre", "uniform"):
        raise ValueError(f"`quadrature` must be 'gauss-legendre' or 'uniform'; got {quadrature!r}")
    for name, v in (("n_samples", n_samples), ("n_time", n_time)):
        if not isinstance(v, (int, np.integer)) or v < 2:
            raise ValueError(f"`{name}` must be an int >= 2; got {v!r}")
    if not isinstance(data, GaussianMixture):
        raise TypeError(f"`data` must be a GaussianMixture; got {type(data).__name__}")
    _check_protocol(protocol, data.dim)
    tau = float(protocol.tau)
    if not 0.0 <= float(t_min) < 0.5 * tau:
        raise ValueError(f"`t_min` must lie in [0, tau/2); got {t_min}")
    lo, hi = float(t_min), tau - float(t_min)
    span = hi - lo
    k_t, k_x = jax.random.split(key)
    if quadrature == "gauss-legendre":
        ts, w = gauss_legendre(n_time, lo, hi)
        w = np.asarray(w) / span
    else:
        ts = lo + span * jax.random.uniform(k_t, (n_time,), dtype=jnp.result_type(float))
        w = np.full(n_time, 1.0 / n_time)
    ts = np.asarray(ts)
    exact = forward.velocity if kind == "velocity" else forward.score
    means, varis, refs = [], [], []
    for j, t in enumerate(ts):
        x = forward.sample_marginal(jax.random.fold_in(k_x, j), protocol, data, t, n_samples)
        ref = exact(protocol, data, x, t)
        pred = jnp.asarray(model_fn(x, t))
        if pred.shape != x.shape:
            raise ValueError(f"model output must have shape {x.shape} (points (N, d)); "
                             f"got {pred.shape}")
        err = np.asarray(jnp.sum((pred.astype(ref.dtype) - ref) ** 2, axis=-1), dtype=np.float64)
        means.append(err.mean())
        varis.append(err.var(ddof=1))
        refs.append(float(np.mean(np.sum(np.asarray(ref, np.float64) ** 2, axis=-1))))
    means, varis, refs = np.array(means), np.array(varis), np.array(refs)
    value = float(np.sum(w * means))
    if quadrature == "gauss-legendre":
        stderr = float(np.sqrt(np.sum(w**2 * varis / n_samples)))
    else:
        stderr = float(np.std(means, ddof=1) / np.sqrt(n_time))
    reference = float(np.sum(w * refs))
    f = jnp.asarray
    return Residual(value=f(value), stderr=f(stderr), integral=f(value * span),
                    reference=f(reference), relative=f(value / reference if reference > 0
                                                        else np.inf),
                    ts=f(ts), per_time=f(means), finite=f(bool(np.isfinite(value))))
