"""Checkpoints of learned fields (docs/theory.md §3): config JSON + parameters + optimiser state.

A checkpoint is a directory with two files, each written atomically (temporary file, fsync,
``os.replace``), so an interrupted save never leaves a half-written checkpoint behind:

    config.json     {"format": FORMAT, "model": ModelSpec dict, "train": training record}
    state.msgpack   flax.serialization msgpack of {"step", "params", "opt_state", "history"}

The training record (written by :func:`satjax.learn.train.train`) holds the settings of the run
and what the model was trained for: ``protocol`` (``protocol.describe()``: class name and
parameters), ``protocol_fingerprint``, ``data_fingerprint`` and ``data_dim``
(:func:`run_record`). :func:`check_compatible` compares a model directory with the protocol and
data it is about to be used with.

``load_model(dir)`` rebuilds the network from ``config.json`` alone and returns a callable
``fn(x, t)`` (a velocity u_θ, Eq. 14, or a score s_θ, Eq. 10) with its :class:`ModelSpec`, so a
model saved by one command is usable by others. Every way a checkpoint can be unusable — missing
directory or file, unparsable JSON, corrupted msgpack, parameters that do not fit the stored or
the expected spec (wrong dimension, width, depth), an optimiser state of another structure —
raises ValueError naming the path and what did not fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from satjax.learn.models import ModelSpec, field, param_shapes

FORMAT = "satjax.learn.checkpoint/2"
# format 1 recorded a protocol spec string in the model spec; such checkpoints still load (the
# string is dropped) but record no protocol, so check_compatible refuses them without override
LEGACY_FORMATS = ("satjax.learn.checkpoint/1",)
CONFIG_FILE = "config.json"
STATE_FILE = "state.msgpack"
OVERRIDABLE = ("data", "protocol")


# ---------------------------------------------------------------------- fingerprints and records


def _canonical_leaf(v) -> np.ndarray:
    try:
        if jnp.issubdtype(v.dtype, jax.dtypes.prng_key):
            v = jax.random.key_data(v)
    except AttributeError:
        pass
    a = np.asarray(v)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.complexfloating):
        return a.astype(np.complex64)
    if np.issubdtype(a.dtype, np.bool_):
        return a.astype(np.bool_)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    return a


def fingerprint(tree) -> str:
    """A short stable hash (16 hex digits) of a pytree: its structure (class names and static
    fields, without memory addresses) and its leaves' shapes and values.

    Floating leaves are hashed at float32 precision, so the fingerprint of a protocol or data set
    does not depend on ``jax_enable_x64`` or on the dtype a run casts them to; it is the same in
    every process (what a checkpoint compares on resume and in :func:`check_compatible`).
    """
    h = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", str(treedef)).encode())
    for v in leaves:
        a = np.ascontiguousarray(_canonical_leaf(v))
        h.update(str((a.shape, a.dtype.name)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def jsonable(obj):
    """``obj`` with numpy/jax arrays and scalars turned into (nested) lists and Python numbers,
    tuples into lists and anything else that JSON cannot hold into its ``str``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, (np.integer, np.floating)):
        return obj
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(obj)
        return a.tolist() if a.dtype.kind in "biuf" else str(a.tolist())
    return str(obj)


