"""The optimal protocol: the constant-speed W2 geodesic from the data to the noise (docs/theory.md §7).

For fixed end points and τ, c_2 = ∫ v_2² dt is minimised by McCann's displacement interpolation
x_t = (1 − s) x + s T(x), s = t/τ, T the optimal transport map from q to the noise, giving
c_2 = W_2²/τ (Eq. 69, 70). Along each straight line the velocity is constant,
ν_t(x_t) = (T(x) − x)/τ; it is a gradient field (T is the gradient of a convex function), the
flow is deterministic (T = 0, no entropy production) and E‖ν_t‖² = W_2²/τ² at every t.

Four :class:`~satjax.protocol.Protocol` implementations:

* :class:`OTProtocol1D` — exact in 1-D: T = F_N⁻¹ ∘ F_q (monotone rearrangement); P_t is the
  :class:`Interpolant1D` with quantile Q_t(u) = (1 − s) F_q⁻¹(u) + s F_N⁻¹(u); the Eulerian
  velocity at x solves (1 − s) x₀ + s T(x₀) = x (monotone bisection, one implicit Newton step).
* :class:`OTProtocolGaussian` — closed form between Gaussian data and Gaussian noise (Eq. 59).
* :class:`OTProtocolEntropic` — n-D, from ott-jax: the entropic OT map T_ε(x) = Σ_j w_j(x) y_j,
  w ∝ exp((g_j − ‖x − y_j‖²)/ε), from the dual potential g of a Sinkhorn solve between data and
  noise samples; exact sampling of its P_t (x ~ q pushed by the interpolation) and the Eulerian
  velocity by Newton's method on (1 − s) x₀ + s T_ε(x₀) = x (its Jacobian (1 − s) I + s ∇T_ε is
  positive definite for s < 1; T_ε maps into the convex hull of the noise samples, so the
  velocity is evaluated at s ≤ 1 − ``s_gap``). Its c_2 = E_q‖T_ε(x) − x‖²/τ is a Monte Carlo
  estimate (estimator "mc"). As an approximation of W_2²/τ it carries the fit's error: the
  two-sample bias of empirical OT (upward, O(n^(-1/2)) in 2-D; +12 % at n = 1024 for a 2-D
  Gaussian) minus the entropic shrinkage of the barycentric map (≈ d ε/2).
* :class:`OTProtocolSamples` — n-D, the assignment protocol of Eq. G19: an exact optimal
  assignment between n data and n noise samples, straight-line interpolation, and the Eulerian
  velocity by a Gaussian-kernel average over nearby pairs (kept as a comparison: its velocity is
  smoothed by the kernel and it has no density).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import logsumexp

from satjax import univariate
from satjax._util import as_float, check_tau, map_over_nodes
from satjax.distribution import Distribution
from satjax.engine import Fields
from satjax.geometry.distances import (entropic_potentials, monotone_map, ot_assignment,
                                       w2_squared_1d, w2_squared_gaussian)
from satjax.mixtures import GaussianMixture, gaussian
from satjax.protocol import OUTPUTS, Protocol, Rates


def _describe(name, tau, **extra):
    out = {"class": name, "tau": float(np.asarray(tau))}
    out.update(extra)
    return out


# ---------------------------------------------------------------------------- 1-D, exact


def _displacement_residual(x0, args):
    """(1 − s) x₀ + s T(x₀) − x, increasing in x₀ (T is monotone)."""
    x, s, data, noise = args
    return (1.0 - s) * x0 + s * monotone_map(data, noise, x0) - x


class Interpolant1D(Distribution):
    """P_t of the exact 1-D geodesic: the law of (1 − s) x + s T(x), x ~ q."""

    data: GaussianMixture
    noise: GaussianMixture
    s: jax.Array
    n_bisect: int = struct.field(pytree_node=False, default=120)

    @property
    def dim(self) -> int:
        return 1

    def transport_map(self, x):
        """T(x) = F_N⁻¹(F_q(x)), accurate in both tails."""
        return monotone_map(self.data, self.noise, x)

    def start_point(self, x):
        """x₀ with (1 − s) x₀ + s T(x₀) = x for points x of any shape: safeguarded
        Newton–bisection on the increasing map (:func:`satjax.univariate.root`), with exact
        derivatives in x, s and the mixtures' arrays by the implicit function theorem."""
        def bounds(m):
            sd = m.component_sd()
            return jnp.min(m.means[:, 0] - 40.0 * sd), jnp.max(m.means[:, 0] + 40.0 * sd)

        (lo0, hi0), (lo1, hi1) = bounds(self.data), bounds(self.noise)
        x = jnp.asarray(x)
        sg = jax.lax.stop_gradient
        lo = sg(jnp.minimum(jnp.minimum(lo0, lo1), x - 1.0))
        hi = sg(jnp.maximum(jnp.maximum(hi0, hi1), x + 1.0))
        scale = sg(jnp.minimum(jnp.min(self.data.component_sd()),
                               jnp.min(self.noise.component_sd())))

        def solve(xi, a, b):
            return univariate.root(_displacement_residual, (xi, self.s, self.data, self.noise),
                                   a, b, scale)

        flat = jax.vmap(solve)(x.ravel(), jnp.broadcast_to(lo, x.shape).ravel(),
                               jnp.broadcast_to(hi, x.shape).ravel())
        return flat.reshape(x.shape)

    def _slope(self, x0):
        """d/dx₀ of (1 − s) x₀ + s T(x₀) = (1 − s) + s q(x₀)/n(T(x₀))."""
        lq = self.data.log_prob(jnp.reshape(x0, (-1, 1)))
        ln = self.noise.log_prob(jnp.reshape(self.transport_map(x0), (-1, 1)))
        return ((1.0 - self.s) + self.s * jnp.exp(lq - ln)).reshape(jnp.shape(x0))

    def log_prob(self, x):
        """ln P_t(x) = ln q(x₀) − ln((1 − s) + s q(x₀)/n(T(x₀))) for x of shape (..., 1)."""
        x0 = self.start_point(x[..., 0])
        lq = self.data.log_prob(x0[..., None])
        ln = self.noise.log_prob(self.transport_map(x0)[..., None])
        return lq - jnp.log((1.0 - self.s) + self.s * jnp.exp(lq - ln))

    def cdf(self, x):
        return self.data.cdf(self.start_point(jnp.asarray(x)))

    def sf(self, x):
        return self.data.sf(self.start_point(jnp.asarray(x)))

    def quantile(self, u):
        return (1.0 - self.s) * self.data.quantile(u) + self.s * self.noise.quantile(u)

    def sample(self, key, n: int):
        x = self.data.sample(key, n)[:, 0]
        return ((1.0 - self.s) * x + self.s * self.transport_map(x))[:, None]

    def mean(self):
        return (1.0 - self.s) * self.data.mean() + self.s * self.noise.mean()

    def support(self, z: float = 12.0):
        (lo0, hi0), (lo1, hi1) = self.data.support(z), self.noise.support(z)
        return (1.0 - self.s) * lo0 + self.s * lo1, (1.0 - self.s) * hi0 + self.s * hi1

    def tail_variance(self):
        return ((1.0 - self.s) * jnp.sqrt(self.data.tail_variance())
                + self.s * jnp.sqrt(self.noise.tail_variance())) ** 2


