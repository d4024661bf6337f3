"""Path cost: c_2 and w_D against independent closed forms, the projection and grid estimators
of c_2 for non-conservative forces, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, linalg

from satjax import mixtures as M
from satjax import path as P
from satjax import schedules as S
from satjax.estimators import MonteCarlo, Quadrature
from satjax.forces import RotatingForce, lyapunov_speed_sq


def reference_rotating_gaussian(h, g, tfin, mu0, S0, tau=1.0):
    """w_D and c_2 for Gaussian data under Eq. 99 by scipy: ODEs for (μ, Σ), then
    E‖ν‖² = ‖Aμ‖² + tr((A + TΣ⁻¹) Σ (A + TΣ⁻¹)ᵀ) and v_2² from solve_continuous_lyapunov."""
    J = np.array([[0.0, -1.0], [1.0, 0.0]])
    T = lambda t: tfin * (t / tau) ** 2  # noqa: E731
    A = lambda t: (-h * (1 - t / tau) - T(t)) * np.eye(2) + g * (1 - t / tau) * J  # noqa: E731

    def rhs(t, y):
        mu, Sg = y[:2], y[2:].reshape(2, 2)
        return np.concatenate([A(t) @ mu, (A(t) @ Sg + Sg @ A(t).T + 2 * T(t) * np.eye(2)).ravel()])

    def state(t):
        if t == 0:
            return np.asarray(mu0), np.asarray(S0)
        sol = integrate.solve_ivp(rhs, (0, t), np.concatenate([mu0, np.ravel(S0)]), rtol=1e-12, atol=1e-13)
        return sol.y[:2, -1], sol.y[2:, -1].reshape(2, 2)

    ts, ws = np.polynomial.legendre.leggauss(40)
    ts, ws = 0.5 * tau * (ts + 1), 0.5 * tau * ws
    kin, spd = [], []
    for t in ts:
        mu, Sg = state(t)
        B = A(t) + T(t) * np.linalg.inv(Sg)
        kin.append((A(t) @ mu) @ (A(t) @ mu) + np.trace(B @ Sg @ B.T))
        dS = A(t) @ Sg + Sg @ A(t).T + 2 * T(t) * np.eye(2)
        L = linalg.solve_continuous_lyapunov(Sg, dS)  # Σ L + L Σ = Σ'
        spd.append((A(t) @ mu) @ (A(t) @ mu) + np.trace(L @ Sg @ L))
    return ws @ np.array(kin), ws @ np.array(spd)


@pytest.mark.parametrize("g", [0.0, 3.0])
def test_rotating_gaussian_closed_forms(g):
    mu0, S0 = np.array([1.0, 0.5]), np.array([[0.5, 0.1], [0.1, 0.3]])
    data = M.gaussian(mu0, cov=S0)
    pc = P.path_cost(RotatingForce.create(h=1.0, g=g, t_fin=2.0), data, n_time=64)
    assert pc.c2.method == pc.wD.method == "closed-form" and pc.c2.kind == "point"
    wD_ref, c2_ref = reference_rotating_gaussian(1.0, g, 2.0, mu0, S0)
    assert float(pc.wD.value) == pytest.approx(wD_ref, rel=1e-6)
    assert float(pc.c2.value) == pytest.approx(c2_ref, rel=1e-6)
    if g == 0:  # two closed forms (tr(BCBᵀ) and the Lyapunov speed) of one number
        assert float(pc.c2.value) == pytest.approx(float(pc.wD.value), rel=1e-10)
    else:
        assert float(pc.wD.value) > float(pc.c2.value) * 1.1


def test_projection_is_a_lower_estimate_recovering_lyapunov_speed():
    """Monte-Carlo c_2 of a non-conservative force is a cross-fitted projection onto polynomial
    gradients: a lower estimate, bracketed above by w_D. On Gaussian P_t the degree-2 basis
    (max_basis=5: the 5 monomials of degree ≤ 2 in 2-D) contains the exact gradient part of ν,
    so c_2 agrees with the Lyapunov closed form within its standard error."""
    data = M.gaussian([1.0, 0.5], cov=[[0.5, 0.1], [0.1, 0.3]])
    rf = RotatingForce.create(h=1.0, g=3.0, t_fin=2.0)
    exact = P.path_cost(rf, data, n_time=32)
    wD_ref, c2_ref = reference_rotating_gaussian(1.0, 3.0, 2.0, np.array([1.0, 0.5]),
                                                 np.array([[0.5, 0.1], [0.1, 0.3]]))
    assert float(exact.c2.value) == pytest.approx(c2_ref, rel=1e-6)
    mc = P.path_cost(rf, data, n_time=32,
                     estimator=MonteCarlo(n=8000, key=jax.random.PRNGKey(2), max_basis=5))
    assert mc.c2.kind == "lower" and mc.path_length.kind == "lower"
    assert float(mc.c2.upper) == float(mc.wD.value)
    assert float(mc.c2.stderr) > 0 and float(mc.wD.stderr) > 0
    assert abs(float(mc.c2.value) - c2_ref) < 4 * float(mc.c2.stderr)
    assert abs(float(mc.wD.value) - wD_ref) < 4 * float(mc.wD.stderr)
    # the bracket: w_D − c_2 (shared draws) exceeds zero by many standard errors
    gap_se = np.sqrt(float(mc.c2.stderr) ** 2 + float(mc.wD.stderr) ** 2
                     - 2 * float(mc.c2_wD_covariance))
    assert float(mc.wD.value) - float(mc.c2.value) > 10 * gap_se
    # over-fitting of the projection (held-out minus in-sample residual) is small
    assert abs(float(mc.rotational_gap)) < 0.01 * (wD_ref - c2_ref)


def test_lyapunov_speed_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    C = a @ a.T + np.eye(3)
    b = rng.normal(size=(3, 3))
    dC = b + b.T
    L = linalg.solve_continuous_lyapunov(C, dC)
    mu = rng.normal(size=3)
    assert float(lyapunov_speed_sq(jnp.asarray(mu), jnp.asarray(C), jnp.asarray(dC))) == \
        pytest.approx(mu @ mu + np.trace(L @ C @ L), rel=1e-12)


def test_swiss_roll_grid_speed():
    """The 2-D grid estimator solves ∇·(P∇φ) = ∇·(Pν) at every node: for g = 0 (ν a gradient)
    its c_2 equals w_D as a computed result (measured 4.5e-9 relative); for g = 3 the rotation
    leaves c_2 well below w_D (measured 37 %)."""
    data = M.swiss_roll(n=200, width=0.05)
    res = {g: P.path_cost(RotatingForce.create(h=1.0, g=g, t_fin=2.0), data, n_time=8)
           for g in (0.0, 3.0)}
    for r in res.values():
        assert r.c2.method.startswith("grid-2d") and r.c2.kind == "point"
        assert bool(r.converged) and bool(r.finite)
        assert float(r.c2.stderr) == 0.0
    r0, r3 = res[0.0], res[3.0]
    assert float(r0.c2.value) == pytest.approx(float(r0.wD.value), rel=1e-6)
    assert float(r3.c2.value) < 0.8 * float(r3.wD.value)
    np.testing.assert_array_less(np.asarray(r3.speed_sq), np.asarray(r3.kinetic))
    # w_D does not depend on the grid's projection: the g = 3 increment is ∫ G_t² E‖x‖² dt
    # (tests/test_thermo.py), so w_D grows while c_2 grows less
    assert float(r3.wD.value) > float(r0.wD.value)


def test_1d_grad_of_c2_matches_fd():
    data = M.gmm([-2.0, 2.0], 0.5)

    def c2(coeffs):
        sch = S.PolarSchedule(tau=jnp.asarray(1.0), angle=coeffs, log_radius=jnp.array([0.2, -0.1]))
        return P.path_cost(sch, data, n_time=32, estimator=Quadrature(n_points=1024)).c2.value

    x = jnp.array([1.0, 0.2, -0.1])
    g = jax.grad(c2)(x)
    v = jnp.array([0.3, -0.5, 0.7])
    h = 1e-5
    fd = (c2(x + h * v) - c2(x - h * v)) / (2 * h)
    assert float(g @ v) == pytest.approx(float(fd), rel=1e-6)


def test_gradient_gaussian_closed_form_nd():
    data = M.gaussian([1.0, -0.5, 0.3], 0.4)

    def wD(bmax):
        sch = S.VPLinear(tau=jnp.asarray(1.0), beta_min=jnp.asarray(0.1), beta_max=bmax)
        return P.path_cost(sch, data).wD.value

    g = jax.grad(wD)(15.0)
    fd = (wD(15.0 + 1e-4) - wD(15.0 - 1e-4)) / 2e-4
    assert float(g) == pytest.approx(float(fd), rel=1e-7)


@pytest.mark.parametrize("kw,match", [
    (dict(n_time=1), "n_time"),
    (dict(estimator="quadrature"), "1-D"),
    (dict(estimator="mc"), "key"),
    (dict(estimator="exact"), "no closed form"),
    (dict(t0=0.5, t1=2.0), r"\[0, tau\]"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        P.path_cost(S.cosine(), M.gmm([[0.0, 1.0], [1.0, 0.0]], 0.5), **kw)
