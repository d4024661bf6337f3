"""W_1 between two weightings of the same atoms, exactly, with its time derivative and gradient.

The Lagrangian density transport of the n-D speed-accuracy relation (docs/theory.md §6.4)
carries the cells of a grid at t = 0 along the probability-flow ODE: at time t both P_t and
P̃_t are weightings of the same moving atoms X_t(x_i) (masses a_i of P_t, b_i of P̃_t, fixed
along the flow). By Kantorovich–Rubinstein duality W_1 depends only on the signed measure
a − b, so the common mass cancels and the linear program runs between the atoms where
a − b > 0 and those where a − b < 0 (exact network simplex, POT, on the host).

With the optimal plan π and dual potential φ (φ = u on the positive atoms, −v on the negative
ones, so that W_1 = Σ φ_i (a_i − b_i)), the envelope theorem gives

    W_1 = Σ_k π_k |x_{i_k} − x_{j_k}|,   dW_1 = Σ_k π_k d|x_{i_k} − x_{j_k}| + Σ_i φ_i d(a_i − b_i),

so :func:`w1_same_atoms` returns a value whose JAX derivative with respect to the atoms and
the masses is that of the linear program (exact wherever the optimal basis is locally unique),
and the rate dW_1/dt = Σ_k π_k r_k, r_k = (x_i − x_j)·(v_i − v_j)/|x_i − x_j|, when the atoms
move with velocities v at fixed masses. On a fixed basis π is linear in the masses, so
Σ_k π_k r_k = Σ_i Ψ_i (a − b)_i with Ψ_i − Ψ_j = r_k on the basis arcs (the tree potentials
of r); the rate's derivative then holds both Σ π dr and Σ Ψ d(a − b).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# atoms whose |a − b| is below this fraction of the largest are left out of the program
RELATIVE_CUTOFF = 1e-13


def lp_bytes(n_atoms: int) -> int:
    """Peak host memory of one program over ``n_atoms`` atoms (worst case: half positive, half
    negative; the cost matrix and the dense plan, 8 bytes each)."""
    half = (n_atoms + 1) // 2
    return 2 * 8 * half * half


def _plan_host(x, a, b):
    """Sparse optimal plan (i, j, π) padded to len(a) and the dual potential φ (host, NumPy)."""
    import ot

    x = np.asarray(x, np.float64)
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    n = a.shape[0]
    d = a / a.sum() - b / b.sum()
    cut = RELATIVE_CUTOFF * np.abs(d).max()
    pos, neg = np.flatnonzero(d > cut), np.flatnonzero(d < -cut)
    out_i = np.zeros(n, np.int32)
    out_j = np.zeros(n, np.int32)
    out_p = np.zeros(n, np.float64)
    phi = np.zeros(n, np.float64)
    if pos.size == 0 or neg.size == 0:
        return out_i, out_j, out_p, phi, np.float64(0.0)
    mp, mm = d[pos], -d[neg]
    s = 0.5 * (mp.sum() + mm.sum())
    cost = ot.dist(x[pos], x[neg], metric="euclidean")
    plan, log = ot.emd(mp / mp.sum(), mm / mm.sum(), cost, numItermax=50_000_000, log=True)
    ok = np.float64(1.0 if log["warning"] is None else 0.0)
    r, c = np.nonzero(plan)
    k = min(r.size, n)
    out_i[:k], out_j[:k], out_p[:k] = pos[r[:k]], neg[c[:k]], s * plan[r[:k], c[:k]]
    phi[pos] = log["u"]
    phi[neg] = -log["v"]
    return out_i, out_j, out_p, phi, ok


def _tree_potentials_host(i, j, pi, r):
    """Ψ with Ψ_i − Ψ_j = r_k on every arc k = (i, j) of the plan's support (a forest: one
    breadth-first pass per tree, root potential 0)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    i, j = np.asarray(i), np.asarray(j)
    pi, r = np.asarray(pi, np.float64), np.asarray(r, np.float64)
    n = pi.shape[0]
    use = pi > 0
    i, j, r = i[use], j[use], r[use]
    psi = np.zeros(n, np.float64)
    if i.size == 0:
        return psi
    # undirected adjacency; the arc value says how the potential changes from i to j
    rows = np.concatenate([i, j])
    cols = np.concatenate([j, i])
    vals = np.concatenate([-r, r])  # Ψ_j = Ψ_i − r along i → j; Ψ_i = Ψ_j + r along j → i
    lookup = {(a, b): v for a, b, v in zip(rows.tolist(), cols.tolist(), vals.tolist())}
    graph = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
    seen = np.zeros(n, bool)
    for root in np.unique(np.concatenate([i, j])):
        if seen[root]:
            continue
        order, pred = breadth_first_order(graph, root, directed=False, return_predecessors=True)
        for node in order[1:]:
            psi[node] = psi[pred[node]] + lookup[(int(pred[node]), int(node))]
        seen[order] = True
    return psi


