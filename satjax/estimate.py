"""How satjax reports a number and judges an inequality (docs/theory.md §8).

Every estimated quantity is an :class:`Estimate`: its value, its statistical standard error
(0 for deterministic methods), a resolution error (the change between two resolutions of a
grid, a quadrature or a basis; 0 when not assessed), the method that produced it, and its
``kind``: a point estimate, or a lower / upper bound when the estimator is known to be biased
one way (e.g. c_2 from a finite projection basis is a lower estimate, bracketed above by w_D).

An inequality a ≤ b between estimates is judged by :func:`compare`: **holds** when b − a
exceeds ``z`` combined errors, **violated** when a − b does, **inconclusive** otherwise;
deterministic numbers are compared with a relative numerical tolerance. A relation that says
nothing (D_0 = ∞, a degenerate path) gets **vacuous** or **undefined** with a reason, never
"holds".
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from satjax.pytree import Node

KINDS = ("point", "lower", "upper")
STATUSES = ("holds", "violated", "inconclusive", "vacuous", "undefined")


class Estimate(Node):
    """A number with its uncertainty and provenance.

    Attributes:
      value: the estimate.
      stderr: statistical standard error (0 for deterministic methods).
      error: resolution error: |value − value at a coarser resolution| (0 when exact or not
        assessed; see ``method``).
      method: how it was computed, e.g. "quadrature-1d", "grid-2d", "monte-carlo",
        "closed-form".
      kind: "point", or "lower"/"upper" for a one-sided (biased) estimator.
      upper: for a lower estimate with a known upper bound (c_2 ≤ w_D), that bound; else None.
      coarse: the value at the coarser resolution that ``error`` is derived from, where the
        route records it (importance-weighted atoms: the n/2 halves of each batch), so that a
        difference of two estimates gets its own resolution error; else None.
    """

    value: jax.Array
    stderr: jax.Array
    error: jax.Array
    method: str = struct.field(pytree_node=False, default="closed-form")
    kind: str = struct.field(pytree_node=False, default="point")
    upper: Optional[jax.Array] = None
    coarse: Optional[jax.Array] = None

    @classmethod
    def exact(cls, value, method: str = "closed-form") -> "Estimate":
        v = jnp.asarray(value)
        return cls(value=v, stderr=jnp.zeros_like(v), error=jnp.zeros_like(v), method=method)

    @property
    def deterministic(self) -> bool:
        return float(self.stderr) == 0.0

    @property
    def resolved(self) -> bool:
        """False when the uncertainty (standard error plus resolution error) is at least the
        value's size: the estimate does not tell the value from zero (it is then reported as
        "unresolved", not as a number)."""
        v, u = float(self.value), float(self.stderr) + float(self.error)
        return not (math.isfinite(v) and u > 0 and u >= abs(v))

    def to_json(self, name: str) -> dict:
        """{name, name_stderr, name_error, name_method[, name_kind, name_upper, name_coarse]}
        (strict JSON)."""
        out = {name: finite_or_none(self.value), f"{name}_stderr": finite_or_none(self.stderr),
               f"{name}_error": finite_or_none(self.error), f"{name}_method": self.method}
        if self.kind != "point":
            out[f"{name}_kind"] = self.kind
        if self.upper is not None:
            out[f"{name}_upper"] = finite_or_none(self.upper)
        if self.coarse is not None:
            out[f"{name}_coarse"] = finite_or_none(self.coarse)
        status = number_status(self.value)
        if status != "finite":
            out[f"{name}_status"] = status
        elif not self.resolved:
            out[f"{name}_status"] = "unresolved"
        return out

    def text(self) -> str:
        """'value ± se [± resolution]' for tables."""
        v = float(self.value)
        if not math.isfinite(v):
            return number_status(v)
        if not self.resolved:
            return f"unresolved (uncertainty {float(self.stderr) + float(self.error):.2g})"
        s = f"{v:.6g}"
        if float(self.stderr) > 0:
            s += f" ± {float(self.stderr):.2g}"
        if float(self.error) > 1e-9 * abs(v):
            s += f" (res. {float(self.error):.1g})"
        if self.kind == "lower":
            s = "≥ " + s
        return s


def finite_or_none(v):
    """A float, or None for NaN/inf (strict JSON has no non-finite numbers)."""
    f = float(np.asarray(v))
    return f if math.isfinite(f) else None


def number_status(v) -> str:
    f = float(np.asarray(v))
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "+inf" if f > 0 else "-inf"
    return "finite"


class Verdict(Node):
    """The judgement of one inequality: ``status`` (one of STATUSES), ``margin`` = rhs − lhs,
    its standard error ``se`` and a ``reason`` for vacuous / undefined / inconclusive."""

    status: str = struct.field(pytree_node=False)
    margin: float = struct.field(pytree_node=False, default=float("nan"))
    se: float = struct.field(pytree_node=False, default=0.0)
    reason: str = struct.field(pytree_node=False, default="")

    def to_json(self) -> dict:
        return {"status": self.status, "margin": finite_or_none(self.margin),
                "margin_stderr": finite_or_none(self.se), "reason": self.reason}


def compare(lhs: Estimate, rhs: Estimate, *, z: float = 3.0, rtol: float = 1e-6,
            covariance: float = 0.0, pointwise=None) -> Verdict:
    """Judge lhs ≤ rhs (module docstring).

    Args:
      lhs, rhs: estimates (scalars, or arrays of per-time values with ``pointwise``).
      z: number of combined standard errors that decides holds / violated.
      rtol: relative tolerance for the deterministic part (quadrature accuracy).
      covariance: Cov(lhs, rhs) when they share random numbers.
      pointwise: None, or the name of the axis being judged at every entry (all must hold;
        any violated entry makes the verdict violated).
    """
    a, b = np.atleast_1d(np.asarray(lhs.value, float)), np.atleast_1d(np.asarray(rhs.value, float))
    sa = np.broadcast_to(np.asarray(lhs.stderr, float), a.shape)
    sb = np.broadcast_to(np.asarray(rhs.stderr, float), b.shape)
    ea = np.broadcast_to(np.asarray(lhs.error, float), a.shape)
    eb = np.broadcast_to(np.asarray(rhs.error, float), b.shape)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return Verdict(status="undefined", reason="a side is not finite (NaN or inf)")
    margin = b - a
    se = np.sqrt(np.maximum(sa**2 + sb**2 - 2.0 * covariance, 0.0))
    tol = rtol * np.maximum(np.abs(a), np.abs(b)) + 1e-300 + ea + eb
    slack = z * se + tol
    worst = int(np.argmin(margin / np.maximum(slack, 1e-300)))
    m, s = float(margin[worst]), float(se[worst])
    if np.any(margin < -slack):
        return Verdict(status="violated", margin=m, se=s,
                       reason="" if pointwise is None else f"at {pointwise} index {worst}")
    if np.all(margin >= z * se - tol):
        return Verdict(status="holds", margin=m, se=s)
    return Verdict(status="inconclusive", margin=m, se=s,
                   reason=f"the margin is within {z:g} standard errors")


def vacuous(reason: str) -> Verdict:
    return Verdict(status="vacuous", reason=reason)


def undefined(reason: str) -> Verdict:
    return Verdict(status="undefined", reason=reason)
