"""Finite-volume W2 speed in 2-D (satjax.geometry.grid) against closed forms and quadrature.

References are derived independently of the solver: Lyapunov closed forms (scipy) for Gaussians,
a closed form for a plane wave under a Gaussian, and numpy trapezoid sums of analytic integrands
for a Gaussian mixture, where ν = ∇ψ + (1/P) J∇(P g) has the exact projection ∇ψ.
Tolerances come from the convergence study in the module (MEASURED_ACCURACY), with ~4× margin.
"""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import solve_continuous_lyapunov

from satjax.geometry import grid as G

jax.config.update("jax_enable_x64", True)

# ------------------------------------------------------------------ problem 1: Gaussian, affine ν

MU = np.array([0.3, -0.2])
_TH = 0.4
_ROT = np.array([[np.cos(_TH), -np.sin(_TH)], [np.sin(_TH), np.cos(_TH)]])
SIGMA = _ROT @ np.diag([1.0, 0.25]) @ _ROT.T  # stds 1 and 0.5, rotated
B_VEC = np.array([0.5, -0.3])


def _b_mat(rot):
    """Non-symmetric B: symmetric part plus `rot` × rotation generator."""
    return np.array([[0.2, 0.3], [0.3, -0.3]]) + rot * np.array([[0.0, 1.0], [-1.0, 0.0]])


def gauss_field(x, rot):
    B = jnp.asarray(_b_mat(0.0)) + rot * jnp.array([[0.0, 1.0], [-1.0, 0.0]])
    d = x - MU
    Si = np.linalg.inv(SIGMA)
    lp = (-0.5 * jnp.einsum("ni,ij,nj->n", d, Si, d) - 0.5 * np.log(np.linalg.det(SIGMA))
          - np.log(2 * np.pi))
    return lp, B_VEC + d @ B.T


def gauss_reference(rot):
    B = _b_mat(rot)
    L = solve_continuous_lyapunov(SIGMA, B @ SIGMA + SIGMA @ B.T)  # L Σ + Σ L = B Σ + Σ Bᵀ
    assert np.allclose(L, L.T)
    v2 = B_VEC @ B_VEC + np.trace(L @ SIGMA @ L)
    kin = B_VEC @ B_VEC + np.trace(B @ SIGMA @ B.T)
    return v2, kin


GAUSS_LO = MU - 8.0
GAUSS_HI = MU + 8.0  # ±8 widest stds


@partial(jax.jit, static_argnums=2)
def gauss_solve(rot, lo, n):
    return G.project_2d(partial(gauss_field, rot=rot), lo, lo + 16.0, n)


# ------------------------------------------------------- problem 2: mixture, ν = ∇ψ + (1/P)J∇(Pg)

W = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[-1.5, 0.0], [1.5, 0.5], [0.0, -1.2]])
SDS = np.array([[0.6, 0.4], [0.3, 0.5], [0.8, 0.25]])  # per-axis stds (diagonal covariances)


def mix_logp(x, shift):
    means = jnp.asarray(MEANS).at[0].add(shift)
    d = (x[:, None, :] - means) / SDS
    lc = -0.5 * jnp.sum(d**2, -1) - np.log(2 * np.pi * SDS.prod(-1)) + np.log(W)
    return jax.scipy.special.logsumexp(lc, axis=1)


def _psi(x):
    return jnp.sin(0.8 * x[0] + 0.3 * x[1]) + 0.25 * x[0] * x[1] + 0.05 * x[0] ** 3


def _g(x):
    return jnp.cos(0.5 * x[0]) + 0.3 * x[1]


def mix_field(x, params):
    """ν = a ∇ψ + c (1/P) J ∇(P g) = a ∇ψ + c J(∇g + g ∇log P); ∇·(P J∇(Pg)) = 0."""
    lp = mix_logp(x, params["shift"])
    glp = jax.vmap(jax.grad(lambda y: mix_logp(y[None], params["shift"])[0]))(x)
    q = jax.vmap(jax.grad(_g))(x) + jax.vmap(_g)(x)[:, None] * glp
    w = jnp.stack([-q[:, 1], q[:, 0]], -1)
    return lp, params["a"] * jax.vmap(jax.grad(_psi))(x) + params["c"] * w


