"""Estimators: how expectations under P_t are computed, chosen once (docs/theory.md §8).

An estimator object decides how E_{P_t}[·] and the W2 speed v_2(t)² are computed at a time t
(:meth:`Estimator.rates`):

* :class:`Exact` — closed forms: Gaussian P_t under a linear force (Lyapunov speed), or the
  constant speed of an exact geodesic. Exact to rounding.
* :class:`Quadrature` — 1-D: the trapezoid rule over ±12 standard deviations of every
  component of P_t (exponentially convergent for these analytic integrands); v_2² = E ν² since
  every 1-D field is a gradient. Deterministic.
* :class:`Grid` — 2-D: a finite-volume weighted Poisson solve ∇·(P∇φ) = ∇·(Pν) on a grid tied
  to the narrowest component (:mod:`satjax.geometry.grid`), with exact P_t and ν_t at the faces;
  expectations are grid quadratures. Deterministic; reports the change from a coarser grid.
* :class:`MonteCarlo` — any dimension: common random numbers pushed through P_t
  (reparameterised, differentiable), standard errors per path; v_2² of a non-conservative
  protocol by cross-fitted projection onto polynomial gradients, a lower estimate bracketed
  above by w_D (:mod:`satjax.geometry.speed`).

:func:`resolve` turns ``"auto"`` or a name into an estimator for the given data and protocol
(exact if possible, else quadrature in 1-D, grid in 2-D, Monte Carlo otherwise) and checks that
an explicit choice applies. :class:`Particles` configures the transport of particle sets used by
the n-D speed-accuracy relation (:mod:`satjax.bound`).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

import numpy as np

from satjax._util import as_float, host_threads, map_over_nodes
from satjax.geometry import speed as speed_mod
from satjax.protocol import Draws, draws
from satjax.pytree import Node

NAMES = ("auto", "exact", "quadrature", "grid", "mc")


class NodeRates(Node):
    """Integrands at one time node: per sample (shape (n,)) for Monte Carlo, scalars otherwise.

    ``kinetic`` E‖ν‖², ``speed_sq`` v_2², ``score_flux`` E[ν·∇ln P], ``force_flux`` E[f·ν]
    (None for a deterministic transport), ``kinetic_change`` / ``speed_change`` the signed
    change of kinetic / v_2² from a coarser resolution (grid), ``rotational_in_sample`` the
    in-sample rotational part of a projection (its gap to the held-out one measures
    over-fitting), ``degree`` the basis degree.
    """

    kinetic: jax.Array
    speed_sq: jax.Array
    score_flux: Optional[jax.Array] = None
    force_flux: Optional[jax.Array] = None
    kinetic_change: Optional[jax.Array] = None
    speed_change: Optional[jax.Array] = None
    rotational_in_sample: Optional[jax.Array] = None
    degree: Optional[jax.Array] = None
    converged: Optional[jax.Array] = None


class Estimator(Node):
    """Abstract estimator of expectations under P_t (module docstring)."""

    @property
    def method(self) -> str:
        raise NotImplementedError

    @property
    def per_sample(self) -> bool:
        """Whether :meth:`rates` returns per-sample arrays (statistical standard errors)."""
        return False

    def speed_kind(self, protocol, data) -> str:
        """"point", or "lower" when v_2² is a one-sided estimate for this protocol and data."""
        return "point"

    def check(self, protocol, data) -> None:
        """Eager ValueError when this estimator does not apply to the protocol and data."""

    def prepare(self, protocol, data, ts) -> "Estimator":
        """The estimator ready to be traced for these time nodes (draws, grid sizes)."""
        return self

    def rates(self, protocol, data, t, *, speed: bool = True) -> NodeRates:
        raise NotImplementedError

    def elements_per_node(self, data) -> int:
        """Work-array elements one time node holds (bounds how many nodes run at once)."""
        return 1 << 16

    @property
    def has_nodes(self) -> bool:
        """Whether :meth:`expectation_nodes` exists (closed forms have none)."""
        return True

    def expectation_nodes(self, protocol, data, t):
        """Points x (n, d) and weights w (n,) with Σ_i w_i g(x_i) ≈ E_{P_t}[g]."""
        raise NotImplementedError


def rates_at_nodes(est: Estimator, protocol, data, ts, *, speed: bool = True) -> NodeRates:
    """:meth:`Estimator.rates` at every node of ``ts`` (mapped in memory-bounded batches)."""
    return map_over_nodes(lambda t: est.rates(protocol, data, t, speed=speed), ts,
                          est.elements_per_node(data))


def _speed_from_kinetic(protocol, data) -> bool:
    return bool(protocol.conservative) or data.dim == 1


class Exact(Estimator):
    """Closed forms (:meth:`satjax.protocol.Protocol.exact_rates`)."""

    @property
    def method(self) -> str:
        return "closed-form"

    def check(self, protocol, data) -> None:
        if not protocol.has_exact_rates(data):
            raise ValueError(f"no closed form for {type(protocol).__name__} on this data "
                             "(closed forms: single-Gaussian data under a linear force, exact "
                             "geodesics); use estimator 'auto'")

    @property
    def has_nodes(self) -> bool:
        return False

    def elements_per_node(self, data) -> int:
        """A closed form holds a few d × d matrices per node."""
        return 16 * data.dim ** 2

    def rates(self, protocol, data, t, *, speed: bool = True) -> NodeRates:
        r = protocol.exact_rates(data, as_float(t))
        return NodeRates(kinetic=r.kinetic, speed_sq=r.speed_sq, score_flux=r.score_flux,
                         force_flux=r.force_flux)


class Quadrature(Estimator):
    """1-D trapezoid rule over ±12 standard deviations of P_t's components (``n_points``)."""

    n_points: int = struct.field(pytree_node=False, default=4096)

    @property
    def method(self) -> str:
        return f"quadrature-1d (n={self.n_points})"

    def check(self, protocol, data) -> None:
        if data.dim != 1:
            raise ValueError(f"quadrature needs 1-D data; got dimension {data.dim} (use 'grid' "
                             "in 2-D or 'mc')")
        if not protocol.has_density:
            raise ValueError(f"{type(protocol).__name__} gives no density of P_t: use 'mc'")
        if self.n_points < 16:
            raise ValueError(f"`n_points` must be >= 16; got {self.n_points}")

    def elements_per_node(self, data) -> int:
        return self.n_points * 8

    def nodes(self, protocol, data, t):
        """Points (n, 1) and weights (n,) with Σ w g(x) ≈ ∫ g dx over P_t's support."""
        lo, hi = (v[0] for v in protocol.marginal(data, t).support(12.0))
        lo, hi = jax.lax.stop_gradient(lo), jax.lax.stop_gradient(hi)
        x = jnp.linspace(lo, hi, self.n_points)
        h = (hi - lo) / (self.n_points - 1)
        trap = jnp.ones((self.n_points,), x.dtype).at[jnp.array([0, -1])].set(0.5)
        return x[:, None], h * trap

    def expectation_nodes(self, protocol, data, t):
        x, w = self.nodes(protocol, data, t)
        return x, w * jnp.exp(protocol.fields(data, x, t, ("log_prob",)).log_prob)

    def rates(self, protocol, data, t, *, speed: bool = True) -> NodeRates:
        t = as_float(t)
        x, w = self.nodes(protocol, data, t)
        f = protocol.fields(data, x, t, ("log_prob", "score", "velocity"))
        wp = w * jnp.exp(f.log_prob)
        nu = f.velocity[:, 0]
        kin = wp @ nu**2
        force_flux = None
        if protocol.stochastic:
            force_flux = wp @ (jax.vmap(protocol.force, in_axes=(0, None))(x, t)[:, 0] * nu)
        return NodeRates(kinetic=kin, speed_sq=kin, score_flux=wp @ (nu * f.score[:, 0]),
                         force_flux=force_flux)