class OTProtocol1D(Protocol):
    """Exact 1-D W2 geodesic from the data (t = 0) to ``noise`` (t = τ)."""

    noise: GaussianMixture = None
    n_bisect: int = struct.field(pytree_node=False, default=120)

    @property
    def dim(self) -> int:
        return 1

    @property
    def stochastic(self) -> bool:
        return False

    def check(self, data) -> None:
        if not isinstance(data, GaussianMixture) or data.dim != 1:
            raise ValueError("the exact 1-D geodesic needs 1-D Gaussian-mixture data")

    def describe(self) -> dict:
        return _describe("OTProtocol1D", self.tau, noise="N(0, 1)")

    def marginal(self, data, t) -> Interpolant1D:
        return Interpolant1D(data=data, noise=self.noise, s=as_float(t) / self.tau,
                             n_bisect=self.n_bisect)

    def reverse_start(self, data):
        return self.noise

    def fields(self, data, x, t, outputs=OUTPUTS) -> Fields:
        marg = self.marginal(data, t)
        x0 = marg.start_point(x[:, 0])
        out = {}
        if "velocity" in outputs:
            out["velocity"] = ((marg.transport_map(x0) - x0) / self.tau)[:, None]
        if "log_prob" in outputs:
            out["log_prob"] = marg.log_prob(x)
        if "score" in outputs:
            out["score"] = jax.vmap(jax.grad(lambda xi: marg.log_prob(xi[None])[0]))(x)
        return Fields(**out)

    def sample_given(self, data, t, draws):
        x = data.sample_given(draws.idx, draws.eps)[:, 0]
        return self.flow_map_1d(data, t, x)[:, None]

    def flow_map_1d(self, data, t, x0):
        """X_t(x₀) = (1 − s) x₀ + s T(x₀) (the straight line of the geodesic)."""
        s = as_float(t) / self.tau
        return (1.0 - s) * x0 + s * monotone_map(data, self.noise, x0)

    def has_exact_rates(self, data) -> bool:
        return True

    def exact_rates(self, data, t) -> Rates:
        """E‖ν_t‖² = v_2² = W_2(q, N)²/τ² at every t (constant speed)."""
        k = w2_squared_1d(data, self.noise) / self.tau**2 + 0.0 * t
        return Rates(kinetic=k, speed_sq=k)


