"""satjax.steps: optimal sampling times.

The acceptance numbers are checked independently of satjax's objective: a NumPy/SciPy
probability-flow velocity of the 1-D mixture under cond-OT, NumPy Euler/Heun over the returned
times, and W2 to the data from quantiles (scipy.special.ndtri / ndtr and a vectorised
bisection for the mixture quantile).

cond-OT: m = 1 − t, σ = t, so component k of P_t is N(m μ_k, C_k), C_k = m² s_k² + σ², with
mean rate m' μ_k = −μ_k and ½ C_k' = m m' s_k² + σ σ' = −m s_k² + σ. The velocity of a Gaussian
path is mean' + (½ C'/C)(x − mean) and the mixture velocity is the responsibility-weighted
average (docs/theory.md §2):

    ν_t(x) = Σ_k r_k(x) [ −μ_k + (−m s_k² + σ)/(m² s_k² + σ²) (x − m μ_k) ],
    r_k ∝ w_k N(x; m μ_k, C_k).
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from satjax import mixtures as M
from satjax import schedules as S
from satjax import steps as ST
from satjax.forces import RotatingForce
from satjax.reverse import exact_velocity, field, solve_ode

MEANS = np.array([-2.0, 2.0])
STDS = np.array([0.5, 0.5])
WEIGHTS = np.array([0.5, 0.5])


@pytest.fixture(scope="module")
def gmm():
    return M.gmm(MEANS, 0.5, WEIGHTS)


# ------------------------------------------------------------------ independent reference


def np_velocity(x, t):
    """The cond-OT probability-flow velocity of the mixture (module docstring), NumPy."""
    m, sig = 1.0 - t, t
    x = x[:, None]
    C = m**2 * STDS**2 + sig**2
    logw = np.log(WEIGHTS) - 0.5 * (x - m * MEANS) ** 2 / C - 0.5 * np.log(2 * np.pi * C)
    r = np.exp(logw - logw.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    comp = -MEANS + (-m * STDS**2 + sig) / C * (x - m * MEANS)
    return np.sum(r * comp, 1)


def np_sample(ts, x, solver):
    for t0, t1 in zip(ts[:-1], ts[1:]):
        h = t1 - t0
        k1 = np_velocity(x, t0)
        if solver == "euler":
            x = x + h * k1
        else:
            x = x + 0.5 * h * (k1 + np_velocity(x + h * k1, t1))
    return x


def np_mixture_quantile(u):
    lo, hi = np.full_like(u, -20.0), np.full_like(u, 20.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        F = np.sum(WEIGHTS * ndtr((mid[:, None] - MEANS) / STDS), 1)
        lo, hi = np.where(F < u, mid, lo), np.where(F < u, hi, mid)
    return 0.5 * (lo + hi)


M_REF = 20000
U_REF = (np.arange(M_REF) + 0.5) / M_REF
Q_DATA = np_mixture_quantile(U_REF)


def np_w2_error(ts, solver):
    """W2(p_N, q): P_τ = N(0, 1) for cond-OT (m_τ = 0, σ_τ = 1), its quantiles pushed through
    the N-step solver, sorted, against the data quantiles at the same levels."""
    y = np.sort(np_sample(np.asarray(ts, float), ndtri(U_REF), solver))
    return math.sqrt(np.mean((y - Q_DATA) ** 2))


def test_reference_velocity_matches_satjax(gmm):
    """The hand-derived velocity agrees with satjax's exact mixture velocity."""
    fld = exact_velocity(S.cond_ot(), gmm)
    x = np.linspace(-4, 4, 33)
    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        got = np.asarray(fld.batch(jnp.asarray(x)[:, None], jnp.asarray(t)))[:, 0]
        np.testing.assert_allclose(got, np_velocity(x, t), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ acceptance


@pytest.fixture(scope="module")
def acceptance(gmm):
    sch = S.cond_ot()
    return {s: ST.optimize_steps(sch, gmm, 8, solver=s) for s in ("heun", "euler")}


@pytest.mark.parametrize("solver,bound", [("heun", 0.70), ("euler", 0.90)])
def test_acceptance_w2_below_uniform(acceptance, solver, bound):
    res = acceptance[solver]
    t = np.asarray(res.t)
    assert t.shape == (9,) and t[0] == 1.0 and t[-1] == 0.0
    assert np.all(np.diff(t) < 0)
    err_opt = np_w2_error(t, solver)
    err_uni = np_w2_error(np.linspace(1.0, 0.0, 9), solver)
    assert err_opt <= bound * err_uni, (solver, err_opt, err_uni)
    # satjax's own (held-out) numbers agree with the independent computation
    np.testing.assert_allclose(res.error, err_opt, rtol=2e-2)
    np.testing.assert_allclose(res.error_uniform, err_uni, rtol=2e-2)
    assert res.improvement == pytest.approx(1 - res.error / res.error_uniform)


def test_result_fields_and_json(acceptance):
    res = acceptance["heun"]
    np.testing.assert_allclose(res.t_flow, 1.0 - res.t, rtol=0, atol=1e-15)
    assert res.sigmas[0] == np.inf  # m_τ = 0 for cond-OT
    np.testing.assert_allclose(res.sigmas[1:], res.t[1:] / (1.0 - res.t[1:]), rtol=1e-12)
    assert res.sigmas[-1] == 0.0
    assert res.n == 8 and res.solver == "heun" and res.objective == "w2-data-quantiles"
    assert set(res.errors_standard) == set(ST.GRIDS)
    assert res.init in ST.GRIDS
    # the optimiser never returns something worse (on its training set) than its start
    assert min(h for _, h in res.history) <= res.errors_train[res.init] + 1e-15
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["sigmas"][0] is None and back["n"] == 8 and len(back["t"]) == 9
    for key in ("t", "t_flow", "sigmas", "error", "error_uniform", "n"):
        assert key in back


# ------------------------------------------------------------------ sampler and gradients


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_sample_on_grid_matches_fixed_step_solver(gmm, solver):
    sch = S.cosine()
    fld = exact_velocity(sch, gmm)
    x = sch.sample(jax.random.PRNGKey(1), gmm, sch.tau, 64)
    ours = ST.sample_on_grid(fld, x, jnp.linspace(1.0, 0.0, 11), solver)
    ref = solve_ode(fld, x, t_start=1.0, t_end=0.0, method=solver, n_steps=10).xs[-1]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-12, atol=1e-12)
    path = ST.sample_on_grid(fld, x, jnp.linspace(1.0, 0.0, 11), solver, return_path=True)
    assert path.shape == (11, 64, 1)
    np.testing.assert_allclose(np.asarray(path[-1]), np.asarray(ours), rtol=0, atol=0)


