"""Reverse-time generation: probability-flow ODE and reverse SDE (docs/theory.md §3).

Reverse time is t̃ = τ − t and the exact reverse process has P†_t̃ = P_{τ−t̃}. Generation solves

    probability-flow ODE   dx/dt̃ = −ν̂_{τ−t̃}(x),   ν̂ = f − T s_θ                    (10, 11, 15)
    reverse SDE            dx = [−f + 2T s_θ] dt̃ + sqrt(2T) dB                       (8, 9)

from samples of P_τ at t̃ = 0. In forward time the probability-flow ODE is simply dx/dt = ν_t(x)
(Eq. 1 read as a transport equation), integrated from t = τ down to t = 0, so one solver serves
both directions: :func:`reverse_ode` (t decreasing, generation) and :func:`forward_ode`
(t increasing, pushing data through the forward flow) are :func:`solve_ode` with the sign of
the step fixed.

**Fields.** A velocity or score is a *field*: a callable ``field(x, t) -> (d,)`` for one point
``x`` (d,) at forward time ``t`` (solvers ``vmap`` it over the batch). Fields are immutable
pytrees (:class:`Field`, a ``flax.struct.PyTreeNode`` with ``__call__``): their array leaves
(schedule parameters, data, network weights) are traced, their class and static attributes fix
the compiled program. The solvers are jit-compiled with the field as an ordinary pytree
argument, so **changing numbers (schedule parameters, data, model ``params``) never recompiles**
and ``jax.grad`` flows to every leaf. Build fields with

* :func:`exact_velocity` / :func:`exact_score` — ν_t and ∇ln P_t of Gaussian-mixture data
  (``satjax.forward``; leaves: the protocol and the data);
* :func:`field` — ``field(fn, params)`` for a model ``fn(params, x, t)``: ``fn`` is static
  (hashed by identity, so define it once), ``params`` is a pytree leaf;
* :func:`velocity_from_score` / :func:`score_from_velocity` — Eq. 11 and its inverse.

A bare callable ``fn(x, t)`` is also accepted (wrapped by :func:`as_field` as a static
function): it works, but every new function object — e.g. a fresh closure over new parameter
values — compiles again. Prefer :func:`field` for anything that changes.

**Solvers.** Fixed-step Euler (order 1), Heun (2) and classical RK4 (4) for the ODE and
Euler–Maruyama (weak order 1) for the SDE run as nested ``lax.scan`` loops that keep only the
saved states; they return :class:`satjax.forward.Trajectory` (``ts`` forward times of the saved
states, ``xs`` (S, N, d), ``finite``). :func:`solve_ode_adaptive` uses diffrax (Tsit5, Dopri5,
Dopri8 with a PID step-size controller) and returns :class:`AdaptiveTrajectory` with the step
count and diffrax's result code.

**Gradients.** Every solver is differentiable in reverse mode with respect to the initial points,
the times and every leaf of the field. Reverse mode through a fixed-step solve stores the
residuals of every step: memory grows linearly with the number of steps,
O(n_steps × N × (d + per-evaluation intermediates) × stages); for a Gaussian-mixture field the
intermediates are the N × K responsibilities. ``checkpoint=True`` wraps each step in
``jax.checkpoint``: only the state x (N, d) is stored per step, O(n_steps × N × d), and the
step's field evaluations are recomputed on the backward pass (about one extra forward solve).

**Singular ends.** For schedules with m_τ = 0 (cosine, cond-OT) the force f_t = (∂_t ln m) x and
T_t diverge at t = τ, but the stable mixture velocity of :func:`exact_velocity` is finite there,
so the ODE may start exactly at τ. Forms that use f and T separately (:func:`velocity_from_score`,
:func:`score_from_velocity`, :func:`reverse_sde`) must stop short of such ends.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Float

from satjax import sharding as _sh
from satjax._util import as_float, check_time, is_concrete
from satjax.forward import Trajectory, check
from satjax.protocol import Protocol
from satjax.pytree import Node

METHODS = ("euler", "heun", "rk4")
ADAPTIVE_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}

# ------------------------------------------------------------------------------------ fields


class Field(Node):
    """A vector field ``field(x, t) -> (d,)`` at one point x (d,) and forward time t.

    Subclasses implement ``__call__``. Array attributes are pytree leaves (traced under jit,
    differentiable); static attributes and the class select the compiled program. A field that
    knows its horizon exposes ``tau`` (solvers then default t_start/t_end to it).
    """

    def __call__(self, x, t):
        raise NotImplementedError

    def batch(self, x, t):
        """The field at a batch of points x (N, d) at one time t; solvers call this."""
        return jax.vmap(self, in_axes=(0, None))(x, t)


class ParamField(Field):
    """``fn(params, x, t)`` with a static ``fn`` and a pytree of arrays ``params``.

    ``tau`` (optional) is the horizon of the process the field belongs to.
    """

    params: Any
    fn: Callable = struct.field(pytree_node=False)
    tau: Any = None

    def __call__(self, x, t):
        return self.fn(self.params, x, t)


class FunctionField(Field):
    """A bare callable ``fn(x, t)`` held as static structure (recompiles per function object)."""

    fn: Callable = struct.field(pytree_node=False)
    tau: Any = None

    def __call__(self, x, t):
        return self.fn(x, t)


def _check_diffusion(protocol):
    if not isinstance(protocol, Protocol) or not protocol.stochastic:
        raise TypeError("a score field needs a diffusion protocol (schedule or linear force: "
                        f"it uses f_t and T_t); got {type(protocol).__name__}")


class ExactField(Field):
    """Base of the exact fields of a protocol on its data (the tiled engine for mixtures)."""

    protocol: Protocol
    data: object

    @property
    def tau(self):
        return self.protocol.tau

    def output(self, x, t):
        raise NotImplementedError

    def __call__(self, x, t):
        return self.output(x[None], t)[0]

    def batch(self, x, t):  # the whole batch at once (bounded memory in the engine)
        return self.output(x, t)


class ExactVelocity(ExactField):
    """The exact velocity ν_t(x) of the protocol's path (Eq. 1, docs/theory.md §2)."""

    def output(self, x, t):
        return self.protocol.fields(self.data, x, as_float(t), ("velocity",)).velocity