# ------------------------------------------------------------------- Gaussian, closed form


def _sqrtm_sym(a):
    lam, U = jnp.linalg.eigh(a)
    return (U * jnp.sqrt(jnp.maximum(lam, 0.0))) @ U.T


class OTProtocolGaussian(Protocol):
    """Closed-form W2 geodesic from single-Gaussian data N(m0, S0) to ``noise`` N(m1, S1).

    T(x) = m1 + A(x − m0), A = S0^{-1/2}(S0^{1/2} S1 S0^{1/2})^{1/2} S0^{-1/2} (symmetric);
    P_t = N(m_t, M_t S0 M_t), m_t = (1 − s) m0 + s m1, M_t = (1 − s) I + s A; the Eulerian
    velocity ν_t(y) = (m1 − m0 + (A − I) M_t⁻¹ (y − m_t))/τ is a gradient (A and M_t commute).
    """

    noise: GaussianMixture = None

    @property
    def dim(self) -> int:
        return self.noise.dim

    @property
    def stochastic(self) -> bool:
        return False

    def check(self, data) -> None:
        if not isinstance(data, GaussianMixture) or data.n_components != 1:
            raise ValueError("the closed-form Gaussian geodesic needs single-Gaussian data")
        super().check(data)

    def describe(self) -> dict:
        return _describe("OTProtocolGaussian", self.tau, noise="N(0, I)")

    def _map(self, data):
        m0, S0 = data.means[0], data.full_cov()[0]
        r = _sqrtm_sym(S0)
        r_inv = jnp.linalg.inv(r)
        A = r_inv @ _sqrtm_sym(r @ self.noise.full_cov()[0] @ r) @ r_inv
        return m0, S0, A

    def _at(self, data, t):
        m0, S0, A = self._map(data)
        s = as_float(t) / self.tau
        eye = jnp.eye(m0.shape[0], dtype=S0.dtype)
        return m0, S0, A, (1.0 - s) * m0 + s * self.noise.means[0], (1.0 - s) * eye + s * A

    def marginal(self, data, t) -> GaussianMixture:
        _, S0, _, m, M = self._at(data, t)
        return GaussianMixture(weights=jnp.ones((1,), m.dtype), means=m[None],
                               cov=(M @ S0 @ M.T)[None], kind="full")

    def reverse_start(self, data):
        return self.noise

    def fields(self, data, x, t, outputs=OUTPUTS) -> Fields:
        m0, _, A, m, M = self._at(data, t)
        out = {}
        if "velocity" in outputs:
            z = jnp.linalg.solve(M, (x - m).T).T
            eye = jnp.eye(m0.shape[0], dtype=A.dtype)
            out["velocity"] = (self.noise.means[0] - m0 + z @ (A - eye).T) / self.tau
        if "log_prob" in outputs or "score" in outputs:
            marg = self.marginal(data, t)
            if "log_prob" in outputs:
                out["log_prob"] = marg.log_prob(x)
            if "score" in outputs:
                out["score"] = marg.score(x)
        return Fields(**out)

    def sample_given(self, data, t, draws):
        m0, _, A, m, M = self._at(data, t)
        x = data.sample_given(draws.idx, draws.eps)
        return m + (x - m0) @ M.T

    def has_exact_rates(self, data) -> bool:
        return True

    def exact_rates(self, data, t) -> Rates:
        k = w2_squared_gaussian(data.means[0], data.full_cov()[0], self.noise.means[0],
                                self.noise.full_cov()[0]) / self.tau**2 + 0.0 * t
        return Rates(kinetic=k, speed_sq=k)


