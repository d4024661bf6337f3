"""Training of score and velocity models with optax (docs/theory.md §3; Eq. 18, 19, OT-CFM).

Pieces, in the jax-md factory style:

* :class:`TrainConfig` — the validated training settings (objective, optimiser, evaluation,
  checkpointing, architecture). It owns the identity of a run: :meth:`TrainConfig.record` (the
  JSON record with the fingerprints of protocol and data and the key) and
  :meth:`TrainConfig.resume_keys` (what must agree for a resume; not ``steps``, so a run can be
  extended).
* :func:`make_train_step` returns ``(init_fn, train_step)``; ``train_step(state, batch, key) ->
  (state, metrics)`` is pure and jitted. ``state`` is a :class:`TrainState` pytree (step,
  params, optimiser state), ``batch`` a :class:`Batch` (data y and noise ε, both (B, d); for
  OT-CFM ε is already OT-paired on the host; :func:`sample_batch` draws one) and ``key`` draws the
  times. The protocol is a traced argument of the jitted core, the model spec and optimiser
  settings are static.
* :func:`resume_run` — continue from a checkpoint (validated against the record).
* :func:`train` — the loop: minibatches from the data mixture, held-out evaluation,
  checkpoints (every ``checkpoint_every`` steps, every ``checkpoint_seconds`` of wall time, at
  the end, on Ctrl-C / SIGTERM, and the last good state on a non-finite loss) and callbacks that
  receive a :class:`StepEvent` after every step. The library prints nothing; a progress bar is a
  callback (:class:`ProgressBar`).

Keys. ``k_init, k_eval, k_base = split(key, 3)``; the key of step n is
``k_n = fold_in(k_base, n)``, with data and noise from ``fold_in(k_n, 0)`` and times from
``fold_in(k_n, 1)``. Every step's randomness depends only on (key, n), so a run resumed from a
checkpoint at step n (params, optimiser state, step and history saved together) reproduces the
uninterrupted run bit for bit.

Extension. ``steps`` is not part of a run's identity: resuming with a larger ``steps`` continues
the run. The cosine schedule decays over ``decay_steps``, which defaults to the ``steps`` of the
first run and is then read from the checkpoint, so an extended run is exactly the single run with
that explicit ``decay_steps`` (after the decay the learning rate stays at its floor lr/100).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from satjax import forward
from satjax.forces import LinearForce
from satjax.learn import checkpoint as ckpt
from satjax.learn.losses import LOSSES, cfm_loss, check_ot_protocol, dsm_loss, ot_pair
from satjax.learn.models import ACTIVATIONS, ModelSpec, field, init_params
from satjax.mixtures import GaussianMixture
from satjax.pytree import Node

LR_SCHEDULES = ("constant", "cosine")
DTYPES = ("float32", "float64")
MAX_STEPS = 10**9
MAX_BATCH = 10**7
MAX_WIDTH = 65536
MAX_DEPTH = 1024
MAX_FREQ = 4096


class TrainState(Node):
    """Optimisation state: ``step`` (int32), ``params``, ``opt_state``."""

    step: jax.Array
    params: Any
    opt_state: Any


class Batch(Node):
    """A minibatch: data ``y`` (B, d) and standard-normal noise ``eps`` (B, d)."""

    y: jax.Array
    eps: jax.Array


# ---------------------------------------------------------------------- configuration


def _int(name, v, lo, hi, optional=False):
    if optional and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"TrainConfig.{name} must be an integer in [{lo}, {hi}]"
                         f"{' or None' if optional else ''}; got {v!r}")


def _positive(name, v, optional=False):
    if optional and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or \
            not math.isfinite(v) or v <= 0:
        raise ValueError(f"TrainConfig.{name} must be a finite number > 0"
                         f"{' or None' if optional else ''}; got {v!r}")


def _choice(name, v, allowed):
    if v not in allowed:
        raise ValueError(f"TrainConfig.{name} must be one of {tuple(allowed)}; got {v!r}")


def _py(v):
    """Python int/float for numpy scalars (JSON)."""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def key_data(key) -> List[int]:
    """The raw uint32 words of a PRNG key (typed or raw) as a list: how a record stores it."""
    try:
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
    except AttributeError:
        pass
    return [int(v) for v in np.asarray(key).ravel()]


# what fixes a run besides protocol, data and key (all but `steps` and the bookkeeping fields)
IDENTITY_FIELDS = ("loss", "batch_size", "lr", "grad_clip", "t_min", "lr_schedule",
                   "decay_steps", "dtype", "eval_size", "width", "depth", "activation", "n_freq")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (frozen; check with :meth:`validate`).

    Attributes:
      loss: ``"dsm"`` (score model, Eq. 18), ``"cfm"`` or ``"ot-cfm"`` (velocity model, Eq. 19).
      steps: total number of optimisation steps, in [0, 10⁹] (a resumed run continues to it;
        larger than the saved step extends the run).
      batch_size: minibatch size B, in [1, 10⁷] (≥ 2 for OT-CFM).
      lr: Adam learning rate, finite and > 0 (the peak for the cosine schedule).
      grad_clip: global-norm gradient clipping, finite > 0, or None (off).
      t_min: smallest training time, in (0, τ/2), or None (10⁻³ τ).
      lr_schedule: ``"constant"`` or ``"cosine"`` (decay to lr/100 over ``decay_steps``, then
        constant).
      decay_steps: length of the cosine decay in [1, 10⁹], or None: the ``steps`` of the first run
        (then read from the checkpoint when resuming). Ignored for ``"constant"``.
      dtype: ``"float32"`` or ``"float64"`` (needs jax_enable_x64); data, protocol leaves and
        parameters are cast to it.
      eval_every: held-out loss every that many steps and at the end, in [0, 10⁹] (0: none).
      eval_size: size of the fixed held-out batch, in [1, 10⁷].
      checkpoint_every: save every that many steps, in [1, 10⁹] (and at the end).
      checkpoint_seconds: also save when that much wall time (seconds, finite > 0) has passed
        since the last save; None: off.
      width, depth, activation, n_freq: the MLP (:class:`~satjax.learn.models.ModelSpec`);
        width in [1, 65536], depth in [1, 1024], n_freq in [0, 4096].
    """

    loss: str = "cfm"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    grad_clip: Optional[float] = None
    t_min: Optional[float] = None
    lr_schedule: str = "constant"
    decay_steps: Optional[int] = None
    dtype: str = "float32"
    eval_every: int = 500
    eval_size: int = 2048
    checkpoint_every: int = 1000
    checkpoint_seconds: Optional[float] = None
    width: int = 128
    depth: int = 3
    activation: str = "silu"
    n_freq: int = 16

    def peak_bytes(self, dim: int) -> int:
        """Estimated peak memory of training a model of dimension ``dim``: parameters with their
        gradients, Adam moments and a checkpoint copy (5 copies), the activations of a batch
        forward and backward (about 8 arrays of batch × width per layer, and the held-out
        batch's), and for OT-CFM the batch × batch cost matrix of each minibatch plan (3 copies)."""
        emb = 1 + 2 * self.n_freq
        params = self.depth * (self.width**2 + self.width * (emb + 1)) \
            + (dim + emb) * self.width + (self.width + 1) * dim
        acts = 8 * (self.batch_size + self.eval_size) * self.width * (self.depth + 1)
        plan = 3 * self.batch_size**2 if self.loss == "ot-cfm" else 0
        return (5 * params + acts + plan) * (8 if self.dtype == "float64" else 4)

    def validate(self, tau: Optional[float] = None) -> "TrainConfig":
        """Check every field (and ``t_min`` < τ/2 when ``tau`` is given); returns ``self``.

        Raises:
          ValueError: naming the field and its allowed values or range.
        """
        _choice("loss", self.loss, LOSSES)
        _int("steps", self.steps, 0, MAX_STEPS)
        _int("batch_size", self.batch_size, 2 if self.loss == "ot-cfm" else 1, MAX_BATCH)
        _positive("lr", self.lr)
        _positive("grad_clip", self.grad_clip, optional=True)
        _positive("t_min", self.t_min, optional=True)
        if tau is not None and self.t_min is not None and not self.t_min < 0.5 * float(tau):
            raise ValueError(f"TrainConfig.t_min must lie in (0, tau/2) = (0, {0.5 * tau:g}); "
                             f"got {self.t_min!r}")
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _int("decay_steps", self.decay_steps, 1, MAX_STEPS, optional=True)
        _choice("dtype", self.dtype, DTYPES)
        _int("eval_every", self.eval_every, 0, MAX_STEPS)
        _int("eval_size", self.eval_size, 1, MAX_BATCH)
        _int("checkpoint_every", self.checkpoint_every, 1, MAX_STEPS)
        _positive("checkpoint_seconds", self.checkpoint_seconds, optional=True)
        _int("width", self.width, 1, MAX_WIDTH)
        _int("depth", self.depth, 1, MAX_DEPTH)
        _choice("activation", self.activation, sorted(ACTIVATIONS))
        _int("n_freq", self.n_freq, 0, MAX_FREQ)
        return self

    # ------------------------------------------------------------------ derived
    @property
    def kind(self) -> str:
        """The model kind the loss trains: ``"score"`` for DSM, ``"velocity"`` otherwise."""
        return "score" if self.loss == "dsm" else "velocity"

    def model_spec(self, dim: int, tau: float) -> ModelSpec:
        """The architecture for data of dimension ``dim`` and horizon ``tau``."""
        return ModelSpec(dim=int(dim), kind=self.kind, width=int(self.width),
                         depth=int(self.depth), activation=self.activation,
                         n_freq=int(self.n_freq), tau=float(tau))

    def resolved(self, saved: Optional[dict] = None) -> "TrainConfig":
        """The config with ``decay_steps`` fixed: None for the constant schedule; for the cosine
        one the given value, else the saved record's (a resumed or extended run), else
        ``max(steps, 1)`` (a first run)."""
        if self.lr_schedule != "cosine":
            return dataclasses.replace(self, decay_steps=None)
        if self.decay_steps is not None:
            return dataclasses.replace(self, decay_steps=int(self.decay_steps))
        ds = (saved or {}).get("decay_steps")
        if isinstance(ds, int) and not isinstance(ds, bool) and ds >= 1:
            return dataclasses.replace(self, decay_steps=ds)
        return dataclasses.replace(self, decay_steps=max(int(self.steps), 1))

    def optim(self) -> "OptimSpec":
        """The static optimiser settings (a resolved config: see :meth:`resolved`)."""
        cosine = self.lr_schedule == "cosine"
        if cosine and self.decay_steps is None:
            raise ValueError("the cosine schedule needs decay_steps (use TrainConfig.resolved)")
        return OptimSpec(loss=self.loss, lr=float(self.lr),
                         grad_clip=None if self.grad_clip is None else float(self.grad_clip),
                         t_min=None if self.t_min is None else float(self.t_min),
                         lr_schedule=self.lr_schedule,
                         decay_steps=int(self.decay_steps) if cosine else 0)

    # ------------------------------------------------------------------ identity
    def resume_keys(self) -> Tuple[str, ...]:
        """The record entries that must agree for a checkpoint to be resumed: the run identity
        (:data:`IDENTITY_FIELDS`: objective, optimiser, dtype, evaluation batch, architecture),
        the data dimension and fingerprint, the protocol fingerprint and the key. Not ``steps``
        (a run may be extended) nor ``eval_every`` / checkpoint periods (bookkeeping)."""
        return IDENTITY_FIELDS + ("data_dim", "data_fingerprint", "protocol_fingerprint", "key")

    def record(self, key, protocol, data) -> dict:
        """The JSON record of this run: every field, plus ``protocol`` (class and parameters,
        ``protocol.describe()``), ``protocol_fingerprint``, ``data_fingerprint``, ``data_dim``
        (:func:`satjax.learn.checkpoint.run_record`) and ``key`` (its raw words)."""
        out = {f.name: _py(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out.update(ckpt.run_record(protocol, data))
        out["key"] = key_data(key)
        return out

    def differences(self, saved: dict, record: dict) -> List[str]:
        """``"name (saved a, now b)"`` for each of :meth:`resume_keys` where a saved record and
        this run's record differ."""
        return [f"{k} (saved {saved.get(k)!r}, now {record.get(k)!r})"
                for k in self.resume_keys() if saved.get(k) != record.get(k)]


@dataclasses.dataclass(frozen=True)
class OptimSpec:
    """Static optimiser and objective settings (hashable: a jit static argument)."""

    loss: str = "cfm"
    lr: float = 1e-3
    grad_clip: Optional[float] = None
    t_min: Optional[float] = None
    lr_schedule: str = "constant"
    decay_steps: int = 0

    def learning_rate(self):
        if self.lr_schedule == "constant":
            return self.lr
        # cosine decay to 1% of lr over decay_steps, then constant
        return optax.cosine_decay_schedule(self.lr, self.decay_steps, alpha=0.01)

    def optimizer(self) -> optax.GradientTransformation:
        adam = optax.adam(self.learning_rate())
        if self.grad_clip is None:
            return adam
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), adam)


