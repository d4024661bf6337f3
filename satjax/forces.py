"""Linear forces f_t(x) = A_t x + b_t and their Gaussian transitions (docs/theory.md §1; Eq. 16, B3, B4).

A :class:`LinearForce` is the :class:`~satjax.protocol.Protocol` of a diffusion with a linear
force and temperature T_t. Its transition kernel is P_t(x|y) = N(Φ_t y + c_t, Σ_t) with

    ∂_t Φ = A_t Φ,  Φ_0 = I;   ∂_t c = A_t c + b_t,  c_0 = 0;
    ∂_t Σ = A_t Σ + Σ A_tᵀ + 2 T_t I,  Σ_0 = 0                                  (B3, B4)

so Gaussian-mixture data stay Gaussian mixtures (Eq. 17, :func:`push`), and the fields of P_t
come from the tiled engine (:mod:`satjax.engine`). Schedules (:mod:`satjax.schedules`) are the
special case A_t = (∂_t ln m_t) I, b = 0. This module adds the rotating non-conservative force of
Eq. 99 (closed form) and a general linear force given by functions of t (transition by an
adaptive ODE solve with diffrax).

The velocity needs, besides the transition and its time derivative, the part of A_t that does
not commute with the component covariances: ``rotation_generator(t)`` returns K_t with
A_t = a_t I + K_t (a_t scalar, possibly singular such as ∂_t ln m at m = 0), or None.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Real

from satjax._util import as_float, check_tau, gauss_legendre, is_concrete, time_derivative
from satjax.engine import Fields, evaluate
from satjax.mixtures import GaussianMixture
from satjax.protocol import OUTPUTS, Protocol, Rates
from satjax.pytree import Node


class IsoTransition(Node):
    """Transition N(scale·R y + shift, var·I): a conformal Φ = scale·R (R orthogonal).

    ``rotation=None`` means R = I and ``shift=None`` means c = 0; both are static structure.
    """

    scale: jax.Array
    var: jax.Array
    rotation: Optional[jax.Array] = None
    shift: Optional[jax.Array] = None


class FullTransition(Node):
    """Transition N(Φ y + c, Σ) with general matrices Φ (d, d), c (d,), Σ (d, d)."""

    phi: jax.Array
    shift: jax.Array
    cov: jax.Array


def push(data: GaussianMixture, tr) -> GaussianMixture:
    """The mixture of N(Φ μ_k + c, Φ S_k Φᵀ + Σ) for a transition N(Φ y + c, Σ) (Eq. 17)."""
    d = data.dim
    if isinstance(tr, IsoTransition):
        R = tr.rotation
        mu = data.means if R is None else data.means @ R.T
        mu = tr.scale * mu
        if tr.shift is not None:
            mu = mu + tr.shift
        phi2 = tr.scale**2
        if data.kind == "iso":
            cov, kind = phi2 * data.cov + tr.var, "iso"
        elif data.kind == "diag" and R is None:
            cov, kind = phi2 * data.cov + tr.var, "diag"
        else:
            S = data.full_cov()
            if R is not None:
                S = jnp.einsum("ij,kjl,ml->kim", R, S, R)
            cov, kind = phi2 * S + tr.var * jnp.eye(d, dtype=S.dtype), "full"
    else:
        if tr.phi.shape != (d, d):
            raise ValueError(f"transition of dimension {tr.phi.shape[0]} applied to "
                             f"{d}-dimensional data")
        mu = data.means @ tr.phi.T + tr.shift
        cov = jnp.einsum("ij,kjl,ml->kim", tr.phi, data.full_cov(), tr.phi) + tr.cov
        kind = "full"
    return GaussianMixture(weights=data.weights, means=mu, cov=cov, kind=kind)


def lyapunov_speed_sq(mean_rate, cov, cov_rate):
    """W2 speed² of a Gaussian path: ‖μ'‖² + tr(L Σ L) with L Σ + Σ L = Σ' (docs/theory.md §5).

    Up to d = 16 the Lyapunov equation is solved as the linear system (I ⊗ Σ + Σ ⊗ I) vec L =
    vec Σ', whose derivatives are finite for repeated eigenvalues (isotropic Σ); beyond, in Σ's
    eigenbasis (derivatives undefined where eigenvalues coincide)."""
    d = cov.shape[0]
    if d <= 16:
        eye = jnp.eye(d, dtype=cov.dtype)
        L = jnp.linalg.solve(jnp.kron(eye, cov) + jnp.kron(cov, eye),
                             cov_rate.reshape(-1)).reshape(d, d)
        return jnp.sum(mean_rate**2) + jnp.trace(L @ cov @ L)
    lam, U = jnp.linalg.eigh(cov)
    D = U.T @ cov_rate @ U
    Lt = D / (lam[:, None] + lam[None, :])
    return jnp.sum(mean_rate**2) + jnp.sum(Lt**2 * lam[None, :])  # Σ_ij Lt_ij² λ_j


def _describe(obj) -> dict:
    """Class name and the array/number fields of a dataclass pytree, JSON-ready."""
    out = {"class": type(obj).__name__}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if callable(v) or not f.repr:  # (not the bookkeeping field satjax.pytree.Node.pytree_class)
            continue
        a = np.asarray(v) if not isinstance(v, (str, bool)) else v
        out[f.name] = a.tolist() if isinstance(a, np.ndarray) else a
    return out


class LinearForce(Protocol):
    """Abstract diffusion with a linear force f_t(x) = A_t x + b_t (Eq. 16) on mixture data.

    Subclasses implement ``temperature``, ``force``, ``transition`` (and ``rotation_generator``
    when A_t is not a multiple of I); everything the :class:`~satjax.protocol.Protocol`
    interface asks for follows from them.
    """

    # ------------------------------------------------------------------ to implement
    def transition(self, t):
        """The Gaussian transition P_t(·|y) (B3, B4) as an Iso- or FullTransition."""
        raise NotImplementedError

    def transition_and_rate(self, t):
        """(transition, d transition / dt) at time t, by forward-mode autodiff by default."""
        return time_derivative(self.transition, t)

    def rotation_generator(self, t):
        """K_t with A_t = a_t I + K_t, or None when A_t is a multiple of I."""
        return None

    def diffusion(self, t):
        """sqrt(2 T_t), the noise amplitude of the SDE (Eq. 2)."""
        return jnp.sqrt(2.0 * jnp.maximum(self.temperature(t), 0.0))

    # ------------------------------------------------------------------ Protocol
    def check(self, data) -> None:
        if not isinstance(data, GaussianMixture):
            raise TypeError(f"`data` must be a GaussianMixture; got {type(data).__name__}")
        super().check(data)

    def describe(self) -> dict:
        return _describe(self)

    def marginal(self, data, t) -> GaussianMixture:
        """P_t (Eq. 17)."""
        return push(data, self.transition(as_float(t)))

    def marginal_and_rate(self, data, t):
        """(P_t, ∂_t P_t) as mixtures: the rate holds the components' mean and covariance rates."""
        tr, dtr = self.transition_and_rate(as_float(t))
        return jax.jvp(lambda v: push(data, v), (tr,), (dtr,))

    def fields(self, data, x: Float[Array, "n d"], t: Real[ArrayLike, ""], outputs=OUTPUTS, *,
               chunk=None) -> Fields:
        t = as_float(t)
        outputs = tuple(outputs)
        if "velocity" in outputs:
            marg, rate = self.marginal_and_rate(data, t)
        else:
            marg, rate = self.marginal(data, t), None
        return evaluate(marg, x, rate=rate, generator=self.rotation_generator(t), chunk=chunk,
                        outputs=outputs)

    def sample_given(self, data, t: Real[ArrayLike, ""], draws) -> Float[Array, "n d"]:
        return self.marginal(data, t).sample_given(draws.idx, draws.eps)

    def circulation(self, t):
        K = self.rotation_generator(t)
        return None if K is None else 0.5 * (K - K.T)

    def has_exact_rates(self, data) -> bool:
        return data.n_components == 1

    def exact_rates(self, data, t) -> Rates:
        """Closed forms for single-Gaussian data: ν = μ' + B(x − μ), B = (C'/2 + W) C⁻¹ with
        W = (K C − C Kᵀ)/2, so E‖ν‖² = ‖μ'‖² + tr(B C Bᵀ), E[ν·∇ln P] = −tr B, E[f·ν] =
        E‖ν‖² + T E[ν·∇ln P] (f = ν + T∇ln P), and v_2² by the Lyapunov formula."""
        t = as_float(t)
        marg, rate = self.marginal_and_rate(data, t)
        C, dC, dmu = marg.full_cov()[0], rate.full_cov()[0], rate.means[0]
        M = 0.5 * dC
        K = self.rotation_generator(t)
        if K is not None:
            M = M + 0.5 * (K @ C - C @ K.T)
        B = jnp.linalg.solve(C.T, M.T).T  # M C⁻¹
        kin = dmu @ dmu + jnp.trace(B @ C @ B.T)
        sfl = -jnp.trace(B)
        T = self.temperature(t)
        speed = kin if self.rotation_generator(t) is None else lyapunov_speed_sq(dmu, C, dC)
        return Rates(kinetic=kin, speed_sq=speed, score_flux=sfl, force_flux=kin + T * sfl)