class MonteCarlo(Estimator):
    """Monte Carlo with ``n`` common random draws (``key``) shared by all time nodes.

    ``max_basis`` caps the polynomial basis of the projection that estimates v_2² for
    non-conservative protocols (degrees 1, 2, ... while the basis has ≤ ``max_basis`` functions,
    at most 6); ``shard`` splits the draws over devices (:mod:`satjax.sharding`).
    """

    n: int = struct.field(pytree_node=False, default=4096)
    key: Optional[jax.Array] = None
    max_basis: int = struct.field(pytree_node=False, default=200)
    shard: object = struct.field(pytree_node=False, default=False)
    draws: Optional[Draws] = None
    project: bool = struct.field(pytree_node=False, default=False)

    @property
    def method(self) -> str:
        return f"monte-carlo (n={self.n})"

    @property
    def per_sample(self) -> bool:
        return True

    def check(self, protocol, data) -> None:
        if self.key is None and self.draws is None:
            raise ValueError("Monte Carlo needs a PRNG `key` (its draws are fixed for the run)")
        if self.n < 4:
            raise ValueError(f"Monte Carlo needs n >= 4 samples; got {self.n}")

    def prepare(self, protocol, data, ts) -> "MonteCarlo":
        # decided eagerly: under jit a traced force parameter cannot tell conservative apart
        project = not _speed_from_kinetic(protocol, data) and protocol.circulation(ts[0]) is not None
        if self.draws is not None:
            return self.replace(project=project)
        n = self.n - self.n % 2  # the projection splits the draws in halves
        return self.replace(draws=draws(self.key, data, n, shard=self.shard), project=project)

    def elements_per_node(self, data) -> int:
        return self.n * max(data.dim, 8)

    def speed_kind(self, protocol, data) -> str:
        return "lower" if self.project else "point"

    def expectation_nodes(self, protocol, data, t):
        x = protocol.sample_given(data, as_float(t), self.draws)
        return x, jnp.full((x.shape[0],), 1.0 / x.shape[0], x.dtype)

    def rates(self, protocol, data, t, *, speed: bool = True) -> NodeRates:
        t = as_float(t)
        x = protocol.sample_given(data, t, self.draws)
        known = None if protocol.has_density else protocol.velocity_given(data, t, self.draws)
        if known is None:
            outputs = ("score", "velocity") if protocol.has_density else ("velocity",)
            f = protocol.fields(data, x, t, outputs)
            nu, score = f.velocity, f.score
        else:
            nu, score = known, None
        kin = jnp.sum(nu**2, -1)
        score_flux = jnp.sum(nu * score, -1) if score is not None else None
        force_flux = None
        if protocol.stochastic:
            force_flux = jnp.sum(jax.vmap(protocol.force, in_axes=(0, None))(x, t) * nu, -1)
        out = NodeRates(kinetic=kin, speed_sq=kin, score_flux=score_flux,
                        force_flux=force_flux)
        if speed and self.project:
            K = protocol.circulation(t)
            deg = speed_mod.max_degree(data.dim, self.max_basis, cap=6)
            proj = speed_mod.cross_fitted_residual(x, x @ K.T, max_deg=deg)
            out = out.replace(speed_sq=kin - proj.residual, rotational_in_sample=proj.in_sample,
                              degree=proj.degree)
        return out


