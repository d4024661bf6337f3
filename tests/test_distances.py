"""Wasserstein distances: closed forms, independent quadrature, exact LP, finite differences."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from scipy import integrate, optimize, special, stats

from satjax import mixtures as M
from satjax.geometry import distances as D

# ---------------------------------------------------------------------- scipy references (1-D)


def _comp(mix):
    return (np.asarray(mix.weights), np.asarray(mix.means)[:, 0],
            np.sqrt(np.asarray(mix.cov).reshape(-1)))


def _cdf(c, x):
    w, mu, sd = c
    return w @ special.ndtr((x - mu) / sd)


def _sf(c, x):
    w, mu, sd = c
    return w @ special.ndtr((mu - x) / sd)


def _pdf(c, x):
    w, mu, sd = c
    return w @ stats.norm.pdf(x, mu, sd)


def _quantile_ref(c, u, upper=False):
    """F⁻¹(u), or F⁻¹(1 − u) with upper=True, by brentq on log F (log S), scipy only."""
    w, mu, sd = c
    z = special.ndtri(u) * (-1 if upper else 1)
    lo, hi = np.min(mu + sd * z) - 1e-9, np.max(mu + sd * z) + 1e-9
    def f(x):
        if upper:
            return np.log(u) - special.logsumexp(np.log(w) + special.log_ndtr((mu - x) / sd))
        return special.logsumexp(np.log(w) + special.log_ndtr((x - mu) / sd)) - np.log(u)

    return optimize.brentq(f, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)


_QUAD = dict(epsabs=1e-14, epsrel=1e-13, limit=2000)


def w1_reference(P, Q):
    """∫ |F_P − F_Q| dx by adaptive quadrature, split at the crossings of the two CDFs."""
    cp, cq = _comp(P), _comp(Q)
    mu, sd = np.concatenate([cp[1], cq[1]]), np.concatenate([cp[2], cq[2]])
    lo, hi = np.min(mu - 12 * sd), np.max(mu + 12 * sd)

    def gap(x):  # F_Q − F_P, from survival functions in the upper half
        return _cdf(cq, x) - _cdf(cp, x) if _cdf(cp, x) < 0.5 else _sf(cp, x) - _sf(cq, x)

    grid = np.linspace(lo, hi, 4001)
    g = np.array([gap(x) for x in grid])
    roots = [optimize.brentq(gap, grid[i], grid[i + 1], xtol=1e-15)
             for i in np.nonzero(g[:-1] * g[1:] < 0)[0]]
    edges = [lo, *roots, hi]
    return sum(integrate.quad(lambda x: abs(gap(x)), a, b, **_QUAD,
                              points=[m for m in mu if a < m < b] or None)[0]
               for a, b in zip(edges[:-1], edges[1:]))


def w2sq_to_gaussian_reference(P, m, s):
    """W_2²(P, N(m, s²)) = ∫ (x − T(x))² p_P(x) dx with the monotone map T = m + s Φ⁻¹ ∘ F_P."""
    cp = _comp(P)

    def integrand(x):
        t = special.ndtri(_cdf(cp, x)) if _cdf(cp, x) < 0.5 else -special.ndtri(_sf(cp, x))
        return (x - m - s * t) ** 2 * _pdf(cp, x)

    lo, hi = np.min(cp[1] - 12 * cp[2]), np.max(cp[1] + 12 * cp[2])
    return integrate.quad(integrand, lo, hi, points=list(cp[1]), **_QUAD)[0]


def w2sq_reference(P, Q):
    """W_2² = ∫_0^1 (F_P⁻¹ − F_Q⁻¹)² du, in halves so each quantile is solved in its good form."""
    cp, cq = _comp(P), _comp(Q)
    half = lambda upper: integrate.quad(  # noqa: E731
        lambda u: (_quantile_ref(cp, u, upper) - _quantile_ref(cq, u, upper)) ** 2, 0, 0.5,
        epsabs=1e-13, epsrel=1e-11, limit=500)[0]
    return half(False) + half(True)


def random_mixture(rng, K, kind="iso"):
    w = rng.dirichlet(np.ones(K))
    mu = rng.normal(size=(K, 1)) * 2
    var = rng.uniform(0.2, 1.5, size=K)
    cov = {"iso": var, "diag": var[:, None], "full": var[:, None, None]}[kind]
    return M.GaussianMixture.create(w, mu, cov)


PAPER = M.gmm([-2.0, 2.0], 0.5)  # PAPER.md Eq. 96 with satjax's defaults


# ---------------------------------------------------------------------- CDF and quantile


@pytest.mark.parametrize("kind", ["iso", "diag", "full"])
def test_quantile_inverts_cdf_into_the_tails(kind):
    mix = random_mixture(np.random.default_rng(0), 3, kind)
    c = _comp(mix)
    u = np.array([1e-300, 1e-20, 1e-5, 0.1, 0.5, 0.77, 0.999])
    x = mix.quantile(u)
    # (the CDF itself, a sum of ndtr, is only good to 3e-11 relative at 1e-300)
    np.testing.assert_allclose(mix.cdf(x[1:]), u[1:], rtol=1e-12)
    np.testing.assert_allclose(x, [_quantile_ref(c, ui) for ui in u], rtol=1e-12)
    v = 2.0 ** np.array([-50, -10])  # levels 1 − v (exact in binary), via the survival function
    np.testing.assert_allclose(mix.quantile(1 - v),
                               [_quantile_ref(c, vi, upper=True) for vi in v], rtol=1e-12)
    # one Gaussian: the exact normal quantile
    g = M.gaussian(1.0, 2.0)
    np.testing.assert_allclose(g.quantile(u), 1.0 + 2.0 * special.ndtri(u), rtol=1e-13)


def test_quantile_gradients_are_implicit_derivatives():
    """dF⁻¹/du = 1/p and dF⁻¹/dθ = −(∂F/∂θ)/p against central differences; forward and reverse."""
    rng = np.random.default_rng(1)
    mix = random_mixture(rng, 3)
    u = jnp.array([0.05, 0.3, 0.9])
    # a random direction in the mixture's arrays, keeping the weights summing to 1
    w_dir = rng.normal(size=3)
    direction = mix.replace(weights=jnp.asarray(w_dir - w_dir.mean()),
                            means=jnp.asarray(rng.normal(size=(3, 1))),
                            cov=jnp.asarray(rng.normal(size=3) * 0.1))
    zero_mix = jax.tree_util.tree_map(jnp.zeros_like, mix)
    h = 1e-6

    _, d_u = jax.jvp(lambda m, uu: m.quantile(uu), (mix, u), (zero_mix, jnp.ones_like(u)))
    pdf = jnp.exp(mix.log_prob(mix.quantile(u)[:, None]))
    np.testing.assert_allclose(d_u, 1.0 / pdf, rtol=1e-12)
    fd_u = (mix.quantile(u + h) - mix.quantile(u - h)) / (2 * h)
    np.testing.assert_allclose(d_u, fd_u, rtol=1e-7)

    _, d_theta = jax.jvp(lambda m, uu: m.quantile(uu), (mix, u), (direction, jnp.zeros_like(u)))
    shift = lambda t: jax.tree_util.tree_map(lambda a, d: a + t * d, mix, direction)  # noqa: E731
    fd = (shift(h).quantile(u) - shift(-h).quantile(u)) / (2 * h)
    np.testing.assert_allclose(d_theta, fd, rtol=1e-7)

    vjp = jax.grad(lambda m: m.quantile(u).sum())(mix)
    dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(vjp),
                                             jax.tree_util.tree_leaves(direction)))
    assert float(dot) == pytest.approx(float(d_theta.sum()), rel=1e-10)


def test_quantile_is_jittable_and_gives_nan_outside_the_unit_interval():
    f = jax.jit(lambda m, uu: m.quantile(uu))
    out = f(PAPER, jnp.array([0.0, 0.5, 1.0]))
    assert np.isnan(out[0]) and np.isnan(out[2]) and abs(float(out[1])) < 1e-8


# ---------------------------------------------------------------------- W_p of 1-D mixtures


def test_wasserstein_1d_two_gaussians_closed_forms():
    rng = np.random.default_rng(3)
    for m1, m2, s1, s2 in rng.uniform([-2, -2, 0.3, 0.3], [2, 2, 2, 2], size=(3, 4)):
        P, Q = M.gaussian(m1, s1), M.gaussian(m2, s2)
        exact_w2sq = (m1 - m2) ** 2 + (s1 - s2) ** 2
        assert float(D.w2_squared_1d(P, Q)) == pytest.approx(exact_w2sq, rel=1e-12)
        assert float(D.wasserstein_1d(P, Q, 2)) == pytest.approx(np.sqrt(exact_w2sq), rel=1e-12)
        # W_1 = E|Δm + Δs Z| (comonotone coupling): the folded-normal mean, with a kink inside
        a, b = m1 - m2, abs(s1 - s2)
        exact_w1 = (b * np.sqrt(2 / np.pi) * np.exp(-(a**2) / (2 * b**2))
                    + a * (1 - 2 * special.ndtr(-a / b)))
        assert float(D.wasserstein_1d(P, Q, 1)) == pytest.approx(exact_w1, rel=1e-12)
    # equal variances: W_1 = |Δm|
    assert float(D.wasserstein_1d(M.gaussian(0.3, 0.7), M.gaussian(-1.2, 0.7), 1)) == \
        pytest.approx(1.5, rel=1e-12)


def test_wasserstein_1d_mixtures_match_quadrature():
    """Against scipy quad (epsrel 1e-13) by routes independent of the comonotone-sum scheme.

    The target is 1e-8; measured agreement is ~1e-15, asserted at 1e-10.
    """
    N01 = M.gaussian(0.0, 1.0)
    assert float(D.wasserstein_1d(PAPER, N01, 1)) == pytest.approx(w1_reference(PAPER, N01),
                                                                   rel=1e-10)
    assert float(D.w2_squared_1d(PAPER, N01)) == pytest.approx(
        w2sq_to_gaussian_reference(PAPER, 0.0, 1.0), rel=1e-10)
    # mixture against mixture, with separated components (gaps in both quantile functions)
    P = random_mixture(np.random.default_rng(4), 5)
    assert float(D.wasserstein_1d(P, PAPER, 1)) == pytest.approx(w1_reference(P, PAPER),
                                                                 rel=1e-10)
    assert float(D.w2_squared_1d(P, PAPER)) == pytest.approx(w2sq_reference(P, PAPER), rel=1e-10)


def test_wasserstein_1d_narrow_kernels():
    """A kernel data set (width 0.05, wide gaps) against a Gaussian: the hard case for u-space."""
    data = M.from_samples(np.random.default_rng(5).normal(size=8) * 1.5, 0.05)
    G = M.gaussian(0.5, 1.0)
    assert float(D.w2_squared_1d(data, G)) == pytest.approx(
        w2sq_to_gaussian_reference(data, 0.5, 1.0), rel=1e-10)


def test_wasserstein_1d_matches_large_samples_loosely():
    """Sanity only: W_1 between two samples of 2e5 points (scipy) fluctuates by O(n^{-1/2}),
    a few 1e-3 here, so 2e-2 is loose."""
    P = random_mixture(np.random.default_rng(4), 5)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    xs, ys = np.asarray(P.sample(k1, 200_000))[:, 0], np.asarray(PAPER.sample(k2, 200_000))[:, 0]
    assert stats.wasserstein_distance(xs, ys) == pytest.approx(
        float(D.wasserstein_1d(P, PAPER, 1)), abs=2e-2)


def test_w2_squared_1d_gradient_closed_form():
    """d W_2²/d m_1 = 2 (m_1 − m_2), d W_2²/d s_1² = (s_1 − s_2)/s_1 for two Gaussians."""
    P, Q = M.gaussian(0.4, 1.3), M.gaussian(-0.5, 0.6)
    g = jax.grad(D.w2_squared_1d)(P, Q)
    assert float(g.means[0, 0]) == pytest.approx(2 * 0.9, rel=1e-9)
    assert float(g.cov[0]) == pytest.approx((1.3 - 0.6) / 1.3, rel=1e-9)


def test_wasserstein_1d_does_not_recompile_for_new_values():
    """New means, variances, p and component counts within one padding bucket reuse the code."""
    D.wasserstein_1d(PAPER, M.gaussian(0.0, 1.0), 1)
    n_compiled = D._wpp_1d._cache_size()
    D.wasserstein_1d(M.gmm([-1.0, 3.0], [0.2, 0.9], [0.3, 0.7]), M.gaussian(2.0, 0.3), 2)
    D.w2_squared_1d(M.gaussian(0.1, 1.0), PAPER)
    assert D._wpp_1d._cache_size() == n_compiled


def test_wasserstein_1d_rejects_misuse():
    with pytest.raises(ValueError, match="dimension 1"):
        D.wasserstein_1d(M.gaussian(0.0, 1.0, dim=2), PAPER)
    with pytest.raises(TypeError, match="GaussianMixture"):
        D.w2_squared_1d(np.zeros(3), PAPER)
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        PAPER.quantile([0.5, 1.0])
    with pytest.raises(ValueError, match="`p` must be"):
        D.wasserstein_1d(PAPER, PAPER, 0.5)


def test_float32_smoke():
    with jax.enable_x64(False):
        P, Q = M.gmm([-2.0, 2.0], 0.5), M.gaussian(0.0, 1.0)
        assert P.means.dtype == jnp.float32
        u = jnp.array([1e-30, 0.01, 0.99], jnp.float32)
        x = P.quantile(u)
        assert x.dtype == jnp.float32
        np.testing.assert_allclose(P.cdf(x), u, rtol=1e-5)
        w1, w2 = D.wasserstein_1d(P, Q, 1), D.wasserstein_1d(P, Q, 2)
        assert w1.dtype == jnp.float32
    assert float(w1) == pytest.approx(float(D.wasserstein_1d(PAPER, M.gaussian(0.0, 1.0), 1)),
                                      rel=1e-5)
    assert float(w2) ** 2 == pytest.approx(float(D.w2_squared_1d(PAPER, M.gaussian(0.0, 1.0))),
                                           rel=1e-5)


# ---------------------------------------------------------------------- 1-D samples


def test_wasserstein_1d_samples_is_exact():
    rng = np.random.default_rng(6)
    x, y, z = rng.normal(size=40), rng.normal(1.0, 2.0, size=40), rng.normal(size=(25, 1))
    for p in (1, 2):
        equal = float(D.wasserstein_1d_samples(x, y, p)) ** p
        assert equal == pytest.approx(np.mean(np.abs(np.sort(x) - np.sort(y)) ** p), rel=1e-13)
        M_xz = ot.dist(x[:, None], z, metric="sqeuclidean" if p == 2 else "euclidean")
        lp = ot.emd2(np.full(40, 1 / 40), np.full(25, 1 / 25), M_xz)  # exact LP
        assert float(D.wasserstein_1d_samples(x, z, p)) ** p == pytest.approx(lp, rel=1e-10)
    assert float(D.wasserstein_1d_samples(x, z, 1)) == pytest.approx(
        stats.wasserstein_distance(x, z[:, 0]), rel=1e-12)
    g = jax.grad(lambda a: D.wasserstein_1d_samples(a, y, 2))(jnp.asarray(x))
    assert np.all(np.isfinite(g))
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, 1\)"):
        D.wasserstein_1d_samples(np.zeros((4, 2)), y)


# ---------------------------------------------------------------------- Gaussians (Eq. 59)


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.2 * np.eye(d)


def test_w2_gaussian_closed_forms_and_pot():
    rng = np.random.default_rng(7)
    # 1-D
    assert float(D.w2_squared_gaussian([0.5], [[4.0]], [-1.0], [[0.25]])) == \
        pytest.approx(1.5**2 + 1.5**2, rel=1e-13)
    # commuting (diagonal) covariances: ‖Δm‖² + ‖Σ_1^{1/2} − Σ_2^{1/2}‖_F²
    v1, v2 = rng.uniform(0.2, 3, 3), rng.uniform(0.2, 3, 3)
    m1, m2 = rng.normal(size=3), rng.normal(size=3)
    expect = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert float(D.w2_squared_gaussian(m1, np.diag(v1), m2, np.diag(v2))) == \
        pytest.approx(expect, rel=1e-12)
    # full covariances against POT, symmetry, and zero distance to itself
    c1, c2 = _random_spd(rng, 4), _random_spd(rng, 4)
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    ours = float(D.w2_squared_gaussian(m1, c1, m2, c2))
    pot = float(ot.gaussian.bures_wasserstein_distance(m1, m2, c1, c2)) ** 2
    assert ours == pytest.approx(pot, rel=1e-10)
    assert float(D.w2_squared_gaussian(m2, c2, m1, c1)) == pytest.approx(ours, rel=1e-10)
    assert abs(float(D.w2_squared_gaussian(m1, c1, m1, c1))) < 1e-12
    with pytest.raises(ValueError, match="same dimension"):
        D.w2_squared_gaussian(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match=r"shape \(d, d\)"):
        D.w2_squared_gaussian(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_w2_gaussian_gradients():
    rng = np.random.default_rng(8)
    c1, c2 = _random_spd(rng, 3), _random_spd(rng, 3)
    m1, m2 = rng.normal(size=3), rng.normal(size=3)
    f = lambda c: D.w2_squared_gaussian(m1, c, m2, c2)  # noqa: E731
    d = rng.normal(size=(3, 3))
    d = jnp.asarray(d + d.T)
    h = 1e-6
    fd = (f(c1 + h * d) - f(c1 - h * d)) / (2 * h)
    assert float(jnp.vdot(jax.grad(f)(jnp.asarray(c1)), d)) == pytest.approx(float(fd), rel=1e-7)
    # repeated eigenvalues (isotropic): finite, and d/dΣ_1 = I − Σ_1^{-1/2} Σ_2^{1/2} = (1 − √2) I
    g = jax.grad(lambda c: D.w2_squared_gaussian(m1, c, m2, 2 * jnp.eye(3)))(jnp.eye(3))
    np.testing.assert_allclose(g, (1 - np.sqrt(2)) * np.eye(3), atol=1e-12)


# ---------------------------------------------------------------------- point clouds in n-D


@pytest.fixture(scope="module")
def clouds():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(256, 2))
    y = rng.normal(size=(256, 2)) @ np.array([[0.8, 0.3], [0.0, 0.6]]) + np.array([1.5, -0.5])
    return x, y


@pytest.mark.parametrize("p", [1, 2])
def test_sinkhorn_matches_exact_ot(clouds, p):
    """|ott − POT| <= ε log n + 2 δ max C.

    The exact entropic plan costs at most ε (H(π_ε) − H(π*)) <= ε log n more than the exact plan
    (π* a permutation, H(π_ε) <= log n²); a plan with marginal error δ is within 2 δ in total
    variation of a feasible plan (Altschuler et al. 2017), which moves the cost by <= 2 δ max C.
    """
    x, y = clouds
    exact = D.ot_cost(x, y, p=p, backend="pot")
    assert bool(exact.converged) and exact.backend == "pot"
    res = D.ot_cost(x, y, p=p)
    assert bool(res.converged) and res.backend == "ott" and float(res.error) < 1e-4
    c_max = float(ot.dist(x, y, metric="sqeuclidean" if p == 2 else "euclidean").max())
    bound = float(res.epsilon) * np.log(len(x)) + 2 * float(res.error) * c_max
    assert abs(float(res.cost) - float(exact.cost)) <= bound
    # measured: ~1e-3 relative at the default ε = 1e-3 × mean cost (bound ~1e-2)
    assert abs(float(res.cost) / float(exact.cost) - 1) < 3e-3
    assert float(res.distance) == pytest.approx(float(res.cost) ** (1 / p))


def test_w2_samples_of_gaussians_near_eq59(clouds):
    """W_2 between 256-point samples of two Gaussians against Eq. 59.

    Exact: Gelbrich's bound, W_2 >= Eq. 59 evaluated at the samples' own means and covariances.
    Statistical: over 30 seeds this W_2 scattered by 0.066 (4 %) around Eq. 59 = 1.651, mostly
    through the sample means (‖Δm‖ = 1.58, each coordinate of the difference of the sample
    means has standard deviation ~0.08), so 20 % is 5 standard deviations.
    """
    x, y = clouds
    A = np.array([[0.8, 0.3], [0.0, 0.6]])
    exact = np.sqrt(float(D.w2_squared_gaussian(np.zeros(2), np.eye(2), np.array([1.5, -0.5]),
                                                A.T @ A)))
    w2_pot = float(D.w2_samples(x, y, backend="pot"))
    gelbrich = D.w2_squared_gaussian(x.mean(0), np.cov(x.T, bias=True), y.mean(0),
                                     np.cov(y.T, bias=True))
    assert w2_pot**2 >= float(gelbrich)
    assert w2_pot == pytest.approx(exact, rel=0.2)
    assert float(D.w2_samples(x, y)) == pytest.approx(w2_pot, rel=2e-3)
    assert float(D.w1_samples(x, y, backend="pot")) <= w2_pot


def test_sinkhorn_gradient_matches_finite_differences():
    """float64, moderate ε = 1 (~25 % of the mean cost), tight threshold; implicit diff of ott."""
    rng = np.random.default_rng(10)
    x, y = jnp.asarray(rng.normal(size=(48, 2))), jnp.asarray(rng.normal(size=(48, 2)) + 1.0)
    v = jnp.asarray(rng.normal(size=(48, 2)))
    f = lambda a: D.ot_cost(a, y, epsilon=1.0, threshold=1e-9).cost  # noqa: E731
    h = 1e-4
    fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    assert float(jnp.vdot(jax.grad(f)(x), v)) == pytest.approx(float(fd), rel=1e-6)


def test_unconverged_sinkhorn_raises_or_warns():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(16, 2)), rng.normal(size=(16, 2)) + 2.0
    with pytest.raises(D.SinkhornNotConverged, match=r"did not converge .*: marginal error"):
        D.ot_cost(x, y, max_iterations=20)
    with pytest.warns(RuntimeWarning, match="marginal error"):
        res = D.ot_cost(x, y, max_iterations=20, throw=False)
    assert not bool(res.converged) and float(res.error) > 1e-4
    # under jit the flag is only known at run time: equinox.error_if raises then
    with pytest.raises(RuntimeError, match="did not converge"):
        jax.jit(lambda a: D.ot_cost(a, y, max_iterations=20).cost)(x).block_until_ready()
    with pytest.raises(D.OTNotConverged, match="numItermax"):
        D.ot_cost(x, y, backend="pot", max_iterations=3)


def test_plans_and_assignment(clouds):
    x, y = clouds[0][:40], clouds[1][:40]
    perm = np.asarray(D.ot_assignment(x, y))
    assert sorted(perm) == list(range(40))
    plan = np.asarray(D.ot_plan(x, y, backend="pot"))
    np.testing.assert_allclose(plan * 40, np.eye(40)[perm], atol=1e-12)  # unique optimum
    assert np.sum((x - y[perm]) ** 2) / 40 == pytest.approx(
        float(D.ot_cost(x, y, backend="pot").cost), rel=1e-12)
    # weighted, unequal sizes: marginals hold (exactly for POT, to the threshold for ott)
    a = np.random.default_rng(12).dirichlet(np.ones(40))
    for backend, tol in (("pot", 1e-12), ("ott", 1e-4)):
        pi = np.asarray(D.ot_plan(x, y[:30], a=a, backend=backend))
        assert pi.shape == (40, 30)
        assert np.abs(pi.sum(1) - a).sum() + np.abs(pi.sum(0) - 1 / 30).sum() < 2 * tol


@pytest.mark.parametrize("call,err,match", [
    (lambda: D.ot_cost(np.zeros((5, 2)), np.zeros((4, 3))), ValueError, "same dimension"),
    (lambda: D.ot_cost(np.zeros((5, 2)), np.zeros((4, 2)), p=3), ValueError, "`p` must be 1"),
    (lambda: D.ot_cost(np.zeros((5, 2)), np.zeros((4, 2)), backend="cvx"), ValueError, "backend"),
    (lambda: D.ot_cost(np.zeros((5, 2)), np.zeros((4, 2)), a=np.ones(4) / 4), ValueError,
     r"shape \(5,\)"),
    (lambda: D.ot_cost(np.zeros((5, 2)), np.zeros((4, 2)), b=np.ones(4)), ValueError, "sum to 1"),
    (lambda: D.ot_cost(np.zeros((2, 2, 2)), np.zeros((4, 2))), ValueError, r"shape \(n, d\)"),
    (lambda: D.ot_assignment(np.zeros((5, 2)), np.zeros((4, 2))), ValueError, "equal sizes"),
    (lambda: jax.jit(lambda a: D.ot_cost(a, a, backend="pot").cost)(jnp.zeros((3, 2))),
     TypeError, "cannot be traced"),
])
def test_point_cloud_misuse_raises(call, err, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(err, match=match):
            call()