def mix_params(a=1.0, c=1.0, shift=(0.0, 0.0)):
    return {"a": jnp.asarray(a), "c": jnp.asarray(c), "shift": jnp.asarray(shift)}


@partial(jax.jit, static_argnums=3)
def mix_solve(params, lo, hi, n):
    return G.project_2d(partial(mix_field, params=params), lo, hi, n)


def _np_mixture(X, Y):
    P = np.zeros_like(X)
    GX = np.zeros_like(X)
    GY = np.zeros_like(X)
    for k in range(3):
        dx = (X - MEANS[k, 0]) / SDS[k, 0]
        dy = (Y - MEANS[k, 1]) / SDS[k, 1]
        pk = W[k] * np.exp(-0.5 * (dx**2 + dy**2)) / (2 * np.pi * SDS[k].prod())
        P += pk
        GX -= pk * dx / SDS[k, 0]
        GY -= pk * dy / SDS[k, 1]
    return P, GX, GY


def _np_reference(m):
    """(mass, E|∇ψ|², E|w|², E[∇ψ·w]) by a trapezoid sum on an m × m grid over ±10 widest stds."""
    lo = MEANS.min(0) - 10 * SDS.max()
    hi = MEANS.max(0) + 10 * SDS.max()
    x = np.linspace(lo[0], hi[0], m)
    y = np.linspace(lo[1], hi[1], m)
    X, Y = np.meshgrid(x, y, indexing="ij")
    P, GX, GY = _np_mixture(X, Y)
    u = 0.8 * X + 0.3 * Y
    px = 0.8 * np.cos(u) + 0.25 * Y + 0.15 * X**2
    py = 0.3 * np.cos(u) + 0.25 * X
    g = np.cos(0.5 * X) + 0.3 * Y
    qx = -0.5 * np.sin(0.5 * X) + g * GX / P
    qy = 0.3 + g * GY / P
    wx, wy = -qy, qx
    dA = (x[1] - x[0]) * (y[1] - y[0])
    return (np.sum(P) * dA, np.sum(P * (px**2 + py**2)) * dA, np.sum(P * (wx**2 + wy**2)) * dA,
            np.sum(P * (px * wx + py * wy)) * dA)


@pytest.fixture(scope="module")
def mix_ref():
    a = _np_reference(900)
    b = _np_reference(1300)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)  # the reference is converged
    assert abs(b[0] - 1) < 1e-12 and abs(b[3]) < 1e-12  # normalised; ∇ψ ⊥ w in L²(P)
    return {"v2": b[1], "rot": b[2]}


MIX_LO, MIX_HI = G.mixture_box(MEANS, SDS, z=8.0)

# ------------------------------------------------------- problem 4: plane wave (clean h² error)

WAVE_SD = np.array([1.0, 0.5])
WAVE_K = np.array([1.0, 2.0])


def wave_field(x):
    """P = N(0, diag(WAVE_SD²)), ψ = sin(k·x), ν = ∇ψ + (1/P) J∇(P sin(k·x))."""
    lp = -0.5 * jnp.sum((x / WAVE_SD) ** 2, -1) - np.log(2 * np.pi * WAVE_SD.prod())
    u = x @ WAVE_K
    q = jnp.cos(u)[:, None] * WAVE_K - jnp.sin(u)[:, None] * x / WAVE_SD**2
    return lp, jnp.cos(u)[:, None] * WAVE_K + jnp.stack([-q[:, 1], q[:, 0]], -1)


def wave_v2():
    """E|∇ψ|² = |k|² E cos²(k·x) = |k|²/2 (1 + exp(−2 kᵀΣk))."""
    return 0.5 * WAVE_K @ WAVE_K * (1 + np.exp(-2 * np.sum(WAVE_K**2 * WAVE_SD**2)))


# ------------------------------------------------------------------------------------------ tests

