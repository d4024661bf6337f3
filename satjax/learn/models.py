"""Neural vector fields s_θ(x, t) (scores, Eq. 10, 18) and u_θ(x, t) (velocities, Eq. 14, 19);
docs/theory.md §3.

A model is a :class:`ModelSpec` (a small, frozen, JSON-serialisable description of the
architecture: dimension, width, depth, activation, time embedding, kind and τ) plus a parameter
pytree. The protocol and data a model was trained for are recorded by the checkpoint
(:mod:`satjax.learn.checkpoint`), not by the spec. The network is a flax.linen MLP: the module
is static structure rebuilt from the spec, the parameters are the only state, so "split into
(graph, state) at the jit boundary" is simply ``(spec, params)``: ``spec`` is a static
(hashable) argument and ``params`` a traced one. A model never owns a schedule: τ only
normalises the time input.

Time convention: t = 0 data, t = τ noise. The network sees s = t/τ ∈ [0, 1] through the
features (s, sin(πks), cos(πks)), k = 1..``n_freq``, concatenated with x at the input and added,
after a linear map, to every hidden layer.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("velocity", "score")
ACTIVATIONS: dict = {
    "silu": nn.silu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "softplus": nn.softplus,
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (JSON-serialisable, hashable: a jit
    static argument).

    Attributes:
      dim: data dimension d (input and output size).
      kind: ``"velocity"`` (u_θ ≈ ν_t, Eq. 14, 19) or ``"score"`` (s_θ ≈ ∇ ln P_t, Eq. 10, 18).
      width: hidden width.
      depth: number of hidden layers (≥ 1).
      activation: one of ``ACTIVATIONS`` (silu, gelu, tanh, relu, softplus).
      n_freq: number of sinusoidal frequencies of the time embedding of s = t/τ.
      tau: the time horizon τ used to normalise t (t = 0 data, t = τ noise).

    Raises:
      ValueError, TypeError: on construction, for values that cannot describe a model.
    """

    dim: int
    kind: str = "velocity"
    width: int = 128
    depth: int = 3
    activation: str = "silu"
    n_freq: int = 16
    tau: float = 1.0

    def __post_init__(self):  # a plain (non-pytree) config: validating here runs once
        for name in ("dim", "width", "depth", "n_freq"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"`{name}` must be an int; got {type(v).__name__} {v!r}")
            lo = 0 if name == "n_freq" else 1
            if v < lo:
                raise ValueError(f"`{name}` must be >= {lo}; got {v}")
            object.__setattr__(self, name, int(v))
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}; got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}; "
                             f"got {self.activation!r}")
        try:
            tau = float(self.tau)
        except (TypeError, ValueError):
            raise TypeError(f"`tau` must be a number; got {self.tau!r}") from None
        if not np.isfinite(tau) or tau <= 0:
            raise ValueError(f"`tau` must be a finite number > 0; got {tau}")
        object.__setattr__(self, "tau", tau)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"a model spec must be a JSON object; got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model spec key(s) {sorted(unknown)}; known: {sorted(names)}")
        if "dim" not in d:
            raise ValueError("model spec is missing `dim`")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"model spec is not valid JSON: {err}") from None
        return cls.from_dict(d)

    def module(self) -> "MLPField":
        return MLPField(dim=self.dim, width=self.width, depth=self.depth,
                        activation=self.activation, n_freq=self.n_freq, tau=self.tau)


def time_embedding(t, tau, n_freq: int):
    """Features (s, sin(πks), cos(πks)) of s = t/τ, k = 1..n_freq; t (N,) -> (N, 1 + 2 n_freq)."""
    s = (t / tau)[:, None]
    k = jnp.arange(1, n_freq + 1, dtype=s.dtype)
    ang = jnp.pi * s * k
    return jnp.concatenate([s, jnp.sin(ang), jnp.cos(ang)], axis=-1)