def test_sample_on_grid_matches_numpy(gmm):
    ts = np.array([1.0, 0.7, 0.45, 0.2, 0.05, 0.0])
    x = np.linspace(-2.5, 2.5, 21)
    fld = exact_velocity(S.cond_ot(), gmm)
    for solver in ("euler", "heun"):
        got = np.asarray(ST.sample_on_grid(fld, jnp.asarray(x)[:, None], ts, solver))[:, 0]
        np.testing.assert_allclose(got, np_sample(ts, x, solver), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_objective_gradient_vs_finite_differences(gmm, solver):
    sch = S.cond_ot()
    prob = ST.make_problem(sch, gmm, n_train=256, n_test=256)
    theta = jnp.asarray(np.random.default_rng(3).normal(scale=0.3, size=6))
    val, g = prob.loss_and_grad(theta, solver)

    def f(th):
        return prob.error(ST.grid_from_logits(th, 1.0), solver, "train")

    assert float(val) == pytest.approx(f(theta), rel=1e-12)
    h = 1e-6
    fd = np.array([(f(theta.at[i].add(h)) - f(theta.at[i].add(-h))) / (2 * h)
                   for i in range(theta.shape[0])])
    np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-5, atol=1e-8)


def test_sampler_gradient_wrt_times_2d():
    q = M.gmm(np.array([[-1.0, 0.0], [1.0, 0.5]]), 0.4)
    sch = S.cosine()
    fld = exact_velocity(sch, q)
    x = sch.sample(jax.random.PRNGKey(2), q, 1.0, 16)
    ts = jnp.array([1.0, 0.6, 0.3, 0.1, 0.0])

    def f(ts):
        return jnp.sum(ST.sample_on_grid(fld, x, ts, "heun") ** 2)

    g = jax.grad(f)(ts)
    h = 1e-6
    for i in (1, 2, 3):
        fd = (f(ts.at[i].add(h)) - f(ts.at[i].add(-h))) / (2 * h)
        np.testing.assert_allclose(float(g[i]), float(fd), rtol=1e-5)


# ------------------------------------------------------------------ parametrisation


