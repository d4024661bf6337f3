"""Gaussian mixtures: densities against SciPy, scores against autodiff, chunking, sampling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from satjax import engine as E
from satjax import mixtures as M


def random_mixture(rng, K, d, kind):
    w = rng.dirichlet(np.ones(K))
    mu = rng.normal(size=(K, d)) * 2
    if kind == "iso":
        cov = rng.uniform(0.2, 1.5, size=K)
    elif kind == "diag":
        cov = rng.uniform(0.2, 1.5, size=(K, d))
    else:
        a = rng.normal(size=(K, d, d))
        cov = np.einsum("kij,klj->kil", a, a) + 0.3 * np.eye(d)
    return M.GaussianMixture.create(w, mu, cov)


def scipy_logpdf(mix, x):
    full = np.asarray(mix.full_cov())
    dens = sum(float(w) * stats.multivariate_normal(np.asarray(m), c).pdf(x)
               for w, m, c in zip(mix.weights, mix.means, full))
    return np.log(dens)


@pytest.mark.parametrize("kind", ["iso", "diag", "full"])
def test_log_prob_matches_scipy_and_score_matches_autodiff(kind):
    rng = np.random.default_rng(1)
    mix = random_mixture(rng, 5, 3, kind)
    x = rng.normal(size=(7, 3)) * 2
    np.testing.assert_allclose(mix.log_prob(x), scipy_logpdf(mix, x), rtol=1e-10)
    auto = jax.vmap(jax.grad(lambda xi: mix.log_prob(xi)))(jnp.asarray(x))
    np.testing.assert_allclose(mix.score(x), auto, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["iso", "diag", "full"])
@pytest.mark.parametrize("chunk", [1, 3, 4, 64])
def test_chunked_equals_unchunked(kind, chunk):
    rng = np.random.default_rng(2)
    mix = random_mixture(rng, 11, 2, kind)
    x = rng.normal(size=(5, 2)) * 3
    a, b = E.evaluate(mix, x), E.evaluate(mix, x, chunk=chunk)
    np.testing.assert_allclose(a.log_prob, b.log_prob, rtol=1e-12)
    np.testing.assert_allclose(a.score, b.score, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["iso", "diag", "full"])
@pytest.mark.parametrize("chunk,block", [(None, 1), (3, 2), (4, 7), (64, 3), (5, 64)])
def test_blocked_velocity_equals_reference(kind, chunk, block):
    """Point blocks × component chunks (padding on both axes) against a direct per-component sum
    of r_k(x) ν_k(x), ν_k = μ_k' + (C_k'/2) C_k⁻¹ (x − μ_k) (section 2), computed in NumPy."""
    rng = np.random.default_rng(4)
    mix = random_mixture(rng, 11, 2, kind)
    rate = random_mixture(np.random.default_rng(5), 11, 2, kind)  # any (μ', C') works here
    x = rng.normal(size=(13, 2)) * 3
    out = E.evaluate(mix, x, rate=rate, chunk=chunk, block=block)
    C, dC = np.asarray(mix.full_cov()), np.asarray(rate.full_cov())
    mu, dmu, w = np.asarray(mix.means), np.asarray(rate.means), np.asarray(mix.weights)
    dens = np.stack([w[k] * stats.multivariate_normal(mu[k], C[k]).pdf(x) for k in range(11)], 1)
    r = dens / dens.sum(1, keepdims=True)
    nu = np.stack([dmu[k] + (x - mu[k]) @ np.linalg.solve(C[k], 0.5 * dC[k].T)
                   for k in range(11)], 1)
    np.testing.assert_allclose(out.velocity, np.einsum("nk,nkd->nd", r, nu), rtol=1e-9,
                               atol=1e-11)
    np.testing.assert_allclose(out.log_prob, np.log(dens.sum(1)), rtol=1e-11)


def test_tiled_engine_float32_matches_float64():
    """Many chunks and blocks in float32 against the float64 result: the streaming rescaling
    keeps float32 accurate (relative to the field's scale) for far and near points alike."""
    rng = np.random.default_rng(7)
    mix64, rate64 = random_mixture(rng, 300, 3, "iso"), random_mixture(rng, 300, 3, "iso")
    x = rng.normal(size=(500, 3)) * 4
    ref = E.evaluate(mix64, x, rate=rate64)
    with jax.enable_x64(False):
        cast = lambda m: jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), m)  # noqa: E731
        out = E.evaluate(cast(mix64), jnp.asarray(x, jnp.float32), rate=cast(rate64), chunk=64,
                         block=100)
        assert out.velocity.dtype == jnp.float32
    for k in ("log_prob", "score", "velocity"):
        scale = float(jnp.max(jnp.abs(getattr(ref, k))))
        assert float(jnp.max(jnp.abs(getattr(out, k) - getattr(ref, k)))) < 2e-5 * scale, k