# ---------------------------------------------------------------------- n-D, entropic (ott)


class _SampleGeodesic(Protocol):
    """Deterministic n-D geodesics known through samples: no temperature, no density of P_t,
    reverse start ``noise``."""

    noise: GaussianMixture = None

    @property
    def stochastic(self) -> bool:
        return False

    @property
    def has_density(self) -> bool:
        return False

    def reverse_start(self, data):
        return self.noise


class OTProtocolEntropic(_SampleGeodesic):
    """n-D geodesic of the entropic OT map fitted by ott-jax (module docstring).

    ``y`` (m, d) noise samples and their dual potential ``g`` (m,) at regularisation
    ``epsilon`` define T_ε(x) = softmax((g − ‖x − y‖²)/ε) @ y. ``noise`` is the distribution the
    samples came from (the reverse start, approximately the protocol's P_τ).
    """

    y: jax.Array = None
    g: jax.Array = None
    epsilon: jax.Array = None
    s_gap: float = struct.field(pytree_node=False, default=1e-3)
    n_newton: int = struct.field(pytree_node=False, default=40)
    converged: bool = struct.field(pytree_node=False, default=True)

    @property
    def dim(self) -> int:
        return self.y.shape[1]

    def describe(self) -> dict:
        return _describe("OTProtocolEntropic", self.tau, n_noise=int(self.y.shape[0]),
                         epsilon=float(np.asarray(self.epsilon)), noise="N(0, I)")

    def transport_map(self, x):
        """T_ε(x) for points (N, d): the barycentric projection of the entropic plan (points in
        batches: N × n logits at once would be 4 GB at N = 10⁵, n = 2048 in float64)."""
        return map_over_nodes(lambda xi: jax.nn.softmax(self._logits(xi)) @ self.y, x,
                              2 * self.y.shape[0])

    def velocity_given(self, data, t, draws):
        """ν_t at x_t = (1 − s) x + s T_ε(x), x the draws' data points: (T_ε(x) − x)/τ, the
        straight line's constant velocity (the Eulerian field there, without Newton's
        inversion)."""
        x = data.sample_given(draws.idx, draws.eps)
        return (self.transport_map(x) - x) / self.tau

    def _logits(self, x0):
        return (self.g - jnp.sum((x0 - self.y) ** 2, -1)) / self.epsilon

    def _map_and_jacobian(self, x0):
        """T_ε and ∇T_ε = (2/ε) Cov_w(y) at one point x0 (d,)."""
        w = jax.nn.softmax(self._logits(x0))
        T = w @ self.y
        dev = self.y - T
        return T, (2.0 / self.epsilon) * (dev.T * w) @ dev

    def _potential(self, x0):
        """ψ with ∇ψ = T_ε: ψ(x) = ‖x‖²/2 + (ε/2) logsumexp((g − ‖x − y‖²)/ε) (convex)."""
        return 0.5 * x0 @ x0 + 0.5 * self.epsilon * logsumexp(self._logits(x0))

    def start_point(self, x, s):
        """x₀ with (1 − s) x₀ + s T_ε(x₀) = x: the minimiser of the strongly convex
        F(z) = (1 − s)‖z‖²/2 + s ψ(z) − x·z, by Newton's method with a backtracking (Armijo) line
        search, globally convergent, stopped when the residual ‖(1 − s) z + s T_ε(z) − x‖ is at
        rounding level or no step of the line search (1, 1/2, ..., 2⁻¹⁹) decreases F (its rounding
        floor; at most
        ``n_newton`` steps); then one undamped step through which derivatives flow (the
        iteration itself sees no tangents)."""
        sg = jax.lax.stop_gradient
        frozen = self.replace(y=sg(self.y), g=sg(self.g), epsilon=sg(self.epsilon))
        s_it = sg(s)
        n_max = self.n_newton
        steps = 0.5 ** jnp.arange(20.0)

        def solve(xi):
            eye = jnp.eye(xi.shape[0], dtype=xi.dtype)
            x_it = sg(xi)
            # the residual's terms are of size ‖x‖ + ‖z‖: Newton stops at a few ulps of them
            tol = 64 * jnp.finfo(xi.dtype).eps

            def F(z):
                return 0.5 * (1.0 - s_it) * z @ z + s_it * frozen._potential(z) - x_it @ z

            def residual(z):
                T, J = frozen._map_and_jacobian(z)
                return (1.0 - s_it) * z + s_it * T - x_it, J

            def not_done(c):
                z, k, r, moved = c
                scale = 1.0 + jnp.sqrt(x_it @ x_it) + jnp.sqrt(z @ z)
                return (k < n_max) & moved & (jnp.sqrt(r @ r) > tol * scale)

            def newton(c):
                z, k, r, _ = c
                _, J = residual(z)
                d = -jnp.linalg.solve((1.0 - s_it) * eye + s_it * J, r)
                f0, slope = F(z), r @ d

                vals = jax.vmap(lambda a: F(z + a * d))(steps)
                ok = vals <= f0 + 1e-4 * steps * slope
                moved = jnp.any(ok)
                z = z + jnp.where(moved, steps[jnp.argmax(ok)], 0.0) * d
                return z, k + 1, residual(z)[0], moved

            z0 = x_it
            z, _, _, _ = jax.lax.while_loop(not_done, newton,
                                            (z0, 0, residual(z0)[0], jnp.asarray(True)))
            z = sg(z)
            T, J = self._map_and_jacobian(z)
            return z - jnp.linalg.solve((1.0 - s) * eye + s * sg(J), (1.0 - s) * z + s * T - xi)

        # each point holds a few n-sample logit vectors: batches of points keep the default
        # `path` (4096 points × 32 nodes × 2048 samples) well under 1 GB
        return map_over_nodes(solve, x, 8 * self.y.shape[0])

    def fields(self, data, x, t, outputs=OUTPUTS) -> Fields:
        if "log_prob" in outputs or "score" in outputs:
            raise NotImplementedError("the entropic geodesic has no density of P_t here: use "
                                      "the 'mc' estimator")
        s = jnp.minimum(as_float(t) / self.tau, 1.0 - self.s_gap)
        x0 = self.start_point(x, s)
        return Fields(velocity=(self.transport_map(x0) - x0) / self.tau)

    def sample_given(self, data, t, draws):
        x = data.sample_given(draws.idx, draws.eps)
        s = as_float(t) / self.tau
        return (1.0 - s) * x + s * self.transport_map(x)

    # No closed-form rates: E‖ν_t‖² is a Monte Carlo average (estimator "mc", with its standard
    # error); ν_t at x_t is inverted exactly, so it equals the Lagrangian (T_ε(x) − x)/τ.