# field_fn and n static (one compilation per call site; eager dispatch is slower than compiling)
solve = jax.jit(G.project_2d, static_argnums=(0, 3), static_argnames=("max_iter",))


def test_gaussian_affine_closed_form():
    """Test 1: v_2² = |b|² + tr(LΣL), E|ν|² = |b|² + tr(BΣBᵀ); error ∝ h⁴ (measured 1.9e-6)."""
    rot = 0.7
    v2, kin = gauss_reference(rot)
    out = gauss_solve(rot, GAUSS_LO, 128)  # h = σ_min / 4
    assert bool(out.converged) and float(out.residual) <= 1e-10
    assert bool(out.covered) and abs(float(out.mass) - 1) < 1e-12
    assert float(out.boundary_density) < 1e-13
    np.testing.assert_allclose(float(out.kinetic), kin, rtol=1e-10)
    np.testing.assert_allclose(float(out.speed_sq), v2, rtol=1e-5)
    np.testing.assert_allclose(float(out.rotational), kin - v2, rtol=1e-5 * kin / (kin - v2))
    np.testing.assert_allclose(np.asarray(out.h), [0.125, 0.125], rtol=1e-14)
    # Dφ-form of the definition agrees with kinetic − R at the solution: rotational ≥ 0
    assert float(out.rotational) > 0


def test_mixture_divergence_free_part(mix_ref):
    """Test 2: non-Gaussian P, ν = ∇ψ + w with ∇·(Pw) = 0: v_2² = E|∇ψ|², R = E|w|²."""
    out = mix_solve(mix_params(), MIX_LO, MIX_HI, 256)  # ≈ 4 cells per narrowest std
    assert bool(out.converged) and bool(out.covered)
    np.testing.assert_allclose(float(out.kinetic), mix_ref["v2"] + mix_ref["rot"], rtol=1e-9)
    np.testing.assert_allclose(float(out.speed_sq), mix_ref["v2"], rtol=3e-5)  # measured 8.0e-6
    np.testing.assert_allclose(float(out.rotational), mix_ref["rot"], rtol=3e-6)  # meas. 6.5e-7


def test_pure_gradient_has_no_rotational_part(mix_ref):
    """Test 3: ν = ∇ψ: R_h = O(h⁴) (Dψ − ∂ψ = h²ψ'''/24), speed_sq = kinetic − R_h."""
    p = mix_params(c=0.0)
    o1 = mix_solve(p, MIX_LO, MIX_HI, 128)
    o2 = mix_solve(p, MIX_LO, MIX_HI, 256)
    for o in (o1, o2):
        assert bool(o.converged)
        assert 0 <= float(o.rotational) < 1e-8 * float(o.kinetic)  # measured 1.1e-9, 6.6e-11
        np.testing.assert_allclose(float(o.speed_sq), mix_ref["v2"], rtol=1e-8)
    ratio = float(o1.rotational) / float(o2.rotational)
    assert 10 < ratio < 25  # fourth order (measured 16.0)


def test_second_order_convergence():
    """Test 4: plane wave through a Gaussian has a clean h² error (measured ratio 3.89 at 64→128);
    the Gaussian-affine case converges faster (h⁴, exact quadratic potential)."""
    conv = jax.jit(lambda: G.project_2d_converged(wave_field, -8.0 * jnp.ones(2),
                                                  8.0 * jnp.ones(2), 128))()
    assert bool(conv.converged)
    v2 = wave_v2()
    e_fine = float(conv.fine.speed_sq) - v2
    e_coarse = float(conv.coarse.speed_sq) - v2
    assert 3.5 < e_coarse / e_fine < 4.5
    assert abs(e_fine) / v2 < 2e-3  # measured 1.49e-3 at 4 cells per narrowest std
    # in the asymptotic regime |fine − coarse| / 3 estimates the fine error
    assert 0.8 < float(conv.speed_sq_error) / abs(e_fine) < 1.3
    np.testing.assert_allclose(float(conv.speed_sq_rel_error),
                               float(conv.speed_sq_error) / float(conv.fine.speed_sq))
    # Gaussian, affine ν: at least 4× per halving (measured 16×)
    v2g, _ = gauss_reference(0.7)
    eg = [abs(float(gauss_solve(0.7, GAUSS_LO, n).speed_sq) / v2g - 1) for n in (32, 64)]
    assert eg[0] / eg[1] > 4