# The CDF transport's grid: work of one time node is grid points x mixture components. Up to
# CDF_WORK the grid has 16384 points; data with more components get fewer, never fewer than
# CDF_RESOLUTION points per standard deviation of the narrowest component.
CDF_WORK = 16384 * 64
CDF_RESOLUTION = 16


class CDF(Node):
    """The exact 1-D transport of the perturbed path by CDFs (:mod:`satjax.bound`): W_1(P_t, P̃_t)
    = ∫|F_t − F̃_τ ∘ Q_τ ∘ F_t| dx by the trapezoid rule on ``n_points``; exact velocity only.
    ``n_points`` = 0: chosen by :meth:`prepare`."""

    n_points: int = struct.field(pytree_node=False, default=0)

    def prepare(self, data, end=None, continuous: bool = True) -> "CDF":
        """``n_points`` for ``data`` (q) and ``end`` (P_τ; None: q alone) when it is 0: 16384,
        or for more than 64 components the power of two nearest CDF_WORK / K from below, at
        least 2048 and at least CDF_RESOLUTION points per narrowest standard deviation over the
        widest ±12 sd support of q and P_τ (the trapezoid rule is spectrally accurate on smooth
        integrands: on kernel data of width 0.1, 2048 and 16384 points agree to 4e-15 relative
        in η). A start whose density jumps (``continuous`` False) keeps 16384: the rule is then
        first order there (docs/theory.md §6)."""
        if self.n_points:
            return self
        mixtures = (data,) if end is None else (data, end)
        k = max(int(m.means.shape[0]) for m in mixtures)
        if not continuous or k <= CDF_WORK // 16384:
            return self.replace(n_points=16384)
        widths = [float(hi[0] - lo[0]) for lo, hi in (m.support(12.0) for m in mixtures)]
        sd = min(float(jnp.min(m.component_sd())) for m in mixtures)
        need = CDF_RESOLUTION * max(widths) / sd
        n = max(2048, 1 << int(math.floor(math.log2(CDF_WORK / k))))
        while n < need and n < 16384:
            n *= 2
        return self.replace(n_points=n)

    @property
    def method(self) -> str:
        return f"exact 1-D (CDF transport, n={self.n_points})"

    def check(self) -> None:
        if self.n_points < 64:
            raise ValueError(f"`n_points` must be >= 64; got {self.n_points}")