class ExactScore(ExactField):
    """The exact score ∇ln P_t(x) (Eq. 17)."""

    def output(self, x, t):
        return self.protocol.fields(self.data, x, as_float(t), ("score",)).score


class VelocityFromScore(Field):
    """ν̂_t(x) = f_t(x) − T_t s(x, t) (Eq. 11) from a score field s."""

    protocol: Protocol
    score: Field

    @property
    def tau(self):
        return self.protocol.tau

    def __call__(self, x, t):
        return self.protocol.force(x, t) - self.protocol.temperature(t) * self.score(x, t)

    def batch(self, x, t):
        f = jax.vmap(self.protocol.force, in_axes=(0, None))(x, t)
        return f - self.protocol.temperature(t) * self.score.batch(x, t)


class ScoreFromVelocity(Field):
    """s(x, t) = (f_t(x) − ν̂_t(x)) / T_t (Eq. 11 inverted) from a velocity field ν̂."""

    protocol: Protocol
    velocity: Field

    @property
    def tau(self):
        return self.protocol.tau

    def __call__(self, x, t):
        return (self.protocol.force(x, t) - self.velocity(x, t)) / self.protocol.temperature(t)

    def batch(self, x, t):
        f = jax.vmap(self.protocol.force, in_axes=(0, None))(x, t)
        return (f - self.velocity.batch(x, t)) / self.protocol.temperature(t)


def as_field(fn) -> Field:
    """A :class:`Field` as is; a bare callable ``fn(x, t)`` wrapped as a static function.

    Raises:
      TypeError: ``fn`` is not callable.
    """
    if isinstance(fn, Field):
        return fn
    if not callable(fn):
        raise TypeError(f"a field must be a Field or a callable fn(x, t); got {type(fn).__name__}")
    return FunctionField(fn=fn)