def test_outputs_subset_is_the_same_numbers():
    rng = np.random.default_rng(6)
    mix, rate = random_mixture(rng, 9, 3, "iso"), random_mixture(rng, 9, 3, "iso")
    x = rng.normal(size=(6, 3))
    full = E.evaluate(mix, x, rate=rate)
    for sub in [("velocity",), ("score",), ("log_prob",), ("score", "velocity")]:
        part = E.evaluate(mix, x, rate=rate, outputs=sub)
        assert set(part) == set(sub)
        for k in sub:
            np.testing.assert_allclose(getattr(part, k), getattr(full, k), rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="outputs"):
        E.evaluate(mix, x, outputs=("density",))
    with pytest.raises(ValueError, match="block"):
        E.evaluate(mix, x, block=0)
    with pytest.raises(ValueError, match="rate"):
        E.evaluate(mix, x, outputs=("velocity",))
    out = E.evaluate(mix, x)
    assert out.velocity is None and out.log_prob is not None and out.score is not None


def test_tile_sizes_bound_memory():
    """Default tiles hold 2^20 (points × components) elements (×d for full covariances), at most
    4096 components per chunk, whatever N and K: the memory bound of the engine."""
    cases = {(10**5, 70_000, 784, "iso"): (256, 4096),      # 2^20 / 4096 points per block
             (10**4, 1000, 2, "diag"): (1048, 1000),       # all components, 2^20 // 1000 points
             (10**5, 50_000, 8, "full"): (64, 2048),       # 2^20 / (64·8) comps, 2^20 / (2048·8) points
             (3, 2, 1, "iso"): (3, 2)}                     # small problems: one tile
    for (n, k, d, kind), expect in cases.items():
        assert E.tile_sizes(n, k, d, kind) == expect
    assert E.tile_sizes(10**4, 1000, 2, "iso", chunk=100, block=7) == (7, 100)


def test_far_points_are_finite():
    """Log-sum-exp keeps far-away points finite (density underflows, log does not)."""
    mix = M.gmm([-2.0, 2.0], 0.05)
    x = jnp.array([[60.0], [-300.0]])
    out = E.evaluate(mix, x, chunk=1)
    assert np.all(np.isfinite(out.log_prob)) and np.all(np.isfinite(out.score))
    # far to the right only the right component matters: log N(60 | 2, 0.05²) + log ½
    expect = stats.norm(2.0, 0.05).logpdf(60.0) + np.log(0.5)
    assert float(out.log_prob[0]) == pytest.approx(expect, rel=1e-12)


def test_moments_and_sampling():
    rng = np.random.default_rng(3)
    mix = random_mixture(rng, 4, 2, "full")
    x = np.asarray(mix.sample(jax.random.PRNGKey(0), 200_000))
    n = x.shape[0]
    mean, cov = np.asarray(mix.mean()), np.asarray(mix.covariance())
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.03, atol=0.03)
    assert float(mix.second_moment()) == pytest.approx(float(np.trace(cov) + mean @ mean), rel=1e-12)


def test_data_constructors():
    sr = M.swiss_roll(n=300, noise=0.1, scale=0.1, width=0.05, seed=1)
    chex.assert_shape(sr.means, (300, 2))
    np.testing.assert_allclose(sr.cov, 0.05**2)
    dg = M.digits(width=0.1, n=50)
    chex.assert_shape(dg.means, (50, 64))
    assert float(dg.means.min()) >= -1.0 and float(dg.means.max()) <= 1.0
    g = M.gaussian([1.0, 2.0], std=[0.5, 2.0])
    assert g.kind == "diag"
    np.testing.assert_allclose(g.covariance(), np.diag([0.25, 4.0]))
    g3 = M.gaussian(2.0, 0.5, dim=3)
    chex.assert_shape(g3.means, (1, 3))


@pytest.mark.parametrize("make,match", [
    (lambda: M.GaussianMixture.create([0.5, 0.6], [[0.0], [1.0]], [1.0, 1.0]), "sum to 1"),
    (lambda: M.GaussianMixture.create([1.5, -0.5], [[0.0], [1.0]], [1.0, 1.0]), ">= 0"),
    (lambda: M.GaussianMixture.create([1.0], [[0.0]], [-1.0]), "positive definite"),
    (lambda: M.GaussianMixture.create([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
    (lambda: M.GaussianMixture.create([1.0], [[0.0, 0.0]], [[1.0, 1.0, 1.0]]), "shape"),
    (lambda: M.GaussianMixture.create([0.5, 0.5], [[0.0]], [1.0]), "weights"),
    (lambda: M.from_samples(np.zeros((3, 2)), width=0.0), "width"),
    (lambda: M.gaussian(0.0, std=[1.0, 2.0]), "std"),
])
def test_bad_mixtures_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_points_of_wrong_dimension_raise():
    with pytest.raises(ValueError, match="trailing dimension 2"):
        M.gmm([[0.0, 0.0]], 1.0).log_prob(np.zeros((4, 3)))