class Particles(Node):
    """Transport of particle sets for the n-D speed-accuracy relation (:mod:`satjax.bound`).

    ``n`` particles of P_τ and of P̃_τ are carried back by the probability-flow ODE
    (``solver``, ``n_steps`` fixed steps, ``n_save`` saved times); W_1 between the two sets at
    each saved time is exact OT (``backend="pot"``: an exact assignment, differentiable through
    the envelope theorem) or a debiased Sinkhorn divergence (``backend="ott"``, smooth).
    ``checkpoint`` recomputes each ODE step on the backward pass (memory O(steps × n × d)).
    ``key`` draws the particles.
    """

    n: int = struct.field(pytree_node=False, default=1000)
    n_steps: int = struct.field(pytree_node=False, default=100)
    n_save: int = struct.field(pytree_node=False, default=20)
    solver: str = struct.field(pytree_node=False, default="rk4")
    backend: str = struct.field(pytree_node=False, default="pot")
    checkpoint: bool = struct.field(pytree_node=False, default=True)
    key: Optional[jax.Array] = None

    @property
    def method(self) -> str:
        return f"particles (n={self.n}, {self.solver} × {self.n_steps}, W1 by {self.backend})"

    def peak_bytes(self, dim: int) -> int:
        """Estimated peak memory: both particle sets at every saved time with their velocities
        and solver stages (8 float64 arrays of n × d per saved time), and the exact assignments
        that run at once, one per host thread (each: the n × n cost matrix, plan and work
        arrays, 3 of n² float64)."""
        return 8 * (8 * self.n * dim * (self.n_save + 1) + host_threads() * 3 * self.n**2)

    def check(self) -> None:
        if self.key is None:
            raise ValueError("the particle transport needs a PRNG `key`")
        if self.n < 2:
            raise ValueError(f"need at least 2 particles; got {self.n}")
        if self.n_steps < 1 or self.n_save < 1 or self.n_steps % self.n_save:
            raise ValueError(f"`n_steps` ({self.n_steps}) must be a positive multiple of "
                             f"`n_save` ({self.n_save})")
        if self.backend not in ("pot", "ott"):
            raise ValueError(f"`backend` must be 'pot' or 'ott'; got {self.backend!r}")
        if self.solver not in ("euler", "heun", "rk4"):
            raise ValueError(f"`solver` must be euler, heun or rk4; got {self.solver!r}")


