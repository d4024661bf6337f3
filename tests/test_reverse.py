"""Reverse-time generation: probability-flow ODE, reverse SDE, adaptive solves, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special, stats

from satjax import forward as F
from satjax import mixtures as M
from satjax import reverse as R
from satjax import schedules as S
from satjax.forces import RotatingForce

GMM = dict(means=[-2.0, 2.0], stds=0.5)  # q = ½N(−2, 0.5²) + ½N(2, 0.5²), the paper's Eq. 96


def gmm():
    return M.gmm(**GMM)


def mixture_cdf(mix, x):
    """CDF of a 1-D isotropic mixture at x (scalar or array)."""
    w, a, v = (np.asarray(z, dtype=float).ravel() for z in (mix.weights, mix.means, mix.cov))
    x = np.asarray(x, dtype=float)
    return np.sum(w * special.ndtr((x[..., None] - a) / np.sqrt(v)), axis=-1)


def mixture_quantiles(mix, u):
    """F⁻¹(u) of a 1-D mixture by brentq on its CDF."""
    return np.array([optimize.brentq(lambda z: mixture_cdf(mix, z) - ui, -30.0, 30.0,
                                     xtol=1e-14, rtol=1e-15) for ui in u])


def mixture_moments(mix):
    """Mean, variance and 4th central moment of a 1-D mixture (for sampling standard errors)."""
    w, a, v = (np.asarray(z, dtype=float).ravel() for z in (mix.weights, mix.means, mix.cov))
    mean = w @ a
    d = a - mean
    var = w @ (v + d**2)
    mu4 = w @ (d**4 + 6 * d**2 * v + 3 * v**2)
    return mean, var, mu4


U = np.linspace(0.005, 0.995, 199)


# ---------------------------------------------------------------- exact transport of quantiles


@pytest.mark.parametrize("name,make", [("cosine", S.cosine), ("cond-ot", S.cond_ot),
                                       ("vp-linear", S.vp_linear)])
def test_probability_flow_maps_p_tau_quantiles_onto_data_quantiles(name, make):
    """In 1-D the exact flow is the monotone map F_q⁻¹ ∘ F_{P_τ}: quantiles go to quantiles.

    cosine and cond-OT have m_τ = 0 (force singular at τ), but the stable velocity is finite at
    t = τ (checked), so the solve starts exactly at τ. Every protocol gives the same map (Sec. 8).
    """
    sch, q = make(), gmm()
    v = R.exact_velocity(sch, q)
    grid = jnp.linspace(-5.0, 5.0, 41)[:, None]
    assert np.all(np.isfinite(np.asarray(jax.vmap(v, in_axes=(0, None))(grid, sch.tau))))
    x_tau = mixture_quantiles(F.marginal(sch, q, sch.tau), U)
    x_q = mixture_quantiles(q, U)
    out = R.reverse_ode(v, x_tau[:, None], method="rk4", n_steps=200, n_save=4)
    assert bool(out.finite)
    np.testing.assert_allclose(out.ts, np.linspace(1.0, 0.0, 5), atol=1e-15)
    err = np.max(np.abs(np.asarray(out.xs[-1, :, 0]) - x_q))
    assert err < 1e-6, err  # measured ≈ 2e-8 (cosine), 5e-8 (cond-OT), 2e-7 (vp-linear)
    # intermediate saved states are the quantiles of the exact marginals P_t
    for t, xs in zip(out.ts[1:-1], out.xs[1:-1]):
        ref = mixture_quantiles(F.marginal(sch, q, t), U)
        assert np.max(np.abs(np.asarray(xs[:, 0]) - ref)) < 1e-6


def test_forward_ode_pushes_data_quantiles_to_p_tau_and_back():
    """Two routes: the forward flow maps q's quantiles onto P_τ's; the reverse flow inverts it."""
    sch, q = S.cosine(1.3), gmm()
    v = R.exact_velocity(sch, q)
    x_q = mixture_quantiles(q, U)[:, None]
    fwd = R.forward_ode(v, x_q, n_steps=200)
    np.testing.assert_allclose(fwd.ts, [0.0, 1.3])
    ref = mixture_quantiles(F.marginal(sch, q, 1.3), U)
    assert np.max(np.abs(np.asarray(fwd.xs[-1, :, 0]) - ref)) < 1e-6
    back = R.reverse_ode(v, fwd.xs[-1], n_steps=200)
    assert np.max(np.abs(np.asarray(back.xs[-1] - x_q))) < 1e-9


# ------------------------------------------------------------------------- convergence order


def gaussian_flow_map(sch, mu, s, x, t, t2):
    """Exact flow map of N(μ, s²) data: x ↦ m' μ + sqrt(C(t')/C(t)) (x − m μ), C = m²s² + σ²."""
    def C(u):
        return sch.m(u) ** 2 * s**2 + sch.sigma2(u)
    return sch.m(t2) * mu + jnp.sqrt(C(t2) / C(t)) * (x - sch.m(t) * mu)


@pytest.mark.parametrize("method,order,steps", [("euler", 1, [32, 64, 128, 256]),
                                                ("heun", 2, [32, 64, 128, 256]),
                                                ("rk4", 4, [16, 32, 64, 128])])
def test_convergence_order(method, order, steps):
    mu, s = 1.5, 0.3
    sch = S.cosine(1.3)
    v = R.exact_velocity(sch, M.gaussian(mu, s))
    x = jnp.linspace(-2.0, 2.0, 9)[:, None]
    exact = gaussian_flow_map(sch, mu, s, x, sch.tau, 0.0)
    errs = [float(jnp.max(jnp.abs(R.reverse_ode(v, x, method=method, n_steps=n).xs[-1] - exact)))
            for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    # measured: euler 0.99, heun 1.98, rk4 4.10
    assert abs(slope - order) < 0.15, (errs, slope)


# --------------------------------------------------------------------------------- reverse SDE


@pytest.mark.parametrize("name,make,t_start,t_end", [
    # vp-linear is regular at both ends (m_τ > 0, T_0 = β_min/2 > 0): the whole interval.
    ("vp-linear", lambda: S.vp_linear(0.1, 20.0), 1.0, 0.0),
    # cosine: f and T diverge at τ and T_0 = 0, so stop short of both ends.
    ("cosine", S.cosine, 0.99, 0.01),
])
def test_reverse_sde_reproduces_marginals(name, make, t_start, t_end):
    sch, q = make(), gmm()
    n = 20_000
    x0 = F.sample_marginal(jax.random.PRNGKey(1), sch, q, t_start, n)
    out = R.reverse_sde(jax.random.PRNGKey(2), sch, R.exact_score(sch, q), x0, t_start=t_start,
                        t_end=t_end, n_steps=1000, n_save=4)
    assert bool(out.finite) and out.xs.shape == (5, n, 1)
    np.testing.assert_allclose(out.ts, np.linspace(t_start, t_end, 5), atol=1e-14)
    for t, xs in zip(out.ts[1:], out.xs[1:]):
        mean, var, mu4 = mixture_moments(F.marginal(sch, q, t))
        xs = np.asarray(xs[:, 0])
        # 4 standard errors: sd(x̄) = sqrt(var/n), sd(s²) = sqrt((μ4 − var²)/n); Euler–Maruyama
        # bias at 1000 steps was measured below 1 standard error.
        assert abs(xs.mean() - mean) < 4 * np.sqrt(var / n), (float(t), xs.mean(), mean)
        assert abs(xs.var() - var) < 4 * np.sqrt((mu4 - var**2) / n), (float(t), xs.var(), var)
        assert stats.kstest(xs, lambda z: mixture_cdf(F.marginal(sch, q, t), z)).pvalue > 1e-3


# ---------------------------------------------------------------------------------- adaptive


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_adaptive_agrees_with_rk4(solver):
    sch, q = S.cosine(), gmm()
    v = R.exact_velocity(sch, q)
    x_tau = mixture_quantiles(F.marginal(sch, q, sch.tau), U)[:, None]
    ad = R.solve_ode_adaptive(v, x_tau, solver=solver, rtol=1e-10, atol=1e-10, n_save=2)
    rk = R.reverse_ode(v, x_tau, n_steps=400, n_save=2)
    assert bool(ad.success) and bool(ad.finite) and 0 < int(ad.n_steps) < 4096
    np.testing.assert_allclose(ad.ts, rk.ts, atol=1e-15)
    err = float(jnp.max(jnp.abs(ad.xs - rk.xs)))
    assert err < 1e-6, err  # measured ≈ 7e-10 (tsit5)
    assert np.max(np.abs(np.asarray(ad.xs[-1, :, 0]) - mixture_quantiles(q, U))) < 1e-6


def test_adaptive_failure_is_a_flag_or_an_error():
    sch, q = S.cosine(), gmm()
    v = R.exact_velocity(sch, q)
    x = jnp.linspace(-2.0, 2.0, 5)[:, None]
    out = R.solve_ode_adaptive(v, x, max_steps=2, throw=False)
    assert not bool(out.success) and not bool(out.finite)
    with pytest.raises(RuntimeError, match="max_steps"):
        R.solve_ode_adaptive(v, x, max_steps=2, throw=True)


# --------------------------------------------------------------------------------- gradients


def directional_fd(f, x, d, eps):
    return (f(x + eps * d) - f(x - eps * d)) / (2 * eps)


@pytest.mark.parametrize("method", ["heun", "rk4"])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_grad_through_fixed_step_solve(method, checkpoint):
    """jax.grad w.r.t. the initial points and a schedule parameter (β_max) vs central FD."""
    q = gmm()
    x0 = jnp.linspace(-1.5, 1.5, 7)[:, None]
    w = jnp.linspace(0.3, 1.1, 7)[:, None]

    def loss(x, beta_max):
        v = R.exact_velocity(S.vp_linear(0.1, beta_max), q)
        out = R.reverse_ode(v, x, t_start=0.8, t_end=0.2, method=method, n_steps=20,
                            checkpoint=checkpoint)
        return jnp.sum(w * jnp.sin(out.xs[-1]))

    b = jnp.asarray(20.0)
    gx, gb = jax.grad(loss, argnums=(0, 1))(x0, b)
    d = jax.random.normal(jax.random.PRNGKey(0), x0.shape)
    fd_x = directional_fd(lambda x: loss(x, b), x0, d, 1e-5)
    np.testing.assert_allclose(float(jnp.sum(gx * d)), float(fd_x), rtol=1e-7)
    fd_b = directional_fd(lambda bb: loss(x0, bb), b, 1.0, 1e-4)
    np.testing.assert_allclose(float(gb), float(fd_b), rtol=1e-7)
    assert float(gb) != 0.0


def test_grad_through_param_field_and_sde():
    """A model field fn(params, x, t): grads w.r.t. params (ODE and reparameterised SDE) vs FD."""
    def fn(p, x, t):
        return p["a"] * x + p["b"] * jnp.sin(x) * t

    params = {"a": jnp.asarray(-0.7), "b": jnp.asarray(0.4)}
    x0 = jnp.linspace(-1.0, 1.0, 5)[:, None]
    sch = S.vp_linear(0.1, 5.0)

    def loss_ode(p):
        return jnp.sum(R.reverse_ode(R.field(fn, p, tau=1.0), x0, n_steps=16).xs[-1] ** 2)

    def loss_sde(p):
        out = R.reverse_sde(jax.random.PRNGKey(3), sch, R.field(fn, p), x0, t_start=0.9,
                            t_end=0.1, n_steps=16)
        return jnp.sum(out.xs[-1] ** 2)

    for loss in (loss_ode, loss_sde):
        g = jax.grad(loss)(params)
        for k in params:
            e = {kk: jnp.asarray(1.0 if kk == k else 0.0) for kk in params}
            fd = (loss(jax.tree.map(lambda a, b: a + 1e-6 * b, params, e))
                  - loss(jax.tree.map(lambda a, b: a - 1e-6 * b, params, e))) / 2e-6
            np.testing.assert_allclose(float(g[k]), float(fd), rtol=1e-7)


def test_checkpoint_stores_only_the_states():
    """Reverse-mode memory: all per-step residuals without checkpointing, O(n_steps·N·d) with."""
    sch, q = S.vp_linear(), gmm()
    x = jnp.linspace(-2.0, 2.0, 256)[:, None]
    n_steps = 400
    temp = {}
    grads = {}
    for ck in (False, True):
        def loss(x0, ck=ck):
            out = R._ode_fixed(R.exact_velocity(sch, q), x0, jnp.asarray(1.0), jnp.asarray(0.0),
                               "rk4", n_steps, 1, ck)
            return jnp.sum(out.xs[-1] ** 2)

        compiled = jax.jit(jax.grad(loss)).lower(x).compile()
        ma = compiled.memory_analysis()
        assert ma is not None, "the CPU backend reports compiled memory"
        temp[ck] = ma.temp_size_in_bytes
        grads[ck] = compiled(x)
    np.testing.assert_allclose(grads[True], grads[False], rtol=1e-12)
    states = n_steps * x.size * 8
    # measured: 46 MB without, 0.97 MB with (states alone: 0.82 MB)
    assert states <= temp[True] < 2 * states < temp[False] / 10, temp


# ------------------------------------------------------------------------- 2-D rotating force


def test_rotating_force_reverse_ode_lands_on_swiss_roll():
    data = M.swiss_roll(n=200, width=0.05)
    rf = RotatingForce.create(h=1.0, g=3.0, t_fin=2.0)
    n = 4000
    x_tau = F.sample_marginal(jax.random.PRNGKey(7), rf, data, rf.tau, n)
    out = R.reverse_ode(R.exact_velocity(rf, data), x_tau, n_steps=64)
    assert bool(out.finite)
    x = np.asarray(out.xs[-1])
    mean, cov = np.asarray(data.mean()), np.asarray(data.covariance())
    # The flow map is deterministic, so only the Monte-Carlo error of the n samples of P_τ
    # remains (RK4 with 64 vs 128 steps differs by < 1e-4 ≪ 4 se, checked on a subset below).
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 4 * se_mean), (x.mean(0), mean, se_mean)
    dev = x - x.mean(0)
    prods = dev[:, :, None] * dev[:, None, :]
    se_cov = prods.reshape(n, -1).std(0).reshape(2, 2) / np.sqrt(n)
    assert np.all(np.abs(np.cov(x.T) - cov) < 4 * se_cov), (np.cov(x.T), cov, se_cov)
    fine = R.reverse_ode(R.exact_velocity(rf, data), x_tau[:200], n_steps=128).xs[-1]
    assert float(jnp.max(jnp.abs(fine - out.xs[-1, :200]))) < 1e-4  # measured 2.5e-5


# ------------------------------------------------------------------ fields, jit, recompilation


def test_score_velocity_conversions_are_inverse():
    """ν = f − T s (Eq. 11) and s = (f − ν)/T inside (0, τ), for a schedule and a rotating force."""
    for prot, q in [(S.cosine(), gmm()), (RotatingForce.create(g=3.0), M.swiss_roll(n=30))]:
        x = q.sample(jax.random.PRNGKey(0), 6)
        for t in [0.2, 0.5, 0.9]:
            v_ex = jax.vmap(R.exact_velocity(prot, q), in_axes=(0, None))(x, t)
            s_ex = jax.vmap(R.exact_score(prot, q), in_axes=(0, None))(x, t)
            v_s = jax.vmap(R.velocity_from_score(prot, R.exact_score(prot, q)),
                           in_axes=(0, None))(x, t)
            s_v = jax.vmap(R.score_from_velocity(prot, R.exact_velocity(prot, q)),
                           in_axes=(0, None))(x, t)
            np.testing.assert_allclose(v_s, v_ex, rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(s_v, s_ex, rtol=1e-9, atol=1e-11)


def test_no_recompile_when_numbers_change():
    q = gmm()
    x = jnp.linspace(-1.0, 1.0, 4)[:, None]
    R.reverse_ode(R.exact_velocity(S.vp_linear(0.1, 20.0), q), x, n_steps=8)
    before = R._ode_fixed._cache_size()
    for bmin, bmax in [(0.2, 10.0), (0.05, 15.0)]:
        R.reverse_ode(R.exact_velocity(S.vp_linear(bmin, bmax), q), x + bmin, n_steps=8,
                      t_start=0.9 - bmin)
    R.reverse_ode(R.exact_velocity(S.vp_linear(0.1, 20.0), M.gmm([-1.0, 3.0], 0.2)), x,
                  n_steps=8)
    assert R._ode_fixed._cache_size() == before

    def fn(p, y, t):
        return p * y

    R.reverse_ode(R.field(fn, jnp.asarray(1.0), tau=1.0), x, n_steps=8)
    mid = R._ode_fixed._cache_size()
    for a in [0.5, -2.0]:
        R.reverse_ode(R.field(fn, jnp.asarray(a), tau=1.0), x, n_steps=8)
    assert R._ode_fixed._cache_size() == mid


def test_jit_and_eager_agree_and_bare_callables_work():
    sch, q = S.cosine(), gmm()
    x = jnp.linspace(-2.0, 2.0, 5)[:, None]
    eager = R.reverse_ode(R.exact_velocity(sch, q), x, n_steps=32, save_every=8)
    assert eager.xs.shape == (5, 5, 1)
    jitted = jax.jit(lambda s, y: R.reverse_ode(R.exact_velocity(s, q), y, n_steps=32,
                                                save_every=8))(sch, x)
    np.testing.assert_allclose(jitted.xs, eager.xs, rtol=1e-13)
    # A bare callable (static; recompiles per function object) gives the same answer.
    v = R.exact_velocity(sch, q)
    bare = R.solve_ode(lambda y, t: v(y, t), x, t_start=1.0, t_end=0.0, n_steps=32,
                       save_every=8)
    np.testing.assert_allclose(bare.xs, eager.xs, rtol=1e-13)
    # float32 inputs keep their dtype under x64 (the mixture field computes in float64)
    out32 = R.reverse_ode(v, x.astype(jnp.float32), n_steps=32)
    assert out32.xs.dtype == jnp.float32
    np.testing.assert_allclose(out32.xs[-1], eager.xs[-1], atol=1e-5)


# ------------------------------------------------------------------------------- bad input


def _v():
    return R.exact_velocity(S.cosine(), gmm())


X = jnp.zeros((3, 1))


@pytest.mark.parametrize("call,match", [
    (lambda: R.reverse_ode(_v(), X, n_steps=10, n_save=3), "multiple of `n_save`"),
    (lambda: R.reverse_ode(_v(), X, n_steps=10, save_every=3), "divisor"),
    (lambda: R.reverse_ode(_v(), X, n_steps=10, n_save=2, save_every=5), "at most one"),
    (lambda: R.reverse_ode(_v(), X, n_steps=0), "n_steps"),
    (lambda: R.reverse_ode(_v(), jnp.zeros(3)), r"shape \(N, d\)"),
    (lambda: R.reverse_ode(_v(), jnp.zeros((3, 2))), "trailing dimension"),
    (lambda: R.reverse_ode(R.field(lambda p, x, t: jnp.zeros(3), None, tau=1.0), X),
     "must map a point"),
    (lambda: R.reverse_ode(_v(), X, method="rk45"), "unknown `method`"),
    (lambda: R.solve_ode_adaptive(_v(), X, solver="euler"), "unknown `solver`"),
    (lambda: R.solve_ode_adaptive(_v(), X, rtol=-1.0), "rtol"),
    (lambda: R.reverse_ode(_v(), X, t_start=0.2, t_end=0.5), "t_start > t_end"),
    (lambda: R.forward_ode(_v(), X, t_start=0.5, t_end=0.2), "t_end > t_start"),
    (lambda: R.reverse_ode(_v(), X, t_start=1.5), r"\[0, tau\]"),
    (lambda: R.solve_ode(_v(), X, t_start=0.5, t_end=0.5), "must differ"),
    (lambda: R.reverse_ode(R.field(lambda p, x, t: x), X), "horizon"),
    (lambda: R.reverse_sde(jax.random.PRNGKey(0), RotatingForce.create(),
                           R.field(lambda p, x, t: x), X), "dimensions"),
    (lambda: R.reverse_sde(jax.random.PRNGKey(0), S.vp_linear(), R.exact_score(S.vp_linear(),
                           gmm()), X, t_end=-0.1), r"\[0, tau\]"),
    (lambda: R.exact_velocity(RotatingForce.create(), gmm()), "dimension"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_callable_field_raises_type_error():
    with pytest.raises(TypeError, match="callable"):
        R.reverse_ode(3.0, X)


def test_rotating_force_generation_at_two_sample_noise_floor():
    """Exact velocity, 2-D: W1(generated, exact q samples) is at the two-sample noise floor
    W1(exact, exact) of the same sample size (exact OT, POT)."""
    from satjax.geometry.distances import ot_cost

    data = M.swiss_roll(n=200, width=0.05)
    rf = RotatingForce.create(h=1.0, g=3.0, t_fin=2.0)
    n = 1500
    x_tau = F.sample_marginal(jax.random.PRNGKey(11), rf, data, rf.tau, n)
    gen = R.reverse_ode(R.exact_velocity(rf, data), x_tau, n_steps=64).xs[-1]
    ref, ref2 = data.sample(jax.random.PRNGKey(12), n), data.sample(jax.random.PRNGKey(13), n)
    w1 = float(ot_cost(gen, ref, p=1, backend="pot").cost)
    floor = float(ot_cost(ref2, ref, p=1, backend="pot").cost)
    assert w1 < 1.25 * floor, (w1, floor)