def field(fn: Callable, params: Any = None, *, tau=None) -> ParamField:
    """A field from a model ``fn(params, x, t) -> (d,)`` and its parameters.

    ``fn`` is static (define it once: a new function object compiles again); ``params`` is a
    pytree of arrays that may change, be optimised or be differentiated without recompiling.

    Args:
      fn: callable ``fn(params, x, t)`` for one point x (d,) and a scalar time t.
      params: pytree of arrays.
      tau: optional horizon τ (lets solvers default t_start/t_end to it).

    Example:
      >>> u = field(lambda p, x, t: p["a"] * x, {"a": jnp.array(-1.0)}, tau=1.0)
      >>> reverse_ode(u, jnp.ones((4, 1)), n_steps=10).xs[-1]   # ≈ e^{1} · 1
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable fn(params, x, t); got {type(fn).__name__}")
    return ParamField(params=params, fn=fn, tau=None if tau is None else as_float(tau))


def exact_velocity(protocol: Protocol, data) -> ExactVelocity:
    """The exact velocity ν_t(x) of ``protocol`` on ``data`` as a field (Eq. 1).

    For a linear force it is the mixture velocity in the stable form of docs/theory.md §2:
    finite at t = 0 (components with S_k > 0) and at t = τ even where m_τ = 0.

    Raises:
      TypeError, ValueError: wrong object types or mismatched dimensions.
    """
    check(protocol, data)
    return ExactVelocity(protocol=protocol, data=data)


def exact_score(protocol: Protocol, data) -> ExactScore:
    """The exact score ∇ln P_t(x) of the marginal (Eq. 17) as a field."""
    check(protocol, data)
    if not protocol.has_density:
        raise ValueError(f"{type(protocol).__name__} has no density: no score")
    return ExactScore(protocol=protocol, data=data)


def velocity_from_score(protocol: Protocol, score) -> VelocityFromScore:
    """ν̂_t(x) = f_t(x) − T_t s(x, t) (Eq. 11): the probability-flow velocity of a score model.

    Uses f and T separately, so it is not finite where they diverge (t = τ for m_τ = 0).
    """
    _check_diffusion(protocol)
    return VelocityFromScore(protocol=protocol, score=as_field(score))


def score_from_velocity(protocol: Protocol, velocity) -> ScoreFromVelocity:
    """s(x, t) = (f_t(x) − ν̂_t(x)) / T_t (Eq. 11 inverted): the score of a velocity model.

    Valid only where 0 < T_t < ∞ (T_0 = 0 for cosine and cond-OT; T and f diverge at t = τ
    where m_τ = 0). Inside (0, τ) it inverts :func:`velocity_from_score`.
    """
    _check_diffusion(protocol)
    return ScoreFromVelocity(protocol=protocol, velocity=as_field(velocity))


# ----------------------------------------------------------------------------- validation


def _check_points(x0) -> jax.Array:
    x0 = jnp.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"`x0` must have shape (N, d); got {x0.shape}")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.result_type(float))
    return x0


def _check_field_output(fld: Field, x0, t, name: str) -> None:
    out = jax.eval_shape(fld, jax.ShapeDtypeStruct(x0.shape[1:], x0.dtype),
                         jax.ShapeDtypeStruct((), jnp.result_type(float)))
    if not hasattr(out, "shape") or out.shape != x0.shape[1:]:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"`{name}` must map a point of shape {x0.shape[1:]} and a scalar time "
                         f"to shape {x0.shape[1:]}; got {got}")


def _save_spec(n_steps, n_save, save_every) -> int:
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"`n_steps` must be a positive int; got {n_steps!r}")
    if n_save is not None and save_every is not None:
        raise ValueError("give at most one of `n_save` and `save_every`")
    if save_every is not None:
        if not isinstance(save_every, int) or save_every < 1 or n_steps % save_every:
            raise ValueError(f"`save_every` ({save_every!r}) must be a positive divisor of "
                             f"`n_steps` ({n_steps})")
        return n_steps // save_every
    n_save = 1 if n_save is None else n_save
    if not isinstance(n_save, int) or n_save < 1 or n_steps % n_save:
        raise ValueError(f"`n_steps` ({n_steps}) must be a positive multiple of `n_save` "
                         f"({n_save!r})")
    return n_save


def _times(fld, t_start, t_end, direction: Optional[str]):
    """Resolve default times from the field's τ, check [0, τ] and the direction eagerly."""
    tau = getattr(fld, "tau", None)
    if t_start is None or t_end is None:
        if tau is None:
            raise ValueError("the field does not know its horizon tau: give `t_start` and "
                             "`t_end` explicitly (or build it with `field(..., tau=...)`)")
        t_start = tau if t_start is None else t_start
        t_end = tau if t_end is None else t_end
    for name, v in (("t_start", t_start), ("t_end", t_end)):
        if jnp.ndim(v) != 0:
            raise ValueError(f"`{name}` must be a scalar; got shape {jnp.shape(v)}")
        if tau is not None:
            check_time(v, tau, name)
    if is_concrete(t_start, t_end):
        a, b = float(t_start), float(t_end)
        if direction == "reverse" and not a > b:
            raise ValueError(f"reverse time needs t_start > t_end (t runs from noise towards "
                             f"data); got t_start={a:g}, t_end={b:g}")
        if direction == "forward" and not b > a:
            raise ValueError(f"forward time needs t_end > t_start; got t_start={a:g}, "
                             f"t_end={b:g}")
        if direction is None and a == b:
            raise ValueError(f"`t_start` and `t_end` must differ; both are {a:g}")
    return as_float(t_start), as_float(t_end)


