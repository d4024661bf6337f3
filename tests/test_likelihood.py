"""Instantaneous change of variables: the flow's likelihood equals the exact mixture density."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satjax import forward as F
from satjax import mixtures as M
from satjax import reverse as R
from satjax import schedules as S
from satjax.likelihood import log_likelihood


def test_exact_velocity_likelihood_1d_matches_log_density():
    q = M.gmm([-2.0, 0.5, 2.0], [0.5, 0.3, 0.6], [0.3, 0.3, 0.4])
    sch = S.cosine()
    end = F.marginal(sch, q, 1.0)
    prior = lambda y: end.log_prob(y)  # noqa: E731
    x = jnp.linspace(-3.0, 3.0, 13)[:, None]
    ll = log_likelihood(R.exact_velocity(sch, q), x, prior_log_prob=prior, t_end=1.0, n_steps=200)
    np.testing.assert_allclose(ll.log_prob, q.log_prob(x), atol=1e-6)
    assert bool(ll.finite)


def test_hutchinson_2d_within_error_bars_and_gradient_is_score():
    q = M.gmm([[-1.0, 0.0], [1.0, 0.5]], [0.4, 0.5])
    sch = S.vp_linear()
    end = F.marginal(sch, q, 1.0)
    prior = lambda y: end.log_prob(y)  # noqa: E731
    x = jnp.array([[0.3, -0.2], [-1.0, 0.1], [1.2, 0.6]])
    vel = R.exact_velocity(sch, q)
    exact = log_likelihood(vel, x, prior_log_prob=prior, t_end=1.0, n_steps=150)
    np.testing.assert_allclose(exact.log_prob, q.log_prob(x), atol=1e-5)
    hutch = log_likelihood(vel, x, prior_log_prob=prior, t_end=1.0, n_steps=150,
                           divergence="hutchinson", key=jax.random.PRNGKey(0), n_probes=32)
    z = (hutch.log_prob - q.log_prob(x)) / hutch.stderr
    assert np.all(np.abs(np.asarray(z)) < 4), z
    # differentiable: ∇_x ln q_model(x) equals the exact score
    g = jax.grad(lambda y: log_likelihood(vel, y[None], prior_log_prob=prior, t_end=1.0,
                                          n_steps=150).log_prob[0])(x[0])
    np.testing.assert_allclose(g, q.score(x[0]), atol=1e-4)


def test_bad_arguments():
    vel = lambda x, t: -x  # noqa: E731
    prior = lambda y: -0.5 * jnp.sum(y**2)  # noqa: E731
    with pytest.raises(ValueError, match="key"):
        log_likelihood(vel, jnp.zeros((2, 1)), prior_log_prob=prior, t_end=1.0, divergence="hutchinson")
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(vel, jnp.zeros((2, 1)), prior_log_prob=prior, t_end=1.0, divergence="magic")
    with pytest.raises(ValueError, match="shape"):
        log_likelihood(vel, jnp.zeros((2,)), prior_log_prob=prior, t_end=1.0)
