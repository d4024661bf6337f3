"""Forward process: Fokker–Planck residual, stable velocity, closed forms, SDE, memory, jit."""

import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import satjax as sj
from satjax import forward as F
from satjax import mixtures as M
from satjax import schedules as S
from satjax.forces import GeneralLinearForce, RotatingForce

TAU = 1.3
SCHEDULES = {
    "cosine": lambda: S.cosine(TAU),
    "cond-ot": lambda: S.cond_ot(TAU),
    "vp-linear": lambda: S.vp_linear(0.1, 20.0, TAU),
    "ve": lambda: S.ve(0.01, 5.0, TAU),
    "polar": lambda: S.polar(3, 2, tau=TAU, angle=[1.0, 0.3, -0.2], log_radius=[0.3, -0.2]),
    "polar-vp": lambda: S.polar(3, vp=True, tau=TAU, angle=[1.0, -0.3, 0.1]),
}


def fp_terms(protocol, data, x, t):
    """(∂_t ln P, ∇·ν, ν·∇ln P) at one point: their sum is (∂_t P + ∇·(νP))/P."""
    dlogp = jax.jacfwd(lambda s: F.log_density(protocol, data, x, s))(t)
    div = jnp.trace(jax.jacfwd(lambda y: F.velocity(protocol, data, y, t))(x))
    f = F.fields(protocol, data, x, t)
    return jnp.stack([dlogp, div, f.velocity @ f.score])


def assert_fp_residual(protocol, data, key, n=6):
    kx, kt = jax.random.split(key)
    ts = jax.random.uniform(kt, (n,), minval=0.05, maxval=0.95) * protocol.tau
    for i, t in enumerate(ts):
        x = F.sample_marginal(jax.random.fold_in(kx, i), protocol, data, t, 1)[0] * 1.3
        terms = fp_terms(protocol, data, x, t)
        rel = abs(float(jnp.sum(terms))) / float(jnp.sum(jnp.abs(terms)))
        assert rel < 1e-8, (float(t), np.asarray(terms))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_fokker_planck_residual_schedules(name, key):
    data = M.gmm([-2.0, 0.5, 2.0], [0.5, 0.3, 0.7], [0.3, 0.3, 0.4])
    assert_fp_residual(SCHEDULES[name](), data, key)


@pytest.mark.parametrize("kind", ["iso", "full"])
def test_fokker_planck_residual_rotating(kind, key):
    rf = RotatingForce.create(h=1.0, g=3.0, t_fin=2.0, tau=TAU)
    if kind == "iso":
        data = M.swiss_roll(n=40, width=0.1)
    else:
        data = M.GaussianMixture.create([0.6, 0.4], [[1.0, 0.0], [-1.0, 0.5]],
                                        [[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.4]]])
    assert_fp_residual(rf, data, key)


def test_fokker_planck_residual_diag_data_schedule(key):
    data = M.GaussianMixture.create([0.5, 0.5], [[1.0, 0.0], [-1.0, 0.5]], [[0.3, 0.1], [0.2, 0.4]])
    assert_fp_residual(S.cosine(TAU), data, key)


def test_fokker_planck_residual_general_force(key):
    """A non-normal A with offset and time-dependent temperature (transition by ODE)."""
    f = GeneralLinearForce.create(
        matrix_fn=lambda p, t: jnp.array([[-1.0, 2.0 * t], [-0.5, -0.3]]),
        offset_fn=lambda p, t: jnp.array([0.3, -0.2 * t]),
        temperature_fn=lambda p, t: 0.2 + t**2, dim=2, tau=1.0)
    data = M.gmm([[1.0, 0.0], [-1.0, 0.5]], [0.4, 0.3])
    assert_fp_residual(f, data, key, n=3)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("x64", [True, False])
def test_stable_velocity_finite_and_equal_to_direct_form(name, x64):
    ctx = jax.enable_x64(x64)
    with ctx:
        sch = SCHEDULES[name]()
        data = M.gmm([-2.0, 2.0], 0.5)
        eps = 1e-6 * TAU
        nodes = np.polynomial.legendre.leggauss(16)[0]
        ts = [eps, TAU - eps] + list(0.5 * TAU * (nodes + 1))
        x = jnp.linspace(-4.0, 4.0, 9)[:, None]
        for t in ts:
            f = F.fields(sch, data, x, t)
            for k, v in f.items():
                assert np.all(np.isfinite(np.asarray(v))), (name, t, k)
            # f − T ∇ln P where the direct form is finite (not at the singular end for m_τ = 0).
            T = sch.temperature(t)
            direct = sch.log_m_rate(t) * x - T * f.score
            if np.all(np.isfinite(np.asarray(direct))) and float(T) < 1e3:
                scale = float(jnp.max(jnp.abs(direct))) + 1.0
                tol = 1e-9 if x64 else 2e-4
                assert float(jnp.max(jnp.abs(f.velocity - direct))) < tol * scale, (name, t)