def test_gradient_matches_finite_differences():
    """Test 5: envelope-theorem gradients (no differentiation through CG) vs central FD."""
    n = 64

    def outputs(theta, lo):
        p = mix_params(c=theta[0], shift=theta[1:])
        o = G.project_2d(partial(mix_field, params=p), lo, lo + (MIX_HI - MIX_LO), n, tol=1e-12)
        return jnp.stack([o.speed_sq, o.rotational])

    theta = jnp.array([0.8, 0.2, -0.1])
    lo = jnp.asarray(MIX_LO)
    jac_t, jac_lo = jax.jit(jax.jacrev(outputs, argnums=(0, 1)))(theta, lo)
    f = jax.jit(outputs)
    eps = 1e-5
    fd_t = np.stack([(f(theta.at[i].add(eps), lo) - f(theta.at[i].add(-eps), lo)) / (2 * eps)
                     for i in range(3)], -1)
    fd_lo = np.stack([(f(theta, lo.at[i].add(eps)) - f(theta, lo.at[i].add(-eps))) / (2 * eps)
                      for i in range(2)], -1)
    scale = np.abs(fd_t).max(axis=1, keepdims=True)  # per output
    np.testing.assert_allclose(np.asarray(jac_t), fd_t, rtol=1e-6, atol=1e-7 * scale.max())
    assert np.all(np.abs(np.asarray(jac_t) - fd_t) <= 1e-6 * scale)
    np.testing.assert_allclose(np.asarray(jac_lo), fd_lo, rtol=1e-4, atol=1e-9)
    assert np.all(np.abs(fd_t[:, 1:]) > 1e-3)  # the mean shift really moves both outputs


def test_jit_vmap_and_no_retrace():
    """Test 6: vmap over parameter values equals separate calls; values alone never retrace."""
    n = 32
    traces = []

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batch(cs, shifts):
        traces.append(1)

        def one(c, s):
            o = G.project_2d(partial(mix_field, params=mix_params(c=c, shift=s)),
                             MIX_LO, MIX_HI, n)
            return o.speed_sq, o.rotational, o.converged, o.iterations
        return jax.vmap(one)(cs, shifts)

    cs = jnp.array([0.0, 0.5, 1.0])
    shifts = jnp.array([[0.0, 0.0], [0.3, -0.2], [-0.4, 0.1]])
    s_b, r_b, c_b, it_b = batch(cs, shifts)
    batch(cs + 0.1, shifts * 0.5)  # new values, same shapes: cached
    assert len(traces) == 1
    assert np.all(np.asarray(c_b))
    for i in range(3):
        o = mix_solve(mix_params(c=cs[i], shift=shifts[i]), MIX_LO, MIX_HI, n)
        np.testing.assert_allclose([float(s_b[i]), float(r_b[i])],
                                   [float(o.speed_sq), float(o.rotational)], rtol=1e-12)
        assert int(it_b[i]) == int(o.iterations)


def test_box_not_covering_mass_is_flagged():
    """Test 7a: a box missing half the Gaussian reports mass ≈ 1/2 and covered = False."""
    out = solve(partial(gauss_field, rot=0.7), jnp.array([MU[0], MU[1] - 8.0]),
                jnp.array([MU[0] + 8.0, MU[1] + 8.0]), 32)
    assert bool(out.converged)
    assert abs(float(out.mass) - 0.5) < 1e-3 and not bool(out.covered)
    assert float(out.boundary_density) > 0.5
    small = solve(partial(gauss_field, rot=0.7), MU + 3.0, MU + 4.0, 16)
    assert float(small.mass) < 1e-2 and not bool(small.covered)