def test_monotone_parametrisation():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 32):
        for scale in (0.1, 3.0, 20.0):
            th = jnp.asarray(rng.normal(scale=scale, size=n))
            ts = np.asarray(ST.grid_from_logits(th, 2.5))
            assert ts.shape == (n + 1,) and ts[0] == 2.5 and ts[-1] == 0.0
            assert np.all(np.diff(ts) < 0)
            back = ST.grid_from_logits(ST.logits_from_grid(ts), 2.5)
            np.testing.assert_allclose(np.asarray(back), ts, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ standard grids


def test_uniform_grid():
    np.testing.assert_allclose(ST.uniform_grid(S.cond_ot(), 4), [1.0, 0.75, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(ST.uniform_grid(S.cosine(2.0), 2), [2.0, 1.0, 0.0])


def test_edm_grid_hand_values():
    # cond-OT, n = 3, ρ = 7: σ = 80 (σ(τ) = ∞ capped), ((80^{1/7} + 0.002^{1/7})/2)^7, 0.002,
    # then 0; t = σ/(1 + σ), and t_0 = τ.
    g = ST.edm_grid(S.cond_ot(), 3)
    s1 = ((80 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    np.testing.assert_allclose(g, [1.0, s1 / (1 + s1), 0.002 / 1.002, 0.0], rtol=1e-13)
    # VE (σ_max = 10 < 80): σ_hi = σ(τ) = sqrt(100 − 1e-4), t_0 = τ
    ve = S.ve(0.01, 10.0)
    g = ST.edm_grid(ve, 2)
    t_lo = math.log1p((0.002 / 0.01) ** 2) / (2 * math.log(1000))
    np.testing.assert_allclose(g, [1.0, t_lo, 0.0], rtol=1e-12)
    np.testing.assert_allclose(ST.edm_grid(S.cosine(), 1), [1.0, 0.0])


def test_log_snr_grid_hand_values():
    # cosine, n = 3: λ uniform from −2 log 80 to −2 log 0.002; the middle σ is sqrt(80·0.002)
    # = 0.4; t = (2/π) arctan σ.
    g = ST.log_snr_grid(S.cosine(), 3)
    np.testing.assert_allclose(
        g, [1.0, 2 / np.pi * np.arctan(0.4), 2 / np.pi * np.arctan(0.002), 0.0], rtol=1e-12)


def test_w2_length_grid_gaussian_closed_form():
    # q = N(0, 1), cond-OT: E ν² = (2t − 1)²/(2t² − 2t + 1) and L(t) = ∫_0^t |2s − 1| /
    # sqrt(2s² − 2s + 1) ds = 1 − sqrt(u(t)) for t ≤ ½, 1 − 2 sqrt(½) + sqrt(u(t)) after
    # (u = 2t² − 2t + 1, du = (4t − 2) dt).
    q = M.gaussian(0.0, 1.0)
    sch = S.cond_ot()
    n = 6
    g = ST.w2_length_grid(sch, q, n)

    def L(t):
        u = 2 * t**2 - 2 * t + 1
        return np.where(t <= 0.5, 1 - np.sqrt(u), 1 - 2 * np.sqrt(0.5) + np.sqrt(u))

    total = 2 * (1 - np.sqrt(0.5))
    np.testing.assert_allclose(L(g), total * (1 - np.arange(n + 1) / n), atol=2e-4)
    ts, k = ST.kinetic_profile(sch, q, n_nodes=9)
    np.testing.assert_allclose(k, (2 * ts - 1) ** 2 / (2 * ts**2 - 2 * ts + 1), rtol=1e-3,
                               atol=1e-6)


def test_standard_grids_skip_what_does_not_apply(gmm):
    rot = RotatingForce.create(h=1.0, g=1.0, t_fin=1.0)
    q2 = M.gmm(np.array([[-1.0, 0.0], [1.0, 0.5]]), 0.4)
    grids, skipped = ST.standard_grids(rot, 4, data=q2)
    assert set(grids) == {"uniform", "w2-length"} and set(skipped) == {"log-snr", "edm"}
    assert "schedule" in skipped["edm"]
    for g in grids.values():
        assert g[0] == 1.0 and g[-1] == 0.0 and np.all(np.diff(g) < 0)


# ------------------------------------------------------------------ n-D, learned, divergence


def test_nd_and_reference_objectives_small():
    q = M.gmm(np.array([[-1.5, 0.0], [1.5, 0.5], [0.0, -1.5]]), 0.3)
    sch = S.cosine()
    res = ST.optimize_steps(sch, q, 4, solver="euler", steps=15, n_train=256, batch=128,
                            n_test=256, reference_steps=128, key=jax.random.PRNGKey(4),
                            eval_every=5)
    assert res.objective == "w2-data-assignment"
    assert len(res.t) == 5 and np.all(np.diff(res.t) < 0)
    assert res.t[0] == 1.0 and res.t[-1] == 0.0
    assert min(h for _, h in res.history) <= res.errors_train[res.init] + 1e-12
    assert all(np.isfinite(v) for v in res.errors_standard.values())

    # a "learned" velocity (the exact one wrapped as a model): the reference objective
    ex = exact_velocity(sch, q)
    model = field(lambda p, x, t: p * ex(x, t), jnp.asarray(1.0), tau=1.0)
    res2 = ST.optimize_steps(sch, q, 4, solver="heun", velocity=model, steps=10, n_train=128,
                             batch=128, n_test=128, reference_steps=128,
                             key=jax.random.PRNGKey(5))
    assert res2.objective == "rms-to-reference"
    assert res2.error <= res2.errors_standard[res2.init] * 1.5
    with pytest.raises(ValueError, match="nd_target"):
        ST.make_problem(sch, q, velocity=model, objective="data", n_train=16, n_test=16)


def test_divergence_is_survived(gmm):
    """A loss that turns NaN on some iterations: the step is undone and the best grid kept."""
    sch = S.cond_ot()
    prob = ST.make_problem(sch, gmm, n_train=128, n_test=128)

    class Flaky(ST.StepsProblem):
        calls = 0

        def loss_and_grad(self, logits, solver="heun", batch=0):
            type(self).calls += 1
            val, g = super().loss_and_grad(logits, solver, batch)
            if type(self).calls in (3, 4, 9):
                return jnp.asarray(jnp.nan), g * jnp.nan
            return val, g

    flaky = Flaky(**{f: getattr(prob, f) for f in prob.__dataclass_fields__})
    ts, hist, best, n_bad = ST.optimize_grid(flaky, ST.uniform_grid(sch, 4), solver="euler",
                                             steps=20)
    assert n_bad == 3
    assert np.all(np.isfinite(ts)) and np.all(np.diff(ts) < 0)
    finite = [h for _, h in hist if np.isfinite(h)]
    assert prob.error(ts, "euler", "train") == pytest.approx(min(finite), rel=1e-12)
    assert min(finite) <= prob.error(ST.uniform_grid(sch, 4), "euler", "train")


# ------------------------------------------------------------------ validation


def test_argument_errors(gmm):
    sch = S.cond_ot()
    fld = exact_velocity(sch, gmm)
    x = jnp.zeros((4, 1))
    with pytest.raises(ValueError, match="int >= 1"):
        ST.optimize_steps(sch, gmm, 0)
    with pytest.raises(ValueError, match="int >= 1"):
        ST.uniform_grid(sch, 2.5)
    with pytest.raises(ValueError, match="solver"):
        ST.optimize_steps(sch, gmm, 4, solver="rk4")
    with pytest.raises(ValueError, match="objective"):
        ST.optimize_steps(sch, gmm, 4, objective="fid")
    with pytest.raises(ValueError, match="lr"):
        ST.optimize_steps(sch, gmm, 4, lr=-1.0)
    with pytest.raises(ValueError, match="steps"):
        ST.optimize_steps(sch, gmm, 4, steps=-3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        ST.sample_on_grid(fld, x, [0.0, 0.5, 1.0], "euler")
    with pytest.raises(ValueError, match="at least 2"):
        ST.sample_on_grid(fld, x, [1.0], "euler")
    with pytest.raises(ValueError, match=r"\(M, d\)"):
        ST.sample_on_grid(fld, jnp.zeros(4), [1.0, 0.0], "euler")
    with pytest.raises(ValueError, match="NaN"):
        ST.sample_on_grid(fld, x, [1.0, np.nan, 0.0], "euler")
    with pytest.raises(ValueError, match=r"\[0, tau\]"):
        ST.sample_on_grid(fld, x, [2.0, 0.0], "euler")
    with pytest.raises(ValueError, match="schedule"):
        ST.edm_grid(RotatingForce.create(h=1.0, g=1.0, t_fin=1.0), 4)
    with pytest.raises(ValueError, match="grid"):
        ST.standard_grid("karras", sch, 4, data=gmm)
    with pytest.raises(ValueError, match="batch"):
        ST.make_problem(sch, gmm, batch=16)
    with pytest.raises(TypeError, match="Protocol"):
        ST.optimize_steps("cond-ot", gmm, 4)


def test_n_equals_one(gmm):
    res = ST.optimize_steps(S.cond_ot(), gmm, 1, solver="euler", steps=5, n_train=64,
                            n_test=64)
    np.testing.assert_array_equal(res.t, [1.0, 0.0])
    assert res.error == pytest.approx(res.error_uniform)
