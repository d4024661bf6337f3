"""The speed-accuracy relation (docs/theory.md §6; Eq. 77–91, 100): one :func:`bound`.

The exact reverse process starts from P_τ; a perturbed start P̃_τ is carried by the same
velocity (exact ν, or a learned ν̂) to the generated p = P̃_0. With D_0 the Pearson divergence of
the starts (Eq. 78),

    ΔW_1 = W_1(q, p) − W_1(P_τ, P̃_τ),   η = ΔW_1²/(τ D_0),
    v_loss(t) = |∂_t W_1(P_t, P̃_t)| / sqrt(D_0),   c_1 = ∫ v_loss² dt,
    v_loss(t)² ≤ E‖ν_t‖² (80),  c_1 ≤ w_D (81),  c_1 ≤ c_2 = w_D for conservative forces (82),
    Eq. 100 for a learned ν̂: |ΔW_1|/sqrt(τ D_max) ≤ sqrt(w_D) + sqrt(1 + 1/D_max) sqrt(τ L_α).

Four transports of the perturbed path (chosen by ``transport``):

* ``"cdf"`` — 1-D, exact velocity: the flow map from τ to t is the monotone rearrangement
  Q_τ ∘ F_t, so F̃_t = F̃_τ ∘ Q_τ ∘ F_t and W_1(P_t, P̃_t) = ∫|F_t − F̃_t| dx — no ODE, no
  sampling; ∂_t W_1 by forward-mode autodiff at Gauss–Legendre nodes. Exact to quadrature.
* :class:`~satjax.estimators.DensityGrid` — 2-D: the cells of a grid carried 0 → τ with their
  log-volume increments hold the exact masses of q and of the generated p; W_1 between the two
  weightings of the moving cells is an exact linear program (docs/theory.md §6.4).
  Deterministic; error: the change on the n/2 grid.
* :class:`~satjax.estimators.Atoms` — any dimension ≥ 2: the same with importance-weighted
  quasi-Monte-Carlo atoms drawn from (q + p)/2 in place of cells (docs/theory.md §6.5); mean
  and standard error over independent batches, error from the change at n/2 atoms.
* :class:`~satjax.estimators.Particles` — any dimension, exact or learned velocity: particle
  sets of P_τ and P̃_τ (common random numbers where P̃_τ is a map of P_τ; in 1-D the midpoint
  quantile grid, deterministic) are carried back by the probability-flow ODE; W_1 between them
  is exact OT (POT; sorting in 1-D) or a Sinkhorn divergence (ott-jax) at the saved times, and
  ∂_t W_1 is the exact derivative of that W_1 along the particle motion (envelope theorem:
  the optimal plan held fixed), so c_1 carries no finite-difference bias. Standard errors treat
  the particle pairs as independent (an approximation).

c_2, w_D and E‖ν_t‖² come from :func:`satjax.path.path_cost` with the path estimator. Verdicts
(:meth:`BoundResult.verdicts`) list only inequalities that can fail: c_1 ≤ c_2 (conservative
protocols) or c_1 ≤ w_D, Eq. 80 at every time, and Eq. 100. η ≤ c_1 is Cauchy–Schwarz applied to
the same numbers and is not a check.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from satjax import path as path_mod
from satjax import perturb as PT
from satjax import univariate
from satjax._util import (as_float, gauss_legendre, host_batched, host_threads, map_in_batches,
                          map_over_nodes, map_over_points)
from satjax.estimate import Estimate, compare, vacuous
from satjax.estimators import CDF, Atoms, DensityGrid, Particles, resolve
from satjax.forward import check
from satjax.geometry import distances
from satjax.likelihood import flow_with_log_density
from satjax.mixtures import GaussianMixture
from satjax.pytree import Node
from satjax.reverse import Field, as_field, exact_velocity, solve_ode

class Eq100(Node):
    """The imperfect-velocity relation (Eq. 100): ``t`` saved times, ``D`` = χ²(P̃_t ‖ P_t) there
    (with ``D_stderr``), ``D_max``, ``L_alpha`` = (1/τ)∫ E_{P_t}‖ν̂ − ν‖² dt, ``lhs`` =
    |ΔW_1|/sqrt(τ D_max), ``rhs`` = sqrt(w_D) + sqrt(1 + 1/D_max) sqrt(τ L_α)."""

    t: jax.Array
    D: jax.Array
    D_stderr: jax.Array
    D_max: Estimate
    L_alpha: Estimate
    lhs: Estimate
    rhs: Estimate


class BoundResult(Node):
    """Everything of docs/theory.md §6 for one protocol, data and perturbation.

    Curves: ``t`` (S,) times of ``W1`` = W_1(P_t, P̃_t); ``t_rate`` (R,) times of ``v_loss_sq``
    (with ``v_loss_sq_stderr`` and, where a linear program's own error enters,
    ``v_loss_sq_error``) and ``kinetic`` = E‖ν_t‖² (with ``kinetic_stderr``). Scalars
    (Estimates): ``eta``, ``c1``, ``c2``, ``wD``, ``D0``, ``dW1``, ``W1_start`` (t = τ),
    ``W1_end`` (t = 0, W_1(q, p)). ``eq100`` is present when a learned velocity was given.
    """

    t: jax.Array
    W1: jax.Array
    t_rate: jax.Array
    v_loss_sq: jax.Array
    v_loss_sq_stderr: jax.Array
    kinetic: jax.Array
    kinetic_stderr: jax.Array
    eta: Estimate
    c1: Estimate
    c2: Estimate
    wD: Estimate
    D0: Estimate
    dW1: Estimate
    W1_start: Estimate
    W1_end: Estimate
    eq100: Optional[Eq100] = None
    conservative: bool = struct.field(pytree_node=False, default=True)
    method: str = struct.field(pytree_node=False, default="")
    c2_wD_covariance: jax.Array = 0.0
    v_loss_sq_error: Optional[jax.Array] = None

    def summary(self) -> dict:
        """The scalars as floats (value only)."""
        names = ("eta", "c1", "c2", "wD", "D0", "dW1", "W1_start", "W1_end")
        out = {k: float(getattr(self, k).value) for k in names}
        if self.eq100 is not None:
            for k in ("D_max", "L_alpha", "lhs", "rhs"):
                out[k] = float(getattr(self.eq100, k).value)
        return out

    def verdicts(self, z: float = 3.0) -> dict:
        """The falsifiable inequalities as :class:`~satjax.estimate.Verdict` (module docstring).

        Exact velocity: c_1 ≤ c_2 (conservative) or c_1 ≤ w_D, and Eq. 80 at every time; with a
        learned velocity only Eq. 100 (the others assume one velocity carries both starts)."""
        d0 = float(self.D0.value)
        out = {}
        if self.eq100 is not None:
            # a learned ν̂ carries P̃_t while P_t follows ν: Eq. 80–83 do not apply, Eq. 100 does
            return {"eq100": self._eq100_verdict(z)}
        if not math.isfinite(d0):
            reason = ("D_0 = ∞: the perturbed start has heavier tails than P_τ, so η = c_1 = 0 "
                      "and the relation says nothing")
            out["c1<=c2" if self.conservative else "c1<=wD"] = vacuous(reason)
            out["eq80_all_times"] = vacuous(reason)
        else:
            if self.conservative:
                out["c1<=c2"] = compare(self.c1, self.c2, z=z)
            else:
                out["c1<=wD"] = compare(self.c1, self.wD, z=z)
            out["eq80_all_times"] = compare(
                Estimate(value=self.v_loss_sq, stderr=self.v_loss_sq_stderr,
                         error=jnp.zeros_like(self.v_loss_sq) if self.v_loss_sq_error is None
                         else self.v_loss_sq_error),
                Estimate(value=self.kinetic, stderr=self.kinetic_stderr,
                         error=jnp.zeros_like(self.kinetic)),
                z=z, pointwise="time")
        return out

    def _eq100_verdict(self, z):
        dmax = float(self.eq100.D_max.value)
        if not math.isfinite(float(self.D0.value)):
            return vacuous("D_0 = ∞: the perturbed start has heavier tails than P_τ")
        if not math.isfinite(dmax) or dmax > 1e12 or not math.isfinite(float(self.eq100.rhs.value)):
            return vacuous(f"D_max = {dmax:.3g}: the learned flow moves P̃_t so far from P_t "
                           "that Eq. 100 says nothing")
        return compare(self.eq100.lhs, self.eq100.rhs, z=z)

    def holds(self) -> bool:
        """True when every verdict is "holds"."""
        return all(v.status == "holds" for v in self.verdicts().values())


# ---------------------------------------------------------------------------- the 1-D CDF route


def _abs_panels(g):
    """Trapezoid panels of |g| (unit width) with exact integration of |linear interpolant| across
    sign changes plus the Euler–Maclaurin end terms that a kink leaves uncancelled on its two
    sides, (h²/12)(|g'(x_i)| + |g'(x_{i+1})|) ≈ h |b − a|/6 (split between the two panels when
    g vanishes exactly at a node), so each kink of |F − F̃| costs O(h³) instead of O(h²)."""
    a, b = g[:-1], g[1:]
    cross = a * b < 0
    touch = (a * b == 0) & (a != b)  # one end exactly zero: a kink at that node
    denom = jnp.where(cross, jnp.abs(a) + jnp.abs(b), 1.0)
    trap = 0.5 * (jnp.abs(a) + jnp.abs(b))
    return jnp.where(cross, 0.5 * (a**2 + b**2) / denom + jnp.abs(b - a) / 6.0,
                     trap + jnp.where(touch, jnp.abs(b - a) / 12.0, 0.0))


def _panel_sums(g, g_rate, Y, jumps):
    """Σ panels |g| and its t-derivative (unit width), with the panels that hold a jump of the
    start's density split there. Where P̃_τ's density jumps at y* (a uniform start), |g| has a
    kink and its rate a jump at the grid position x* with Y(x*) = y* (Y increasing): the
    trapezoid rule is then O(h²) and O(h) in that panel. Split at x* (located by linear
    interpolation of Y), each side extrapolated linearly from its own two nodes, plus the
    Euler–Maclaurin end terms of the two sides: O(h³)."""
    val, rate = jax.jvp(_abs_panels, (g,), (g_rate,))
    V, R = jnp.sum(val), jnp.sum(rate)
    if jumps is None:
        return V, R
    n = g.shape[0]
    a, r = jnp.abs(g), jnp.sign(g) * g_rate
    i = jnp.clip(jnp.searchsorted(Y, jumps, side="right") - 1, 1, n - 3)
    width = Y[i + 1] - Y[i]
    ok = (jumps > Y[1]) & (jumps < Y[n - 2]) & (width > 0) & (g[i] * g[i + 1] > 0)
    th = jnp.clip((jumps - Y[i]) / jnp.where(width > 0, width, 1.0), 0.0, 1.0)

    def split(f):
        left = f[i] + (f[i] - f[i - 1]) * th
        right = f[i + 1] - (f[i + 2] - f[i + 1]) * (1.0 - th)
        exact = 0.5 * th * (f[i] + left) + 0.5 * (1.0 - th) * (right + f[i + 1])
        # the trapezoid sums on either side now end at x_i and x_{i+1}: their Euler–Maclaurin
        # end terms −f'(x_i)/12 and +f'(x_{i+1})/12 (unit width) no longer cancel
        ends = (-(f[i] - f[i - 1]) + (f[i + 2] - f[i + 1])) / 12.0
        return jnp.sum(jnp.where(ok, exact - 0.5 * (f[i] + f[i + 1]) + ends, 0.0))

    return V + split(a), R + split(r)


class CDFFrame(Node):
    """The CDF transport (:class:`~satjax.estimators.CDF`) prepared for one protocol and data:
    everything of W_1(P_t, P̃_t) that does not depend on the perturbed start, at the
    Gauss–Legendre nodes ``ts`` (weights ``wts``) followed by t = 0 and t = τ.

    W_1(t) = h_t Σ panels(g_t) with g_t = (F_t − F̃_τ(Y_t)) S_t on a grid of ``n_points``:

    * Eulerian (no closed-form flow map): x on P_t's support, F_t = F_t(x), Y_t = Q_τ(F_t(x))
      (the flow map to τ), S_t = 1;
    * Lagrangian (``lagrangian``; the protocol has ``flow_map_1d``): x₀ on q's support,
      F = F_q(x₀), Y = X_τ(x₀), S_t = ∂X_t/∂x₀.

    ``*_rate`` are the t-derivatives (forward mode), so ∂_t W_1 needs only F̃_τ and its density at
    Y: one frame serves every perturbation of the same protocol and data.
    """

    ts: jax.Array
    wts: jax.Array
    h: jax.Array
    base: jax.Array
    base_rate: jax.Array
    point: jax.Array
    point_rate: jax.Array
    slope: jax.Array
    slope_rate: jax.Array
    lagrangian: bool = struct.field(pytree_node=False, default=False)
    n_points: int = struct.field(pytree_node=False, default=16384)

    @property
    def n_time(self) -> int:
        return self.ts.shape[0]

    @property
    def method(self) -> str:
        return CDF(n_points=self.n_points).method


# Memory of the frame: one (grid point, mixture component) pair at one time node holds about
# 570 bytes of work arrays in the Eulerian frame (CDF, survival function and two quantile
# solves, with their t-derivatives; measured with jax 0.10.2 on CPU). The frame maps over time
# nodes and grid-point blocks so that at most FRAME_BUDGET_BYTES live at once.
FRAME_BYTES_PER_ELEMENT = 640
FRAME_BUDGET_BYTES = 1 << 30


def frame_layout(n_components: int, n_time: int, n_points: int = 16384,
                 budget: int = FRAME_BUDGET_BYTES):
    """(time nodes per batch, grid points per block, estimated peak bytes) of :func:`cdf_frame`
    for data with ``n_components`` components (P_t and P_τ each have that many)."""
    per_point = FRAME_BYTES_PER_ELEMENT * 2 * max(1, int(n_components))
    block = n_points
    while block % 2 == 0 and block > 1 and block * per_point > budget:
        block //= 2
    nodes = max(1, min(n_time + 2, budget // (block * per_point))) if block == n_points else 1
    return nodes, block, nodes * block * per_point + (n_time + 2) * n_points * 8 * 6


@partial(jax.jit, static_argnames=("n_time", "n_points"))
def cdf_frame(protocol, data, n_time: int, n_points: int = 16384) -> CDFFrame:
    """The :class:`CDFFrame` of the exact 1-D CDF transport (traceable; jit-compiled once per
    protocol family and sizes). Memory stays near :data:`FRAME_BUDGET_BYTES` for any number of
    mixture components (:func:`frame_layout`)."""
    p_end = protocol.reverse_start(data)
    ts, wts = gauss_legendre(n_time, 0.0, protocol.tau)
    t_all = jnp.concatenate([ts, jnp.stack([jnp.zeros_like(protocol.tau), protocol.tau])])
    one = jnp.ones_like(t_all[0])
    nodes, _, _ = frame_layout(data.means.shape[0], n_time, n_points)
    per_point = FRAME_BYTES_PER_ELEMENT * 2 * data.means.shape[0]

    def over_nodes(fn):
        return jax.lax.map(fn, t_all, batch_size=nodes) if nodes < t_all.shape[0] \
            else jax.vmap(fn)(t_all)

    if protocol.flow_map_1d(data, protocol.tau, data.means[:1, 0]) is not None:
        # Lagrangian form: x = X_t(x₀) over a grid of data points x₀, F_t(X_t(x₀)) = F_q(x₀) and
        # F̃_t(X_t(x₀)) = F̃_τ(X_τ(x₀)), so W_1 = ∫ |F_q(x₀) − F̃_τ(X_τ(x₀))| ∂X_t/∂x₀ dx₀.
        # Trapezoid rule in x₀ for the integrand |g| ∂X_t/∂x₀ (slope by forward mode at the
        # nodes): spectrally accurate like the Eulerian rule; weighting panel means of |g| by
        # the increments of X_t instead is only second order (≈1e-7 relative at 16384 points).
        lo, hi = (jax.lax.stop_gradient(v[0]) for v in data.support(12.0))
        x0 = jnp.linspace(lo, hi, n_points)

        def slope(t):
            return map_over_points(
                lambda xb: jax.jvp(lambda x: protocol.flow_map_1d(data, t, x), (xb,),
                                   (jnp.ones_like(xb),))[1], x0, per_point, FRAME_BUDGET_BYTES)

        S, S_rate = over_nodes(lambda t: jax.jvp(slope, (t,), (one,)))
        F = data.cdf(x0)
        Y = protocol.flow_map_1d(data, protocol.tau, x0)
        return CDFFrame(ts=ts, wts=wts, h=jnp.full_like(t_all, (hi - lo) / (n_points - 1)),
                        base=F, base_rate=jnp.zeros_like(F), point=Y,
                        point_rate=jnp.zeros_like(Y), slope=S, slope_rate=S_rate,
                        lagrangian=True, n_points=n_points)

    # P_τ's log CDF and log survival function on a fine grid, once: every quantile solve of the
    # flow map starts from a bracket three cells wide
    table = univariate.level_table(p_end.components_1d(), n_points)

    def eulerian(t):
        marg = protocol.marginal(data, t)
        lo, hi = (jax.lax.stop_gradient(v[0]) for v in marg.support(12.0))
        x = jnp.linspace(lo, hi, n_points)
        # the flow map Q_τ ∘ F_t through survival functions above the median: clipping F at
        # 1 − ε would send the whole upper tail to one point (a ≈1e-10 relative error in W_1)
        F, Y = map_over_points(
            lambda xb: (marg.cdf(xb), distances.monotone_map(marg, p_end, xb, table)),
            x, per_point, FRAME_BUDGET_BYTES)
        return (hi - lo) / (n_points - 1), F, Y

    (h, F, Y), (_, F_rate, Y_rate) = over_nodes(lambda t: jax.jvp(eulerian, (t,), (one,)))
    ones = jnp.ones((1, n_points), F.dtype)
    return CDFFrame(ts=ts, wts=wts, h=h, base=F, base_rate=F_rate, point=Y, point_rate=Y_rate,
                    slope=ones, slope_rate=jnp.zeros_like(ones), lagrangian=False,
                    n_points=n_points)


@jax.jit
def _w1_path_cdf(frame: CDFFrame, start):
    """W_1(P_t, P̃_t) = h_t Σ panels((F_t − F̃_τ(Y_t)) S_t) and its t-derivative at the frame's
    Gauss–Legendre nodes, and W_1 at t = 0 and t = τ; each as (fine, coarse): the coarse sums
    use every other grid point (spacing 2h), for the resolution error. (A start whose density
    jumps, e.g. a uniform one, puts a jump into the rate's integrand: the rule is then only
    first order in h, and the coarse grid shows it.)"""
    jumps = start.density_jumps()

    def w1(h, F, F_rate, Y, Y_rate, S, S_rate):
        G, G_rate = jax.jvp(start.cdf, (Y,), (Y_rate,))
        g, g_rate = (F - G) * S, (F_rate - G_rate) * S + (F - G) * S_rate
        val, rate = _panel_sums(g, g_rate, Y, jumps)
        val2, rate2 = _panel_sums(g[::2], g_rate[::2], Y[::2], jumps)
        return (h * val, 2 * h * val2), (h * rate, 2 * h * rate2)

    shape = frame.h.shape + (frame.n_points,)
    args = (frame.h, *(jnp.broadcast_to(a, shape) for a in (
        frame.base, frame.base_rate, frame.point, frame.point_rate, frame.slope,
        frame.slope_rate)))
    # the start's CDF at every (node, point) holds (points × components) arrays: batch the nodes
    per_node = frame.n_points * start.means.shape[0] * 8 if hasattr(start, "means") \
        else frame.n_points * 8
    W1, dW1 = map_over_nodes(lambda a: w1(*a), args, per_node)
    n = frame.n_time
    return tuple((a[:n], r[:n], a[n], a[n + 1]) for a, r in zip(W1, dW1))


# ------------------------------------------------------------------------ the particle route


def _pairing(x, y):
    """Optimal pairing of two equal-size particle sets for W_1: sorting in 1-D, else an exact
    assignment (host callback; the permutation carries no gradient; under ``vmap`` the batch's
    assignments run in parallel host threads)."""
    if x.shape[1] == 1:
        return None

    def assign(a, b):
        from scipy.optimize import linear_sum_assignment
        from scipy.spatial.distance import cdist

        _, perm = linear_sum_assignment(cdist(np.asarray(a, np.float64),
                                              np.asarray(b, np.float64)))
        return perm.astype(np.int32)

    return jax.pure_callback(host_batched(assign, (2, 2)),
                             jax.ShapeDtypeStruct((x.shape[0],), jnp.int32),
                             jax.lax.stop_gradient(x), jax.lax.stop_gradient(y),
                             vmap_method="expand_dims")


def _w1_and_rate(x, y, vx, vy):
    """Exact empirical W_1 between equal-weight particle sets x, y (n, d) and its derivative
    when they move with velocities vx, vy (envelope theorem); per-pair terms for errors."""
    perm = _pairing(x, y)
    if perm is None:
        ix, iy = jnp.argsort(x[:, 0]), jnp.argsort(y[:, 0])
        x, vx, y, vy = x[ix], vx[ix], y[iy], vy[iy]
    else:
        y, vy = y[perm], vy[perm]
    diff = x - y
    dist = jnp.sqrt(jnp.sum(diff**2, -1) + 1e-300)
    rate = jnp.sum(diff * (vx - vy), -1) / dist
    return dist, rate


def _w1_sinkhorn_and_rate(x, y, vx, vy):
    """Debiased Sinkhorn divergence for W_1 and its derivative along the motion (the gradient of
    the divergence with respect to the points, applied to the velocities)."""
    val, (gx, gy) = jax.value_and_grad(
        lambda a, b: distances.sinkhorn_divergence(a, b, p=1).value, argnums=(0, 1))(x, y)
    n = x.shape[0]
    per_rate = n * (jnp.sum(gx * vx, -1) + jnp.sum(gy * vy, -1))  # mean of these = the rate
    return jnp.full((n,), val), per_rate


def _mean_se(v):
    n = v.shape[-1]
    return jnp.mean(v, -1), jnp.std(v, -1, ddof=1) / jnp.sqrt(n)


def _trapezoid_weights(ts):
    dt = jnp.abs(jnp.diff(ts))
    w = jnp.zeros_like(ts).at[:-1].add(0.5 * dt).at[1:].add(0.5 * dt)
    return w


C1_METHOD = "c1 from the W1 curve by secant sums with one Richardson step; its error adds that step"


def secant_c1(ts, W1):
    """D_0 c_1 from the W_1 curve alone (docs/theory.md §6.6): S_K = Σ_k (W_{k+1} − W_k)²/Δt_k
    on the K intervals of the saved times ``ts`` (K even) and S_{K/2} on every other one, one
    Richardson step S_K + (S_K − S_{K/2})/3 (both are O(Δt²) below ∫ (∂_t W_1)² dt); returns
    (value, Richardson step |S_K − S_{K/2}|/3). W_1 is continuous in the protocol's parameters
    where its rate jumps (basis changes of the linear program), so this c_1 has trustworthy
    derivatives where the trapezoid of the rates does not."""
    if (ts.shape[0] - 1) % 2:
        raise ValueError(f"c_1 by the secant needs an even number of intervals; got "
                         f"{ts.shape[0] - 1} (make n_save even)")
    S = jnp.sum(jnp.diff(W1) ** 2 / jnp.diff(ts), -1)
    S_half = jnp.sum(jnp.diff(W1[..., ::2]) ** 2 / jnp.diff(ts[::2]), -1)
    return S + (S - S_half) / 3, jnp.abs(S - S_half) / 3


def secant_c1_lp_error(ts, W1, e):
    """Bound on the change of :func:`secant_c1`'s value when each W_1 may be off by up to ``e``
    (a linear program's bracket): Σ (2|ΔW| ε + ε²)/Δt, ε the summed end errors, for S_K and
    S_{K/2} combined as in the Richardson step (4/3 and 1/3)."""
    def bound(t, W, err):
        eps = err[1:] + err[:-1]
        return jnp.sum((2 * jnp.abs(jnp.diff(W)) * eps + eps**2) / jnp.diff(t))

    return 4 / 3 * bound(ts, W1, e) + bound(ts[::2], W1[::2], e[::2]) / 3


def _start_particles(key, transport: Particles, p_end, start, pert):
    """Particles of P_τ and P̃_τ: midpoint quantile grids in 1-D (deterministic), else samples
    with common random numbers when P̃_τ is a map of P_τ."""
    n = transport.n
    if p_end.dim == 1:
        u = (jnp.arange(n) + 0.5) / n
        return p_end.quantile(u)[:, None], start.quantile(u)[:, None], True
    k1, k2 = jax.random.split(key)
    xa = p_end.sample(k1, n)
    xb = pert.push_samples(xa, p_end)
    return xa, (start.sample(k2, n) if xb is None else xb), False


def _particle_route(protocol, data, pert, start, p_end, velocity, transport, est, pc, D0):
    tau = protocol.tau
    exact = exact_velocity(protocol, data)
    learned = velocity is not None
    fld = as_field(velocity) if learned else exact
    xa0, xb0, deterministic = _start_particles(transport.key, transport, p_end, start, pert)
    kw = dict(t_start=tau, t_end=0.0, method=transport.solver, n_steps=transport.n_steps,
              n_save=transport.n_save)
    xa = solve_ode(exact, xa0, checkpoint=transport.checkpoint, **kw)
    if learned:
        fl = flow_with_log_density(fld, xb0, **kw)
        xs_b, ells = fl.xs, fl.ells[..., 0]
    else:
        xs_b, ells = solve_ode(exact, xb0, checkpoint=transport.checkpoint, **kw).xs, None
    ts = xa.ts
    pair = _w1_sinkhorn_and_rate if transport.backend == "ott" else _w1_and_rate

    def at(t, a, b):
        return pair(a, b, exact.batch(a, t), fld.batch(b, t))

    # a map over the saved times; the exact assignments (host) of a few saved times at once, in
    # parallel threads
    on_host = transport.backend != "ott" and xa0.shape[1] > 1
    dists, rates = map_in_batches(lambda args: at(*args), (ts, xa.xs, xs_b),
                                  host_threads() if on_host else 1)  # (S, n)
    W1, W1_se = _mean_se(dists)
    rate, rate_se = _mean_se(rates)
    if deterministic:  # quantile grids: no sampling error (midpoint-rule error only)
        W1_se, rate_se = jnp.zeros_like(W1_se), jnp.zeros_like(rate_se)
    v_loss_sq = rate**2 / D0.value
    v_se = jnp.sqrt((2 * rate * rate_se / D0.value) ** 2 + (v_loss_sq * D0.stderr / D0.value) ** 2)
    w = _trapezoid_weights(ts)
    c1 = w @ v_loss_sq
    # influence of each pair on c1 (delta method; pairs treated as independent)
    phi = (w * 2 * rate / D0.value) @ rates
    c1_se = 0.0 if deterministic else jnp.std(phi, ddof=1) / jnp.sqrt(phi.shape[0])
    c1_se = jnp.sqrt(c1_se**2 + (c1 * D0.stderr / D0.value) ** 2)
    # resolution: trapezoid on every other saved time
    half = ts[::2]
    c1_half = _trapezoid_weights(half) @ v_loss_sq[::2] if ts.shape[0] >= 5 else c1
    dW1_paths = dists[-1] - dists[0]
    dW1, dW1_se = _mean_se(dW1_paths)
    if deterministic:
        dW1_se = jnp.zeros_like(dW1_se)
    kin_t, kin_se = _kinetic_at(est, protocol, data, ts)
    method = transport.method
    out = dict(t=ts, W1=W1, t_rate=ts, v_loss_sq=v_loss_sq, v_loss_sq_stderr=v_se,
               kinetic=kin_t, kinetic_stderr=kin_se,
               c1=Estimate(value=c1, stderr=c1_se, error=jnp.abs(c1 - c1_half), method=method),
               dW1=Estimate(value=dW1, stderr=dW1_se, error=jnp.zeros_like(dW1), method=method),
               W1_start=Estimate(value=W1[0], stderr=W1_se[0], error=jnp.zeros_like(dW1),
                                 method=method),
               W1_end=Estimate(value=W1[-1], stderr=W1_se[-1], error=jnp.zeros_like(dW1),
                               method=method))
    if learned:
        node_est = _node_estimator(est, protocol, data, ts, jax.random.fold_in(transport.key, 7))
        D, D_se = _chi2_along_particles(protocol, data, start, xb0, xs_b, ells, ts)
        out["eq100"] = _eq100(protocol, data, fld, exact, ts, D, D_se, dW1, dW1_se, pc,
                              node_est, method)
    return out


def _node_estimator(est, protocol, data, ts, key):
    """``est``, or where it is a closed form (no nodes) a quadrature/Monte-Carlo one: the
    expectations of ‖ν̂ − ν‖² in L_α need nodes."""
    if est.has_nodes:
        return est
    node_est = resolve(data, protocol, "quadrature" if data.dim == 1 else "mc", key=key)
    return node_est.prepare(protocol, data, ts)


def _kinetic_at(est, protocol, data, ts):
    """E‖ν_t‖² and its standard error at given times, with the path estimator."""
    r = jax.lax.map(lambda t: est.rates(protocol, data, t, speed=False).kinetic, ts)
    if est.per_sample:
        return _mean_se(r)
    return r, jnp.zeros_like(r)


def _chi2_along_particles(protocol, data, start, xb0, xs_b, ells, ts):
    """D_t = E_{P̃_t}[P̃_t/P_t] − 1 along the learned flow's particles (exact ln P_t, ln P̃_t by
    the change of variables) and its standard error."""
    l0 = start.log_prob(xb0)
    D, D_se = [], []
    for i in range(ts.shape[0]):
        r = jnp.exp(l0 - ells[i] - protocol.marginal(data, ts[i]).log_prob(xs_b[i]))
        m, se = _mean_se(r)
        D.append(m - 1.0)
        D_se.append(se)
    D, D_se = jnp.stack(D), jnp.stack(D_se)
    if xb0.shape[1] == 1:  # quantile grid: deterministic midpoint sums
        D_se = jnp.zeros_like(D_se)
    return D, D_se


def _eq100(protocol, data, fld, exact, ts, D, D_se, dW1, dW1_se, pc, est, method,
           D_err=None, dW1_err=None):
    """Both sides of Eq. 100 from D_t = χ²(P̃_t ‖ P_t) at the saved times ``ts`` (standard error
    ``D_se``, resolution error ``D_err``), ΔW_1 (``dW1_se``, ``dW1_err``) and L_α by the path
    estimator's expectations of ‖ν̂ − ν‖²."""
    tau = protocol.tau
    tg, wg = gauss_legendre(32, 0.0, tau)

    def resid(t):
        x, w = est.expectation_nodes(protocol, data, t)
        return w * jnp.sum((fld.batch(x, t) - exact.batch(x, t)) ** 2, -1)

    per = jax.lax.map(resid, tg)  # (n_time, n): weighted per-node terms
    tau_L_paths = wg @ per
    if est.per_sample:
        tau_L = jnp.mean(tau_L_paths * tau_L_paths.shape[0])
        tau_L_se = jnp.std(tau_L_paths * tau_L_paths.shape[0], ddof=1) / jnp.sqrt(tau_L_paths.shape[0])
    else:
        tau_L, tau_L_se = jnp.sum(tau_L_paths), jnp.zeros(())
    i_max = jnp.argmax(D)
    D_max = D[i_max]
    lhs = jnp.abs(dW1) / jnp.sqrt(tau * D_max)
    lhs_se = dW1_se / jnp.sqrt(tau * D_max)
    a = jnp.sqrt(1.0 + 1.0 / D_max)
    root_L = jnp.sqrt(jnp.maximum(tau_L, 0.0))
    rhs = jnp.sqrt(pc.wD.value) + a * root_L
    rhs_se = jnp.sqrt((0.5 * pc.wD.stderr / jnp.sqrt(pc.wD.value)) ** 2
                      + (a * 0.5 * tau_L_se / jnp.maximum(root_L, 1e-300)) ** 2)
    z = jnp.zeros(())
    D_max_err = z if D_err is None else D_err[i_max]
    # |ΔW_1|/sqrt(τ D_max): first-order propagation of both resolution errors
    lhs_err = z if dW1_err is None else \
        (dW1_err + 0.5 * jnp.abs(dW1) * D_max_err / D_max) / jnp.sqrt(tau * D_max)
    return Eq100(t=ts, D=D, D_stderr=D_se,
                 D_max=Estimate(value=D_max, stderr=D_se[i_max], error=D_max_err,
                                method=method),
                 L_alpha=Estimate(value=tau_L / tau, stderr=tau_L_se / tau, error=z,
                                  method=est.method),
                 lhs=Estimate(value=lhs, stderr=lhs_se, error=lhs_err, method=method),
                 rhs=Estimate(value=rhs, stderr=rhs_se, error=z, method=est.method))