# --------------------------------------------------------------- n-D, assignment + kernel


class OTProtocolSamples(_SampleGeodesic):
    """n-D W2 geodesic from an exact assignment of n data and n noise samples (Eq. G19)."""

    x0: jax.Array = None  # (n, d) data samples
    x1: jax.Array = None  # (n, d) paired noise samples
    bandwidth: jax.Array = None

    @property
    def dim(self) -> int:
        return self.x0.shape[1]

    def describe(self) -> dict:
        return _describe("OTProtocolSamples", self.tau, n_pairs=int(self.x0.shape[0]),
                         bandwidth=float(np.asarray(self.bandwidth)), noise="N(0, I)")

    def interpolant(self, t):
        s = t / self.tau
        return (1.0 - s) * self.x0 + s * self.x1

    def fields(self, data, x, t, outputs=OUTPUTS) -> Fields:
        """Kernel estimate of ν_t(x) (Eq. G19) at points x (N, d); velocity only."""
        if "log_prob" in outputs or "score" in outputs:
            raise NotImplementedError("the assignment geodesic has no density of P_t")
        xt = self.interpolant(as_float(t))
        logk = -0.5 * jnp.sum((x[:, None, :] - xt[None]) ** 2, -1) / self.bandwidth**2
        w = jnp.exp(logk - logsumexp(logk, -1, keepdims=True))
        return Fields(velocity=w @ (self.x1 - self.x0) / self.tau)

    def sample_given(self, data, t, draws):
        """The interpolated pairs x_t^{i mod n} for the draws' indices (the protocol's P_t is
        the empirical law of its pairs)."""
        i = jnp.arange(draws.n) % self.x0.shape[0]
        return self.interpolant(as_float(t))[i]