_J = jnp.array([[0.0, -1.0], [1.0, 0.0]])


def _rot2(theta):
    c, s = jnp.cos(theta), jnp.sin(theta)
    return jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])])


class RotatingForce(LinearForce):
    """The non-conservative 2-D force of the Swiss-roll experiment (Eq. 99).

    f_t(x) = [[H_t, -G_t], [G_t, H_t]] x,  H_t = -h(1 - t/τ) - T_t,  G_t = g(1 - t/τ),
    T_t = T_fin (t/τ)².  The mean rotates by ∫G and scales by exp ∫H; the covariance is isotropic,
    Σ_t = ∫_0^t 2 T_u exp(2 ∫_u^t H) du · I (G18), evaluated by 64-node Gauss–Legendre quadrature
    (the integrand is entire, so this is exact to rounding for moderate h, T_fin, τ).

    Build with :meth:`create`, which validates the constants.
    """

    h: jax.Array = 1.0
    g: jax.Array = 0.0
    t_fin: jax.Array = 1.0
    n_quad: int = struct.field(pytree_node=False, default=64)

    @classmethod
    def create(cls, h=1.0, g=0.0, t_fin=1.0, tau=1.0, n_quad: int = 64) -> "RotatingForce":
        """Rotating force of Eq. 99; raises ValueError for τ ≤ 0 or T_fin < 0."""
        check_tau(tau)
        if is_concrete(t_fin) and float(t_fin) < 0:
            raise ValueError(f"`t_fin` (final temperature) must be >= 0; got {float(t_fin)}")
        if is_concrete(h, g):
            for name, v in (("h", h), ("g", g)):
                if not jnp.isfinite(jnp.asarray(v)):
                    raise ValueError(f"`{name}` must be finite; got {v}")
        return cls(tau=as_float(tau), h=as_float(h), g=as_float(g), t_fin=as_float(t_fin),
                   n_quad=int(n_quad))

    @property
    def dim(self) -> int:
        return 2

    @property
    def conservative(self) -> bool:
        # Concrete g == 0 is conservative; a traced g is treated as possibly non-zero.
        if is_concrete(self.g):
            return bool(jnp.all(jnp.asarray(self.g) == 0))
        return False

    def temperature(self, t):
        s = t / self.tau
        return self.t_fin * s**2

    def H(self, t):
        return -self.h * (1.0 - t / self.tau) - self.temperature(t)

    def G(self, t):
        return self.g * (1.0 - t / self.tau)

    def int_H(self, t):
        """∫_0^t H_u du in closed form."""
        return -self.h * (t - t**2 / (2 * self.tau)) - self.t_fin * t**3 / (3 * self.tau**2)

    def angle(self, t):
        """∫_0^t G_u du in closed form: the rotation angle of the mean."""
        return self.g * (t - t**2 / (2 * self.tau))

    def variance(self, t):
        """Σ_t / I = ∫_0^t 2 T_u exp(2(∫_0^t H - ∫_0^u H)) du (G18)."""
        u, w = gauss_legendre(self.n_quad, 0.0, 1.0)
        u = u * t
        integrand = 2.0 * self.temperature(u) * jnp.exp(2.0 * (self.int_H(t) - self.int_H(u)))
        return t * jnp.sum(w * integrand)

    def force(self, x, t):
        return self.H(t) * x + self.G(t) * (_J.astype(x.dtype) @ x)

    def transition(self, t):
        t = as_float(t)
        return IsoTransition(scale=jnp.exp(self.int_H(t)), var=self.variance(t),
                             rotation=_rot2(self.angle(t)))

    def rotation_generator(self, t):
        return self.G(t) * _J.astype(jnp.result_type(t, float))