# --------------------------------------------------------------------------- fixed step


def _euler(v, x, t, dt):
    return x + dt * v(x, t)


def _heun(v, x, t, dt):
    k1 = v(x, t)
    k2 = v(x + dt * k1, t + dt)
    return x + 0.5 * dt * (k1 + k2)


def _rk4(v, x, t, dt):
    h = 0.5 * dt
    k1 = v(x, t)
    k2 = v(x + h * k1, t + h)
    k3 = v(x + h * k2, t + h)
    k4 = v(x + dt * k3, t + dt)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


_STEPPERS = {"euler": _euler, "heun": _heun, "rk4": _rk4}


def _scan_saved(step, x0, n_steps, n_save, checkpoint):
    """Run ``step(x, i)`` for i < n_steps in nested scans, keeping x0 and n_save states."""
    every = n_steps // n_save
    if checkpoint:
        step = jax.checkpoint(step, prevent_cse=False)

    def inner(x, i):
        return step(x, i), None

    def outer(x, j):
        x, _ = jax.lax.scan(inner, x, j * every + jnp.arange(every))
        return x, x

    _, xs = jax.lax.scan(outer, x0, jnp.arange(n_save))
    return jnp.concatenate([x0[None], xs], axis=0)


def _saved_times(t0, t1, n_save):
    return t0 + (t1 - t0) * (jnp.arange(n_save + 1) / n_save).astype(t0.dtype)


@partial(jax.jit, static_argnames=("method", "n_steps", "n_save", "checkpoint", "mesh"))
def _ode_fixed(velocity, x0, t0, t1, method, n_steps, n_save, checkpoint, mesh=None):
    dt = (t1 - t0) / n_steps
    v = velocity.batch
    stepper = _STEPPERS[method]

    def step(x, i):
        t = t0 + i * dt
        return _sh.constrain(stepper(v, x, t, dt).astype(x.dtype), mesh)

    xs = _scan_saved(step, x0, n_steps, n_save, checkpoint)
    return Trajectory(ts=_saved_times(t0, t1, n_save), xs=xs, finite=jnp.all(jnp.isfinite(xs)))


def solve_ode(velocity, x0: Float[Array, "n d"], *, t_start, t_end, method: str = "rk4", n_steps: int = 500,
              n_save: Optional[int] = None, save_every: Optional[int] = None,
              checkpoint: bool = False, shard: _sh.ShardSpec = False) -> Trajectory:
    """Fixed-step solve of the transport ODE dx/dt = ν_t(x) from t_start to t_end (either way).

    With t_start > t_end this is the probability-flow ODE dx/dt̃ = −ν̂_{τ−t̃}(x) of Eq. 10, 11, 15
    (t̃ = τ − t); with t_start < t_end it pushes points along the forward flow of Eq. 1.

    Args:
      velocity: field ``(x (d,), t) -> (d,)`` (see :class:`Field`; bare callables recompile per
        function object).
      x0: initial points (N, d) at t_start.
      t_start, t_end: forward times (checked against [0, τ] when the field knows τ).
      method: ``"euler"`` (order 1), ``"heun"`` (2) or ``"rk4"`` (4).
      n_steps: number of equal steps (static: changing it recompiles).
      n_save: number of saved states after the start, equally spaced (n_steps a multiple of it);
        default 1 (start and end only).
      save_every: alternatively, save every k steps (k a divisor of n_steps).
      checkpoint: ``jax.checkpoint`` each step: reverse-mode memory O(n_steps × N × d) instead of
        all per-step residuals, at the cost of recomputing the field on the backward pass.
      shard: split the N points over devices (``True``: all, or a mesh with a ``"samples"``
        axis; see :mod:`satjax.sharding`): x0 is placed with its rows split and every step
        stays on the device owning the point; ``xs`` is split along N. N must be divisible by
        the device count; the field's leaves (parameters, data) are replicated.

    Returns:
      :class:`satjax.forward.Trajectory` with ``ts`` (S,), ``xs`` (S, N, d), S = n_save + 1, and
      ``finite``.

    Raises:
      ValueError: bad shapes (x0 not (N, d), field output not (d,)), unknown method, save spec
        that does not divide n_steps, times outside [0, τ] or equal.
    """
    if method not in _STEPPERS:
        raise ValueError(f"unknown `method` {method!r}; expected one of {METHODS}")
    n_save = _save_spec(n_steps, n_save, save_every)
    fld = as_field(velocity)
    x0 = _check_points(x0)
    t0, t1 = _times(fld, t_start, t_end, None)
    _check_field_output(fld, x0, t0, "velocity")
    mesh = _sh.resolve(shard)
    x0 = _sh.shard_samples(x0, mesh)
    return _ode_fixed(fld, x0, t0, t1, method, n_steps, n_save, bool(checkpoint), mesh)