# ---------------------------------------------------------------------- the step


def _objective(spec: ModelSpec, opt: OptimSpec, protocol, params, batch: Batch, key):
    def model(x, t):
        return spec.module().apply(params, x, t)

    fn = dsm_loss if opt.loss == "dsm" else cfm_loss
    return fn(key, model, protocol, batch.y, eps=batch.eps, t_min=opt.t_min)


def _tree_finite(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in leaves
                              if jnp.issubdtype(v.dtype, jnp.inexact)]))


@partial(jax.jit, static_argnames=("spec", "opt"))
def _train_step(spec: ModelSpec, opt: OptimSpec, protocol, state: TrainState, batch: Batch, key):
    loss, grads = jax.value_and_grad(
        lambda p: _objective(spec, opt, protocol, p, batch, key))(state.params)
    updates, opt_state = opt.optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    finite = jnp.isfinite(loss) & _tree_finite(grads) & _tree_finite(params)
    return new, {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite}


@partial(jax.jit, static_argnames=("spec", "opt"))
def _eval_loss(spec: ModelSpec, opt: OptimSpec, protocol, params, batch: Batch, key):
    return _objective(spec, opt, protocol, params, batch, key)


def _step_fns(spec: ModelSpec, opt: OptimSpec, protocol, dtype):
    def init_fn(key) -> TrainState:
        params = init_params(key, spec, dtype)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=opt.optimizer().init(params))

    def train_step(state: TrainState, batch: Batch, key):
        return _train_step(spec, opt, protocol, state, batch, key)

    train_step.opt = opt  # type: ignore[attr-defined]
    train_step.core = _train_step  # type: ignore[attr-defined]  # the shared jitted core
    return init_fn, train_step