def _with_nan(field_fn, where_fn, in_logp):
    def f(x):
        lp, v = field_fn(x)
        bad = where_fn(x)
        if in_logp:
            return jnp.where(bad, jnp.nan, lp), v
        return lp, jnp.where(bad[:, None], jnp.nan, v)
    return f


def test_non_finite_inputs():
    """Test 7b: NaN where P matters gives converged = False and NaN outputs; NaN velocities
    where the density has underflowed (log p = −inf) are ignored."""
    base = partial(gauss_field, rot=0.7)
    near_mean = lambda x: jnp.all(jnp.abs(x - MU) < 0.3, -1)  # noqa: E731
    lo, hi = GAUSS_LO, GAUSS_HI
    for in_logp in (True, False):
        o = solve(_with_nan(base, near_mean, in_logp), lo, hi, 32)
        assert not bool(o.converged)
        assert np.isnan(float(o.speed_sq)) and np.isnan(float(o.rotational))

    def zero_density_tail(x):
        lp, v = base(x)
        tail = x[:, 0] > MU[0] + 6.0
        return jnp.where(tail, -jnp.inf, lp), jnp.where(tail[:, None], jnp.nan, v)

    o = solve(zero_density_tail, lo, hi, 32)
    ref = gauss_solve(0.7, lo, 32)
    assert bool(o.converged)
    np.testing.assert_allclose(float(o.speed_sq), float(ref.speed_sq), rtol=1e-8)


def test_unconverged_is_reported_and_a_lower_bound():
    """max_iter too small: converged = False, residual > tol, speed_sq ≤ the converged one."""
    full = gauss_solve(0.7, GAUSS_LO, 32)
    cut = solve(partial(gauss_field, rot=0.7), GAUSS_LO, GAUSS_HI, 32, max_iter=5)
    assert bool(full.converged) and not bool(cut.converged)
    assert int(cut.iterations) == 5 and float(cut.residual) > 1e-10
    assert float(cut.speed_sq) <= float(full.speed_sq)
    np.testing.assert_allclose(float(cut.kinetic), float(full.kinetic), rtol=1e-13)


def test_zero_velocity():
    out = solve(lambda x: (gauss_field(x, 0.0)[0], jnp.zeros_like(x)), GAUSS_LO, GAUSS_HI, 16)
    assert bool(out.converged) and int(out.iterations) == 0
    assert float(out.speed_sq) == 0.0 and float(out.kinetic) == 0.0


def test_mixture_box_and_resolution():
    means = np.array([[0.0, 0.0], [2.0, -1.0]])
    stds = np.array([0.5, 0.25])
    lo, hi = G.mixture_box(means, stds, z=8.0)
    np.testing.assert_allclose(np.asarray(lo), [-4.0, -5.0])
    np.testing.assert_allclose(np.asarray(hi), [6.0, 4.0])
    # width 10, narrowest std 0.25, 4 cells per std: 160 cells
    assert G.mixture_resolution(means, stds, cells_per_std=4, multiple=8) == 160
    assert G.mixture_resolution(means, stds, cells_per_std=4, multiple=64) == 192
    # per-axis stds (K, 2) and time nodes (T, K, 2): n is the max over nodes
    stds_t = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 0.125)])
    means_t = np.stack([means, means])
    lo_t, hi_t, n = G.mixture_grid(means_t, stds_t, cells_per_std=4)
    assert lo_t.shape == (2, 2) and hi_t.shape == (2, 2)
    np.testing.assert_allclose(np.asarray(lo_t[1]), [-1.0, -2.0])
    assert n == 8 * int(np.ceil(np.ceil((2.0 + 16 * 0.125) / (0.125 / 4)) / 8))
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda m: G.mixture_resolution(m, stds))(means)
    with pytest.raises(ValueError, match="n_max"):
        G.mixture_resolution(means, np.array([0.5, 1e-4]))
    with pytest.raises(ValueError):
        G.project_2d(partial(gauss_field, rot=0.0), GAUSS_HI, GAUSS_LO, 8)
