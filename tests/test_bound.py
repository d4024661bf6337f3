"""The speed-accuracy relation in 1-D (Eq. 77–91): exact values, properties, two routes, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from satjax import bound as B
from satjax import mixtures as M
from satjax import perturb as PT
from satjax import reverse as R
from satjax import schedules as S
from satjax.geometry.distances import quantile_1d, w2_squared_1d
from satjax.forward import marginal as sj_marginal
from satjax.geometry.ot_protocol import ot_protocol

Q = M.gmm([-2.0, 2.0], 0.5)  # PAPER.md Eq. 96 defaults


@pytest.fixture(scope="module")
def paper_results():
    out = {}
    for name, proto in [("cosine", S.cosine()), ("cond-ot", S.cond_ot()), ("ot", ot_protocol(Q))]:
        for pert in [PT.shift(0.2), PT.scale(1.2)]:
            out[name, pert.label()] = B.bound_1d(proto, Q, pert)
    return out


@pytest.mark.parametrize("pert", ["shift:0.2", "scale:1.2"])
def test_paper_gmm_eta_same_for_every_protocol(paper_results, pert):
    etas = [float(paper_results[p, pert].eta) for p in ("cosine", "cond-ot", "ot")]
    np.testing.assert_allclose(etas, etas[0], rtol=1e-10)
    dw = [float(paper_results[p, pert].dW1) for p in ("cosine", "cond-ot", "ot")]
    np.testing.assert_allclose(dw, dw[0], rtol=1e-10)


@pytest.mark.parametrize("pert", ["shift:0.2", "scale:1.2"])
def test_paper_gmm_ot_is_tight(paper_results, pert):
    r = paper_results["ot", pert]
    assert float(r.c1) == pytest.approx(float(r.eta), rel=1e-6)  # W1 linear in t on the geodesic
    assert float(r.c2) == pytest.approx(float(w2_squared_1d(Q, M.gaussian(0.0, 1.0))), rel=1e-10)
    for p in ("cosine", "cond-ot"):
        assert float(paper_results[p, pert].c2) > float(r.c2)


@pytest.mark.parametrize("key", [("cosine", "shift:0.2"), ("cond-ot", "scale:1.2"), ("ot", "shift:0.2")])
def test_paper_gmm_inequalities(paper_results, key):
    r = paper_results[key]
    assert all(r.holds().values()), r.holds()
    if key[0] != "ot":  # strict away from the equality case of the geodesic
        assert float(r.eta) < float(r.c1) < float(r.c2)


def test_closed_form_start_values(paper_results):
    """W_1(P_τ, P̃_τ) for P_τ = N(0, 1): a shift δ gives δ, a scale s gives |s − 1| E|Z|."""
    assert float(paper_results["cosine", "shift:0.2"].W1_start) == pytest.approx(0.2, rel=1e-7)
    assert float(paper_results["cosine", "scale:1.2"].W1_start) == pytest.approx(0.2 * np.sqrt(2 / np.pi), rel=1e-6)
    # D_0 of a unit-Gaussian shift: exp(δ²) − 1
    assert float(paper_results["cosine", "shift:0.2"].D0) == pytest.approx(np.expm1(0.04), rel=1e-10)


def test_stable_under_refinement():
    coarse = B.bound_1d(S.cosine(), Q, PT.scale(1.2), n_time=32, n_points=2048)
    fine = B.bound_1d(S.cosine(), Q, PT.scale(1.2), n_time=96, n_points=16384)
    for k in ("eta", "c1", "c2", "dW1"):
        assert float(coarse.summary()[k]) == pytest.approx(fine.summary()[k], rel=1e-3), k


def test_ode_route_agrees_with_quantile_route():
    """Transport both reverse starts' quantile grids with the exact velocity (RK4) and compare
    W_1(q, p) with the monotone-rearrangement value."""
    sch = S.cosine()
    pert = PT.shift(0.2)
    r = B.bound_1d(sch, Q, pert)
    u = (jnp.arange(4000) + 0.5) / 4000
    p_end = M.gaussian(0.0, 1.0)
    x_tau = quantile_1d(p_end, u)[:, None]
    xt_tau = quantile_1d(pert.apply(p_end), u)[:, None]
    vel = R.exact_velocity(sch, Q)
    a = R.reverse_ode(vel, x_tau, n_steps=200).xs[-1, :, 0]
    b = R.reverse_ode(vel, xt_tau, n_steps=200).xs[-1, :, 0]
    w1 = float(jnp.mean(jnp.abs(jnp.sort(a) - jnp.sort(b))))  # midpoint rule in u
    assert w1 == pytest.approx(float(r.W1_end), rel=1e-5)


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(m1=st.floats(-3, 0), m2=st.floats(0.5, 3), s1=st.floats(0.2, 1.0), s2=st.floats(0.2, 1.0),
       w=st.floats(0.2, 0.8), which=st.sampled_from(["cosine", "cond-ot", "vp", "polar"]),
       kind=st.sampled_from(["shift", "scale"]), amount=st.floats(0.05, 0.3), sign=st.sampled_from([-1, 1]))
@example(m1=0.0, m2=1.0, s1=1.0, s2=1.0, w=0.5, which="cosine", kind="scale", amount=0.296875, sign=1)
def test_property_bound_holds(m1, m2, s1, s2, w, which, kind, amount, sign):
    q = M.gmm([m1, m2], [s1, s2], [w, 1 - w])
    proto = {"cosine": S.cosine(), "cond-ot": S.cond_ot(), "vp": S.vp_linear(0.1, 12.0),
             "polar": S.polar(3, 2, angle=[1.0, 0.3, -0.1], log_radius=[0.2, 0.1])}[which]
    pert = PT.shift(sign * amount) if kind == "shift" else PT.scale(1.0 + sign * amount)
    r = B.bound_1d(proto, q, pert, n_time=24, n_points=2048)
    h = r.holds(rtol=1e-6)
    assert all(h.values()), (h, r.summary())
    # D is conserved along the common flow (App. E)
    for t in (0.3, 0.7):
        assert float(B.pearson_along_flow(proto, q, pert, t)) == pytest.approx(float(r.D0), rel=1e-7)


def test_gradient_of_eta_matches_finite_differences():
    def eta(b):
        sch = S.VPLinear(tau=jnp.asarray(1.0), beta_min=jnp.asarray(0.1), beta_max=b)
        return B.bound_1d(sch, Q, PT.shift(0.2), n_time=8, n_points=1024).eta

    g = jax.grad(eta)(jnp.asarray(5.0))
    fd = (eta(5.0 + 1e-4) - eta(5.0 - 1e-4)) / 2e-4
    assert float(g) == pytest.approx(float(fd), rel=1e-6)


def test_infinite_D0_is_reported():
    r = B.bound_1d(S.cosine(), Q, PT.scale(1.5))
    assert np.isinf(float(r.D0))
    assert float(r.eta) == 0.0 and float(r.c1) == 0.0


def test_zero_perturbation_is_an_error():
    # P_τ of cosine is exactly N(0, 1): its moment-matched Gaussian is no perturbation at all
    with pytest.raises(ValueError, match="D_0"):
        B.bound_1d(S.cosine(), Q, PT.gaussian())


def test_bound_needs_1d():
    with pytest.raises(ValueError, match="1-D"):
        B.bound_1d(S.cosine(), M.gmm([[0.0, 1.0]], 1.0), PT.shift(0.1))


def test_sample_route_agrees_with_exact_1d():
    """bound_samples (transported particles, exact OT between them, finite differences) against
    the exact 1-D values. Tolerances: D_0 by Monte Carlo (2e4 samples, ≈4 % standard error)
    dominates η; c_1 within 8 %; W1 at the start is exact thanks to common random numbers."""
    r = B.bound_samples(jax.random.PRNGKey(0), S.cosine(), Q, PT.shift(0.2), n=1000, n_steps=60, n_save=20)
    ex = B.bound_1d(S.cosine(), Q, PT.shift(0.2))
    assert float(r.W1_start) == pytest.approx(0.2, rel=1e-9)
    assert float(r.W1_end) == pytest.approx(float(ex.W1_end), rel=0.02)
    assert float(r.D0) == pytest.approx(float(ex.D0), abs=4 * float(r.D0_stderr))
    assert float(r.eta) == pytest.approx(float(ex.eta), rel=0.12)
    assert float(r.c1) == pytest.approx(float(ex.c1), rel=0.08)
    assert all(r.holds().values())


def test_imperfect_velocity_relation_eq100():
    """Eq. 100: exact velocity gives L_α = 0, conserved D and lhs² = η; a distorted velocity
    ν̂ = 1.1 ν + 0.1 has L_α = 0.01 w_D/τ + 0.01 exactly (E_{P_t} ν = 0 by symmetry)."""
    sch = S.cosine()
    ex = R.exact_velocity(sch, Q)
    r0 = B.bound_imperfect_1d(sch, Q, PT.shift(0.2), ex)
    exact = B.bound_1d(sch, Q, PT.shift(0.2))
    assert float(r0.L_alpha) == 0.0
    np.testing.assert_allclose(r0.D, float(exact.D0), rtol=1e-3)  # midpoint grid of 4000 levels
    assert float(r0.lhs) ** 2 == pytest.approx(float(exact.eta), rel=2e-3)
    assert r0.holds()["eq100"]
    wrong = R.field(lambda p, x, t: p["a"] * ex(x, t) + p["b"], {"a": jnp.array(1.1), "b": jnp.array(0.1)}, tau=1.0)
    r1 = B.bound_imperfect_1d(sch, Q, PT.shift(0.2), wrong)
    assert float(r1.L_alpha) == pytest.approx(0.01 * float(exact.wD) + 0.01, rel=1e-6)
    assert r1.holds()["eq100"] and float(r1.D_max) > float(exact.D0)


Q2 = M.gmm([[-1.5, 0.0], [1.5, 0.5]], 0.4)


def test_imperfect_relation_nd_exact_velocity():
    """n-D Eq. 100 with ν̂ = ν: L_α = 0 exactly and P̃_t/P_t is conserved along each path, so the
    sample D_t is the same at every saved time (to the RK4 error); D_0 matches the Monte-Carlo
    Pearson divergence of the two exact start mixtures."""
    sch = S.cosine()
    ex = R.exact_velocity(sch, Q2)
    r = B.bound_imperfect_samples(jax.random.PRNGKey(0), sch, Q2, PT.shift(0.2), ex, n=400,
                                  n_steps=40, n_save=8, n_mc=512, n_time=8)
    assert float(r.L_alpha) == 0.0
    np.testing.assert_allclose(r.D, float(r.D[0]), rtol=2e-5)  # RK4, 40 steps
    p_end = sj_marginal(sch, Q2, 1.0)
    d0 = PT.pearson(PT.shift(0.2).apply(p_end), p_end, key=jax.random.PRNGKey(9), n_samples=200_000)
    assert float(r.D[0]) == pytest.approx(float(d0.value), abs=4 * float(r.D_stderr[0] + d0.stderr))
    assert r.holds()["eq100"]


def test_imperfect_relation_nd_distorted_velocity_closed_form():
    """ν̂ = 1.1 ν + 0.1·1 in 2-D: τL_α = 0.01 w_D + 0.02 (E_{P_τ} − E_{P_0})[x·1] + 0.01 d τ,
    since ∫E_{P_t}ν dt is the mean displacement; P_τ = N(0, I) for cosine."""
    sch = S.cosine()
    ex = R.exact_velocity(sch, Q2)
    wrong = R.field(lambda p, x, t: 1.1 * ex(x, t) + p, jnp.asarray(0.1), tau=1.0)
    r = B.bound_imperfect_samples(jax.random.PRNGKey(1), sch, Q2, PT.shift(0.2), wrong, n=400,
                                  n_steps=40, n_save=8, n_mc=8192, n_time=16)
    closed = 0.01 * float(r.wD) + 0.02 * (0.0 - float(jnp.sum(Q2.mean()))) + 0.01 * 2
    assert float(r.L_alpha) == pytest.approx(closed, abs=4 * float(r.L_alpha_stderr))
    assert float(r.D_max) > float(r.D[0])  # the wrong flow moves P̃_t away from P_t
    assert r.holds()["eq100"]


def test_imperfect_relation_nd_route_agrees_with_1d_exact():
    """The sample route on 1-D data against the quadrature route (bound_imperfect_1d)."""
    sch = S.cosine()
    ex = R.exact_velocity(sch, Q)
    wrong = R.field(lambda p, x, t: 1.1 * ex(x, t) + p, jnp.asarray(0.1), tau=1.0)
    a = B.bound_imperfect_1d(sch, Q, PT.shift(0.2), wrong, n_steps=40, n_save=8)
    b = B.bound_imperfect_samples(jax.random.PRNGKey(2), sch, Q, PT.shift(0.2), wrong, n=2000,
                                  n_steps=40, n_save=8, n_mc=4096, n_time=32)
    np.testing.assert_allclose(b.ts, a.ts, rtol=1e-12)
    assert float(b.L_alpha) == pytest.approx(float(a.L_alpha), abs=4 * float(b.L_alpha_stderr))
    np.testing.assert_allclose(b.D, a.D, atol=4 * float(jnp.max(b.D_stderr)))
    assert float(b.dW1) == pytest.approx(float(a.dW1), abs=0.03)  # empirical W_1 of 2000 points


def test_sample_route_with_a_given_velocity_field():
    """bound_samples(velocity=exact field) reproduces the default; a distorted field changes ΔW1."""
    ex = R.exact_velocity(S.cosine(), Q)
    a = B.bound_samples(jax.random.PRNGKey(0), S.cosine(), Q, PT.shift(0.2), n=400, n_steps=40, n_save=10)
    b = B.bound_samples(jax.random.PRNGKey(0), S.cosine(), Q, PT.shift(0.2), n=400, n_steps=40, n_save=10,
                        velocity=ex)
    assert float(a.eta) == pytest.approx(float(b.eta), rel=1e-10)
    wrong = R.field(lambda p, x, t: p * ex(x, t), jnp.asarray(0.8), tau=1.0)
    c = B.bound_samples(jax.random.PRNGKey(0), S.cosine(), Q, PT.shift(0.2), n=400, n_steps=40, n_save=10,
                        velocity=wrong)
    assert abs(float(c.dW1) - float(a.dW1)) > 0.01
