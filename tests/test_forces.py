"""Linear forces: closed-form transitions against the ODE solution of B3/B4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satjax import schedules as S
from satjax.forces import GeneralLinearForce, RotatingForce

J = jnp.array([[0.0, -1.0], [1.0, 0.0]])


def rotating_as_general(rf: RotatingForce) -> GeneralLinearForce:
    return GeneralLinearForce.create(
        matrix_fn=lambda p, t: rf.H(t) * jnp.eye(2) + rf.G(t) * J,
        temperature_fn=lambda p, t: rf.temperature(t), dim=2, tau=rf.tau)


@pytest.mark.parametrize("h,g,tfin,tau", [(1.0, 3.0, 2.0, 1.0), (2.5, 5.0, 0.5, 2.0), (0.3, 0.0, 1.0, 0.7)])
def test_rotating_closed_form_matches_ode(h, g, tfin, tau):
    rf = RotatingForce.create(h=h, g=g, t_fin=tfin, tau=tau)
    gen = rotating_as_general(rf)
    for t in [0.0, 0.13 * tau, 0.5 * tau, tau]:
        a, b = rf.transition(t), gen.transition(t)
        phi_a = a.scale * a.rotation
        np.testing.assert_allclose(phi_a, b.phi, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(a.var * jnp.eye(2), b.cov, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(b.shift, 0.0, atol=1e-14)


def test_rotating_variance_solves_its_ode():
    """∂_t Σ = 2 H Σ + 2 T (G18 with the factor 2 of B4), checked by autodiff of the quadrature."""
    rf = RotatingForce.create(h=1.3, g=3.0, t_fin=2.0, tau=1.5)
    ts = jnp.linspace(0.05, 1.5, 9)
    dvar = jax.vmap(jax.grad(rf.variance))(ts)
    rhs = 2 * jax.vmap(rf.H)(ts) * jax.vmap(rf.variance)(ts) + 2 * jax.vmap(rf.temperature)(ts)
    np.testing.assert_allclose(dvar, rhs, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("make", [lambda: S.cosine(1.3), lambda: S.vp_linear(tau=1.3), lambda: S.ve(tau=1.3)])
def test_schedule_transition_matches_ode(make):
    sch = make()
    gen = GeneralLinearForce.create(
        matrix_fn=lambda p, t: sch.log_m_rate(t) * jnp.eye(3),
        temperature_fn=lambda p, t: sch.temperature(t), dim=3, tau=sch.tau)
    for t in [0.2, 0.7, 1.1]:
        a, b = sch.transition(t), gen.transition(t)
        np.testing.assert_allclose(b.phi, a.scale * jnp.eye(3), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(b.cov, a.var * jnp.eye(3), rtol=1e-7, atol=1e-12)


def test_general_force_with_offset_closed_form():
    """A = −k I, b = β const, T const: c_t = β(1 − e^{−kt})/k, Σ = T(1 − e^{−2kt})/k."""
    k, T = 0.8, 0.35
    beta = jnp.array([1.0, -2.0])
    f = GeneralLinearForce.create(matrix_fn=lambda p, t: -p["k"] * jnp.eye(2),
                                  offset_fn=lambda p, t: p["b"], temperature_fn=lambda p, t: p["T"],
                                  params={"k": k, "b": beta, "T": T}, dim=2, tau=2.0)
    t = 1.4
    tr = f.transition(t)
    np.testing.assert_allclose(tr.shift, beta * (1 - np.exp(-k * t)) / k, rtol=1e-9)
    np.testing.assert_allclose(tr.cov, T * (1 - np.exp(-2 * k * t)) / k * np.eye(2), rtol=1e-9)
    np.testing.assert_allclose(tr.phi, np.exp(-k * t) * np.eye(2), rtol=1e-9)
    # differentiable in the parameters: ∂Σ/∂T = (1 − e^{−2kt})/k
    dcov = jax.grad(lambda T_: f.replace(params={"k": k, "b": beta, "T": T_}).transition(t).cov[0, 0])(T)
    assert float(dcov) == pytest.approx((1 - np.exp(-2 * k * t)) / k, rel=1e-7)


def test_bad_forces_raise():
    with pytest.raises(ValueError, match="tau"):
        RotatingForce.create(tau=0.0)
    with pytest.raises(ValueError, match="t_fin"):
        RotatingForce.create(t_fin=-1.0)
    with pytest.raises(ValueError, match=r"matrix_fn.*shape"):
        GeneralLinearForce.create(matrix_fn=lambda p, t: jnp.eye(3), temperature_fn=lambda p, t: 1.0, dim=2)
    with pytest.raises(ValueError, match="temperature_fn"):
        GeneralLinearForce.create(matrix_fn=lambda p, t: jnp.eye(2), temperature_fn=lambda p, t: jnp.ones(2), dim=2)