def _tree_potentials(i, j, pi, r):
    dt = jnp.result_type(float)
    sg = jax.lax.stop_gradient
    return jax.pure_callback(_tree_potentials_host, jax.ShapeDtypeStruct(pi.shape, dt),
                             i, j, sg(pi), sg(r))


def optimal_plan(x, a, b):
    """(i, j, π, φ, converged) of W_1(a, b) on the atoms x (host callback; no gradient).

    ``π`` (N,) holds the plan's nonzero masses (at most N − 1 of them, the rest 0) between
    atoms ``i`` and ``j``; ``φ`` (N,) is the dual potential; ``converged`` is 1.0 when the
    network simplex reached its optimum.
    """
    n = a.shape[0]
    dt = jnp.result_type(float)
    shapes = (jax.ShapeDtypeStruct((n,), jnp.int32), jax.ShapeDtypeStruct((n,), jnp.int32),
              jax.ShapeDtypeStruct((n,), dt), jax.ShapeDtypeStruct((n,), dt),
              jax.ShapeDtypeStruct((), dt))
    sg = jax.lax.stop_gradient
    return jax.pure_callback(_plan_host, shapes, sg(x), sg(a), sg(b))


def w1_same_atoms(x, a, b, v=None, a_rate=None):
    """W_1 between the weightings ``a`` and ``b`` (N,) of atoms ``x`` (N, d) (each normalised),
    differentiable (envelope theorem, module docstring); with velocities ``v`` (N, d) also
    dW_1/dt, at fixed masses or, with ``a_rate`` (N,) = da/dt, with ``a`` changing too (the
    envelope term Σ φ_i d/dt(a_i/Σa); its derivative omits that of φ). Returns (W_1, rate or
    None, converged)."""
    i, j, pi, phi, ok = optimal_plan(x, a, b)
    diff = x[i] - x[j]
    dist = jnp.sqrt(jnp.sum(diff**2, -1) + 1e-300)
    d = a / jnp.sum(a) - b / jnp.sum(b)
    w1 = pi @ dist + phi @ (d - jax.lax.stop_gradient(d))
    rate = None
    if v is not None:
        r = jnp.sum(diff * (v[i] - v[j]), -1) / dist
        # Σ π r with the plan's dependence on the masses: on a fixed basis π is linear in the
        # masses and Σ_k π_k r_k = Σ_i Ψ_i (a − b)_i with Ψ the tree potentials of r
        psi = _tree_potentials(i, j, pi, r)
        rate = pi @ r + psi @ (d - jax.lax.stop_gradient(d))
        if a_rate is not None:
            A = jnp.sum(a)
            rate = rate + phi @ (a_rate / A - a * jnp.sum(a_rate) / A**2)
    return w1, rate, ok


__all__ = ["RELATIVE_CUTOFF", "lp_bytes", "optimal_plan", "w1_same_atoms"]