def reverse_ode(velocity, x0: Float[Array, "n d"], *, t_start=None, t_end=0.0, method: str = "rk4",
                n_steps: int = 500, n_save: Optional[int] = None,
                save_every: Optional[int] = None, checkpoint: bool = False,
                shard: _sh.ShardSpec = False) -> Trajectory:
    """Probability-flow ODE dx/dt̃ = −ν̂_{τ−t̃}(x) (Eq. 10, 11, 15): generation from P_τ.

    Integrates forward time t from ``t_start`` (default τ) down to ``t_end`` (default 0). With the
    exact velocity and x0 ~ P_{t_start}, the states at saved times t are distributed as P_t.
    See :func:`solve_ode` for the arguments; ``ts`` in the result are forward times, decreasing.

    Raises:
      ValueError: as :func:`solve_ode`, and t_start ≤ t_end.

    Example:
      >>> sch, q = schedules.cosine(), mixtures.gmm([-2.0, 2.0], 0.5)
      >>> x_tau = forward.sample_marginal(key, sch, q, sch.tau, 1000)
      >>> gen = reverse_ode(exact_velocity(sch, q), x_tau, n_steps=200).xs[-1]   # ~ q
    """
    fld = as_field(velocity)
    t0, t1 = _times(fld, t_start, t_end, "reverse")
    return solve_ode(fld, x0, t_start=t0, t_end=t1, method=method, n_steps=n_steps,
                     n_save=n_save, save_every=save_every, checkpoint=checkpoint, shard=shard)


def forward_ode(velocity, x0: Float[Array, "n d"], *, t_start=0.0, t_end=None, method: str = "rk4",
                n_steps: int = 500, n_save: Optional[int] = None,
                save_every: Optional[int] = None, checkpoint: bool = False,
                shard: _sh.ShardSpec = False) -> Trajectory:
    """Transport along the forward flow dx/dt = ν_t(x) (Eq. 1) from t_start (0) up to t_end (τ).

    With the exact velocity it maps P_{t_start} onto P_{t_end} (the deterministic counterpart of
    the forward SDE, Eq. 2). Arguments as :func:`solve_ode`.

    Raises:
      ValueError: as :func:`solve_ode`, and t_end ≤ t_start.
    """
    fld = as_field(velocity)
    t0, t1 = _times(fld, t_start, t_end, "forward")
    return solve_ode(fld, x0, t_start=t0, t_end=t1, method=method, n_steps=n_steps,
                     n_save=n_save, save_every=save_every, checkpoint=checkpoint, shard=shard)


# ------------------------------------------------------------------------------ reverse SDE


