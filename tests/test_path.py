"""Path cost: c_2 and w_D against independent closed forms; c_2 ≤ w_D; gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, linalg

from satjax import mixtures as M
from satjax import path as P
from satjax import schedules as S
from satjax.forces import RotatingForce
from satjax.geometry import speed


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
    wD_ref, c2_ref = reference_rotating_gaussian(1.0, g, 2.0, mu0, S0)
    assert float(pc.wD) == pytest.approx(wD_ref, rel=1e-6)
    assert float(pc.c2) == pytest.approx(c2_ref, rel=1e-6)
    if g == 0:
        assert float(pc.c2) == pytest.approx(float(pc.wD), rel=1e-12)
    else:
        assert float(pc.wD) > float(pc.c2) * 1.1


def test_projection_recovers_lyapunov_speed():
    """On Gaussian P_t the degree-2 polynomial projection is exact up to Monte-Carlo error."""
    data = M.gaussian([1.0, 0.5], cov=[[0.5, 0.1], [0.1, 0.3]])
    rf = RotatingForce.create(h=1.0, g=3.0, t_fin=2.0)
    exact = P.path_cost(rf, data, n_time=32)
    mc = P.path_cost(rf, data, method="mc", key=jax.random.PRNGKey(2), n_samples=8000, n_time=32, degree=2)
    assert abs(float(mc.c2) - float(exact.c2)) < 4 * float(mc.c2_stderr)
    assert abs(float(mc.wD) - float(exact.wD)) < 4 * float(mc.wD_stderr)


def test_lyapunov_speed_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    C = a @ a.T + np.eye(3)
    b = rng.normal(size=(3, 3))
    dC = b + b.T
    L = linalg.solve_continuous_lyapunov(C, dC)
    mu = rng.normal(size=3)
    assert float(speed.lyapunov_speed_sq(jnp.asarray(mu), jnp.asarray(C), jnp.asarray(dC))) == \
        pytest.approx(mu @ mu + np.trace(L @ C @ L), rel=1e-12)


def test_swiss_roll_rotating_wD_exceeds_c2():
    data = M.swiss_roll(n=200, width=0.05)
    res = {}
    for g in [0.0, 3.0]:
        res[g] = P.path_cost(RotatingForce.create(h=1.0, g=g, t_fin=2.0), data,
                             key=jax.random.PRNGKey(0), n_samples=1024, n_time=24)
    assert float(res[0.0].c2) == float(res[0.0].wD) and res[0.0].speed_exact
    r = res[3.0]
    assert not r.speed_exact
    assert float(r.wD) - float(r.c2) > 4 * (float(r.wD_stderr) + float(r.c2_stderr))


def test_1d_c2_equals_wD_and_grad_matches_fd():
    data = M.gmm([-2.0, 2.0], 0.5)

    def c2(coeffs):
        sch = S.PolarSchedule(tau=jnp.asarray(1.0), angle=coeffs, log_radius=jnp.array([0.2, -0.1]))
        return P.path_cost(sch, data, n_time=32, n_points=1024).c2

    x = jnp.array([1.0, 0.2, -0.1])
    pc = P.path_cost(S.PolarSchedule(tau=jnp.asarray(1.0), angle=x, log_radius=jnp.array([0.2, -0.1])), data)
    assert float(pc.c2) == float(pc.wD)
    g = jax.grad(c2)(x)
    v = jnp.array([0.3, -0.5, 0.7])
    h = 1e-5
    fd = (c2(x + h * v) - c2(x - h * v)) / (2 * h)
    assert float(g @ v) == pytest.approx(float(fd), rel=1e-6)


def test_gradient_gaussian_closed_form_nd():
    data = M.gaussian([1.0, -0.5, 0.3], 0.4)

    def wD(bmax):
        return P.path_cost(S.VPLinear(tau=jnp.asarray(1.0), beta_min=jnp.asarray(0.1), beta_max=bmax), data).wD

    g = jax.grad(wD)(15.0)
    fd = (wD(15.0 + 1e-4) - wD(15.0 - 1e-4)) / 2e-4
    assert float(g) == pytest.approx(float(fd), rel=1e-7)


def test_bad_degree():
    with pytest.raises(ValueError, match="degree"):
        P.path_cost(S.cosine(), M.gmm([0.0, 1.0], 0.5), degree=0)