class Atoms(Node):
    """Importance-weighted Lagrangian atoms: the density transport of :class:`DensityGrid` in
    any dimension, with randomised quasi-Monte-Carlo atoms in place of grid cells
    (:mod:`satjax.bound`, docs/theory.md §6.5).

    Each of ``n_batches`` independent batches draws ``n`` atoms at t = 0, half from q and half
    from the generated law p = P̃_0 (draws of P̃_τ carried back by the velocity), so the
    proposal density r = (q + p)/2 is known at every atom; draws of Gaussian mixtures are a
    randomly shifted Sobol sequence (n a power of two keeps each half a net). The atoms are
    carried 0 → τ by the probability-flow ODE with their log-density increments (``solver``,
    ``n_steps`` in ``n_save`` (even) legs to the saved times τ (k/n_save)²); at atom i, P_t's mass is
    q(x_i)/r(x_i) and P̃_t's is p(x_i)/r(x_i) (with a learned velocity, P_t's mass is its exact
    density on the moving atom), and W_1 between the two weightings is an exact linear program
    (:mod:`satjax.geometry.atoms`). Every number is the mean over batches with its standard
    error; its resolution error is the change when each batch is split into two halves of
    n/2 atoms (same atoms: the change measures the bias, not the noise), times
    1/(2^(1/d) − 1) (the bias of an empirical W_1 falls at least as n^(−1/d); d = 2 in 2-D);
    ``check_half`` False skips the halves (no resolution error). ``key`` draws the atoms.
    ``lp``: the linear program (:func:`satjax.geometry.atoms.w1_same_atoms`): "simplex"
    (exact, POT on the host, differentiable), "sinkhorn" (a certified bracket on the device,
    ott-jax, no host callback, W_1's derivative 1–3 % off the exact one, none of the rate; its
    half-width and rate change join the errors),
    or "auto" (simplex on CPU, sinkhorn on accelerators).
    """

    n: int = struct.field(pytree_node=False, default=1024)
    n_batches: int = struct.field(pytree_node=False, default=8)
    n_steps: int = struct.field(pytree_node=False, default=100)
    n_save: int = struct.field(pytree_node=False, default=10)
    solver: str = struct.field(pytree_node=False, default="rk4")
    check_half: bool = struct.field(pytree_node=False, default=True)
    key: Optional[jax.Array] = None
    lp: str = struct.field(pytree_node=False, default="auto")

    @property
    def lp_used(self) -> str:
        """The linear program this transport runs ("auto" resolved for the JAX backend)."""
        from satjax.geometry import atoms

        return atoms.default_lp() if self.lp == "auto" else self.lp

    @property
    def method(self) -> str:
        lp = ("exact LP (network simplex, host)" if self.lp_used == "simplex" else
              "Sinkhorn bracket (ott-jax, on device; error: half-width, rate change at 3 eps)")
        return (f"importance-weighted atoms ({self.n_batches} batches of n={self.n}, "
                f"{self.solver} × {self.n_steps}, W1 by {lp} on the flowed atoms)")

    def peak_bytes(self, dim: int) -> int:
        """Estimated peak memory: one batch's atoms at every saved time with their solver
        stages, and the linear programs over its atoms that run at once
        (:func:`satjax.geometry.atoms.lp_bytes`)."""
        from satjax.geometry import atoms

        return (atoms.lp_bytes(self.n, self.lp_used, dim)
                + 8 * self.n * (dim + 1) * (self.n_save + 1) * 8)

    def check(self) -> None:
        if self.key is None:
            raise ValueError("the atom transport needs a PRNG `key`")
        if self.n < 8 or self.n % 4:
            raise ValueError(f"`n` (atoms per batch) must be a multiple of 4, >= 8; got "
                             f"{self.n}")
        if self.n_batches < 2:
            raise ValueError(f"`n_batches` must be >= 2 for a standard error; got "
                             f"{self.n_batches}")
        if self.n_steps < 1 or self.n_save < 1 or self.n_steps % self.n_save:
            raise ValueError(f"`n_steps` ({self.n_steps}) must be a positive multiple of "
                             f"`n_save` ({self.n_save})")
        if self.n_save % 2:
            raise ValueError(f"`n_save` must be even (c_1's Richardson step uses every other "
                             f"saved time); got {self.n_save}")
        if self.solver not in ("euler", "heun", "rk4"):
            raise ValueError(f"`solver` must be euler, heun or rk4; got {self.solver!r}")
        if self.lp not in ("auto", "simplex", "sinkhorn"):
            raise ValueError(f"`lp` must be auto, simplex or sinkhorn; got {self.lp!r}")