def test_gaussian_data_closed_form():
    """N(μ, s²) under a schedule: P_t = N(mμ, m²s² + σ²), ν = m'μ + (m m' s² + σσ')/C (x − mμ)."""
    mu, s = 1.5, 0.4
    data = M.gaussian(mu, s)
    sch = S.cosine(TAU)
    x = jnp.linspace(-2.0, 3.0, 7)[:, None]
    for t in [0.0, 0.3, 0.9, TAU]:
        a = np.pi * t / (2 * TAU)
        m, sg = np.cos(a), np.sin(a)
        dm, dsg = -np.sin(a) * np.pi / (2 * TAU), np.cos(a) * np.pi / (2 * TAU)
        C = m**2 * s**2 + sg**2
        xs = np.asarray(x[:, 0])
        f = F.fields(sch, data, x, t)
        np.testing.assert_allclose(f.log_prob, stats.norm(m * mu, np.sqrt(C)).logpdf(xs), rtol=1e-12)
        np.testing.assert_allclose(f.score[:, 0], -(xs - m * mu) / C, rtol=1e-12)
        v = dm * mu + (m * dm * s**2 + sg * dsg) / C * (xs - m * mu)
        np.testing.assert_allclose(f.velocity[:, 0], v, rtol=1e-12, atol=1e-14)


class VariantTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_velocity_shapes_and_values_under_variants(self):
        data = M.gmm([[-1.0, 0.0], [1.0, 1.0]], 0.5)
        sch = S.vp_linear()

        @self.variant
        def vel(x, t):
            return F.velocity(sch, data, x, t)

        x = jnp.array([[0.1, 0.2], [1.0, -1.0], [0.0, 0.0]])
        out = vel(x, 0.4)
        chex.assert_shape(out, (3, 2))
        chex.assert_tree_all_finite(out)
        ref = sch.fields(data, x, 0.4, ("velocity",), chunk=1).velocity
        np.testing.assert_allclose(out, ref, rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_marginal_shapes(self):
        data = M.swiss_roll(n=30)
        rf = RotatingForce.create(g=3.0)

        @self.variant
        def marg(t):
            return F.marginal(rf, data, t)

        p = marg(0.5)
        chex.assert_shape(p.means, (30, 2))
        chex.assert_shape(p.cov, (30,))


def test_no_recompile_when_parameters_change():
    data = M.gmm([-2.0, 2.0], 0.5)
    x = jnp.linspace(-1, 1, 4)[:, None]
    F.velocity(S.vp_linear(0.1, 20.0), data, x, 0.3)
    before = F._fields._cache_size()
    for bmin, bmax in [(0.2, 10.0), (0.05, 15.0), (1.0, 3.0)]:
        F.velocity(S.vp_linear(bmin, bmax), data, x, 0.3 + 0.1 * bmin)
    F.velocity(S.vp_linear(0.1, 20.0), M.gmm([-1.0, 3.0], 0.2), x, 0.7)  # new data values
    assert F._fields._cache_size() == before
    # gradients with respect to schedule parameters flow through the velocity
    g = jax.grad(lambda b: jnp.sum(F.velocity(S.VPLinear(tau=1.0, beta_min=0.1, beta_max=b), data, x, 0.3)))(20.0)
    assert np.isfinite(float(g)) and float(g) != 0.0


def test_chunked_velocity_equals_unchunked():
    data = M.swiss_roll(n=257, width=0.05)
    rf = RotatingForce.create(h=1.0, g=5.0, t_fin=2.0)
    x = data.sample(jax.random.PRNGKey(3), 50)
    a = F.fields(rf, data, x, 0.37)
    b = rf.fields(data, x, 0.37, chunk=64)
    for k in a:
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-10, atol=1e-12)


def mixture_cdf(mix, x):
    sd = np.sqrt(np.asarray(mix.cov))
    return sum(float(w) * stats.norm(float(m[0]), s).cdf(x) for w, m, s in zip(mix.weights, mix.means, sd))


