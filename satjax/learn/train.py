"""Training of score and velocity models with optax (PAPER.md section 3, Eq. 18, 19, OT-CFM).

Pieces, in the jax-md factory style:

* :func:`make_train_step` returns ``(init_fn, train_step)``; ``train_step(state, batch, key) ->
  (state, metrics)`` is pure and jitted. ``state`` is a :class:`TrainState` pytree (step,
  params, optimiser state), ``batch`` a :class:`Batch` (data y and noise ε, both (B, d); for
  OT-CFM ε is already OT-paired on the host) and ``key`` draws the times. The protocol is a traced
  argument of the jitted core, the model spec and optimiser settings are static.
* :func:`train` is the loop: minibatches from the data mixture, tqdm progress with the running
  loss, periodic held-out evaluation, checkpoints, exact resume, and a FloatingPointError on a
  non-finite loss that leaves the last good checkpoint on disk.

Keys. ``k_init, k_eval, k_base = split(key, 3)``; the key of step n is
``k_n = fold_in(k_base, n)``, with data and noise from ``fold_in(k_n, 0)`` and times from
``fold_in(k_n, 1)``. Every step's randomness depends only on (key, n), so a run resumed from a
checkpoint at step n (params, optimiser state, step and history saved together) reproduces the
uninterrupted run bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from satjax.forces import LinearForce
from satjax.learn import checkpoint as ckpt
from satjax.learn.losses import (check_loss_name, check_ot_protocol, cfm_loss, dsm_loss,
                                 ot_pair)
from satjax.learn.models import ModelSpec, field, init_params
from satjax.mixtures import GaussianMixture


class TrainState(struct.PyTreeNode):
    """Optimisation state: ``step`` (int32), ``params``, ``opt_state``."""

    step: jax.Array
    params: Any
    opt_state: Any


class Batch(struct.PyTreeNode):
    """A minibatch: data ``y`` (B, d) and standard-normal noise ``eps`` (B, d)."""

    y: jax.Array
    eps: jax.Array


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
    """
    loss = check_loss_name(loss)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"`spec` must be a ModelSpec; got {type(spec).__name__}")
    want = "score" if loss == "dsm" else "velocity"
    if spec.kind != want:
        raise ValueError(f"loss {loss!r} trains a {want} model; the spec has kind {spec.kind!r}")
    _check_positive("lr", lr)
    if grad_clip is not None:
        _check_positive("grad_clip", grad_clip)
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"`lr_schedule` must be 'constant' or 'cosine'; got {lr_schedule!r}")
    if lr_schedule == "cosine":
        _check_positive("decay_steps", decay_steps, integer=True)
    opt = OptimSpec(loss=loss, lr=float(lr), grad_clip=None if grad_clip is None
                    else float(grad_clip), t_min=None if t_min is None else float(t_min),
                    lr_schedule=lr_schedule,
                    decay_steps=int(decay_steps) if lr_schedule == "cosine" else 0)

    def init_fn(key) -> TrainState:
        params = init_params(key, spec, dtype)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=opt.optimizer().init(params))

    arch = spec.architecture()

    def train_step(state: TrainState, batch: Batch, key):
        return _train_step(arch, opt, protocol, state, batch, key)

    train_step.opt = opt  # type: ignore[attr-defined]
    return init_fn, train_step


# ---------------------------------------------------------------------- the loop


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Output of :func:`train`.

    Attributes:
      params: trained parameters.
      spec: the model description (rebuild with ``satjax.learn.models.field(spec, params)``).
      config: the training configuration (JSON-serialisable dict).
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
    config: dict
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


