"""The W2 speed of a path by projection onto polynomial gradients, from samples (Eq. 65–68).

v_2(t)² = E_{P_t}‖∇φ_t‖², ∇φ_t the L²(P_t) projection of ν_t onto gradient fields, so
E‖ν‖² = v_2² + R with R = min_ψ E‖ν − ∇ψ‖² the rotational part (docs/theory.md §5). For a
linear force ν = ∇(·) + K x with K = (A − Aᵀ)/2 the circulation, so only r(x) = K x needs
projecting: R = min_ψ E‖K x − ∇ψ‖².

Here R is estimated from samples of P_t by least squares over gradients of monomials up to a
degree, fitted on one half of the samples and evaluated on the other (cross-fitting): the
held-out residual of a fitted projection is an unbiased estimate of its population residual,
which is ≥ R (a finite basis cannot do better than all gradients). Hence E‖ν‖² − R_held-out is
a **lower estimate** of v_2² (biased low by the basis truncation); the degree is chosen per time
node to minimise the held-out residual, and the in-sample residual is returned too (its gap to
the held-out one measures over-fitting). The exact 2-D reference is the weighted Poisson solve
of :mod:`satjax.geometry.grid`.
"""

from __future__ import annotations

import itertools
from math import comb

import jax
import jax.numpy as jnp

from satjax.pytree import Node


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


def basis_size(dim: int, degree: int) -> int:
    """Number of monomials of total degree 1..degree in ``dim`` variables."""
    return comb(dim + degree, degree) - 1


def max_degree(dim: int, max_basis: int, cap: int = 8) -> int:
    """The largest degree ≤ ``cap`` whose basis has at most ``max_basis`` functions (≥ 1)."""
    deg = 1
    while deg < cap and basis_size(dim, deg + 1) <= max_basis:
        deg += 1
    return deg


def potential_gradients(x, center, scale, degree: int):
    """Gradients of the monomial potentials at points x (N, d): shape (N, n_basis, d)."""
    ex = jnp.asarray(monomial_exponents(x.shape[-1], degree), dtype=x.dtype)  # (B, d)

    def potentials(xi):
        z = (xi - center) / scale
        return jnp.prod(z[None, :] ** ex, axis=-1)

    return jax.vmap(jax.jacfwd(potentials))(x)


def _fit(G, r, ridge):
    n = G.shape[0]
    gram = jnp.einsum("nbd,ncd->bc", G, G) / n
    rhs = jnp.einsum("nbd,nd->b", G, r) / n
    gram = gram + ridge * jnp.trace(gram) / gram.shape[0] * jnp.eye(gram.shape[0], dtype=G.dtype)
    return jnp.linalg.solve(gram, rhs)


def project_onto_gradients(x, v, *, degree: int = 4, ridge: float = 1e-10):
    """Least-squares gradient part of v at samples x: returns (∇φ(x) (N, d), coefficients).

    min_α mean‖v − Σ_j α_j ∇ψ_j(x)‖² over monomial potentials ψ_j of degree ≤ ``degree`` in
    standardised coordinates (in-sample: fit and evaluation on the same points).
    """
    center = jnp.mean(x, 0)
    scale = jnp.std(x, 0) + 1e-12
    G = potential_gradients(x, center, scale, degree)
    alpha = _fit(G, v, ridge)
    return jnp.einsum("nbd,b->nd", G, alpha), alpha


class Projection(Node):
    """Cross-fitted rotational part at one time: ``residual`` (N,) per-sample held-out
    ‖r − ∇φ̂‖² (each sample evaluated by the fit of the other half), ``in_sample`` (the mean
    in-sample residual at the chosen degree) and ``degree`` (chosen, per the held-out
    residual)."""

    residual: jax.Array
    in_sample: jax.Array
    degree: jax.Array


def cross_fitted_residual(x, r, *, max_deg: int, ridge: float = 1e-10) -> Projection:
    """R = min_ψ E‖r − ∇ψ‖² by cross-fitting over degrees 1..``max_deg`` (module docstring).

    Args:
      x: samples of P_t (N, d), N even.
      r: the field to project at the samples (N, d), e.g. the circulation K x.
      max_deg: the largest degree tried (static).

    Returns:
      :class:`Projection`; ``mean(residual)`` is the held-out estimate of R at the degree with
      the smallest held-out residual.
    """
    n = x.shape[0] // 2
    halves = ((x[:n], r[:n]), (x[n:2 * n], r[n:2 * n]))
    center = jnp.mean(x, 0)
    scale = jnp.std(x, 0) + 1e-12
    held, inside = [], []
    for deg in range(1, max_deg + 1):
        per, ins = [], []
        for (xa, ra), (xb, rb) in (halves, halves[::-1]):
            Ga, Gb = (potential_gradients(v, center, scale, deg) for v in (xa, xb))
            alpha = _fit(Ga, ra, ridge)
            per.append(jnp.sum((rb - jnp.einsum("nbd,b->nd", Gb, alpha)) ** 2, -1))
            ins.append(jnp.mean(jnp.sum((ra - jnp.einsum("nbd,b->nd", Ga, alpha)) ** 2, -1)))
        # samples in their original order: half B evaluated by the fit on A, then A by B
        held.append(jnp.concatenate([per[1], per[0]]))
        inside.append(0.5 * (ins[0] + ins[1]))
    held, inside = jnp.stack(held), jnp.stack(inside)
    best = jnp.argmin(jnp.mean(held, 1))
    return Projection(residual=held[best], in_sample=inside[best], degree=best + 1)