class GeneralLinearForce(LinearForce):
    """Any linear force f_t(x) = A(t) x + b(t) with temperature T(t), given as functions.

    ``matrix_fn(params, t) -> (d, d)``, ``offset_fn(params, t) -> (d,)`` and
    ``temperature_fn(params, t) -> ()`` are static callables; ``params`` is a pytree of arrays
    (differentiable). The transition (B3, B4) is the solution of the matrix ODE by diffrax
    (Tsit5, adaptive, rtol = atol = ``tol``); its rate is the ODE's right-hand side.
    """

    params: Any
    matrix_fn: Callable = struct.field(pytree_node=False)
    offset_fn: Callable = struct.field(pytree_node=False)
    temperature_fn: Callable = struct.field(pytree_node=False)
    n_dim: int = struct.field(pytree_node=False)
    tol: float = struct.field(pytree_node=False, default=1e-10)
    max_steps: int = struct.field(pytree_node=False, default=4096)

    @classmethod
    def create(cls, matrix_fn, temperature_fn, dim: int, offset_fn=None, params=None, tau=1.0,
               tol: float = 1e-10) -> "GeneralLinearForce":
        """General linear force; checks that the functions return the right shapes."""
        check_tau(tau)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"`dim` must be a positive int; got {dim!r}")
        if offset_fn is None:
            def offset_fn(p, t):
                return jnp.zeros((dim,), jnp.result_type(t, float))
        t0 = as_float(0.0)
        a = jax.eval_shape(matrix_fn, params, t0)
        b = jax.eval_shape(offset_fn, params, t0)
        T = jax.eval_shape(temperature_fn, params, t0)
        if a.shape != (dim, dim):
            raise ValueError(f"`matrix_fn` must return shape ({dim}, {dim}); got {a.shape}")
        if b.shape != (dim,):
            raise ValueError(f"`offset_fn` must return shape ({dim},); got {b.shape}")
        if T.shape != ():
            raise ValueError(f"`temperature_fn` must return a scalar; got shape {T.shape}")
        return cls(tau=as_float(tau), params=params, matrix_fn=matrix_fn, offset_fn=offset_fn,
                   temperature_fn=temperature_fn, n_dim=dim, tol=float(tol))

    @property
    def dim(self) -> int:
        return self.n_dim

    @property
    def conservative(self) -> bool:
        return False  # unknown in general; the velocity is treated as possibly rotational

    def A(self, t):
        return self.matrix_fn(self.params, t)

    def b(self, t):
        return self.offset_fn(self.params, t)

    def temperature(self, t):
        return self.temperature_fn(self.params, t)

    def force(self, x, t):
        return self.A(t) @ x + self.b(t)

    def _rate(self, t, tr: FullTransition) -> FullTransition:
        A = self.A(t)
        eye = jnp.eye(self.n_dim, dtype=A.dtype)
        return FullTransition(phi=A @ tr.phi, shift=A @ tr.shift + self.b(t),
                              cov=A @ tr.cov + tr.cov @ A.T + 2.0 * self.temperature(t) * eye)

    def transition(self, t):
        t = as_float(t)
        d = self.n_dim
        y0 = FullTransition(phi=jnp.eye(d, dtype=t.dtype), shift=jnp.zeros((d,), t.dtype),
                            cov=jnp.zeros((d, d), t.dtype))
        # Solve on a fixed interval [0, 1] in rescaled time so that t = 0 needs no special case.
        def rhs(s, y, args):
            return jax.tree_util.tree_map(lambda v: t * v, self._rate(s * t, y))

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(rhs), diffrax.Tsit5(), t0=0.0, t1=1.0, dt0=None, y0=y0,
            stepsize_controller=diffrax.PIDController(rtol=self.tol, atol=self.tol),
            saveat=diffrax.SaveAt(t1=True), max_steps=self.max_steps,
            adjoint=diffrax.DirectAdjoint(),  # supports forward- and reverse-mode autodiff
        )
        return jax.tree_util.tree_map(lambda v: v[-1], sol.ys)

    def transition_and_rate(self, t):
        tr = self.transition(t)
        return tr, self._rate(as_float(t), tr)

    def rotation_generator(self, t):
        return self.A(t)