def run_record(protocol, data) -> dict:
    """What a model was trained for, JSON-ready: ``protocol`` (``protocol.describe()``),
    ``protocol_fingerprint``, ``data_fingerprint`` (:func:`fingerprint`) and ``data_dim``."""
    return {"protocol": jsonable(protocol.describe()),
            "protocol_fingerprint": fingerprint(protocol),
            "data_fingerprint": fingerprint(data), "data_dim": int(data.dim)}


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: ``spec``, ``params``, ``opt_state`` (restored into the given template,
    else the raw state dict), ``step``, ``history`` (dict of numpy arrays) and ``train_config``."""

    spec: ModelSpec
    params: Any
    opt_state: Any
    step: int
    history: dict
    train_config: dict
    path: Path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def save_checkpoint(directory, spec: ModelSpec, params, opt_state=None, step: int = 0, *,
                    train_config: Optional[dict] = None,
                    history: Optional[dict] = None) -> Path:
    """Write (config JSON + params + optimiser state + step + history) to ``directory``.

    Args:
      directory: target directory (created if needed); an existing checkpoint is replaced.
      spec: the model description.
      params: parameter pytree (must fit ``spec``).
      opt_state: optax state or None.
      step: the number of completed optimisation steps.
      train_config: JSON-serialisable training configuration (stored in config.json).
      history: dict of 1-D arrays (loss history and the like).

    Returns:
      The checkpoint directory.

    Raises:
      TypeError: ``spec`` is not a ModelSpec or ``train_config`` is not JSON-serialisable.
      ValueError: ``params`` does not fit ``spec``.
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"`spec` must be a ModelSpec; got {type(spec).__name__}")
    _check_params(params, spec, "params to save")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    try:
        config = json.dumps({"format": FORMAT, "model": spec.to_dict(),
                             "train": train_config or {}}, indent=2, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"`train_config` must be JSON-serialisable: {err}") from None
    state = {
        "step": int(step),
        "params": serialization.to_state_dict(_to_numpy(params)),
        "opt_state": serialization.to_state_dict(_to_numpy(opt_state)) if opt_state is not None
        else {},
        "history": {k: np.asarray(v) for k, v in (history or {}).items()},
    }
    # State first, then config: a reader that sees the new config always finds a matching state
    # only if both were written; both are replaced atomically and validated against each other.
    _atomic_write(path / STATE_FILE, serialization.msgpack_serialize(state))
    _atomic_write(path / CONFIG_FILE, config.encode())
    return path


