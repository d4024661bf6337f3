"""The optimal protocol: the constant-speed W2 geodesic from the data to the noise (PAPER.md §7).

For fixed end points and τ, c_2 = ∫ v_2² dt is minimised by McCann's displacement interpolation
x_t = (1 − s) x + s T(x), s = t/τ, T the optimal transport map from q to the noise, giving
c_2 = W_2²/τ (69, 70). Its velocity is constant along each straight line, ν_t(x_t) = (T(x) − x)/τ.

* :class:`OTProtocol1D` — exact in 1-D: T = F_N⁻¹ ∘ F_q (monotone rearrangement), so the
  quantile function of P_t is Q_t(u) = (1 − s) F_q⁻¹(u) + s F_N⁻¹(u). Eulerian velocity at x by
  solving (1 − s) x₀ + s T(x₀) = x for x₀ (monotone bisection), density by the Jacobian.
* :class:`OTProtocolGaussian` — closed form between two Gaussians (affine map of Eq. 59).
* :class:`OTProtocolSamples` — n-D: an exact optimal assignment between n data and n noise samples
  (:func:`satjax.geometry.distances.ot_assignment`), straight-line interpolation, and the Eulerian
  velocity at x by the kernel estimate of Eq. G19, a Gaussian-kernel weighted average of
  (x_τ − x₀)/τ over pairs whose interpolant x_t is near x. Approximate: c_2 is the empirical
  W_2² of the n pairs over τ (biased upwards for finite n), the velocity is smoothed by the kernel.

Both are "protocols" in the sense used by :mod:`satjax.bound`: they provide ``velocity(x, t)``,
samples of P_t, and c_2 (= w_D, the flow being deterministic and a gradient field).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct
from jax.scipy.special import logsumexp

from satjax._util import as_float, check_tau
from satjax.geometry.distances import cdf_1d, ot_assignment, quantile_1d, w2_squared_1d
from satjax.mixtures import GaussianMixture, gaussian


class OTProtocol1D(struct.PyTreeNode):
    """Exact 1-D W2 geodesic between ``data`` (t = 0) and ``noise`` (t = τ), both 1-D mixtures."""

    data: GaussianMixture
    noise: GaussianMixture
    tau: jax.Array
    n_bisect: int = struct.field(pytree_node=False, default=120)

    conservative = True
    dim = 1

    def quantile(self, t, u):
        """Q_t(u) = (1 − s) F_q⁻¹(u) + s F_N⁻¹(u)."""
        s = t / self.tau
        return (1.0 - s) * quantile_1d(self.data, u) + s * quantile_1d(self.noise, u)

    def transport_map(self, x):
        """T(x) = F_N⁻¹(F_q(x)) for points x of shape (...,)."""
        u = jnp.clip(cdf_1d(self.data, x), 1e-300, 1.0 - 1e-16)
        return quantile_1d(self.noise, u)

    def _start_point(self, x, t):
        """x₀ with (1 − s) x₀ + s T(x₀) = x, by bisection (the map is increasing)."""
        s = t / self.tau
        lo0 = jnp.minimum(jnp.min(self.data.means[:, 0] - 40.0 * jnp.sqrt(self.data.full_cov()[:, 0, 0])),
                          jnp.min(self.noise.means[:, 0] - 40.0 * jnp.sqrt(self.noise.full_cov()[:, 0, 0])))
        hi0 = jnp.maximum(jnp.max(self.data.means[:, 0] + 40.0 * jnp.sqrt(self.data.full_cov()[:, 0, 0])),
                          jnp.max(self.noise.means[:, 0] + 40.0 * jnp.sqrt(self.noise.full_cov()[:, 0, 0])))
        lo, hi = jnp.minimum(lo0, x - 1.0), jnp.maximum(hi0, x + 1.0)

        def body(_, b):
            lo, hi = b
            mid = 0.5 * (lo + hi)
            g = (1.0 - s) * mid + s * self.transport_map(mid) - x
            return jnp.where(g > 0, lo, mid), jnp.where(g > 0, mid, hi)

        lo, hi = jax.lax.fori_loop(0, self.n_bisect, body, (lo, hi))
        x0 = jax.lax.stop_gradient(0.5 * (lo + hi))
        # One Newton step with gradients flowing: exact first derivatives in x, t and parameters
        # by the implicit function theorem (the step itself is ~0 at the root).
        g = (1.0 - s) * x0 + s * self.transport_map(x0) - x
        return x0 - g / jax.lax.stop_gradient(self._map_slope(x0, s))

    def _map_slope(self, x0, s):
        """d/dx₀ of (1 − s) x₀ + s T(x₀): (1 − s) + s q(x₀)/n(T(x₀))."""
        lq = self.data.log_prob(jnp.reshape(x0, (-1, 1)))
        ln = self.noise.log_prob(jnp.reshape(self.transport_map(x0), (-1, 1)))
        return ((1.0 - s) + s * jnp.exp(lq - ln)).reshape(jnp.shape(x0))

    def velocity(self, x, t):
        """Eulerian ν_t(x) = (T(x₀) − x₀)/τ for one point x of shape (1,).

        Note: with the data/noise arrays fixed, gradients in x and t are exact; a gradient with
        respect to the mixtures' arrays misses the dependence of the stop-gradient slope (it is
        first-order exact only at the root, which is where it is evaluated)."""
        x0 = self._start_point(x[0], t)
        return ((self.transport_map(x0) - x0) / self.tau)[None]

    def log_density(self, x, t):
        """ln P_t(x) = ln q(x₀) − ln((1 − s) + s T'(x₀)), T'(x₀) = q(x₀)/n(T(x₀)); x of shape (1,)."""
        s = t / self.tau
        x0 = self._start_point(x[0], t)
        lq = self.data.log_prob(x0[None])
        ln = self.noise.log_prob(self.transport_map(x0)[None])
        return lq - jnp.log((1.0 - s) + s * jnp.exp(lq - ln))

    def sample(self, key, t, n: int):
        """n samples of P_t: x_t = (1 − s) x + s T(x), x ~ q. Shape (n, 1)."""
        x = self.data.sample(key, n)[:, 0]
        s = t / self.tau
        return ((1.0 - s) * x + s * self.transport_map(x))[:, None]

    def w2_squared(self):
        """W_2(q, noise)² exactly (1-D quantile formula)."""
        return w2_squared_1d(self.data, self.noise)

    def c2(self):
        """c_2 = W_2²/τ (constant speed)."""
        return self.w2_squared() / self.tau

    def kinetic(self, t):
        """E‖ν_t‖² = v_2² = W_2²/τ² for every t."""
        return self.w2_squared() / self.tau**2 + 0.0 * t


def _sqrtm_sym(a):
    lam, U = jnp.linalg.eigh(a)
    return (U * jnp.sqrt(jnp.maximum(lam, 0.0))) @ U.T


class OTProtocolGaussian(struct.PyTreeNode):
    """Closed-form W2 geodesic between N(m0, S0) (t = 0) and N(m1, S1) (t = τ).

    T(x) = m1 + A(x − m0), A = S0^{-1/2}(S0^{1/2} S1 S0^{1/2})^{1/2} S0^{-1/2} (symmetric);
    P_t = N(m_t, M_t S0 M_t), m_t = (1 − s) m0 + s m1, M_t = (1 − s) I + s A; the Eulerian
    velocity ν_t(y) = (m1 − m0 + (A − I) M_t⁻¹ (y − m_t))/τ is a gradient (A and M_t commute).
    """

    m0: jax.Array
    S0: jax.Array
    m1: jax.Array
    S1: jax.Array
    tau: jax.Array

    conservative = True

    @property
    def dim(self) -> int:
        return self.m0.shape[0]

    def map_matrix(self):
        r = _sqrtm_sym(self.S0)
        r_inv = jnp.linalg.inv(r)
        return r_inv @ _sqrtm_sym(r @ self.S1 @ r) @ r_inv

    def _mt(self, t):
        s = t / self.tau
        eye = jnp.eye(self.dim, dtype=self.S0.dtype)
        return (1.0 - s) * self.m0 + s * self.m1, (1.0 - s) * eye + s * self.map_matrix()

    def marginal(self, t) -> GaussianMixture:
        m, M = self._mt(t)
        return GaussianMixture(weights=jnp.ones((1,), m.dtype), means=m[None],
                               cov=(M @ self.S0 @ M.T)[None], kind="full")

    def velocity(self, x, t):
        """ν_t(x) for one point x (d,)."""
        m, M = self._mt(t)
        A = self.map_matrix()
        z = jnp.linalg.solve(M, x - m)
        return (self.m1 - self.m0 + (A - jnp.eye(self.dim, dtype=A.dtype)) @ z) / self.tau

    def log_density(self, x, t):
        return self.marginal(t).log_prob(x)

    def sample(self, key, t, n: int):
        return self.marginal(t).sample(key, n)

    def w2_squared(self):
        from satjax.geometry.distances import w2_squared_gaussian

        return w2_squared_gaussian(self.m0, self.S0, self.m1, self.S1)

    def c2(self):
        return self.w2_squared() / self.tau

    def kinetic(self, t):
        return self.w2_squared() / self.tau**2 + 0.0 * t


class OTProtocolSamples(struct.PyTreeNode):
    """n-D W2 geodesic from an exact assignment of n data and n noise samples (Eq. G19)."""

    x0: jax.Array  # (n, d) data samples
    x1: jax.Array  # (n, d) paired noise samples
    tau: jax.Array
    bandwidth: jax.Array

    conservative = True

    @property
    def dim(self) -> int:
        return self.x0.shape[1]

    def interpolant(self, t):
        s = t / self.tau
        return (1.0 - s) * self.x0 + s * self.x1

    def velocity(self, x, t):
        """Kernel estimate of ν_t(x) (Eq. G19) for one point x (d,)."""
        xt = self.interpolant(t)
        logk = -0.5 * jnp.sum((x - xt) ** 2, -1) / self.bandwidth**2
        w = jnp.exp(logk - logsumexp(logk))
        return w @ (self.x1 - self.x0) / self.tau

    def sample(self, key, t, n: Optional[int] = None):
        """The interpolated samples at t (all n pairs; ``key`` and ``n`` select a subset)."""
        xt = self.interpolant(t)
        if n is None or n >= xt.shape[0]:
            return xt
        return xt[jax.random.choice(key, xt.shape[0], (n,), replace=False)]

    def w2_squared(self):
        """Empirical W_2² of the assignment (an estimate of W_2(q, noise)²)."""
        return jnp.mean(jnp.sum((self.x1 - self.x0) ** 2, -1))

    def c2(self):
        return self.w2_squared() / self.tau

    def kinetic(self, t):
        return self.w2_squared() / self.tau**2 + 0.0 * t


def ot_protocol(data: GaussianMixture, *, tau=1.0, noise: Optional[GaussianMixture] = None,
                key=None, n_samples: int = 2000, bandwidth: Optional[float] = None,
                method: str = "auto"):
    """The W2-geodesic protocol from ``data`` to ``noise`` (default N(0, I)).

    Exact in 1-D (:class:`OTProtocol1D`); closed form when data and noise are single Gaussians
    (:class:`OTProtocolGaussian`); otherwise in n-D from ``n_samples`` pairs of an exact assignment
    (:class:`OTProtocolSamples`, key defaults to PRNGKey(0)); ``bandwidth`` of the G19 kernel
    defaults to n^(−1/(d+4)) times the mean per-coordinate standard deviation (Scott's rule).
    ``method="samples"`` forces the sample-based construction (n-D).
    """
    if method not in ("auto", "samples"):
        raise ValueError(f"`method` must be 'auto' or 'samples'; got {method!r}")
    check_tau(tau)
    tau = as_float(tau)
    noise = gaussian(0.0, 1.0, dim=data.dim) if noise is None else noise
    if noise.dim != data.dim:
        raise ValueError(f"noise has dimension {noise.dim} but data has {data.dim}")
    if data.dim == 1 and method == "auto":
        return OTProtocol1D(data=data, noise=noise, tau=tau)
    if data.n_components == 1 and noise.n_components == 1 and method == "auto":
        return OTProtocolGaussian(m0=data.means[0], S0=data.full_cov()[0], m1=noise.means[0],
                                  S1=noise.full_cov()[0], tau=tau)
    if n_samples < 2:
        raise ValueError(f"`n_samples` must be >= 2; got {n_samples}")
    key = jax.random.PRNGKey(0) if key is None else key
    k1, k2 = jax.random.split(key)
    x0, x1 = data.sample(k1, n_samples), noise.sample(k2, n_samples)
    perm = ot_assignment(x0, x1)
    x1 = x1[perm]
    if bandwidth is None:
        sd = jnp.mean(jnp.std(jnp.concatenate([x0, x1]), 0))
        bandwidth = 0.25 * sd * n_samples ** (-1.0 / (data.dim + 4))
    return OTProtocolSamples(x0=x0, x1=x1, tau=tau, bandwidth=as_float(bandwidth))

