"""W₁ from a generator's law to the data (satjax.learn.w1_to_data), against closed forms: a
generator that is exact for other data produces those data, whose W₁ to q is known."""

import math

import jax
import jax.numpy as jnp
import pytest

from satjax import learn
from satjax import mixtures as M
from satjax import schedules as S
from satjax.reverse import exact_velocity

MEANS = jnp.array([[-2.0], [2.0]])
W = jnp.array([0.5, 0.5])


def test_exact_generator_has_zero_w1():
    p, q = S.cond_ot(), M.gmm(MEANS, 0.5, W)
    w = learn.w1_to_data(exact_velocity(p, q), p, q)
    assert w.method.startswith("quantiles") and float(w.stderr) == 0.0
    assert float(w.value) < 2e-5 and float(w.error) < 2e-5


def test_shifted_generator_is_off_by_the_shift():
    """The exact velocity of q shifted by 0.3 generates that law: W₁ = 0.3 exactly
    (translation), under cond-OT and cosine alike (m_τ = 0: P_τ does not depend on the data)."""
    q = M.gmm(MEANS, 0.5, W)
    shifted = M.gmm(MEANS + 0.3, 0.5, W)
    for p in (S.cond_ot(), S.cosine()):
        w = learn.w1_to_data(exact_velocity(p, shifted), p, q)
        assert float(w.value) == pytest.approx(0.3, abs=2e-4)
        assert float(w.error) < 2e-4


def test_wider_generator_w1_is_the_gaussian_closed_form():
    """N(1, 0.6²) generated, N(1, 0.5²) the data: W₁ = 0.1 E|Z| = 0.1 sqrt(2/π)."""
    p = S.cond_ot()
    w = learn.w1_to_data(exact_velocity(p, M.gaussian(1.0, 0.6)), p, M.gaussian(1.0, 0.5))
    assert float(w.value) == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=1e-3)


def test_nd_is_an_upper_bound_with_a_standard_error():
    """2-D: the shifted generator's W₁ = 0.4; the repeated-assignment estimate lies above it
    (within 3 standard errors) and not far, with kind "upper"."""
    p = S.cond_ot()
    q = M.gaussian(jnp.array([0.0, 0.0]), 0.5)
    gen = M.gaussian(jnp.array([0.4, 0.0]), 0.5)
    w = learn.w1_to_data(exact_velocity(p, gen), p, q, key=jax.random.PRNGKey(1),
                         n_samples=400, n_repeats=4, n_steps=64)
    assert w.kind == "upper" and float(w.stderr) > 0 and "assignment" in w.method
    assert float(w.value) + 3 * float(w.stderr) >= 0.4
    assert float(w.value) < 0.55


def test_bad_sizes_are_named():
    p, q = S.cond_ot(), M.gmm(MEANS, 0.5, W)
    with pytest.raises(ValueError, match="n_levels"):
        learn.w1_to_data(exact_velocity(p, q), p, q, n_levels=8)
    with pytest.raises(ValueError, match="even"):
        learn.w1_to_data(exact_velocity(p, q), p, q, n_steps=101)