# ----------------------------------------------------------------------------- constructor

METHODS = ("auto", "exact", "gaussian", "entropic", "assignment")


def ot_protocol(data, *, tau=1.0, key=None, n_samples: int = 2048, method: str = "auto",
                epsilon: Optional[float] = None, bandwidth: Optional[float] = None):
    """The W2-geodesic protocol from ``data`` to N(0, I).

    ``method``: "exact" (1-D data), "gaussian" (single-Gaussian data, closed form), "entropic"
    (n-D: ott-jax entropic map from ``n_samples`` data and noise samples, ``key`` for the
    samples, ``epsilon`` absolute regularisation, default 10⁻³ × the mean squared distance,
    annealed), "assignment" (n-D: exact assignment and the G19 kernel velocity with
    ``bandwidth``, default ¼ of Scott's rule, ¼ n^(−1/(d+4)) × the mean per-coordinate standard
    deviation: a quarter, to keep the kernel's smoothing of the velocity small); "auto" picks exact, gaussian, else entropic.

    Raises:
      ValueError: unknown method, a method that does not apply, n_samples < 2.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}")
    check_tau(tau)
    tau = as_float(tau)
    noise = gaussian(0.0, 1.0, dim=data.dim)
    if method == "auto":
        method = ("exact" if data.dim == 1 else
                  "gaussian" if data.n_components == 1 else "entropic")
    if method == "exact":
        if data.dim != 1:
            raise ValueError("the exact geodesic needs 1-D data")
        return OTProtocol1D(tau=tau, noise=noise)
    if method == "gaussian":
        if data.n_components != 1:
            raise ValueError("the closed-form geodesic needs single-Gaussian data")
        return OTProtocolGaussian(tau=tau, noise=noise)
    if n_samples < 2:
        raise ValueError(f"`n_samples` must be >= 2; got {n_samples}")
    key = jax.random.PRNGKey(0) if key is None else key
    k1, k2 = jax.random.split(key)
    x0, x1 = data.sample(k1, n_samples), noise.sample(k2, n_samples)
    if method == "entropic":
        pot = entropic_potentials(x0, x1, epsilon=epsilon)
        return OTProtocolEntropic(tau=tau, y=x1, g=pot.g, epsilon=pot.epsilon, noise=noise,
                                  converged=bool(pot.converged))
    perm = ot_assignment(x0, x1)
    x1 = x1[perm]
    if bandwidth is None:
        sd = jnp.mean(jnp.std(jnp.concatenate([x0, x1]), 0))
        bandwidth = 0.25 * sd * n_samples ** (-1.0 / (data.dim + 4))
    return OTProtocolSamples(tau=tau, x0=x0, x1=x1, bandwidth=as_float(bandwidth), noise=noise)