# ------------------------------------------------------------------- the 2-D density-grid route


class GridPass(Node):
    """One resolution of the density-grid transport: saved times ``ts`` (0 → τ), W_1 and its
    rate there (0 in a resolution pass, which needs W_1 alone), the ODE check ``ode_w1`` =
    W_1(q, the flowed P_τ) at t = 0 (exact velocity), the masses of q and p inside the box,
    whether every linear program converged, with a learned velocity D_t = χ²(P̃_t ‖ P_t)
    (``D``, else empty), the largest diameter of the moving cells ``diam``, and the linear
    programs' own errors of W_1 and of its rate (``W1_lp_error``, ``rate_lp_error``: 0 for the
    exact program, the Sinkhorn bracket's half-width and rate change otherwise)."""

    ts: jax.Array
    W1: jax.Array
    rate: jax.Array
    ode_w1: jax.Array
    mass_q: jax.Array
    mass_p: jax.Array
    converged: jax.Array
    D: jax.Array
    diam: jax.Array
    W1_lp_error: jax.Array
    rate_lp_error: jax.Array


@jax.jit
def _moving_cell_masses(protocol, data, fld, x, ell, t, log_area):
    """ln of P_t's masses of the cells moved by the learned ``fld`` (centres x, log-volume
    increments ell), their t-derivative a [∂_t ln P_t + ∇ln P_t·ν̂ + ∇·ν̂] and ν̂ there."""
    def log_pt(s):
        return protocol.marginal(data, s).log_prob(x)

    lp, dlp = jax.jvp(log_pt, (t,), (jnp.ones_like(t),))
    score = jax.vmap(jax.grad(lambda y: protocol.marginal(data, t).log_prob(y[None])[0]))(x)
    v = fld.batch(x, t)
    div = jax.vmap(lambda xi: jnp.trace(jax.jacfwd(lambda y: fld.batch(y[None], t)[0])(xi)))(x)
    log_a = log_area + lp + ell
    return log_a, jnp.exp(log_a) * (dlp + jnp.sum(score * v, -1) + div), v