def read_config(directory) -> dict:
    """The parsed config.json of a checkpoint (``format``, ``model``, ``train``).

    Raises:
      ValueError: missing directory/file, invalid JSON, unknown format, invalid model spec.
    """
    path = Path(directory)
    if not path.is_dir():
        raise ValueError(f"no checkpoint directory at {str(path)!r}")
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise ValueError(f"{str(path)!r} is not a satjax checkpoint: {CONFIG_FILE} is missing")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"unreadable checkpoint config {str(cfg_path)!r}: {err}") from None
    if not isinstance(cfg, dict) or cfg.get("format") not in (FORMAT,) + LEGACY_FORMATS:
        got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ValueError(f"{str(cfg_path)!r} has format {got!r}; expected {FORMAT!r}")
    if cfg["format"] in LEGACY_FORMATS and isinstance(cfg.get("model"), dict):
        cfg["model"] = {k: v for k, v in cfg["model"].items() if k != "protocol"}
    try:
        cfg["model"] = ModelSpec.from_dict(cfg.get("model"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid model spec in {str(cfg_path)!r}: {err}") from None
    if not isinstance(cfg.get("train", {}), dict):
        raise ValueError(f"invalid training config in {str(cfg_path)!r}")
    return cfg


def _shapes(tree):
    return jax.tree_util.tree_map(lambda v: (tuple(np.shape(v)), np.dtype(v.dtype).name), tree)


def _check_params(params, spec: ModelSpec, what: str) -> None:
    expected = param_shapes(spec, jax.tree_util.tree_leaves(params)[0].dtype
                            if jax.tree_util.tree_leaves(params) else jnp.float32)
    got_s = jax.tree_util.tree_map(lambda v: tuple(np.shape(v)), params)
    exp_s = jax.tree_util.tree_map(lambda v: tuple(v.shape), expected)
    if jax.tree_util.tree_structure(got_s) != jax.tree_util.tree_structure(exp_s) or \
            jax.tree_util.tree_leaves(got_s) != jax.tree_util.tree_leaves(exp_s):
        raise ValueError(f"{what} do not fit the model spec (dim={spec.dim}, width={spec.width}, "
                         f"depth={spec.depth}, n_freq={spec.n_freq})")


def _same_spec(a: ModelSpec, b: ModelSpec) -> bool:
    """Equal specs, with τ compared at float32 precision (a float32 run records float32(τ))."""
    return dataclasses.replace(a, tau=1.0) == dataclasses.replace(b, tau=1.0) and \
        math.isclose(a.tau, b.tau, rel_tol=1e-6)


def _describe_mismatch(spec_saved: ModelSpec, spec: ModelSpec) -> str:
    diffs = [f"{f.name}: saved {getattr(spec_saved, f.name)!r}, expected {getattr(spec, f.name)!r}"
             for f in dataclasses.fields(ModelSpec)
             if getattr(spec_saved, f.name) != getattr(spec, f.name)]
    return "; ".join(diffs)


def load_checkpoint(directory, *, spec: Optional[ModelSpec] = None,
                    opt_state: Any = None) -> Checkpoint:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Args:
      directory: checkpoint directory.
      spec: if given, the architecture the caller expects; a different dim/width/depth/kind/...
        raises ValueError (τ is compared at float32 precision).
      opt_state: if given, an optimiser state template (e.g. ``optimizer.init(params)``); the
        stored state is restored into its structure (shape- and structure-checked).

    Returns:
      :class:`Checkpoint`.

    Raises:
      ValueError: missing or corrupted files, or parameters/optimiser state that do not fit.
    """
    cfg = read_config(directory)
    saved: ModelSpec = cfg["model"]
    if spec is not None:
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"`spec` must be a ModelSpec; got {type(spec).__name__}")
        if not _same_spec(saved, spec):
            raise ValueError(f"incompatible checkpoint in {str(directory)!r}: "
                             f"{_describe_mismatch(saved, spec)}")
    path = Path(directory)
    st_path = path / STATE_FILE
    if not st_path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} is incomplete: {STATE_FILE} is missing")
    try:
        raw = serialization.msgpack_restore(st_path.read_bytes())
    except Exception as err:  # msgpack raises a variety of exception types on corruption
        raise ValueError(f"corrupted checkpoint state {str(st_path)!r}: "
                         f"{type(err).__name__}: {err}") from None
    if not isinstance(raw, dict) or not {"step", "params", "opt_state"} <= set(raw):
        raise ValueError(f"corrupted checkpoint state {str(st_path)!r}: missing entries")
    template = param_shapes(saved)
    try:
        params = serialization.from_state_dict(template, raw["params"])
    except Exception as err:
        raise ValueError(f"checkpoint parameters in {str(st_path)!r} do not fit the model spec: "
                         f"{err}") from None
    params = jax.tree_util.tree_map(jnp.asarray, params)
    _check_params(params, saved, f"checkpoint parameters in {str(st_path)!r}")
    opt = raw["opt_state"]
    if opt_state is not None:
        try:
            restored = serialization.from_state_dict(opt_state, opt)
        except Exception as err:
            raise ValueError(f"checkpoint optimiser state in {str(st_path)!r} does not fit the "
                             f"optimiser: {err}") from None
        if jax.tree_util.tree_leaves(_shapes(restored)) != \
                jax.tree_util.tree_leaves(_shapes(opt_state)):
            raise ValueError(f"checkpoint optimiser state in {str(st_path)!r} has other shapes "
                             "than the optimiser's")
        opt = jax.tree_util.tree_map(jnp.asarray, restored)
    try:
        step = int(raw["step"])
    except (TypeError, ValueError):
        raise ValueError(f"corrupted checkpoint state {str(st_path)!r}: bad step") from None
    history = raw.get("history") or {}
    if not isinstance(history, dict):
        raise ValueError(f"corrupted checkpoint state {str(st_path)!r}: bad history")
    history = {k: np.asarray(v) for k, v in history.items()}
    return Checkpoint(spec=saved, params=params, opt_state=opt, step=step, history=history,
                      train_config=cfg.get("train", {}), path=path)


def load_model(directory) -> Tuple[Callable, ModelSpec]:
    """A saved model as ``(fn, spec)``: ``fn(x, t)`` is u_θ (``spec.kind == "velocity"``) or s_θ
    (``"score"``) with x (d,) or (N, d) and t scalar or (N,).

    Raises:
      ValueError: the directory is not a loadable checkpoint (see :func:`load_checkpoint`).
    """
    ck = load_checkpoint(directory)
    return field(ck.spec, ck.params), ck.spec


def _differing_parameters(saved: dict, given: dict) -> List[str]:
    """Names of the entries of two ``describe()`` dicts that differ (numbers to float32)."""
    out = []
    for name in sorted(set(saved) | set(given)):
        if name == "class":
            continue
        a, b = saved.get(name), given.get(name)
        try:
            same = np.shape(a) == np.shape(b) and bool(np.allclose(
                np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6, atol=0.0,
                equal_nan=True))
        except (TypeError, ValueError):
            same = a == b
        if not same:
            out.append(f"{name} saved {a!r}, given {b!r}")
    return out


def check_compatible(directory, protocol, data, *, allow: Iterable[str] = ()) -> List[str]:
    """Check that the model in ``directory`` fits the protocol and data it is used with.

    Compared: the dimension (model, protocol and data), the data fingerprint and the protocol
    (class and parameters, through its fingerprint) against the training record of the
    checkpoint (:func:`run_record`).

    Args:
      directory: a checkpoint directory written by :func:`satjax.learn.train.train`.
      protocol: the protocol the model will be used with (a :class:`satjax.protocol.Protocol`).
      data: the data distribution (a Gaussian mixture).
      allow: the explicit override: mismatches of these kinds (``"data"``, ``"protocol"``) are
        returned instead of raised. A dimension mismatch is always an error.

    Returns:
      The allowed mismatches (one message each; empty when everything fits).

    Raises:
      ValueError: an unreadable checkpoint, an unknown ``allow`` entry, or a mismatch not in
        ``allow`` (one line naming what differs: dimension, data fingerprint, protocol class or
        parameters).
    """
    allow = tuple(allow)
    unknown = [a for a in allow if a not in OVERRIDABLE]
    if unknown:
        raise ValueError(f"`allow` entries must be among {OVERRIDABLE}; got {unknown}")
    cfg = read_config(directory)
    spec: ModelSpec = cfg["model"]
    rec = cfg.get("train") or {}
    found: List[Tuple[str, str]] = []
    dim = int(data.dim)
    if spec.dim != dim:
        found.append(("dim", f"dimension: model {spec.dim}, data {dim}"))
    if protocol.dim is not None and protocol.dim != dim:
        found.append(("dim", f"dimension: protocol {protocol.dim}, data {dim}"))
    saved_fp = rec.get("data_fingerprint")
    if saved_fp is None:
        found.append(("data", "the checkpoint records no data fingerprint"))
    elif saved_fp != fingerprint(data):
        found.append(("data", f"data fingerprint: saved {saved_fp}, given {fingerprint(data)}"))
    saved_p, saved_pfp = rec.get("protocol"), rec.get("protocol_fingerprint")
    if not isinstance(saved_p, dict) or saved_pfp is None:
        found.append(("protocol", "the checkpoint records no protocol"))
    elif saved_pfp != fingerprint(protocol):
        given = jsonable(protocol.describe())
        if saved_p.get("class") != given.get("class"):
            found.append(("protocol", f"protocol class: saved {saved_p.get('class')}, given "
                                      f"{given.get('class')}"))
        else:
            diff = _differing_parameters(saved_p, given)
            found.append(("protocol", f"{given.get('class')} parameters: " + ", ".join(diff)
                          if diff else f"protocol fingerprint: saved {saved_pfp}, given "
                                       f"{fingerprint(protocol)}"))
    errors = [m for kind, m in found if kind not in allow]
    if errors:
        hint = [k for k in OVERRIDABLE if any(kind == k for kind, _ in found) and k not in allow]
        more = (f" (allow={tuple(hint)} to override)" if hint and
                all(kind != "dim" for kind, _ in found) else "")
        raise ValueError(f"model {str(directory)!r} does not fit: " + "; ".join(errors) + more)
    return [m for kind, m in found if kind in allow]
