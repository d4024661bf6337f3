"""η of a fixed-step sampler of the exact velocity (satjax.discretisation), against the exact
relation (N → ∞) and the convergence orders of Euler (1) and RK4 (4)."""

import jax
import pytest

from satjax import bound as B
from satjax import discretisation as D
from satjax import mixtures as M
from satjax import perturb as P
from satjax import schedules as S


@pytest.fixture(scope="module")
def case():
    jax.config.update("jax_enable_x64", True)
    p, q, pert = S.cond_ot(), M.gmm([-2.0, 2.0], 0.5), P.variance_change(0.81)
    return p, q, pert, B.bound(p, q, pert)


def test_rk4_converges_to_the_exact_relation(case):
    p, q, pert, exact = case
    o = D.sampler_eta(p, q, pert, solver="rk4", n_steps=200, exact=exact)
    s = exact.summary()
    assert o["dW1_exact"] == s["dW1"] and o["D0"] == s["D0"]
    assert abs(float(o["dW1"].value) - s["dW1"]) < 3 * float(o["dW1"].error) + 1e-7
    assert float(o["eta"].value) == pytest.approx(s["eta"], rel=1e-4)


def test_convergence_orders(case):
    """W1(q, p_N) − W1(q, p): Euler's global error is O(h), so doubling N halves it (ratio 2,
    the test allows ±10 % at N = 200 → 400); RK4's is O(h⁴) (ratio 16 asymptotically; > 8
    already from N = 10 to 20). The exact W1(q, p) comes from the CDF route of satjax.bound,
    a different method from the sampler's quantile images."""
    p, q, pert, exact = case
    w_exact = exact.summary()["W1_end"]

    def err(solver, n):
        return abs(float(D.sampler_eta(p, q, pert, solver=solver, n_steps=n, n_levels=4096,
                                       exact=exact)["W1_end"].value) - w_exact)

    e1, e2 = err("euler", 200), err("euler", 400)
    assert 1.8 < e1 / e2 < 2.2, (e1, e2)
    r1, r2 = err("rk4", 10), err("rk4", 20)
    assert r1 / r2 > 8, (r1, r2)


def test_errors_are_named(case):
    p, q, pert, exact = case
    with pytest.raises(ValueError, match="solver"):
        D.sampler_eta(p, q, pert, solver="midpoint", n_steps=4, exact=exact)
    with pytest.raises(ValueError, match="n_levels"):
        D.sampler_eta(p, q, pert, solver="rk4", n_steps=4, n_levels=65, exact=exact)
    with pytest.raises(ValueError, match="1-D"):
        D.sampler_eta(p, M.gaussian([0.0, 0.0], 1.0), pert, solver="rk4", n_steps=4, exact=exact)


@pytest.mark.parametrize("name", ["cosine", "cond-ot"])
def test_sampler_c2_of_the_exact_velocity_is_the_path_cost(case, name):
    """c_2 measured on the sampler's trajectories of the exact velocity (kinetic cost from P_τ's
    quantile levels, trapezoid in t) equals the path's c_2 by quadrature within its stated
    error, and that error is below 1e-3 relative (measured: 1e-4 at 100 RK4 steps)."""
    q = case[1]
    p = S.cosine() if name == "cosine" else S.cond_ot()
    exact = float(B.bound(p, q, P.shift(0.3), n_time=32).c2.value)
    e = D.sampler_c2(p, q, solver="rk4", n_steps=100, n_levels=1024)
    assert abs(float(e.value) - exact) <= float(e.error)
    assert float(e.error) < 1e-3 * exact
    assert "exact velocity" in e.method and float(e.stderr) == 0.0
    with pytest.raises(ValueError, match="n_steps"):
        D.sampler_c2(p, q, solver="rk4", n_steps=1)