@partial(jax.jit, static_argnames=("n_steps", "n_save", "checkpoint", "mesh"))
def _sde_fixed(key, protocol, score, x0, t0, t1, n_steps, n_save, checkpoint, mesh=None):
    dt = (t1 - t0) / n_steps  # < 0: forward time decreases
    h = -dt  # the reverse-time step dt̃ > 0
    s = score.batch
    f = jax.vmap(protocol.force, in_axes=(0, None))

    def step(x, i):
        t = t0 + i * dt  # left end in reverse time t̃ = τ − t
        temp = protocol.temperature(t)
        drift = -f(x, t) + 2.0 * temp * s(x, t)
        noise = _sh.constrain(jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype),
                              mesh)
        x_new = x + drift * h + jnp.sqrt(2.0 * jnp.maximum(temp, 0.0) * h) * noise
        return _sh.constrain(x_new.astype(x.dtype), mesh)

    xs = _scan_saved(step, x0, n_steps, n_save, checkpoint)
    return Trajectory(ts=_saved_times(t0, t1, n_save), xs=xs, finite=jnp.all(jnp.isfinite(xs)))


def reverse_sde(key, protocol: Protocol, score, x0: Float[Array, "n d"], *, t_start=None, t_end=0.0,
                n_steps: int = 1000, n_save: Optional[int] = None,
                save_every: Optional[int] = None, checkpoint: bool = False,
                shard: _sh.ShardSpec = False) -> Trajectory:
    """Euler–Maruyama for the reverse SDE dx = [−f + 2T s] dt̃ + sqrt(2T) dB (Eq. 8, 9).

    In reverse time t̃ = τ − t, from forward time ``t_start`` (default τ) down to ``t_end``
    (default 0); the drift and noise are evaluated at the left end of each reverse-time step
    (weak order 1). With the exact score and x0 ~ P_{t_start}, the states at saved times are
    distributed as P_t. Uses f_t and T_t separately: stop short of ends where they diverge
    (t = τ for m_τ = 0, e.g. cosine and cond-OT).

    Args:
      key: PRNG key (consumed; one ``fold_in`` per step).
      protocol: the forward schedule or linear force (gives f_t and T_t).
      score: score field ``(x (d,), t) -> (d,)``, e.g. :func:`exact_score` or a model via
        :func:`field`.
      x0: initial points (N, d) at t_start.
      t_start, t_end: forward times in [0, τ], t_start > t_end.
      n_steps, n_save, save_every, checkpoint, shard: as :func:`solve_ode`; with ``shard`` each
        device also draws the noise of its own points (the same numbers as unsharded).

    Returns:
      :class:`satjax.forward.Trajectory` (``ts`` decreasing forward times).

    Raises:
      ValueError: bad shapes, save spec, times.
    """
    _check_diffusion(protocol)
    n_save = _save_spec(n_steps, n_save, save_every)
    fld = as_field(score)
    x0 = _check_points(x0)
    if protocol.dim is not None and x0.shape[1] != protocol.dim:
        raise ValueError(f"protocol acts in {protocol.dim} dimensions but x0 has {x0.shape[1]}")
    t_start = protocol.tau if t_start is None else t_start
    for name, v in (("t_start", t_start), ("t_end", t_end)):
        if jnp.ndim(v) != 0:
            raise ValueError(f"`{name}` must be a scalar; got shape {jnp.shape(v)}")
        check_time(v, protocol.tau, name)
    if is_concrete(t_start, t_end) and not float(t_start) > float(t_end):
        raise ValueError(f"reverse time needs t_start > t_end; got t_start={float(t_start):g}, "
                         f"t_end={float(t_end):g}")
    t0, t1 = as_float(t_start), as_float(t_end)
    _check_field_output(fld, x0, t0, "score")
    mesh = _sh.resolve(shard)
    x0 = _sh.shard_samples(x0, mesh)
    return _sde_fixed(key, protocol, fld, x0, t0, t1, n_steps, n_save, bool(checkpoint), mesh)


# ------------------------------------------------------------------------------- adaptive


class AdaptiveTrajectory(Trajectory):
    """:class:`~satjax.forward.Trajectory` plus ``n_steps`` (accepted + rejected steps taken),
    ``success`` (bool) and ``result`` (diffrax's ``RESULTS`` item; ``diffrax.RESULTS[result]``
    is its message)."""

    n_steps: jax.Array
    success: jax.Array
    result: Any