class MLPField(nn.Module):
    """MLP vector field (x (N, d), t (N,)) -> (N, d) with a sinusoidal embedding of t/τ."""

    dim: int
    width: int = 128
    depth: int = 3
    activation: str = "silu"
    n_freq: int = 16
    tau: float = 1.0

    @nn.compact
    def __call__(self, x, t):
        act = ACTIVATIONS[self.activation]
        emb = time_embedding(t.astype(x.dtype), self.tau, self.n_freq)
        h = jnp.concatenate([x, emb], axis=-1)
        for i in range(self.depth):
            h = nn.Dense(self.width, name=f"hidden_{i}")(h)
            h = act(h + nn.Dense(self.width, use_bias=False, name=f"time_{i}")(emb))
        return nn.Dense(self.dim, name="out")(h)


# ---------------------------------------------------------------------- parameters and apply


def init_params(key, spec: ModelSpec, dtype=jnp.float32):
    """Fresh parameters of the model described by ``spec`` (flax default initialisers).

    Args:
      key: PRNG key.
      spec: the model description.
      dtype: parameter dtype (float32 by default, also under x64).

    Returns:
      The parameter pytree ``{"params": ...}``.
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"`spec` must be a ModelSpec; got {type(spec).__name__}")
    return _init(key, spec, jnp.dtype(dtype))


@partial(jax.jit, static_argnames=("spec", "dtype"))
def _init(key, spec: ModelSpec, dtype):
    x = jnp.zeros((1, spec.dim), dtype)
    t = jnp.zeros((1,), dtype)
    return spec.module().init(key, x, t)


def param_shapes(spec: ModelSpec, dtype=jnp.float32):
    """The parameter pytree of ``spec`` as ShapeDtypeStructs (no computation)."""
    return jax.eval_shape(lambda k: init_params(k, spec, dtype), jax.random.PRNGKey(0))


@partial(jax.jit, static_argnames=("spec",))
def _apply(spec: ModelSpec, params, x, t):
    return spec.module().apply(params, x, t)


def apply(spec: ModelSpec, params, x, t) -> jax.Array:
    """Evaluate the model: x (d,) or (N, d), t scalar or (N,) -> same shape as x.

    The output is u_θ(x, t) for ``kind="velocity"`` and s_θ(x, t) for ``kind="score"``.

    Raises:
      ValueError: when x does not have trailing dimension ``spec.dim`` or t does not broadcast.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.ndim not in (1, 2) or x.shape[-1] != spec.dim:
        raise ValueError(f"model input x must have shape ({spec.dim},) or (N, {spec.dim}) "
                         f"(the model dimension); got {x.shape}")
    t = jnp.asarray(t, dtype=x.dtype)
    single = x.ndim == 1
    xb = x[None] if single else x
    n = xb.shape[0]
    if t.ndim == 0:
        t = jnp.full((n,), t, dtype=x.dtype)
    elif t.shape != (n,):
        raise ValueError(f"t must be a scalar or have shape ({n},) to match x {x.shape}; "
                         f"got {t.shape}")
    out = _apply(spec, params, xb, t)
    return out[0] if single else out


@dataclasses.dataclass(frozen=True)
class Apply:
    """``fn(params, x, t)`` of one architecture, hashable by its spec: a static part of a
    :class:`satjax.reverse.ParamField` that compiles once per architecture, whatever the
    parameters."""

    spec: ModelSpec

    def __call__(self, params, x, t):
        return apply(self.spec, params, x, t)


def param_field(spec: ModelSpec, params, tau=None):
    """The model as a :class:`satjax.reverse.ParamField` (parameters as pytree leaves: one
    compilation serves every model of the same architecture)."""
    from satjax.reverse import ParamField

    return ParamField(params=params, fn=Apply(spec), tau=tau)


def field(spec: ModelSpec, params) -> Callable:
    """The model as a plain callable ``fn(x, t)`` (x (d,) or (N, d), t scalar or (N,))."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"`spec` must be a ModelSpec; got {type(spec).__name__}")

    def fn(x, t):
        return apply(spec, params, x, t)

    fn.spec = spec  # type: ignore[attr-defined]
    return fn
