"""Wasserstein-2 speed of a path of distributions (PAPER.md section 5, Eq. 65–68).

v_2(t)² = E_{P_t}‖∇φ_t‖², ∇φ_t the L²(P_t) projection of the velocity ν_t onto gradient fields
(the weighted Helmholtz projection: ∇·(P_t ∇φ_t) = ∇·(P_t ν_t)). Hence T_t Ṡ_tot = E‖ν_t‖² ≥ v_2²
with equality iff ν_t is a gradient (65, 67).

* Conservative protocols (every 1-D field, schedule-induced forces, symmetric A_t): v_2² = E‖ν‖².
* Gaussian P_t = N(μ_t, Σ_t): v_2² = ‖μ'‖² + tr(L Σ L) with L Σ + Σ L = Σ' (Lyapunov, closed form).
* Linear force with a rotational part on mixture data: ν = ∇(·) + K_skew x, K_skew = (K − Kᵀ)/2 the
  antisymmetric part of the force matrix, so only K_skew x needs projecting:
  v_2² = E‖ν‖² − E‖K_skew x‖² + E‖Π(K_skew x)‖², Π the least-squares projection onto gradients
  of polynomial potentials (all monomials up to ``degree`` in standardised coordinates) under
  Monte-Carlo samples of P_t. Π from a finite basis under-estimates ‖Π‖, so this v_2² is a lower
  estimate that increases with ``degree``; it is exact when the true potential is a polynomial of
  that degree (e.g. degree ≥ 2 for Gaussian P_t).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp


def lyapunov_speed_sq(mean_rate, cov, cov_rate):
    """‖μ'‖² + tr(L Σ L), L Σ + Σ L = Σ' (the W2 speed² of a Gaussian path, section 5)."""
    lam, U = jnp.linalg.eigh(cov)
    D = U.T @ cov_rate @ U
    Lt = D / (lam[:, None] + lam[None, :])
    # tr(L Σ L) in the eigenbasis: Σ_ij Lt_ij² λ_j
    return jnp.sum(mean_rate**2) + jnp.sum(Lt**2 * lam[None, :])


def monomial_exponents(dim: int, degree: int):
    """All exponent tuples with 1 ≤ total degree ≤ ``degree`` in ``dim`` variables."""
    out = []
    for total in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(dim), total):
            e = [0] * dim
            for i in combo:
                e[i] += 1
            out.append(tuple(e))
    return out


def potential_gradients(x, center, scale, degree: int):
    """Gradients of the monomial potentials at points x (N, d): shape (N, n_basis, d)."""
    dim = x.shape[-1]
    ex = jnp.asarray(monomial_exponents(dim, degree), dtype=x.dtype)  # (B, d)

    def potentials(xi):
        z = (xi - center) / scale
        return jnp.prod(z[None, :] ** ex, axis=-1)

    return jax.vmap(jax.jacfwd(potentials))(x)


def project_onto_gradients(x, v, *, degree: int = 4, ridge: float = 1e-10):
    """Least-squares gradient part of the field v at samples x of P: returns (∇φ(x), coeffs).

    min_α mean‖v − Σ_j α_j ∇ψ_j(x)‖² over polynomial potentials ψ_j (degree ≤ ``degree``).
    """
    center = jnp.mean(x, 0)
    scale = jnp.std(x, 0) + 1e-12
    G = potential_gradients(x, center, scale, degree)  # (N, B, d)
    n = x.shape[0]
    gram = jnp.einsum("nbd,ncd->bc", G, G) / n
    rhs = jnp.einsum("nbd,nd->b", G, v) / n
    gram = gram + ridge * jnp.trace(gram) / gram.shape[0] * jnp.eye(gram.shape[0], dtype=x.dtype)
    alpha = jnp.linalg.solve(gram, rhs)
    return jnp.einsum("nbd,b->nd", G, alpha), alpha