@partial(jax.jit, static_argnames=("solver", "n_save", "max_steps", "mesh"))
def _ode_adaptive(velocity, x0, t0, t1, rtol, atol, solver, n_save, max_steps, mesh=None):
    def rhs(t, y, v):
        return _sh.constrain(v.batch(y, t).astype(y.dtype), mesh)

    ts = _saved_times(t0, t1, n_save)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs), ADAPTIVE_SOLVERS[solver](), t0=t0, t1=t1, dt0=None, y0=x0,
        args=velocity, saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=False)
    success = sol.result == diffrax.RESULTS.successful
    xs = sol.ys
    return AdaptiveTrajectory(ts=ts, xs=xs, finite=jnp.all(jnp.isfinite(xs)) & success,
                              n_steps=sol.stats["num_steps"], success=success, result=sol.result)


def solve_ode_adaptive(velocity, x0: Float[Array, "n d"], *, t_start=None, t_end=0.0, solver: str = "tsit5",
                       rtol=1e-7, atol=1e-9, n_save: int = 1, max_steps: int = 4096,
                       throw: bool = True, shard: _sh.ShardSpec = False) -> AdaptiveTrajectory:
    """Adaptive solve of dx/dt = ν_t(x) with diffrax (Eq. 10, 11, 15 when t_start > t_end).

    Defaults to the probability-flow ODE from t = τ to 0; any direction is allowed. The error
    is controlled jointly over the whole batch (N, d) by a PID controller with ``rtol``, ``atol``
    (traced: changing them does not recompile). Differentiable (diffrax's recursive-checkpoint
    adjoint).

    Args:
      velocity: field ``(x (d,), t) -> (d,)``.
      x0: initial points (N, d) at t_start.
      t_start, t_end: forward times (t_start defaults to the field's τ).
      solver: ``"tsit5"``, ``"dopri5"`` or ``"dopri8"``.
      rtol, atol: tolerances of the step-size controller.
      n_save: number of saved states after the start, at equally spaced times.
      max_steps: cap on solver steps (static).
      throw: raise ``RuntimeError`` (eagerly; ``equinox.error_if`` under an outer jit) when the
        solve fails; with ``False`` failure is reported by ``success``/``result`` and the
        unreached saved states are ``inf`` (so ``finite`` is False).
      shard: split the N points over devices, as :func:`solve_ode` (the error norm, hence the
        step size, is still one for the whole batch: an all-reduce per step).

    Returns:
      :class:`AdaptiveTrajectory`.

    Raises:
      ValueError: bad shapes, unknown solver, n_save < 1, bad times.
      RuntimeError: ``throw=True`` and the solve failed (e.g. ``max_steps`` reached).
    """
    if solver not in ADAPTIVE_SOLVERS:
        raise ValueError(f"unknown `solver` {solver!r}; expected one of "
                         f"{tuple(ADAPTIVE_SOLVERS)}")
    if not isinstance(n_save, int) or n_save < 1:
        raise ValueError(f"`n_save` must be a positive int; got {n_save!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int; got {max_steps!r}")
    if is_concrete(rtol, atol) and (float(rtol) < 0 or float(atol) < 0
                                    or float(rtol) + float(atol) <= 0):
        raise ValueError(f"`rtol`, `atol` must be >= 0 and not both 0; got {rtol}, {atol}")
    fld = as_field(velocity)
    x0 = _check_points(x0)
    t0, t1 = _times(fld, t_start, t_end, None)
    _check_field_output(fld, x0, t0, "velocity")
    mesh = _sh.resolve(shard)
    x0 = _sh.shard_samples(x0, mesh)
    out = _ode_adaptive(fld, x0, t0, t1, as_float(rtol), as_float(atol), solver, n_save,
                        max_steps, mesh)
    if throw:
        if is_concrete(out.success):
            if not bool(out.success):
                raise RuntimeError(f"adaptive ODE solve failed: {diffrax.RESULTS[out.result]} "
                                   f"(steps taken: {int(out.n_steps)})")
        else:
            out = out.replace(xs=eqx.error_if(out.xs, ~out.success, "adaptive ODE solve failed"))
    return out


__all__ = [
    "ADAPTIVE_SOLVERS", "METHODS", "AdaptiveTrajectory", "ExactScore", "ExactVelocity", "Field",
    "FunctionField", "ParamField", "ScoreFromVelocity", "Trajectory", "VelocityFromScore",
    "as_field", "exact_score", "exact_velocity", "field", "forward_ode", "reverse_ode",
    "reverse_sde", "score_from_velocity", "solve_ode", "solve_ode_adaptive",
    "velocity_from_score",
]