def make_train_step(spec: ModelSpec, protocol: LinearForce, *, loss: str = "cfm",
                    lr: float = 1e-3, grad_clip: Optional[float] = None,
                    t_min: Optional[float] = None, lr_schedule: str = "constant",
                    decay_steps: Optional[int] = None, dtype=jnp.float32):
    """``(init_fn, train_step)`` for DSM (Eq. 18) or (OT-)CFM (Eq. 19) with Adam.

    Args:
      spec: model description (``kind`` must fit the loss: score for dsm, velocity otherwise).
      protocol: schedule or linear force (a traced argument of the jitted step).
      loss: ``"dsm"``, ``"cfm"`` or ``"ot-cfm"`` (the step is the CFM step; the pairing of
        ``batch.eps`` is the caller's, see :func:`satjax.learn.losses.ot_pair`).
      lr: Adam learning rate (peak value for ``lr_schedule="cosine"``).
      grad_clip: global-norm gradient clipping (None: none).
      t_min: smallest training time (default 10⁻³ τ).
      lr_schedule: ``"constant"`` or ``"cosine"`` (decay to lr/100 over ``decay_steps``).
      decay_steps: length of the cosine decay (required for ``"cosine"``).
      dtype: parameter dtype.

    Returns:
      ``init_fn(key) -> TrainState`` and ``train_step(state, batch, key) -> (state, metrics)``
      with metrics ``loss`` (of the parameters before the update), ``grad_norm``, ``finite``.
      ``train_step.opt`` is the :class:`OptimSpec`, ``train_step.core`` the jitted core shared by
      all steps (its compile cache does not grow with new parameter, data or protocol values).

    Raises:
      ValueError: as :meth:`TrainConfig.validate`; a spec kind that does not fit the loss; a
        cosine schedule without ``decay_steps``.
      TypeError: ``spec`` is not a ModelSpec or ``protocol`` not a LinearForce.
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"`spec` must be a ModelSpec; got {type(spec).__name__}")
    if not isinstance(protocol, LinearForce):
        raise TypeError(f"`protocol` must be a LinearForce (a schedule or linear force); got "
                        f"{type(protocol).__name__}")
    dtype = jnp.dtype(dtype)
    cfg = TrainConfig(loss=loss, lr=lr, grad_clip=grad_clip, t_min=t_min,
                      lr_schedule=lr_schedule, decay_steps=decay_steps, dtype=dtype.name,
                      batch_size=2).validate(float(protocol.tau))
    if cfg.kind != spec.kind:
        raise ValueError(f"loss {loss!r} trains a {cfg.kind} model; the spec has kind "
                         f"{spec.kind!r}")
    if lr_schedule == "cosine" and decay_steps is None:
        raise ValueError("lr_schedule='cosine' needs `decay_steps`")
    return _step_fns(spec, cfg.resolved().optim(), protocol, dtype)


# ---------------------------------------------------------------------- batches


def _sample(data: GaussianMixture, key, n: int, dtype) -> Batch:
    k_y, k_eps = jax.random.split(key)
    y = data.sample(k_y, n).astype(dtype)
    return Batch(y=y, eps=jax.random.normal(k_eps, y.shape, dtype))


_sample_jit = jax.jit(_sample, static_argnames=("n", "dtype"))


def sample_batch(data: GaussianMixture, key, n: int, dtype=jnp.float32) -> Batch:
    """A minibatch of n exact samples y of ``data`` and standard-normal noise ε, both (n, d), in
    ``dtype`` (the batches of :func:`train`: y from ``split(key)[0]``, ε from ``split(key)[1]``).

    Raises:
      TypeError: ``data`` is not a GaussianMixture.
      ValueError: n is not an integer ≥ 1.
    """
    if not isinstance(data, GaussianMixture):
        raise TypeError(f"`data` must be a GaussianMixture; got {type(data).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1; got {n!r}")
    return _sample_jit(data, key, int(n), jnp.dtype(dtype))


@partial(jax.jit, static_argnames=("n", "dtype"))
def _step_inputs(data: GaussianMixture, k_base, step, n: int, dtype):
    """Batch from fold_in(k_n, 0) and the loss key fold_in(k_n, 1), k_n = fold_in(k_base, step)."""
    k_n = jax.random.fold_in(k_base, step)
    return _sample(data, jax.random.fold_in(k_n, 0), n, dtype), jax.random.fold_in(k_n, 1)


def _pair_batch(batch: Batch, coupling_fn, bs):
    """OT-pair y and eps in blocks of ``bs`` (host side)."""
    eps_out, infos = [], []
    for i in range(0, batch.y.shape[0], bs):
        e, info = ot_pair(batch.y[i:i + bs], batch.eps[i:i + bs], coupling_fn)
        eps_out.append(e)
        infos.append(info)
    return Batch(y=batch.y, eps=jnp.concatenate(eps_out).astype(batch.eps.dtype)), infos


def _cast(tree, dtype):
    def leaf(v):
        if isinstance(v, (jax.Array, np.ndarray)) and jnp.issubdtype(v.dtype, jnp.floating):
            return jnp.asarray(v, dtype)
        return v
    return jax.tree_util.tree_map(leaf, tree)


# ---------------------------------------------------------------------- history and resume


@dataclasses.dataclass
class History:
    """What a run has recorded, step by step (host lists, appended atomically per entry):
    ``loss`` (the training loss of step n, of the parameters before the update), ``evals``
    ((step, held-out loss) pairs) and, for OT-CFM, ``plan`` ((cost, independent cost) of the
    pairing of each step)."""

    loss: List[float] = dataclasses.field(default_factory=list)
    evals: List[Tuple[int, float]] = dataclasses.field(default_factory=list)
    plan: List[Tuple[float, float]] = dataclasses.field(default_factory=list)

    def arrays(self, n: int, ot: bool) -> dict:
        """The history up to step n as the arrays a checkpoint stores."""
        ev = [e for e in self.evals if e[0] <= n]
        h = {"loss": np.asarray(self.loss[:n], np.float64),
             "eval_step": np.asarray([s for s, _ in ev], np.int64),
             "eval_loss": np.asarray([v for _, v in ev], np.float64)}
        if ot:
            plan = self.plan[:n]
            h["plan_cost"] = np.asarray([c for c, _ in plan], np.float64)
            h["plan_independent_cost"] = np.asarray([c for _, c in plan], np.float64)
        return h

    @classmethod
    def from_arrays(cls, h: dict, start: int) -> "History":
        """The history of a checkpoint at step ``start`` (evaluations at ``start`` and later are
        dropped: the resumed run repeats the one at ``start`` when it falls on its grid)."""
        es = np.asarray(h.get("eval_step", np.zeros(0)))
        el = np.asarray(h.get("eval_loss", np.zeros(0)))
        pc = [float(v) for v in np.asarray(h.get("plan_cost", np.zeros(0)))][:start]
        pi = [float(v) for v in np.asarray(h.get("plan_independent_cost", np.zeros(0)))][:start]
        return cls(loss=[float(v) for v in np.asarray(h.get("loss", np.zeros(0)))][:start],
                   evals=[(int(s), float(v)) for s, v in zip(es, el) if s < start],
                   plan=list(zip(pc, pi)))


def resume_run(directory, spec: ModelSpec, config: TrainConfig, record: dict,
               template: TrainState) -> Tuple[TrainState, History]:
    """Continue a run from the checkpoint in ``directory``.

    Args:
      directory: a checkpoint directory written by :func:`train`.
      spec: the model of the continuing run (the saved one must equal it).
      config: the resolved configuration of the continuing run (:meth:`TrainConfig.resolved`
        with the saved record, so a defaulted ``decay_steps`` is the saved one).
      record: its :meth:`TrainConfig.record`.
      template: a fresh state of the run (the structure the optimiser state is restored into).

    Returns:
      (state at the saved step, the saved :class:`History`).

    Raises:
      ValueError: an unreadable checkpoint; a saved run that differs in any of
        :meth:`TrainConfig.resume_keys` (all differences named); a saved step beyond
        ``config.steps``; a history that does not match the step.
    """
    d = str(directory)
    saved = ckpt.read_config(directory).get("train", {})
    bad = config.differences(saved, record)
    if bad:
        raise ValueError(f"incompatible checkpoint in {d!r}: the run differs in "
                         + ", ".join(bad))
    ck = ckpt.load_checkpoint(directory, spec=spec, opt_state=template.opt_state)
    if ck.step > config.steps:
        raise ValueError(f"checkpoint in {d!r} is at step {ck.step} > steps={config.steps}")
    history = History.from_arrays(ck.history, ck.step)
    if len(history.loss) != ck.step:
        raise ValueError(f"corrupted checkpoint in {d!r}: loss history has "
                         f"{len(history.loss)} entries for step {ck.step}")
    if config.loss == "ot-cfm" and len(history.plan) != ck.step:
        raise ValueError(f"corrupted checkpoint in {d!r}: plan history has "
                         f"{len(history.plan)} entries for step {ck.step}")
    state = TrainState(step=jnp.asarray(ck.step, jnp.int32), params=ck.params,
                       opt_state=ck.opt_state)
    return state, history


# ---------------------------------------------------------------------- the loop


@dataclasses.dataclass(frozen=True)
class StepEvent:
    """What a callback of :func:`train` receives after each step.

    Attributes:
      step: completed optimisation steps (1 after the first step of a fresh run).
      steps: the run's total (``config.steps``).
      start_step: the step this call started from.
      loss: training loss of this step (of the parameters before the update).
      running_loss: exponential moving average (weight 0.02) of the loss over the whole run,
        resumed parts included (equal in resumed and uninterrupted runs).
      eval_loss: held-out loss of the parameters after this step, or None when not evaluated.
      checkpointed: whether a checkpoint of this step was just written.
      final: whether this is the last step of the run.
      elapsed: wall-clock seconds since the call started.
    """

    step: int
    steps: int
    start_step: int
    loss: float
    running_loss: float
    eval_loss: Optional[float]
    checkpointed: bool
    final: bool
    elapsed: float


class ProgressBar:
    """A tqdm progress bar with the running loss, as a :func:`train` callback (the library itself
    never draws one). Keyword arguments go to ``tqdm.auto.tqdm``; the bar closes at the final
    step (or call :meth:`close`)."""

    def __init__(self, every: int = 25, **tqdm_kwargs):
        self.every = max(int(every), 1)
        self.kwargs = tqdm_kwargs
        self.bar = None

    def __call__(self, event: StepEvent) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=event.steps, initial=event.step - 1,
                            **{"dynamic_ncols": True, "desc": "train", **self.kwargs})
        self.bar.update(1)
        if event.step % self.every == 0 or event.final:
            self.bar.set_postfix(loss=f"{event.running_loss:.4g}")
        if event.final:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Output of :func:`train`.

    Attributes:
      params: trained parameters.
      spec: the model description (rebuild with ``satjax.learn.models.field(spec, params)``).
      config: the resolved :class:`TrainConfig` (``decay_steps`` filled in).
      record: the JSON record of the run (:meth:`TrainConfig.record`; stored in config.json).
      losses: training loss per step (float64 numpy, length ``steps``; loss of the parameters
        before each update).
      eval_steps, eval_losses: held-out loss (fixed evaluation batch) at those steps.
      plan: for OT-CFM, per-step ``cost`` and ``independent_cost`` of the pairings; else {}.
      train_seconds: wall-clock seconds of this call (set-up and compilation included; a
        resumed run counts only its own call).
      start_step: the step this call started from (> 0 when resumed).
      opt_state: final optimiser state.
      checkpoint_dir: where checkpoints were written, or None.
    """

    params: Any
    spec: ModelSpec
    config: TrainConfig
    record: dict
    losses: np.ndarray
    eval_steps: np.ndarray
    eval_losses: np.ndarray
    plan: dict
    train_seconds: float
    start_step: int
    opt_state: Any = None
    checkpoint_dir: Optional[str] = None

    def field(self) -> Callable:
        """The trained model as ``fn(x, t)``."""
        return field(self.spec, self.params)