def _flow_atoms(fld, pts, ts, n_steps: int, solver: str):
    """Positions (K + 1, N, d) and log-volume increments (K + 1, N) of ``pts`` carried from
    ts[0] = 0 to every saved time by ``fld`` (legs of equal step counts: finer steps near the
    data; one scan over the legs, so the program holds one leg whatever K)."""
    n_legs = ts.shape[0] - 1

    def leg(carry, t_pair):
        x, ell = carry
        fl = flow_with_log_density(fld, x, t_start=t_pair[0], t_end=t_pair[1], method=solver,
                                   n_steps=n_steps // n_legs, n_save=1)
        nxt = (fl.xs[-1], ell + fl.ells[-1][:, 0])
        return nxt, nxt

    ell0 = jnp.zeros((pts.shape[0],), pts.dtype)
    _, (xs, ells) = jax.lax.scan(leg, (pts, ell0), (ts[:-1], ts[1:]))
    return jnp.concatenate([pts[None], xs]), jnp.concatenate([ell0[None], ells])


def _weighted_pass(protocol, data, start, p_end, xs, ells, ts, log_w, ode_check: bool,
                   velocity=None, lp: str = "simplex", rates: bool = True) -> GridPass:
    """W_1(P_t, P̃_t) and its rate at the saved times ``ts`` between two weightings of the same
    moving atoms ``xs`` (K + 1, N, d) (log-volume increments ``ells`` (K + 1, N)), each atom
    of quadrature weight exp(``log_w``) at t = 0: q's mass q(x)·w, p's P̃_τ(X_τ) e^ℓ·w, fixed
    along the flow; with a learned ``velocity`` the atoms move with it and P_t's mass is its
    exact density on the moving atom, P_t(X̂_t) e^{ℓ_t} w, whose rate is
    [∂_t ln P_t + ∇ln P_t·ν̂ + ∇·ν̂](X̂_t) times that mass (docs/theory.md §6.4). With
    ``rates`` False the rates (and their linear-program errors) are 0, not computed: the
    resolution passes need W_1 alone (c_1 comes from the W_1 curve, §6.6)."""
    from satjax.geometry import atoms

    exact = exact_velocity(protocol, data)
    pts, x_tau, ell = xs[0], xs[-1], ells[-1]
    q = jnp.exp(log_w + data.log_prob(pts))
    log_p = log_w + start.log_prob(x_tau) + ell
    p = jnp.exp(log_p)

    def no_rate(out):
        w1, rate, ok, err, rate_err = out
        return w1, jnp.zeros_like(w1) if rate is None else rate, ok, err, rate_err

    def at(x, e, t):
        """(W_1, rate, converged, W_1's and the rate's LP error, P_t's mass, D_t) at one time."""
        if velocity is None:  # P_t's mass is conserved along the exact flow
            out = atoms.w1_same_atoms(x, q, p, exact.batch(x, t) if rates else None, lp=lp)
            return (*no_rate(out), jnp.sum(q), jnp.zeros((), x.dtype))
        if rates:
            log_a, a_rate, v = _moving_cell_masses(protocol, data, velocity, x, e, t, log_w)
        else:
            log_a, a_rate, v = log_w + protocol.marginal(data, t).log_prob(x) + e, None, None
        a = jnp.exp(log_a)
        out = no_rate(atoms.w1_same_atoms(x, a, p, v, a_rate=a_rate, lp=lp))
        # χ² = Σ a (p/a − 1)² of the normalised masses, in logs (a may underflow where p does
        # not)
        log_an = log_a - jax.scipy.special.logsumexp(log_a)
        log_pn = log_p - jax.scipy.special.logsumexp(log_p)
        D_t = jnp.sum(jnp.exp(log_an + 2 * jnp.log(jnp.abs(jnp.expm1(log_pn - log_an)))))
        return (*out, jnp.sum(a), D_t)

    # a map over the saved times: one program in the compiled code; with the simplex a few
    # saved times at once (their programs in parallel host threads), with Sinkhorn one dense
    # program alive at a time
    W1, rate, ok, W1_e, rate_e, masses, D = atoms.map_programs(lambda args: at(*args),
                                                               (xs, ells, ts), lp, xs.shape[1])
    ok = [jnp.min(ok)]
    ode_w1 = jnp.zeros((), pts.dtype)
    if ode_check and velocity is None:  # the same flow applied to P_τ must give q
        q_flowed = jnp.exp(log_w + p_end.log_prob(x_tau) + ell)
        ode_w1, _, c, we, _ = atoms.w1_same_atoms(pts, q, q_flowed, lp=lp)
        ode_w1 = ode_w1 + we
        ok.append(c)
    spans = jnp.max(xs, 1) - jnp.min(xs, 1)
    return GridPass(ts=ts, W1=W1, rate=rate, ode_w1=ode_w1, mass_q=masses[0], mass_p=jnp.sum(p),
                    converged=jnp.min(jnp.stack(ok)),
                    D=D if velocity is not None else jnp.zeros((0,), pts.dtype),
                    diam=jnp.max(jnp.sqrt(jnp.sum(spans**2, -1))),
                    W1_lp_error=W1_e, rate_lp_error=rate_e)


def _grid_pass(protocol, data, start, p_end, transport: DensityGrid, n: int,
               ode_check: bool = True, velocity=None, rates: bool = True) -> GridPass:
    """q and p = P̃_0 as masses of the n × n cells, carried 0 → τ (docs/theory.md §6.4); the
    ODE check (one more linear program) only with ``ode_check`` (else ``ode_w1`` = 0), the
    rates only with ``rates``.

    With a learned ``velocity`` ν̂ the cells move with ν̂, which carries P̃ (p is fixed along
    it), while P_t's mass of a cell is its exact density times the cell's area,
    P_t(X̂_t) |det ∂X̂_t/∂x| h² (quadrature on the moving grid)."""
    lo, hi = transport.box()
    h = (hi - lo) / n
    cx = [lo[i] + h[i] * (np.arange(n) + 0.5) for i in range(2)]
    X, Y = np.meshgrid(*cx, indexing="ij")
    pts = jnp.asarray(np.stack([X.ravel(), Y.ravel()], -1), jnp.result_type(float))
    fld = exact_velocity(protocol, data) if velocity is None else velocity
    ts = grid_times(protocol.tau, transport.n_save)
    xs, ells = _flow_atoms(fld, pts, ts, transport.n_steps, transport.solver)
    return _weighted_pass(protocol, data, start, p_end, xs, ells, ts,
                          math.log(float(h[0] * h[1])), ode_check, velocity, transport.lp_used,
                          rates)


def grid_times(tau, n_save: int):
    """Saved times of the density grid: τ (k/K)², k = 0..K — dense near the data, where the
    velocity and ∂_t W_1 change fastest (the Swiss roll's v_loss² falls fourfold within the
    first tenth of τ)."""
    k = jnp.arange(n_save + 1) / n_save
    return jnp.asarray(tau) * k.astype(jnp.result_type(float)) ** 2


def _grid_route(protocol, data, start, p_end, transport: DensityGrid, D0, velocity=None,
                est=None, pc=None):
    """η, ΔW_1, c_1 and the W_1 curve by the density grid at n, with the change at n/2, the ODE
    check and the mass outside the box as their error (docs/theory.md §6.4). With a learned
    ``velocity`` the coarse pass also halves the ODE steps (there is no ODE check: the learned
    flow does not carry P_τ to q), and Eq. 100 is evaluated (D_t on the grid, L_α by the path
    estimator ``est``)."""
    learned = velocity is not None
    fine = _grid_pass(protocol, data, start, p_end, transport, transport.n, velocity=velocity)
    lo, hi = transport.box()
    diam = float(np.hypot(*(hi - lo)))
    if learned:
        diam = jnp.maximum(diam, fine.diam)
    # mass of q or p outside the box moves W_1 by at most that mass times the diameter (with a
    # learned velocity P_t's quadrature error on the moving cells shows in the n/2 change)
    outside = (jnp.abs(1.0 - fine.mass_q) + jnp.abs(1.0 - fine.mass_p)) * diam
    # c_1 from the W_1 curve (secant sums, one Richardson step); its error: that step and the
    # linear programs' own errors (0 for the exact one; the Sinkhorn bracket's half-widths) —
    # continuous in the parameters, like c_1, so that optimize can descend c_1 + error
    c1, c1_err = secant_c1(fine.ts, fine.W1)
    c1, c1_err = c1 / D0.value, c1_err / D0.value
    c1_err = c1_err + secant_c1_lp_error(fine.ts, fine.W1, fine.W1_lp_error) / D0.value
    dW1 = fine.W1[0] - fine.W1[-1]
    W1_err = jnp.zeros_like(fine.W1) + fine.ode_w1 + outside + fine.W1_lp_error
    dW1_err = fine.ode_w1 + outside + fine.W1_lp_error[0] + fine.W1_lp_error[-1]
    D_err = jnp.zeros_like(fine.D)
    ok = fine.converged
    if transport.check_coarse:
        half = transport.replace(n_steps=transport.n_steps // 2) \
            if learned and (transport.n_steps // 2) % transport.n_save == 0 else transport
        coarse = _grid_pass(protocol, data, start, p_end, half, transport.n // 2,
                            ode_check=False, velocity=velocity, rates=False)
        W1_err = W1_err + jnp.abs(fine.W1 - coarse.W1)
        dW1_err = dW1_err + jnp.abs(dW1 - (coarse.W1[0] - coarse.W1[-1]))
        c1_err = c1_err + jnp.abs(c1 - secant_c1(coarse.ts, coarse.W1)[0] / D0.value)
        D_err = D_err + jnp.abs(fine.D - coarse.D)
        ok = jnp.minimum(ok, coarse.converged)
    # an unconverged linear program makes every number of this route undefined
    bad = jnp.where(ok > 0, 0.0, jnp.nan)
    m = (f"{transport.method}; error: change on the n/2 grid + ODE check + mass outside the "
         "box") if not learned else \
        (f"{transport.method}, learned velocity; error: change on the n/2 grid with half the "
         "steps + mass outside the box")
    z = jnp.zeros_like(dW1)

    def est_(v, e, method=m):
        return Estimate(value=v + bad, stderr=z, error=e, method=method)

    v_loss_sq = fine.rate**2 / D0.value
    # the rate's own error from the linear program (the Sinkhorn plan's change at 3 ε)
    v_err = (2 * jnp.abs(fine.rate) * fine.rate_lp_error + fine.rate_lp_error**2) / D0.value
    out = dict(t=fine.ts, W1=fine.W1 + bad, t_rate=fine.ts, v_loss_sq=v_loss_sq + bad,
               v_loss_sq_stderr=jnp.zeros_like(v_loss_sq), v_loss_sq_error=v_err,
               c1=est_(c1, c1_err, f"{m}; {C1_METHOD}"),
               dW1=est_(dW1, dW1_err), W1_start=est_(fine.W1[-1], W1_err[-1]),
               W1_end=est_(fine.W1[0], W1_err[0]))
    if learned:
        exact = exact_velocity(protocol, data)
        node_est = _node_estimator(est, protocol, data, fine.ts, jax.random.PRNGKey(7))
        out["eq100"] = _eq100(protocol, data, velocity, exact, fine.ts, fine.D + bad,
                              jnp.zeros_like(fine.D), dW1 + bad, z, pc, node_est, m,
                              D_err=D_err, dW1_err=dW1_err)
    return out


# ----------------------------------------------------------- the importance-weighted atom route


def _rqmc_draws(dist, key, m: int):
    """m draws of ``dist`` by randomly shifted quasi-Monte Carlo when it is a Gaussian mixture
    (a Sobol sequence in d + 1 dimensions shifted mod 1 by one uniform vector of ``key``: each
    draw is exactly distributed as ``dist``, and the first and second halves are each nets
    when m is a power of two; the component from the first coordinate by inverse CDF, the
    Gaussian from the others), else plain Monte-Carlo draws."""
    if not isinstance(dist, GaussianMixture):
        return dist.sample(key, m)
    from scipy.stats import qmc

    d = dist.dim
    sobol = qmc.Sobol(d + 1, scramble=False).random_base2(max(1, math.ceil(math.log2(m))))[:m]
    dt = dist.means.dtype
    u = jnp.mod(jnp.asarray(sobol, dt) + jax.random.uniform(key, (d + 1,), dt), 1.0)
    cdf = jnp.cumsum(dist.weights)
    idx = jnp.minimum(jnp.searchsorted(cdf, u[:, 0] * cdf[-1], side="right"),
                      dist.n_components - 1)
    tiny = jnp.finfo(dt).tiny
    eps = jax.scipy.special.ndtri(jnp.clip(u[:, 1:], tiny, 1.0 - jnp.finfo(dt).eps))
    return dist.sample_given(idx, eps)


def _atom_batch(protocol, data, start, transport: Atoms, velocity, key):
    """One batch of the atom route (docs/theory.md §6.5): W_1, its rate, the masses and D_t on
    all n atoms, and (with ``check_half``) on the two halves of n/2 (each half as many atoms of
    q as of p, so the proposal (q + p)/2 stays the density of its draws)."""
    fld = exact_velocity(protocol, data) if velocity is None else velocity
    n, m = transport.n, transport.n // 2
    k1, k2 = jax.random.split(key)
    x_gen = solve_ode(fld, _rqmc_draws(start, k2, m), t_start=protocol.tau, t_end=0.0,
                      method=transport.solver, n_steps=transport.n_steps, n_save=1).xs[-1]
    pts = jnp.concatenate([_rqmc_draws(data, k1, m), x_gen])
    ts = grid_times(protocol.tau, transport.n_save)
    xs, ells = _flow_atoms(fld, pts, ts, transport.n_steps, transport.solver)
    log_q = data.log_prob(pts)
    log_p = start.log_prob(xs[-1]) + ells[-1]
    log_w = -(jnp.logaddexp(log_q, log_p) - math.log(2.0)) - math.log(n)
    p_end = protocol.reverse_start(data)

    def on(idx, rates=True):
        return _weighted_pass(protocol, data, start, p_end, xs[:, idx], ells[:, idx], ts,
                              log_w[idx] + math.log(n / idx.size),
                              False, velocity, transport.lp_used, rates)

    if not transport.check_half:
        return on(np.arange(n)), ()
    half = m // 2
    first = np.concatenate([np.arange(half), m + np.arange(half)])
    second = np.concatenate([np.arange(half, m), m + np.arange(half, m)])
    # the halves measure the bias of W_1 (and of D_t); c_1 comes from the W_1 curve (§6.6)
    return on(np.arange(n)), (on(first, False), on(second, False))


def atoms_error_factor(dim: int) -> float:
    """1/(2^(1/d) − 1), d = max(dim, 2): the bias of an empirical W_1 falls at least as n^(−1/d),
    so the change from n/2 to n atoms times this factor bounds the bias left at n (§6.5)."""
    return 1.0 / (2.0 ** (1.0 / max(dim, 2)) - 1.0)


def _atoms_route(protocol, data, start, transport: Atoms, D0, velocity=None, est=None,
                 pc=None):
    """η, ΔW_1, c_1 and the W_1 curve by importance-weighted atoms: means over the batches
    with their standard errors, and the change from n/2 atoms (the halves of each batch) as the
    resolution error (docs/theory.md §6.5)."""
    learned = velocity is not None
    keys = jax.random.split(transport.key, transport.n_batches)
    # one batch after the other (a sequential map: one batch in the compiled program); each
    # field of ``full`` and of the halves then has the batches on its leading axis
    full, halves = jax.lax.map(
        lambda k: _atom_batch(protocol, data, start, transport, velocity, k), keys)
    halves = halves or (full,)  # without the halves: no resolution error
    ts = full.ts[0]
    nb = transport.n_batches

    def stack(passes, name):
        return jnp.concatenate([getattr(p, name) for p in passes])

    W1_b, rate_b = full.W1, full.rate
    W1, W1_se = _mean_se(W1_b.T)
    rate, rate_se = _mean_se(rate_b.T)
    W1_half = jnp.mean(stack(halves, "W1"), 0)
    grow = atoms_error_factor(data.dim)
    # c_1 of the mean W_1 curve (secant sums, one Richardson step); its standard error by the
    # delta method over the batches; its error: the change from n/2 atoms and the Richardson
    # step
    c1, c1_step = secant_c1(ts, W1)
    c1, c1_step = c1 / D0.value, c1_step / D0.value
    phi = W1_b @ (jax.grad(lambda W: secant_c1(ts, W)[0])(W1) / D0.value)
    c1_se = jnp.sqrt(jnp.var(phi, ddof=1) / nb + (c1 * D0.stderr / D0.value) ** 2)
    c1_err = grow * jnp.abs(c1 - secant_c1(ts, W1_half)[0] / D0.value) + c1_step
    dW1_b = W1_b[:, 0] - W1_b[:, -1]
    dW1, dW1_se = _mean_se(dW1_b)
    dW1_err = grow * jnp.abs(dW1 - (W1_half[0] - W1_half[-1]))
    W1_err = grow * jnp.abs(W1 - W1_half)
    # the linear programs' own errors (0 for the exact one; the Sinkhorn bracket's half-width),
    # mean over the batches; the rate's (its change at 3 ε) goes to v_loss² below
    W1_lp = jnp.mean(full.W1_lp_error, 0)
    W1_err = W1_err + W1_lp
    dW1_err = dW1_err + W1_lp[0] + W1_lp[-1]
    c1_err = c1_err + secant_c1_lp_error(ts, W1, W1_lp) / D0.value
    ok = jnp.min(stack((full,) + tuple(halves), "converged"))
    bad = jnp.where(ok > 0, 0.0, jnp.nan)
    m = (f"{transport.method}; stderr over batches; error: change from n/2 atoms × "
         f"{grow:.2f} (bias ∝ n^(−1/{max(data.dim, 2)}))"
         + (", learned velocity" if learned else ""))

    def est_(v, se, e, coarse=None, method=m):
        return Estimate(value=v + bad, stderr=se, error=e, method=method, coarse=coarse)

    v_loss_sq = rate**2 / D0.value
    v_se = jnp.sqrt((2 * rate * rate_se / D0.value) ** 2 + (v_loss_sq * D0.stderr / D0.value) ** 2)
    rate_lp = jnp.mean(full.rate_lp_error, 0)
    v_err = (2 * jnp.abs(rate) * rate_lp + rate_lp**2) / D0.value
    out = dict(t=ts, W1=W1 + bad, t_rate=ts, v_loss_sq=v_loss_sq + bad, v_loss_sq_stderr=v_se,
               v_loss_sq_error=v_err,
               c1=est_(c1, c1_se, c1_err, method=f"{m}; {C1_METHOD}"),
               dW1=est_(dW1, dW1_se, dW1_err, W1_half[0] - W1_half[-1]),
               W1_start=est_(W1[-1], W1_se[-1], W1_err[-1]),
               W1_end=est_(W1[0], W1_se[0], W1_err[0]))
    if learned:
        exact = exact_velocity(protocol, data)
        D_b = full.D
        D, D_se = _mean_se(D_b.T)
        D_err = grow * jnp.abs(D - jnp.mean(stack(halves, "D"), 0))
        node_est = _node_estimator(est, protocol, data, ts, jax.random.fold_in(transport.key, 7))
        out["eq100"] = _eq100(protocol, data, velocity, exact, ts, D + bad, D_se, dW1 + bad,
                              dW1_se, pc, node_est, m, D_err=D_err, dW1_err=dW1_err)
    return out


# ----------------------------------------------------------------------------------- bound


def bound_kernel(protocol, data, perturbation, velocity, est, transport, n_time: int, key,
                 finite_d0: bool = True, path=None) -> BoundResult:
    """The traceable core of :func:`bound` (no eager checks; ``est`` prepared, ``transport`` a
    :class:`~satjax.estimators.CDF`, a :class:`CDFFrame` of this protocol, data and ``n_time``,
    or a :class:`~satjax.estimators.Particles`): use it inside
    ``jax.grad`` to differentiate η, c_1, c_2 with respect to protocol parameters.
    ``finite_d0`` (static) is False when D_0 = ∞ (decided eagerly by :func:`bound`); ``path``
    a precomputed :class:`~satjax.path.PathCost` of the same protocol, data and ``n_time``."""
    tau = protocol.tau
    p_end = protocol.reverse_start(data)
    start = perturbation.start(p_end)
    if finite_d0:
        D0 = PT.pearson(start, p_end, key=key)
    else:
        D0 = Estimate.exact(jnp.asarray(jnp.inf, p_end.mean().dtype),
                            "tails: P̃ has Gaussian tails at least √2 times wider than P_τ")
    pc = path if path is not None else \
        path_mod.path_cost_kernel(protocol, data, est, jnp.zeros_like(tau), tau, n_time)
    conservative = bool(protocol.conservative) or data.dim == 1
    if not finite_d0:
        nan = jnp.full((n_time,), jnp.nan)
        z = jnp.zeros(())
        m = "not computed: D_0 = ∞"
        e = Estimate(value=jnp.asarray(jnp.nan), stderr=z, error=z, method=m)
        return BoundResult(t=pc.ts, W1=nan, t_rate=pc.ts, v_loss_sq=nan, v_loss_sq_stderr=nan,
                           kinetic=pc.kinetic, kinetic_stderr=jnp.zeros_like(pc.kinetic),
                           eta=e, c1=e, c2=pc.c2, wD=pc.wD, D0=D0, dW1=e, W1_start=e, W1_end=e,
                           conservative=conservative, method=m,
                           c2_wD_covariance=pc.c2_wD_covariance)
    if isinstance(transport, (CDF, CDFFrame)):
        frame = transport if isinstance(transport, CDFFrame) else \
            cdf_frame(protocol, data, n_time, transport.n_points or 16384)
        ts, wts = frame.ts, frame.wts
        (W1n, dW1n, W1_0, W1_tau), (_, dW1c, W1_0c, W1_tauc) = _w1_path_cdf(frame, start)
        v_loss_sq = dW1n**2 / D0.value
        c1 = wts @ v_loss_sq
        z = jnp.zeros(())
        m = f"{transport.method}; error: change on every other grid point"

        def with_error(v, v_coarse):
            return Estimate(value=v, stderr=z, error=jnp.abs(v - v_coarse), method=m)

        parts = dict(t=ts, W1=W1n, t_rate=ts, v_loss_sq=v_loss_sq,
                     v_loss_sq_stderr=jnp.zeros_like(v_loss_sq),
                     kinetic=pc.kinetic, kinetic_stderr=jnp.zeros_like(pc.kinetic),
                     c1=with_error(c1, wts @ (dW1c**2 / D0.value)),
                     dW1=with_error(W1_0 - W1_tau, W1_0c - W1_tauc),
                     W1_start=with_error(W1_tau, W1_tauc), W1_end=with_error(W1_0, W1_0c))
    elif isinstance(transport, (DensityGrid, Atoms)):
        fld = None if velocity is None else as_field(velocity)
        parts = _grid_route(protocol, data, start, p_end, transport, D0, fld, est, pc) \
            if isinstance(transport, DensityGrid) else \
            _atoms_route(protocol, data, start, transport, D0, fld, est, pc)
        kin, kin_se = _kinetic_at(est, protocol, data, parts["t"])
        parts.update(kinetic=kin, kinetic_stderr=kin_se)
    else:
        parts = _particle_route(protocol, data, perturbation, start, p_end, velocity, transport,
                                est, pc, D0)
    dW1 = parts["dW1"]
    eta_v = dW1.value**2 / (tau * D0.value)
    eta_se = jnp.sqrt((2 * jnp.abs(dW1.value) * dW1.stderr / (tau * D0.value)) ** 2
                      + (eta_v * D0.stderr / D0.value) ** 2)
    method = transport.method
    eta = Estimate(value=eta_v, stderr=eta_se,
                   error=2 * jnp.abs(dW1.value) * dW1.error / (tau * D0.value), method=method,
                   coarse=None if dW1.coarse is None else dW1.coarse**2 / (tau * D0.value))
    return BoundResult(eta=eta, c2=pc.c2, wD=pc.wD, D0=D0, conservative=conservative,
                       method=f"{method}; path: {est.method}",
                       c2_wD_covariance=pc.c2_wD_covariance, **parts)


def bound(protocol, data, perturbation, *, velocity=None, estimator="auto", transport="auto",
          n_time: int = 48, key=None, path=None, particles: Optional[int] = None):
    """The speed-accuracy relation for one protocol, data and reverse-start perturbation.

    Args:
      protocol: a Protocol (schedule, force, geodesic).
      data: q.
      perturbation: a :class:`satjax.perturb.Perturbation` of the reverse start P_τ, or a
        sequence of them: they then share one path cost and one prepared transport (the 1-D
        :class:`CDFFrame`, compiled once per protocol family), and each result equals the one
        of its own call.
      velocity: a learned velocity field ν̂(x, t) (a :class:`satjax.reverse.Field` or callable)
        that carries the perturbed start; Eq. 100 is then evaluated too. None: the exact ν.
      estimator: how c_2, w_D, E‖ν_t‖² and L_α are computed (:func:`satjax.estimators.resolve`).
      transport: a :class:`satjax.estimators.CDF` (1-D, exact velocity),
        :class:`satjax.estimators.DensityGrid` (2-D; with a learned velocity the cells move
        with it and P_t's masses are its exact density on the moving cells, docs/theory.md
        §6.4), :class:`satjax.estimators.Atoms` (any dimension ≥ 2, §6.5) or
        :class:`satjax.estimators.Particles`, "cdf", "grid", "atoms", "particles", or "auto"
        (CDF in 1-D without ``velocity``; unless ``particles`` is given or, without
        ``velocity``, the particle route is exact — one Gaussian, a translated start, a
        Gaussian path —: the density grid in 2-D, atoms in 3 to ``ATOMS_MAX_DIM`` (16)
        dimensions; otherwise particles: a quantile grid of 4000 in 1-D, 1000 samples in
        n-D).
      n_time: Gauss–Legendre nodes for the time integrals.
      key: PRNG key for Monte-Carlo estimators and particle samples (default PRNGKey(0)); every
        perturbation of a sequence uses the same key (common random numbers).
      path: a :class:`satjax.path.PathCost` of this protocol and data with ``n_time`` nodes
        (e.g. shared by several calls); computed here when None.
      particles: the number of particles when ``transport`` is "auto" or "particles" (in 2-D
        with the exact velocity, giving it chooses particles over the density grid).

    Returns:
      :class:`BoundResult`, or a tuple of them (one per perturbation) for a sequence.

    Raises:
      ValueError: a perturbation that changes nothing (D_0 = 0), mismatched dimensions, an
        estimator or transport that does not apply, an empty sequence.
    """
    check(protocol, data)
    many = isinstance(perturbation, (list, tuple))
    perts = tuple(perturbation) if many else (perturbation,)
    if not perts:
        raise ValueError("`perturbation` is an empty sequence")
    for p in perts:
        if not isinstance(p, PT.Perturbation):
            raise TypeError(f"`perturbation` must be a satjax.perturb.Perturbation or a sequence "
                            f"of them; got {type(p).__name__}")
    if velocity is not None:
        velocity = as_field(velocity)
    if not isinstance(n_time, int) or n_time < 2:
        raise ValueError(f"`n_time` must be an int >= 2; got {n_time!r}")
    if path is not None and path.ts.shape[0] != n_time:
        raise ValueError(f"`path` has {path.ts.shape[0]} time nodes; n_time is {n_time}")
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, 3)
    est = resolve(data, protocol, estimator, key=keys[0])
    p_end = protocol.reverse_start(data)
    transport = resolve_transport(
        transport, data, velocity, keys[1], particles,
        exact_pairs=velocity is None and particles_exact(protocol, data, perts),
        **cdf_context(protocol, data, perts))
    finite = []
    for p in perts:  # every eager check before any long computation
        start = p.start(p_end)
        finite.append(PT.is_finite_divergence(start, p_end))
        if finite[-1]:
            D0 = _pearson(start, p_end, key=keys[2])
            if float(D0.value) <= 1e-14:
                raise ValueError(f"D_0 = {float(D0.value):.3g}: the perturbation "
                                 f"{p.label()!r} changes nothing to bound")
    ts, _ = gauss_legendre(n_time, 0.0, protocol.tau)
    est = est.prepare(protocol, data, ts)
    if path is None:  # once, for every perturbation (compiled: eagerly, each call of a
        # grid estimator's solver would be traced and compiled anew)
        path = _path_compiled(protocol, data, est, jnp.zeros_like(protocol.tau), protocol.tau,
                              n_time)
    if isinstance(transport, CDF) and any(finite):
        transport = cdf_frame(protocol, data, n_time, transport.n_points)
    # one compiled program per protocol family, start family and sizes (the particle route's
    # exact assignment is a host callback inside it); a learned velocity is an argument of it
    # (a ParamField's parameters are traced: every model of one architecture shares the program)
    kernel = _bound_compiled if velocity is None else _bound_compiled_learned
    out = tuple(kernel(protocol, data, p, velocity, est,
                       _cover_generated(transport, protocol, data, p, velocity, keys[2]),
                       n_time, keys[2], f, path)
                for p, f in zip(perts, finite))
    return out if many else out[0]


def _cover_generated(transport, protocol, data, perturbation, velocity, key, n: int = 4000):
    """The density grid with its box widened to hold the law a learned velocity generates from
    the perturbed start as well: n samples of P̃_τ carried to t = 0 by it (RK4, 100 steps); the
    number of cells stays. Mass left outside the box enters the route's error times the
    diameter (docs/theory.md §6.4), so covering it is what keeps that term small."""
    if velocity is None or not isinstance(transport, DensityGrid):
        return transport
    x = perturbation.start(protocol.reverse_start(data)).sample(key, n)
    x0 = solve_ode(as_field(velocity), x, t_start=protocol.tau, t_end=0.0, n_steps=100,
                   n_save=1).xs[-1]
    return transport.prepare(data, cover=np.asarray(x0))


_bound_compiled = jax.jit(bound_kernel, static_argnums=(3, 6, 8))
_bound_compiled_learned = jax.jit(bound_kernel, static_argnums=(6, 8))
_path_compiled = jax.jit(path_mod.path_cost_kernel, static_argnums=(5,))
_pearson = jax.jit(PT.pearson)


def particles_exact(protocol, data, perturbations) -> bool:
    """Whether the particle route is exact to rounding: one Gaussian moved by a translation
    along a closed-form (Gaussian) path — the flow is affine, so every particle pair keeps one
    displacement and the empirical W_1 is the exact one."""
    perts = perturbations if isinstance(perturbations, (list, tuple)) else (perturbations,)
    return (int(data.means.shape[0]) == 1 and all(p.translation for p in perts)
            and bool(protocol.has_exact_rates(data)))


def cdf_context(protocol, data, perturbations) -> dict:
    """What the CDF grid's size depends on besides q (:meth:`CDF.prepare`), as keyword arguments
    of :func:`resolve_transport`: P_τ, and whether every perturbed start is continuous."""
    perts = perturbations if isinstance(perturbations, (list, tuple)) else (perturbations,)
    p_end = protocol.reverse_start(data)
    return dict(p_end=p_end,
                continuous=all(p.start(p_end).density_jumps() is None for p in perts))


# the density-grid, atom and particle transports refuse to start beyond this estimated peak memory
BUDGET_BYTES = 6 << 30
# "auto" takes the atom transport up to this dimension (its ODE carries the exact divergence,
# d Jacobian-vector products per step); particles above
ATOMS_MAX_DIM = 16


def _sampled_transport(t, data, key, what: str, change: str):
    """A particle or atom transport with its key (``key`` where it has none), checked, and
    refused when its estimated peak memory exceeds ``BUDGET_BYTES``."""
    t = t if t.key is not None else t.replace(key=key)
    t.check()
    need = t.peak_bytes(data.dim)
    if need > BUDGET_BYTES:
        raise ValueError(f"{what} need about {need / 2**30:.1f} GB (limit "
                         f"{BUDGET_BYTES / 2**30:.0f} GB): {change}")
    return t


def resolve_transport(transport, data, velocity, key, particles: Optional[int] = None, *,
                      exact_pairs: bool = False, p_end=None, continuous: bool = True):
    """The transport for ``bound`` (see its ``transport`` argument), checked, with its sizes
    chosen for ``data`` (and P_τ = ``p_end``, the CDF grid); ``exact_pairs``: the particle route
    is exact here (one Gaussian, a translated start, a Gaussian path), so "auto" takes it in
    2-D; ``continuous``: no perturbed start has a density jump (:meth:`CDF.prepare`)."""
    if isinstance(transport, DensityGrid) or transport == "grid":
        t = (transport if isinstance(transport, DensityGrid) else DensityGrid()).prepare(data)
        need = t.peak_bytes()
        if need > BUDGET_BYTES:
            raise ValueError(f"the density grid n = {t.n} needs about {need / 2**30:.1f} GB "
                             f"(limit {BUDGET_BYTES / 2**30:.0f} GB): choose a smaller n")
        return t
    if isinstance(transport, Particles):
        return _sampled_transport(transport, data, key, f"{transport.n} particles with "
                                  f"{transport.n_save} saved times",
                                  "use fewer particles or saved times")
    if isinstance(transport, Atoms) or transport == "atoms":
        if data.dim < 2:
            raise ValueError("the atom transport needs data of dimension >= 2 (1-D data have "
                             "the exact CDF transport)")
        t = transport if isinstance(transport, Atoms) else Atoms()
        return _sampled_transport(t, data, key, f"{t.n} atoms per batch",
                                  "use fewer atoms per batch and more batches")
    if isinstance(transport, CDF) or transport == "cdf":
        if data.dim != 1 or velocity is not None:
            raise ValueError("the CDF transport needs 1-D data and the exact velocity")
        t = (transport if isinstance(transport, CDF) else CDF()).prepare(
            data, p_end, continuous)
        t.check()
        return t
    if transport == "particles":
        transport = "auto"
    elif transport != "auto":
        what = repr(transport) if isinstance(transport, str) else type(transport).__name__
        raise ValueError(f"unknown transport {what}; expected 'auto', 'cdf', 'grid', "
                         "'atoms', 'particles', or a CDF, DensityGrid, Atoms or Particles "
                         "object")
    elif data.dim == 1 and velocity is None:
        return resolve_transport("cdf", data, velocity, key, p_end=p_end, continuous=continuous)
    elif data.dim == 2 and particles is None and not exact_pairs:
        return resolve_transport("grid", data, velocity, key)
    elif 3 <= data.dim <= ATOMS_MAX_DIM and particles is None and not exact_pairs:
        return resolve_transport("atoms", data, velocity, key)
    n = particles or (4000 if data.dim == 1 else 1000)
    return resolve_transport(Particles(n=n, key=key), data, velocity, key)


def pearson_along_flow(protocol, data, perturbation: PT.Perturbation, t, *,
                       n_points: int = 16384):
    """D_t = ∫ (P̃_t − P_t)²/P_t dx at time t for 1-D data and the exact flow (conserved, App. E).

    With M = Q_τ ∘ F_t the flow map t → τ, P̃_t/P_t = (P̃_τ/P_τ)∘M, so D_t = E_{P_t}[r(M(x))²] − 1
    by the trapezoid rule over P_t's support at ±24 component standard deviations (twice the
    usual: the integrand decays slowly when P̃ is nearly √2 times as wide as P).
    """
    p_end = protocol.reverse_start(data)
    pt_end = perturbation.start(p_end)
    marg = protocol.marginal(data, as_float(t))
    lo, hi = (v[0] for v in marg.support(24.0))
    x = jnp.linspace(lo, hi, n_points)
    h = (hi - lo) / (n_points - 1)  # not x[1] − x[0], which loses ~n/2 ulps
    w = h * jnp.ones((n_points,), x.dtype).at[jnp.array([0, -1])].set(0.5)
    w = w * jnp.exp(marg.log_prob(x[:, None]))
    table = univariate.level_table(p_end.components_1d(), n_points)
    y = distances.monotone_map(marg, p_end, x, table)[:, None]
    r = jnp.exp(pt_end.log_prob(y) - p_end.log_prob(y))
    return w @ r**2 - 1.0


__all__ = ["BoundResult", "CDFFrame", "Eq100", "GridPass", "atoms_error_factor", "bound", "bound_kernel", "cdf_context",
           "cdf_frame", "frame_layout", "grid_times", "particles_exact", "pearson_along_flow",
           "resolve_transport"]