class DensityGrid(Node):
    """The Lagrangian density transport of the 2-D speed-accuracy relation (:mod:`satjax.bound`,
    docs/theory.md §6.4). Described here for the exact velocity; with a learned velocity ν̂ the
    cells move with ν̂ (which carries P̃) and P_t's mass of a cell is its exact density on the
    moving cell.

    The cells of an n × n grid over q's box (component means ± ``z`` widest standard
    deviations) are carried from t = 0 to τ by the probability-flow ODE (``solver``,
    ``n_steps`` fixed steps in ``n_save`` (even) legs of equal step counts between the saved times
    τ (k/n_save)², dense near the data) with their log-density increments, so that
    each cell centre holds the exact mass of q and, by the change of variables, of the generated
    P̃_0 = p; at every saved time P_t and P̃_t are two weightings of the same moving atoms and
    W_1 between them is an exact linear program (:mod:`satjax.geometry.atoms`). Deterministic:
    no sampling noise. With ``check_coarse`` everything is computed again on the n/2 grid and
    the change is reported as the resolution error. ``n`` = 0 chooses n from the data
    (:meth:`prepare`): ``cells_per_sd`` cells per narrowest component standard deviation,
    between 32 and ``max_n``. ``lp``: the linear program, as for :class:`Atoms` ("simplex",
    "sinkhorn" or "auto"; the Sinkhorn bracket holds n⁴ dense entries, so on CPU it fits small
    grids only).
    """

    n: int = struct.field(pytree_node=False, default=0)
    cells_per_sd: float = struct.field(pytree_node=False, default=1.0)
    z: float = struct.field(pytree_node=False, default=8.0)
    max_n: int = struct.field(pytree_node=False, default=128)
    n_steps: int = struct.field(pytree_node=False, default=100)
    n_save: int = struct.field(pytree_node=False, default=10)
    solver: str = struct.field(pytree_node=False, default="rk4")
    check_coarse: bool = struct.field(pytree_node=False, default=True)
    lo: tuple = struct.field(pytree_node=False, default=())
    hi: tuple = struct.field(pytree_node=False, default=())
    lp: str = struct.field(pytree_node=False, default="auto")

    @property
    def lp_used(self) -> str:
        """The linear program this transport runs ("auto" resolved for the JAX backend)."""
        from satjax.geometry import atoms

        return atoms.default_lp() if self.lp == "auto" else self.lp

    @property
    def method(self) -> str:
        n = f"n={self.n}, " if self.n else ""
        lp = ("exact LP" if self.lp_used == "simplex" else
              "Sinkhorn bracket (on device; error: half-width, rate change at 3 eps)")
        return (f"density grid 2-D ({n}{self.solver} × {self.n_steps}, W1 by {lp} on the "
                "flowed cells)")

    def check(self, data=None) -> None:
        if data is not None and data.dim != 2:
            raise ValueError(f"the density-grid transport needs 2-D data; got dimension "
                             f"{data.dim} (use particles)")
        if self.n and (self.n < 8 or self.n % 2):
            raise ValueError(f"`n` must be an even number >= 8; got {self.n}")
        if self.n_steps < 1 or self.n_save < 1 or self.n_steps % self.n_save:
            raise ValueError(f"`n_steps` ({self.n_steps}) must be a positive multiple of "
                             f"`n_save` ({self.n_save})")
        if self.n_save % 2:
            raise ValueError(f"`n_save` must be even (c_1's Richardson step uses every other "
                             f"saved time); got {self.n_save}")
        if self.solver not in ("euler", "heun", "rk4"):
            raise ValueError(f"`solver` must be euler, heun or rk4; got {self.solver!r}")
        if not self.cells_per_sd > 0 or not self.z > 0:
            raise ValueError("`cells_per_sd` and `z` must be positive")
        if self.lp not in ("auto", "simplex", "sinkhorn"):
            raise ValueError(f"`lp` must be auto, simplex or sinkhorn; got {self.lp!r}")

    def box(self, data=None):
        """(lo, hi) of q's grid: component means ± z widest component standard deviations
        (fixed by :meth:`prepare`)."""
        if self.lo:
            return np.asarray(self.lo), np.asarray(self.hi)
        m = np.asarray(data.means, float)
        sd = float(np.max(np.asarray(data.component_sd(), float)))
        return m.min(0) - self.z * sd, m.max(0) + self.z * sd

    def prepare(self, data, cover=None) -> "DensityGrid":
        """The transport with its box and n chosen for ``data`` (n when n = 0); ``cover``
        (N, 2) points the box must also hold (e.g. samples of a generated law), with a margin
        of 3 narrowest component standard deviations."""
        self.check(data)
        lo, hi = self.box(data)
        if cover is not None:
            c = np.asarray(cover, float)
            c = c[np.all(np.isfinite(c), axis=1)]
            if c.size:
                margin = 3.0 * float(np.min(np.asarray(data.component_sd(), float)))
                lo = np.minimum(lo, c.min(0) - margin)
                hi = np.maximum(hi, c.max(0) + margin)
        out = self.replace(lo=tuple(float(v) for v in lo), hi=tuple(float(v) for v in hi))
        if self.n:
            return out
        sd = float(np.min(np.asarray(data.component_sd(), float)))
        n = int(np.ceil(np.max(hi - lo) / sd * self.cells_per_sd / 8.0)) * 8
        return out.replace(n=int(min(max(n, 32), self.max_n)))

    def peak_bytes(self) -> int:
        """Estimated peak memory: the flowed cells (positions, log-densities, saved times) and
        the linear programs over all cells that run at once
        (:func:`satjax.geometry.atoms.lp_bytes`)."""
        from satjax.geometry import atoms

        cells = self.n * self.n
        return (atoms.lp_bytes(cells, self.lp_used, 2) + cells * (self.n_save + 1) * 8 * 8
                + cells * 8 * 400)