class _SigtermGuard:
    """Turn SIGTERM into a flag for the duration of the loop (main thread only); restores the
    previous handler on exit."""

    def __init__(self):
        self.signum = None
        self.old = None
        self.active = False

    def _handle(self, signum, frame):
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, self._handle)
            self.active = True
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self.old is None else self.old)
        return False


def train(key, protocol: LinearForce, data: GaussianMixture, config: TrainConfig, *,
          checkpoint_dir=None, resume: bool = True, callbacks: Sequence[Callable] = (),
          coupling_fn: Optional[Callable] = None) -> TrainResult:
    """Train a score (DSM, Eq. 18) or velocity (CFM, Eq. 19; OT-CFM) model on mixture data.

    Args:
      key: PRNG key (see the module docstring for how every step's key derives from it).
      protocol: a schedule or linear force (:class:`satjax.forces.LinearForce`); spec strings
        are parsed by the caller (:mod:`satjax.specs`).
      data: the data distribution q as a GaussianMixture (minibatches are exact samples).
      config: the :class:`TrainConfig`.
      checkpoint_dir: directory for checkpoints (None: no checkpoints). Saved every
        ``config.checkpoint_every`` steps, every ``config.checkpoint_seconds`` of wall time, at
        the end, at the current step on KeyboardInterrupt or SIGTERM, and the last good state on
        a non-finite loss.
      resume: continue from the checkpoint in ``checkpoint_dir`` if there is one (see
        :func:`resume_run`; a larger ``steps`` extends the run); False starts afresh and
        overwrites it.
      callbacks: callables ``cb(event)`` called with a :class:`StepEvent` after every step (e.g.
        :class:`ProgressBar`); an exception from one stops training (KeyboardInterrupt is
        handled like Ctrl-C).
      coupling_fn: OT-CFM coupling ``(y, z) -> (perm, info)``
        (default :func:`satjax.learn.losses.default_coupling`).

    Returns:
      :class:`TrainResult`.

    Raises:
      ValueError: an invalid config (:meth:`TrainConfig.validate`), data/protocol dimension
        mismatch, OT-CFM with a protocol that is not a schedule, float64 without x64, an
        incompatible or unreadable checkpoint, a failed OT coupling.
      TypeError: protocol, data, config or callbacks of the wrong type.
      FloatingPointError: a non-finite loss, gradient or parameter; the last good state is in
        ``checkpoint_dir`` (when given).
      KeyboardInterrupt: Ctrl-C, SIGTERM (while the loop runs, SIGTERM is caught and acts at the
        end of the current step) or a callback raising it; the state at the current step is in
        ``checkpoint_dir`` (when given) and resuming reproduces the uninterrupted run.
    """
    t_start = time.perf_counter()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig; got {type(config).__name__}")
    if not isinstance(protocol, LinearForce):
        raise TypeError(f"`protocol` must be a LinearForce (a schedule or linear force; parse "
                        f"spec strings with satjax.specs); got {type(protocol).__name__}")
    forward.check(protocol, data)
    tau = float(protocol.tau)
    config.validate(tau)
    if config.loss == "ot-cfm":
        check_ot_protocol(protocol)
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("TrainConfig.dtype='float64' needs jax_enable_x64")
    if coupling_fn is not None and not callable(coupling_fn):
        raise TypeError("`coupling_fn` must be callable (y, z) -> (perm, info)")
    callbacks = tuple(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callable; got {type(cb).__name__}")

    ck_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    saved = None
    if ck_dir is not None and resume and (ck_dir / ckpt.CONFIG_FILE).exists():
        saved = ckpt.read_config(ck_dir).get("train", {})
    cfg = config.resolved(saved)
    record = cfg.record(key, protocol, data)
    opt = cfg.optim()
    ot = cfg.loss == "ot-cfm"
    jdtype = jnp.dtype(cfg.dtype)
    protocol_c, data_c = _cast(protocol, jdtype), _cast(data, jdtype)
    # the model normalises time by the τ of the protocol it is trained with (in the run's dtype),
    # so the spec of a float32 run is the same with and without jax_enable_x64
    spec = cfg.model_spec(data.dim, float(protocol_c.tau))
    init_fn, train_step = _step_fns(spec, opt, protocol_c, jdtype)
    steps, bs = int(cfg.steps), int(cfg.batch_size)

    k_init, k_eval, k_base = jax.random.split(key, 3)
    state = init_fn(k_init)
    hist = History()
    if saved is not None:
        state, hist = resume_run(ck_dir, spec, cfg, record, state)
    start = int(state.step)
    last_saved = start if saved is not None else -1
    running = None
    for v in hist.loss:
        running = v if running is None else 0.98 * running + 0.02 * v

    # fixed held-out batch (never used for training: its key is not a step key)
    eval_batch, eval_key = None, jax.random.fold_in(k_eval, 1)
    if cfg.eval_every:
        eval_batch = sample_batch(data_c, jax.random.fold_in(k_eval, 0), int(cfg.eval_size),
                                  jdtype)
        if ot:
            eval_batch, _ = _pair_batch(eval_batch, coupling_fn, bs)

    t_saved = time.monotonic()

    def save(st: TrainState, n: int):
        nonlocal last_saved, t_saved
        ckpt.save_checkpoint(ck_dir, spec, st.params, st.opt_state, n, train_config=record,
                             history=hist.arrays(n, ot))
        last_saved = n
        t_saved = time.monotonic()

    def evaluate(params, n) -> float:
        val = float(_eval_loss(spec, opt, protocol_c, params, eval_batch, eval_key))
        hist.evals.append((n, val))
        return val

    def due(m: int) -> bool:
        if m % cfg.checkpoint_every == 0 or m == steps:
            return True
        return cfg.checkpoint_seconds is not None and \
            time.monotonic() - t_saved >= cfg.checkpoint_seconds

    prev_good: Optional[TrainState] = None
    with _SigtermGuard() as guard:
        try:
            if cfg.eval_every and (start % cfg.eval_every == 0 or start == steps):
                evaluate(state.params, start)
            for n in range(start, steps):
                batch, k_loss = _step_inputs(data_c, k_base, n, bs, jdtype)
                if ot:
                    batch, infos = _pair_batch(batch, coupling_fn, bs)
                new_state, metrics = train_step(state, batch, k_loss)
                val = float(metrics["loss"])
                if not bool(metrics["finite"]):
                    where = ""
                    if ck_dir is not None:
                        if prev_good is not None and last_saved < n - 1:
                            save(prev_good, n - 1)
                        where = (f"; the last good checkpoint (step {last_saved}) is in "
                                 f"{str(ck_dir)!r}" if last_saved >= 0 else "")
                    raise FloatingPointError(
                        f"non-finite training loss or gradient at step {n} (loss = {val!r}, "
                        f"grad norm = {float(metrics['grad_norm'])!r}); lower the learning "
                        f"rate (lr={cfg.lr:g}) or enable grad_clip{where}")
                # history first, then the state: len(history) >= state.step at every moment,
                # so an interrupt anywhere saves a consistent (truncated) history
                hist.loss.append(val)
                if ot:
                    hist.plan.append((infos[0]["cost"], infos[0]["independent_cost"]))
                prev_good, state = state, new_state
                m = n + 1
                running = val if running is None else 0.98 * running + 0.02 * val
                ev = None
                if cfg.eval_every and (m % cfg.eval_every == 0 or m == steps):
                    ev = evaluate(state.params, m)
                wrote = ck_dir is not None and due(m)
                if wrote:
                    save(state, m)
                event = StepEvent(step=m, steps=steps, start_step=start, loss=val,
                                  running_loss=float(running), eval_loss=ev, checkpointed=wrote,
                                  final=m == steps, elapsed=time.perf_counter() - t_start)
                for cb in callbacks:
                    cb(event)
                if guard.signum is not None:
                    raise KeyboardInterrupt(f"signal {guard.signum} (SIGTERM) at step {m}")
            if ck_dir is not None and last_saved != steps:
                save(state, steps)
        except KeyboardInterrupt as err:
            if ck_dir is not None:
                now = int(state.step)
                if last_saved != now:
                    save(state, now)
                if hasattr(err, "add_note"):
                    err.add_note(f"satjax.learn.train: the state at step {now} is saved in "
                                 f"{str(ck_dir)!r}; run again to resume")
            raise

    seconds = time.perf_counter() - t_start
    h = hist.arrays(steps, ot)
    plan = {}
    if ot:
        plan = {"cost": h["plan_cost"], "independent_cost": h["plan_independent_cost"]}
    return TrainResult(params=state.params, spec=spec, config=cfg, record=record,
                       losses=h["loss"], eval_steps=h["eval_step"], eval_losses=h["eval_loss"],
                       plan=plan, train_seconds=seconds, start_step=start,
                       opt_state=state.opt_state,
                       checkpoint_dir=None if ck_dir is None else str(ck_dir))
