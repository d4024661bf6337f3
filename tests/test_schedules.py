"""Schedules: closed-form temperatures (Eq. 22), validity (Eq. 24), learnable family, conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satjax import schedules as S

TAU = 1.7
ALL = {
    "cosine": lambda: S.cosine(TAU),
    "cond-ot": lambda: S.cond_ot(TAU),
    "vp-linear": lambda: S.vp_linear(0.1, 20.0, TAU),
    "ve": lambda: S.ve(0.01, 10.0, TAU),
    "polar": lambda: S.polar(4, 3, tau=TAU, angle=[1.0, 0.3, -0.2, 0.1], log_radius=[0.4, -0.3, 0.2]),
    "polar-vp": lambda: S.polar(4, vp=True, tau=TAU, angle=[1.0, -0.4, 0.1, 0.05]),
}


def closed_form_T(name, t):
    s = t / TAU
    if name == "cosine":  # T = m σ ∂_t(σ/m) = (π/2τ) tan(πs/2)
        return np.pi / (2 * TAU) * np.tan(np.pi * s / 2)
    if name == "cond-ot":  # σ/m = s/(1-s): T = (1-s) s /(τ (1-s)^2) = s / (τ (1 - s))
        return s / (TAU * (1 - s))
    if name == "vp-linear":  # VP: T = -∂_t ln m = β(s)/(2τ)
        return (0.1 + s * (20.0 - 0.1)) / (2 * TAU)
    if name == "ve":  # T = ∂_t σ²/2
        return 0.01**2 * np.log(1000.0) * 1000.0 ** (2 * s) / TAU


@pytest.mark.parametrize("name", ["cosine", "cond-ot", "vp-linear", "ve"])
def test_temperature_closed_form(name):
    sch = ALL[name]()
    ts = np.linspace(0.01, 0.99, 17) * TAU
    T = np.asarray(jax.vmap(sch.temperature)(jnp.asarray(ts)))
    np.testing.assert_allclose(T, closed_form_T(name, ts), rtol=1e-10)


@pytest.mark.parametrize("name", sorted(ALL))
def test_common_harness(name):
    """Every schedule: m_0 = 1, σ_0 = 0, T ≥ 0, Eq. 22 both forms agree, finite derivatives."""
    sch = ALL[name]()
    assert float(sch.m(0.0)) == pytest.approx(1.0, abs=1e-14)
    assert float(sch.sigma(0.0)) == pytest.approx(0.0, abs=1e-14)
    ts = jnp.linspace(0.01, 0.99, 31) * TAU
    T = jax.vmap(sch.temperature)(ts)
    assert np.all(np.asarray(T) >= 0)
    # Second form of Eq. 22: T = m σ ∂_t(σ/m).
    ratio_rate = jax.vmap(jax.grad(lambda t: sch.sigma(t) / sch.m(t)))(ts)
    T2 = jax.vmap(sch.m)(ts) * jax.vmap(sch.sigma)(ts) * ratio_rate
    np.testing.assert_allclose(np.asarray(T), np.asarray(T2), rtol=1e-9, atol=1e-12)
    # f_t(x) = (∂_t ln m) x (Eq. 23) against a central difference of ln m.
    h = 1e-6
    fd = (jnp.log(jax.vmap(sch.m)(ts + h)) - jnp.log(jax.vmap(sch.m)(ts - h))) / (2 * h)
    np.testing.assert_allclose(np.asarray(jax.vmap(sch.log_m_rate)(ts)), np.asarray(fd), rtol=1e-6, atol=1e-8)


def test_polar_initialisation_is_cosine():
    cos, pol = S.cosine(TAU), S.polar(5, 4, tau=TAU)
    ts = jnp.linspace(0.0, TAU, 23)
    np.testing.assert_allclose(jax.vmap(pol.m)(ts), jax.vmap(cos.m)(ts), atol=1e-14)
    np.testing.assert_allclose(jax.vmap(pol.sigma2)(ts), jax.vmap(cos.sigma2)(ts), atol=1e-14)


def test_polar_vp_constraint_and_endpoints():
    sch = ALL["polar-vp"]()
    ts = jnp.linspace(0.0, TAU, 41)
    np.testing.assert_allclose(jax.vmap(sch.m)(ts) ** 2 + jax.vmap(sch.sigma2)(ts), 1.0, atol=1e-13)
    free = ALL["polar"]()
    assert float(free.m(TAU)) == pytest.approx(0.0, abs=1e-14)
    assert float(free.sigma(TAU)) == pytest.approx(1.0, abs=1e-13)


def test_fit_polar_reaches_cond_ot():
    """The free family represents cond-OT: least-squares fit error below 2e-3 in m and σ."""
    target = S.cond_ot(1.0)
    fit = S.fit_polar(target, 6, 6, steps=1500, learning_rate=0.03)
    ts = jnp.linspace(0.0, 1.0, 101)
    err = max(float(jnp.max(jnp.abs(jax.vmap(fit.m)(ts) - jax.vmap(target.m)(ts)))),
              float(jnp.max(jnp.abs(jax.vmap(fit.sigma)(ts) - jax.vmap(target.sigma)(ts)))))
    assert err < 2e-3


def test_flow_matching_conversion_roundtrip():
    sch = S.vp_linear(tau=TAU)
    alpha, sig = S.to_flow_matching(sch)
    # s = 0 is noise, s = 1 data.
    assert float(alpha(1.0)) == pytest.approx(1.0)
    assert float(sig(1.0)) == pytest.approx(0.0, abs=1e-12)
    back = S.from_flow_matching(alpha, sig, tau=TAU)
    ts = jnp.linspace(0.05, 0.95, 9) * TAU
    np.testing.assert_allclose(jax.vmap(back.m)(ts), jax.vmap(sch.m)(ts), rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(back.temperature)(ts), jax.vmap(sch.temperature)(ts), rtol=1e-9)
    # velocity conversion round trip: u(x, s) = -τ ν(x, τ(1 - s)).
    nu = lambda x, t: x * t + 1.0  # noqa: E731
    u = S.velocity_to_flow_matching(nu, TAU)
    assert float(u(2.0, 0.25)) == pytest.approx(-TAU * (2.0 * 0.75 * TAU + 1.0))
    nu2 = S.velocity_from_flow_matching(u, TAU)
    assert float(nu2(2.0, 0.3)) == pytest.approx(float(nu(2.0, 0.3)))


def test_cond_ot_flow_matching_is_standard_interpolant():
    alpha, sig = S.to_flow_matching(S.cond_ot(1.0))
    assert float(alpha(0.3)) == pytest.approx(0.3)
    assert float(sig(0.3)) == pytest.approx(0.7)


@pytest.mark.parametrize("bad,match", [
    (lambda: S.cosine(tau=0.0), "tau"),
    (lambda: S.cond_ot(tau=-1.0), "tau"),
    (lambda: S.ve(sigma_min=1.0, sigma_max=0.5), "sigma_min < sigma_max"),
    (lambda: S.vp_linear(beta_min=-1.0), "beta_min"),
    (lambda: S.from_functions(lambda t: 1.0 - 0.5 * t, lambda t: t * (1 - t) * 2), r"sigma/m"),
    (lambda: S.from_functions(lambda t: 0.9 - t * 0.5, lambda t: t), "m_0 = 1"),
    (lambda: S.from_functions(lambda t: 1.0 - 0.5 * t, lambda t: t + 0.1), "sigma_0 = 0"),
    (lambda: S.polar(3, angle=[0.0, 0.0, 0.0]), "angle"),
])
def test_bad_schedules_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_function_schedule_matches_named():
    fs = S.from_functions(lambda t: jnp.cos(jnp.pi * t / 2), lambda t: jnp.sin(jnp.pi * t / 2))
    cs = S.cosine()
    ts = jnp.linspace(0.1, 0.9, 5)
    np.testing.assert_allclose(jax.vmap(fs.temperature)(ts), jax.vmap(cs.temperature)(ts), rtol=1e-12)


def test_float32_schedules_finite():
    with jax.enable_x64(False):
        for name, make in ALL.items():
            sch = make()
            ts = jnp.linspace(1e-6, TAU * (1 - 1e-6), 11, dtype=jnp.float32)
            T = jax.vmap(sch.temperature)(ts)
            assert T.dtype == jnp.float32
            assert np.all(np.isfinite(np.asarray(T))), name