def _check_positive(name, v, integer=False):
    if integer:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{name}` must be a positive int; got {v!r}")
        return
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or \
            not np.isfinite(v) or v <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0; got {v!r}")


def _cast(tree, dtype):
    def leaf(v):
        if isinstance(v, (jax.Array, np.ndarray)) and jnp.issubdtype(v.dtype, jnp.floating):
            return jnp.asarray(v, dtype)
        return v
    return jax.tree_util.tree_map(leaf, tree)


def _fingerprint(tree) -> str:
    h = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    h.update(str(treedef).encode())
    for v in leaves:
        a = np.asarray(v)
        h.update(str((a.shape, a.dtype.name)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _key_data(key):
    try:
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
    except AttributeError:
        pass
    return [int(v) for v in np.asarray(key).ravel()]


def _sample(data: GaussianMixture, key, n: int, dtype) -> Batch:
    k_y, k_eps = jax.random.split(key)
    y = data.sample(k_y, n).astype(dtype)
    return Batch(y=y, eps=jax.random.normal(k_eps, y.shape, dtype))


_sample_batch = jax.jit(_sample, static_argnames=("n", "dtype"))


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


# keys of the config that must agree for a resume to continue the same run
_RESUME_KEYS = ("loss", "batch_size", "lr", "grad_clip", "t_min", "lr_schedule", "decay_steps",
                "dtype", "eval_size",
                "data_fingerprint", "protocol_fingerprint", "key")


def train(key, protocol, data: GaussianMixture, *, loss: str = "cfm", steps: int = 2000,
          batch_size: int = 256, lr: float = 1e-3, width: int = 128, depth: int = 3,
          activation: str = "silu", n_freq: int = 16, t_min: Optional[float] = None,
          grad_clip: Optional[float] = None, lr_schedule: str = "constant",
          decay_steps: Optional[int] = None, dtype: str = "float32", eval_every: int = 500,
          eval_size: int = 2048, checkpoint_dir=None, checkpoint_every: int = 1000,
          resume: bool = True, coupling_fn: Optional[Callable] = None,
          protocol_spec: Optional[str] = None, tau: float = 1.0,
          progress: bool = True) -> TrainResult:
    """Train a score (DSM, Eq. 18) or velocity (CFM, Eq. 19; OT-CFM) model on mixture data.

    Args:
      key: PRNG key (see the module docstring for how every step's key derives from it).
      protocol: schedule or linear force, or a protocol spec string (``satjax.specs``).
      data: the data distribution q as a GaussianMixture (minibatches are exact samples).
      loss: ``"dsm"`` (score model), ``"cfm"`` or ``"ot-cfm"`` (velocity model).
      steps: total number of optimisation steps (a resumed run continues up to it).
      batch_size: minibatch size B.
      lr: Adam learning rate (the peak for ``lr_schedule="cosine"``).
      width, depth, activation, n_freq: the MLP (:class:`ModelSpec`).
      t_min: smallest training time (default 10⁻³ τ).
      grad_clip: global-norm gradient clipping (None: off).
      lr_schedule: ``"constant"`` or ``"cosine"`` (cosine decay to lr/100 over ``decay_steps``,
        default ``steps``; part of the run's identity, so a resumed run keeps it).
      decay_steps: cosine decay length (default: ``steps`` of the first call).
      dtype: ``"float32"`` (default, also under x64) or ``"float64"``; data, protocol leaves and
        parameters are cast to it.
      eval_every: held-out loss every that many steps and at the end (0: no evaluation).
      eval_size: size of the fixed held-out batch.
      checkpoint_dir: directory for checkpoints (None: no checkpoints).
      checkpoint_every: save every that many steps (and at the end, and the last good state
        when a non-finite loss stops training).
      resume: continue from the checkpoint in ``checkpoint_dir`` if there is one (the
        configuration must match); False starts afresh and overwrites it.
      coupling_fn: OT-CFM coupling ``(y, z) -> (perm, info)``
        (default :func:`satjax.learn.losses.default_coupling`).
      protocol_spec: the spec string of ``protocol`` to record in the model spec (set
        automatically when ``protocol`` is a string).
      tau: the horizon τ used to parse a string ``protocol`` (ignored for protocol objects).
      progress: show a tqdm progress bar with the running loss.

    Returns:
      :class:`TrainResult`.

    Raises:
      ValueError: unknown loss, bad sizes or rates, data/protocol dimension mismatch, an
        incompatible or unreadable checkpoint, a failed OT coupling.
      TypeError: protocol or data of the wrong type.
      FloatingPointError: a non-finite loss, gradient or parameter; the last good state is in
        ``checkpoint_dir`` (when given).
    """
    t_start = time.perf_counter()
    loss = check_loss_name(loss)
    if isinstance(protocol, str):
        from satjax.specs import parse_protocol

        protocol_spec = protocol_spec or protocol
        protocol = parse_protocol(protocol, tau=tau)
    if not isinstance(protocol, LinearForce):
        raise TypeError(f"`protocol` must be a LinearForce or a spec string; "
                        f"got {type(protocol).__name__}")
    if not isinstance(data, GaussianMixture):
        raise TypeError(f"`data` must be a GaussianMixture; got {type(data).__name__}")
    if protocol.dim is not None and protocol.dim != data.dim:
        raise ValueError(f"protocol acts in {protocol.dim} dimensions but data has dimension "
                         f"{data.dim}")
    if loss == "ot-cfm":
        check_ot_protocol(protocol)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"`steps` must be an int >= 0; got {steps!r}")
    _check_positive("batch_size", batch_size, integer=True)
    _check_positive("eval_size", eval_size, integer=True)
    _check_positive("checkpoint_every", checkpoint_every, integer=True)
    if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or \
            eval_every < 0:
        raise ValueError(f"`eval_every` must be an int >= 0; got {eval_every!r}")
    if loss == "ot-cfm" and batch_size < 2:
        raise ValueError("OT-CFM needs `batch_size` >= 2 to pair anything")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"`dtype` must be 'float32' or 'float64'; got {dtype!r}")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype='float64' needs jax_enable_x64")
    tau = float(protocol.tau)
    if t_min is not None and not 0.0 < float(t_min) < 0.5 * tau:
        raise ValueError(f"`t_min` must lie in (0, tau/2) = (0, {0.5 * tau:g}); got {t_min}")
    if coupling_fn is not None and not callable(coupling_fn):
        raise TypeError("`coupling_fn` must be callable (y, z) -> (perm, info)")
    jdtype = jnp.dtype(dtype)
    spec = ModelSpec(dim=data.dim, kind="score" if loss == "dsm" else "velocity", width=width,
                     depth=depth, activation=activation, n_freq=n_freq, tau=tau,
                     protocol=protocol_spec)
    protocol_c, data_c = _cast(protocol, jdtype), _cast(data, jdtype)
    if lr_schedule == "cosine" and decay_steps is None:
        decay_steps = max(int(steps), 1)
    init_fn, train_step = make_train_step(spec, protocol_c, loss=loss, lr=lr,
                                          grad_clip=grad_clip, t_min=t_min,
                                          lr_schedule=lr_schedule, decay_steps=decay_steps,
                                          dtype=jdtype)
    opt = train_step.opt
    config = {
        "loss": loss, "steps": int(steps), "batch_size": int(batch_size), "lr": float(lr),
        "grad_clip": opt.grad_clip, "t_min": opt.t_min, "dtype": dtype,
        "lr_schedule": opt.lr_schedule, "decay_steps": opt.decay_steps,
        "eval_every": int(eval_every), "eval_size": int(eval_size),
        "protocol_type": type(protocol).__name__, "protocol_spec": protocol_spec,
        "protocol_fingerprint": _fingerprint(protocol_c), "data_fingerprint": _fingerprint(data_c),
        "data_dim": data.dim, "key": _key_data(key),
    }

    k_init, k_eval, k_base = jax.random.split(key, 3)
    state = init_fn(k_init)
    losses, plan_cost, plan_indep = [], [], []
    eval_steps, eval_losses = [], []
    start = 0
    ck_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if ck_dir is not None and resume and (ck_dir / ckpt.CONFIG_FILE).exists():
        ck = ckpt.load_checkpoint(ck_dir, spec=spec, opt_state=state.opt_state)
        saved = ck.train_config
        bad = [k for k in _RESUME_KEYS if saved.get(k) != config.get(k)]
        if bad:
            raise ValueError(f"incompatible checkpoint in {str(ck_dir)!r}: the run differs in "
                             + ", ".join(f"{k} (saved {saved.get(k)!r}, now {config.get(k)!r})"
                                         for k in bad))
        if ck.step > steps:
            raise ValueError(f"checkpoint in {str(ck_dir)!r} is at step {ck.step} > steps={steps}")
        start = ck.step
        state = TrainState(step=jnp.asarray(start, jnp.int32), params=ck.params,
                           opt_state=ck.opt_state)
        h = ck.history
        losses = [float(v) for v in h.get("loss", [])][:start]
        plan_cost = [float(v) for v in h.get("plan_cost", [])][:start]
        plan_indep = [float(v) for v in h.get("plan_independent_cost", [])][:start]
        es, el = h.get("eval_step", np.zeros(0)), h.get("eval_loss", np.zeros(0))
        keep = np.asarray(es) < start
        eval_steps = [int(v) for v in np.asarray(es)[keep]]
        eval_losses = [float(v) for v in np.asarray(el)[keep]]
        if len(losses) != start:
            raise ValueError(f"corrupted checkpoint in {str(ck_dir)!r}: loss history has "
                             f"{len(losses)} entries for step {start}")

    # fixed held-out batch (never used for training: its key is not a step key)
    eval_batch, eval_key = None, jax.random.fold_in(k_eval, 1)
    if eval_every:
        eval_batch = _sample_batch(data_c, jax.random.fold_in(k_eval, 0), int(eval_size), jdtype)
        if loss == "ot-cfm":
            eval_batch, _ = _pair_batch(eval_batch, coupling_fn, int(batch_size))

    def history(n):
        h = {"loss": np.asarray(losses[:n], np.float64),
             "eval_step": np.asarray([s for s in eval_steps if s < n or n == steps], np.int64),
             "eval_loss": np.asarray([v for s, v in zip(eval_steps, eval_losses)
                                      if s < n or n == steps], np.float64)}
        if loss == "ot-cfm":
            h["plan_cost"] = np.asarray(plan_cost[:n], np.float64)
            h["plan_independent_cost"] = np.asarray(plan_indep[:n], np.float64)
        return h

    last_saved = start if ck_dir is not None and resume and start > 0 else -1

    def save(st: TrainState, n: int):
        nonlocal last_saved
        ckpt.save_checkpoint(ck_dir, spec, st.params, st.opt_state, n, train_config=config,
                             history=history(n))
        last_saved = n

    def evaluate(params, n):
        val = float(_eval_loss(spec.architecture(), opt, protocol_c, params, eval_batch,
                               eval_key))
        eval_steps.append(n)
        eval_losses.append(val)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=f"train {loss}", dynamic_ncols=True)
    running = None
    prev_good: Optional[TrainState] = None
    try:
        for n in range(start, steps):
            batch, k_loss = _step_inputs(data_c, k_base, n, int(batch_size), jdtype)
            if loss == "ot-cfm":
                batch, infos = _pair_batch(batch, coupling_fn, int(batch_size))
                plan_cost.append(infos[0]["cost"])
                plan_indep.append(infos[0]["independent_cost"])
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
                    f"grad norm = {float(metrics['grad_norm'])!r}); lower the learning rate "
                    f"(lr={lr:g}) or enable grad_clip{where}")
            if ck_dir is not None and n % checkpoint_every == 0 and n != last_saved:
                save(state, n)
            if eval_every and n % eval_every == 0:
                evaluate(state.params, n)
            losses.append(val)
            prev_good, state = state, new_state
            running = val if running is None else 0.98 * running + 0.02 * val
            if bar is not None:
                bar.update(1)
                if n % 25 == 0:
                    bar.set_postfix(loss=f"{running:.4g}")
        if eval_every and (not eval_steps or eval_steps[-1] != steps):
            evaluate(state.params, steps)
        if ck_dir is not None and last_saved != steps:
            save(state, steps)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t_start
    plan = {}
    if loss == "ot-cfm":
        plan = {"cost": np.asarray(plan_cost), "independent_cost": np.asarray(plan_indep)}
    return TrainResult(params=state.params, spec=spec, config=config,
                       losses=np.asarray(losses, np.float64),
                       eval_steps=np.asarray(eval_steps, np.int64),
                       eval_losses=np.asarray(eval_losses, np.float64), plan=plan,
                       train_seconds=seconds, start_step=start, opt_state=state.opt_state,
                       checkpoint_dir=None if ck_dir is None else str(ck_dir))