def test_forward_sde_matches_exact_marginal_1d():
    data = M.gmm([-2.0, 2.0], 0.5)
    sch = S.vp_linear(0.1, 20.0, 1.0)
    n = 20_000
    x0 = data.sample(jax.random.PRNGKey(1), n)
    traj = F.forward_sde(jax.random.PRNGKey(2), sch, x0, n_steps=1000, n_save=4)
    assert bool(traj.finite)
    for t, xs in zip(traj.ts[1:], traj.xs[1:]):
        p = F.marginal(sch, data, t)
        xs = np.asarray(xs[:, 0])
        var = float(p.covariance()[0, 0])
        assert abs(xs.mean() - float(p.mean()[0])) < 4 * np.sqrt(var / n) + 2e-3
        assert abs(xs.var() / var - 1) < 4 * np.sqrt(2 / n) + 5e-3
        # two-sample distance: Kolmogorov–Smirnov against the exact marginal CDF
        assert stats.kstest(xs, lambda z: mixture_cdf(p, z)).pvalue > 1e-3


def test_forward_sde_matches_exact_marginal_rotating():
    data = M.swiss_roll(n=200, width=0.05)
    rf = RotatingForce.create(h=1.0, g=3.0, t_fin=2.0)
    n = 20_000
    x0 = data.sample(jax.random.PRNGKey(4), n)
    traj = F.forward_sde(jax.random.PRNGKey(5), rf, x0, n_steps=1000, n_save=2)
    for t, xs in zip(traj.ts[1:], traj.xs[1:]):
        p = F.marginal(rf, data, t)
        mean, cov = np.asarray(p.mean()), np.asarray(p.covariance())
        xs = np.asarray(xs)
        se = np.sqrt(np.diag(cov) / n)
        assert np.all(np.abs(xs.mean(0) - mean) < 4 * se + 3e-3)
        np.testing.assert_allclose(np.cov(xs.T), cov, atol=4 * np.sqrt(2 / n) * cov.max() + 3e-3)
        # energy-distance style check on a 1-D projection: KS between SDE and exact samples
        exact = np.asarray(p.sample(jax.random.PRNGKey(6), n))
        u = np.array([0.6, 0.8])
        assert stats.ks_2samp(xs @ u, exact @ u).pvalue > 1e-3


def test_large_mixture_bounded_memory():
    """50 000 components at 10 000 points in chunks: peak RSS stays below 3 GB."""
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        jax.config.update("jax_enable_x64", True)
        from satjax import forward as F, mixtures as M, schedules as S
        rng = np.random.default_rng(0)
        data = M.from_samples(rng.normal(size=(50_000, 2)), width=0.05)
        x = jnp.asarray(rng.normal(size=(10_000, 2)))
        out = S.cosine().fields(data, x, 0.3, chunk=2048)
        jax.block_until_ready(out)
        assert np.all(np.isfinite(np.asarray(out.velocity)))
        from satjax.bench import peak_rss_mb  # the child's own peak (not the parent's at fork)
        print(peak_rss_mb())
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    peak_mb = float(res.stdout.strip().splitlines()[-1])
    assert peak_mb < 3000, peak_mb


@pytest.mark.parametrize("call,match", [
    (lambda: F.velocity(S.cosine(), M.gmm([0.0], 1.0), jnp.zeros((2, 1)), 1.5), r"\[0, tau\]"),
    (lambda: F.velocity(S.cosine(), M.gmm([0.0], 1.0), jnp.zeros((2, 1)), -0.1), r"\[0, tau\]"),
    (lambda: F.velocity(RotatingForce.create(), M.gmm([0.0], 1.0), jnp.zeros((2, 1)), 0.5), "dimension"),
    (lambda: F.velocity(S.cosine(), M.gmm([0.0], 1.0), jnp.zeros((2, 3)), 0.5), "trailing dimension"),
    (lambda: F.forward_sde(jax.random.PRNGKey(0), S.cosine(), jnp.zeros((2, 1)), n_steps=10, n_save=3), "multiple"),
    (lambda: S.cosine().fields(M.gmm([0.0], 1.0), jnp.zeros((2, 1)), 0.5, chunk=0), "chunk"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_top_level_api():
    assert sj.velocity is F.velocity and sj.GaussianMixture is M.GaussianMixture