def resolve(data, protocol, estimator="auto", *, key=None) -> Estimator:
    """The estimator for ``protocol`` on ``data``: an Estimator as is, or by name.

    ``"auto"``: :class:`Exact` when a closed form exists, else :class:`Quadrature` in 1-D,
    :class:`Grid` in 2-D (protocols with a density), :class:`MonteCarlo` otherwise (with
    ``key``). Names: "exact", "quadrature", "grid", "mc". The choice is checked eagerly.

    Raises:
      ValueError: unknown name, or an estimator that does not apply (e.g. quadrature in 2-D,
        Monte Carlo without a key).
    """
    if isinstance(estimator, Estimator):
        est = estimator
    elif estimator in NAMES:
        name = estimator
        if name == "auto":
            if protocol.has_exact_rates(data):
                name = "exact"
            elif data.dim == 1 and protocol.has_density:
                name = "quadrature"
            elif data.dim == 2 and protocol.has_density:
                name = "grid"
            else:
                name = "mc"
        est = {"exact": Exact, "quadrature": Quadrature, "grid": Grid,
               "mc": lambda: MonteCarlo(key=key)}[name]()
    else:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {NAMES} or an "
                         "Estimator object")
    est.check(protocol, data)
    return est


class Grid(Estimator):
    """2-D weighted Poisson solve at every time node (:mod:`satjax.geometry.grid`).

    The box is P_t's components ± ``z`` widest standard deviations; the n × n grid has
    ``cells_per_sd`` cells per narrowest standard deviation at the node that needs most (n is
    static: the maximum over the nodes, capped by ``max_cells``). With ``check_coarse`` each
    node is solved again at n/2 and the change is reported (``speed_change``,
    ``kinetic_change``). Expectations other than the kinetic energy (the score and force
    fluxes) are midpoint sums over the cells.
    """

    cells_per_sd: float = struct.field(pytree_node=False, default=4.0)
    z: float = struct.field(pytree_node=False, default=8.0)
    max_cells: int = struct.field(pytree_node=False, default=1024)
    check_coarse: bool = struct.field(pytree_node=False, default=True)
    n: int = struct.field(pytree_node=False, default=0)

    @property
    def method(self) -> str:
        return f"grid-2d (n={self.n})" if self.n else "grid-2d"

    def check(self, protocol, data) -> None:
        if data.dim != 2:
            raise ValueError(f"the grid estimator needs 2-D data; got dimension {data.dim}")
        if not protocol.has_density:
            raise ValueError(f"{type(protocol).__name__} gives no density of P_t: use 'mc'")

    def prepare(self, protocol, data, ts) -> "Grid":
        from satjax.geometry import grid

        margs = [protocol.marginal(data, t) for t in np.asarray(ts)]
        means = np.stack([np.asarray(m.means) for m in margs])
        sds = np.stack([np.asarray(m.component_sd()) for m in margs])
        n = grid.mixture_resolution(means, sds, z=self.z, cells_per_std=self.cells_per_sd,
                                    multiple=8, n_max=self.max_cells)
        return self.replace(n=n)

    def elements_per_node(self, data) -> int:
        return 1 << 62  # one node at a time: a node already holds 2n² field evaluations

    def _box(self, protocol, data, t):
        from satjax.geometry import grid

        marg = protocol.marginal(data, t)
        lo, hi = grid.mixture_box(marg.means, marg.component_sd(), z=self.z)
        return jax.lax.stop_gradient(lo), jax.lax.stop_gradient(hi)

    def _cells(self, lo, hi):
        h = (hi - lo) / self.n
        c = [lo[i] + h[i] * (jnp.arange(self.n) + 0.5) for i in range(2)]
        X, Y = jnp.meshgrid(*c, indexing="ij")
        return jnp.stack([X.ravel(), Y.ravel()], -1), h[0] * h[1]

    def expectation_nodes(self, protocol, data, t):
        t = as_float(t)
        x, area = self._cells(*self._box(protocol, data, t))
        return x, area * jnp.exp(protocol.fields(data, x, t, ("log_prob",)).log_prob)

    def rates(self, protocol, data, t, *, speed: bool = True) -> NodeRates:
        from satjax.geometry import grid

        t = as_float(t)
        lo, hi = self._box(protocol, data, t)
        if not speed:  # expectations only: midpoint sums over the cells, no Poisson solve
            x, area = self._cells(lo, hi)
            f = protocol.fields(data, x, t, ("log_prob", "score", "velocity"))
            wp = area * jnp.exp(f.log_prob)
            force_flux = None
            if protocol.stochastic:
                fx = jax.vmap(protocol.force, in_axes=(0, None))(x, t)
                force_flux = wp @ jnp.sum(fx * f.velocity, -1)
            kin = wp @ jnp.sum(f.velocity**2, -1)
            return NodeRates(kinetic=kin, speed_sq=kin,
                             score_flux=wp @ jnp.sum(f.velocity * f.score, -1),
                             force_flux=force_flux)

        def field_fn(pts):
            f = protocol.fields(data, pts, t, ("log_prob", "velocity"))
            return f.log_prob, f.velocity

        if self.check_coarse:
            conv = grid.project_2d_converged(field_fn, lo, hi, self.n)
            g = conv.fine
            changes = dict(kinetic_change=g.kinetic - conv.coarse.kinetic,
                           speed_change=conv.speed_sq_delta)
            ok = conv.converged
        else:
            g = grid.project_2d(field_fn, lo, hi, self.n)
            changes = {}
            ok = g.converged
        # score and force fluxes: midpoint sums over the cells
        x, area = self._cells(lo, hi)
        f = protocol.fields(data, x, t, ("log_prob", "score", "velocity"))
        wp = area * jnp.exp(f.log_prob)
        score_flux = wp @ jnp.sum(f.velocity * f.score, -1)
        force_flux = None
        if protocol.stochastic:
            fx = jax.vmap(protocol.force, in_axes=(0, None))(x, t)
            force_flux = wp @ jnp.sum(fx * f.velocity, -1)
        return NodeRates(kinetic=g.kinetic, speed_sq=g.speed_sq, score_flux=score_flux,
                         force_flux=force_flux, converged=ok & g.covered, **changes)


def integrate_nodes(wts, values, per_sample: bool):
    """(∫ value dt by the weights, standard error, per-path integrals or None)."""
    if values is None:
        return None, None, None
    if per_sample:
        paths = wts @ values  # (n,): per-path integrals (common random numbers)
        n = paths.shape[0]
        return jnp.mean(paths), jnp.std(paths, ddof=1) / jnp.sqrt(n), paths
    return wts @ values, jnp.zeros_like(wts[0]), None


def node_means(values, per_sample: bool):
    """Per-node expectation (mean over samples for Monte Carlo)."""
    if values is None:
        return None
    return jnp.mean(values, -1) if per_sample else values


__all__ = ["CDF", "DensityGrid", "Estimator", "Exact", "MonteCarlo", "NAMES", "NodeRates", "Particles", "Quadrature",
           "integrate_nodes", "node_means", "rates_at_nodes", "resolve", "Grid"]
