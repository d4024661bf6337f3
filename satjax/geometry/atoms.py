"""W_1 between two weightings of the same atoms, with its time derivative and gradient: exactly
(network simplex, host) or bracketed on the device (Sinkhorn).

The Lagrangian density transport of the n-D speed-accuracy relation (docs/theory.md §6.4)
carries the cells of a grid at t = 0 along the probability-flow ODE: at time t both P_t and
P̃_t are weightings of the same moving atoms X_t(x_i) (masses a_i of P_t, b_i of P̃_t, fixed
along the flow). By Kantorovich–Rubinstein duality W_1 depends only on the signed measure
a − b, so the common mass cancels and the linear program runs between the atoms where
a − b > 0 and those where a − b < 0 (exact network simplex, POT, on the host).

With the optimal plan π and dual potential φ (φ = u on the positive atoms, −v on the negative
ones, so that W_1 = Σ φ_i (a_i − b_i)), the envelope theorem gives

    W_1 = Σ_k π_k |x_{i_k} − x_{j_k}|,   dW_1 = Σ_k π_k d|x_{i_k} − x_{j_k}| + Σ_i φ_i d(a_i − b_i),

so :func:`w1_same_atoms` (``lp="simplex"``) returns a value whose JAX derivative with respect
to the atoms and the masses is that of the linear program (exact wherever the optimal basis is
locally unique), and the rate dW_1/dt = Σ_k π_k r_k, r_k = (x_i − x_j)·(v_i − v_j)/|x_i − x_j|,
when the atoms move with velocities v at fixed masses. On a fixed basis π is linear in the
masses, so Σ_k π_k r_k = Σ_i Ψ_i (a − b)_i with Ψ_i − Ψ_j = r_k on the basis arcs (the tree
potentials of r); the rate's derivative then holds both Σ π dr and Σ Ψ d(a − b).

``lp="sinkhorn"`` solves the same program on the device, without a host callback
(:func:`satjax.geometry.distances.w1_bracket`, ott-jax): W_1 is the midpoint of a certified
bracket (a rounded feasible plan above, a c-transformed dual below) and its error the
half-width; the rate is Σ π r of the rounded entropic plan, its error the change from a solve at
3 ε (the rate of an entropic plan converges to the exact one only as ε → 0: about 0.5 % off at
the default ε, ``benchmarks/lp_device.py``). W_1's derivative is the envelope above with the
rounded plan for π and the c-transformed dual pair for φ (φ on the positive atoms, −ψ on the
negative ones): an approximation of the exact program's derivative, 1–3 % off at the default ε
(tests/test_bound_atoms.py, tests/test_bound_grid.py). The rate and its error carry no
derivative (the rate's dependence on the masses through an entropic plan is not available):
they are computed from stop-gradient'ed inputs, so their derivative is zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from satjax._util import host_batched, host_threads, map_in_batches
from satjax.geometry import distances

# the linear programs: exact network simplex (POT, host) or the Sinkhorn bracket (on device)
LPS = ("simplex", "sinkhorn")

# atoms whose |a − b| is below this fraction of the largest are left out of the program
RELATIVE_CUTOFF = 1e-13

# the simplex programs that run at once (parallel host threads) hold at most this many bytes
PARALLEL_LP_BYTES = 2 << 30


def _program_bytes(n_atoms: int) -> int:
    half = (n_atoms + 1) // 2
    return 2 * 8 * half * half


def programs_at_once(n_atoms: int, lp: str = "simplex") -> int:
    """How many programs over ``n_atoms`` atoms :func:`map_programs` solves at once: with the
    simplex one per host thread (:func:`satjax._util.host_threads`) while their cost matrices
    and plans fit in ``PARALLEL_LP_BYTES``; with Sinkhorn one (one dense program alive)."""
    if lp != "simplex":
        return 1
    return max(1, min(host_threads(), PARALLEL_LP_BYTES // _program_bytes(n_atoms)))


def map_programs(fn, xs, lp: str, n_atoms: int):
    """``fn`` over the leading axis of ``xs``, each call solving one program over ``n_atoms``
    atoms: :func:`programs_at_once` at a time (the simplex's batch reaches the host as one call,
    its programs solved in parallel threads with the numbers of one at a time)."""
    return map_in_batches(fn, xs, programs_at_once(n_atoms, lp))


def lp_bytes(n_atoms: int, lp: str = "simplex", dim: int = 2) -> int:
    """Peak memory of the programs over ``n_atoms`` atoms that run at once. Simplex (host):
    :func:`programs_at_once` programs, each with the cost matrix and the dense plan between the
    positive and negative atoms (worst case half and half), 8 bytes each. Sinkhorn (device), one
    program: about 9 + 2·``dim`` dense N × N arrays (differences, distances,
    kernel, plans, pair rates, the envelope's distances); a derivative adds the tangents of a
    few of them."""
    if lp == "sinkhorn":
        return 8 * (9 + 2 * dim) * n_atoms * n_atoms
    return programs_at_once(n_atoms) * _program_bytes(n_atoms)


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
    return jax.pure_callback(host_batched(_tree_potentials_host, (1, 1, 1, 1)),
                             jax.ShapeDtypeStruct(pi.shape, dt), i, j, sg(pi), sg(r),
                             vmap_method="expand_dims")


def optimal_plan(x, a, b):
    """(i, j, π, φ, converged) of W_1(a, b) on the atoms x (host callback; no gradient; under
    ``vmap`` the batch's programs are solved in parallel host threads, :func:`map_programs`).

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
    return jax.pure_callback(host_batched(_plan_host, (2, 1, 1)), shapes, sg(x), sg(a), sg(b),
                             vmap_method="expand_dims")


def default_lp() -> str:
    """The linear program "auto" takes: the exact network simplex on CPU (there 25-45 times
    faster than the Sinkhorn bracket at 512-2048 atoms, ``benchmarks/lp_device.py``), the
    Sinkhorn bracket on accelerators (no host callback)."""
    return "simplex" if jax.default_backend() == "cpu" else "sinkhorn"


def _pair_distances(x):
    """|x_i − x_j| (N, N) with a derivative that is 0, not NaN, on the diagonal."""
    sq = jnp.sum((x[:, None] - x[None]) ** 2, -1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _pair_rates(x, v, dist):
    """r_ij = (x_i − x_j)·(v_i − v_j)/|x_i − x_j| (N, N), 0 on the diagonal (``dist``: the
    pair distances)."""
    r = jnp.sum((x[:, None] - x[None]) * (v[:, None] - v[None]), -1)
    return jnp.where(dist > 0, r / jnp.where(dist > 0, dist, 1.0), 0.0)


def _w1_bracketed(x, a, b, v, a_rate):
    """The ``lp="sinkhorn"`` branch of :func:`w1_same_atoms` (module docstring)."""
    sg = jax.lax.stop_gradient
    d = a / jnp.sum(a) - b / jnp.sum(b)
    mu, nu = jnp.maximum(sg(d), 0.0), jnp.maximum(-sg(d), 0.0)
    s = jnp.sum(mu)
    s_safe = jnp.maximum(s, jnp.finfo(d.dtype).tiny)
    br = distances.w1_bracket(x, x, mu / s_safe, nu / s_safe)  # (its inputs stop-gradient'ed)
    w1 = s * (br.lower + br.upper) / 2
    err = s * (br.upper - br.lower) / 2
    ok = jnp.where(jnp.isfinite(w1) & jnp.isfinite(err), 1.0, 0.0)
    # the envelope of the program with the rounded plan P = s·plan and the dual potential
    # (φ on the positive atoms, −ψ on the negative ones): dW_1 = Σ P_ij d|x_i − x_j| + Σ pot·dd
    # (w1, err, s, br and pot depend on stop-gradient'ed inputs only: constants to autodiff)
    pot = jnp.where(sg(d) >= 0, br.phi, -br.psi)
    pot = jnp.where(jnp.isfinite(pot), pot, 0.0)
    dist = _pair_distances(x)
    w1 = w1 + jnp.sum(s * br.plan * (dist - sg(dist))) + pot @ (d - sg(d))
    rate, rate_err = None, jnp.zeros_like(w1)
    if v is not None:  # no derivative (module docstring): from stop-gradient'ed inputs
        a, a_rate = sg(a), None if a_rate is None else sg(a_rate)
        r = _pair_rates(sg(x), sg(v), sg(dist))
        rate = s * jnp.sum(br.plan * r)
        coarse = distances.w1_bracket(x, x, mu / s_safe, nu / s_safe,
                                      relative_epsilon=3 * distances.W1_BRACKET_RELATIVE_EPSILON)
        rate_err = jnp.abs(rate - s * jnp.sum(coarse.plan * r))
        if a_rate is not None:  # the envelope term Σ Φ_i d/dt(a_i/Σa), Φ the dual potential
            A = jnp.sum(a)
            rate = rate + pot @ (a_rate / A - a * jnp.sum(a_rate) / A**2)
    return w1, rate, ok, err, rate_err


def w1_same_atoms(x, a, b, v=None, a_rate=None, *, lp: str = "simplex"):
    """W_1 between the weightings ``a`` and ``b`` (N,) of atoms ``x`` (N, d) (each normalised);
    with velocities ``v`` (N, d) also dW_1/dt, at fixed masses or, with ``a_rate`` (N,) =
    da/dt, with ``a`` changing too (the envelope term Σ φ_i d/dt(a_i/Σa)).

    ``lp``: "simplex", the exact program on the host, differentiable (envelope theorem, module
    docstring; the rate's derivative omits that of φ); or "sinkhorn", a certified bracket on the
    device whose W_1 has the envelope derivative of the rounded plan and dual (1–3 % off the
    exact one) and whose rate has none (zero). Returns (W_1, rate or None, converged, W_1's
    error, the rate's error); the errors are 0 for the exact program."""
    if lp not in LPS:
        raise ValueError(f"`lp` must be one of {LPS}; got {lp!r}")
    if lp == "sinkhorn":
        return _w1_bracketed(x, a, b, v, a_rate)
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
    z = jnp.zeros_like(w1)
    return w1, rate, ok, z, z


__all__ = ["LPS", "PARALLEL_LP_BYTES", "RELATIVE_CUTOFF", "default_lp", "lp_bytes",
           "map_programs", "optimal_plan", "programs_at_once", "w1_same_atoms"]
