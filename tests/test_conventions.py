"""satjax.conventions: paper t ↔ flow-matching s ↔ σ = σ_t/m_t ↔ log-SNR λ.

Hand-derived values (τ = 1 unless stated):
  cond-OT  σ = t/(τ − t):            t = 1/4 → σ = 1/3, λ = 2 log 3;  t = 1/2 → σ = 1, λ = 0
  cosine   σ = tan(πt/2τ):           t = 1/2 → σ = 1;  t = 1/3 → σ = 1/√3, λ = log 3
  VP       σ² = e^{β_min s + ½(β_max − β_min)s²} − 1: (0.1, 20), s = 1/2 → 2A = 2.5375
  VE       σ² = σ_min²((σ_max/σ_min)^{2s} − 1): (0.01, 10), s = 1/2 → σ = 0.01 √999
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satjax import conventions as C
from satjax import schedules as S
from satjax.forces import RotatingForce


def _f(x):
    return np.asarray(x, dtype=float)


# ------------------------------------------------------------------ hand values


def test_cond_ot_hand_values():
    sch = S.cond_ot()
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, 0.25)), 1 / 3, rtol=1e-14)
    np.testing.assert_allclose(_f(C.log_snr_of_t(sch, 0.25)), 2 * math.log(3), rtol=1e-14)
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, 0.5)), 1.0, rtol=1e-14)
    np.testing.assert_allclose(_f(C.log_snr_of_t(sch, 0.5)), 0.0, atol=1e-15)
    np.testing.assert_allclose(_f(C.t_of_sigma(sch, 3.0)), 0.75, rtol=1e-14)  # 3/(1+3)
    # τ = 2: the same values at t = τ/4
    sch2 = S.cond_ot(2.0)
    np.testing.assert_allclose(_f(C.sigma_of_t(sch2, 0.5)), 1 / 3, rtol=1e-14)
    np.testing.assert_allclose(_f(C.t_of_sigma(sch2, 1 / 3)), 0.5, rtol=1e-14)
    # the ends: σ(0) = 0, λ(0) = +inf, σ(τ) = inf, λ(τ) = −inf, and back
    assert float(C.sigma_of_t(sch, 0.0)) == 0.0 and float(C.log_snr_of_t(sch, 0.0)) == np.inf
    assert float(C.sigma_of_t(sch, 1.0)) == np.inf
    assert float(C.log_snr_of_t(sch, 1.0)) == -np.inf
    assert float(C.t_of_sigma(sch, np.inf)) == 1.0 and float(C.t_of_sigma(sch, 0.0)) == 0.0
    assert float(C.t_of_log_snr(sch, np.inf)) == 0.0
    assert float(C.t_of_log_snr(sch, -np.inf)) == 1.0
    assert C.m_vanishes_at_tau(sch)
    assert float(C.sigma_max(sch)) == np.inf and float(C.sigma_max(sch, cap=80.0)) == 80.0


def test_cosine_hand_values():
    sch = S.cosine()
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, 0.5)), 1.0, rtol=1e-14)
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, 1 / 3)), 1 / math.sqrt(3), rtol=1e-14)
    np.testing.assert_allclose(_f(C.log_snr_of_t(sch, 1 / 3)), math.log(3), rtol=1e-13)
    np.testing.assert_allclose(_f(C.t_of_sigma(sch, math.sqrt(3))), 2 / 3, rtol=1e-14)
    np.testing.assert_allclose(_f(C.t_of_log_snr(sch, 0.0)), 0.5, rtol=1e-14)
    assert float(C.sigma_of_t(sch, 1.0)) == np.inf
    assert float(C.t_of_sigma(sch, np.inf)) == 1.0
    # σ from the schedule's own m and σ (independent of the closed form)
    for t in (0.1, 0.37, 0.9):
        ref = float(sch.sigma(jnp.asarray(t)) / sch.m(jnp.asarray(t)))
        np.testing.assert_allclose(_f(C.sigma_of_t(sch, t)), ref, rtol=1e-13)


def test_vp_hand_values():
    sch = S.vp_linear(0.1, 20.0)
    two_a = 0.1 * 0.5 + 0.5 * 19.9 * 0.25  # 2.5375
    assert two_a == pytest.approx(2.5375)
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, 0.5)), math.sqrt(math.exp(two_a) - 1),
                               rtol=1e-14)
    np.testing.assert_allclose(_f(C.log_snr_of_t(sch, 0.5)), -math.log(math.exp(two_a) - 1),
                               rtol=1e-13)
    # m² + σ² = 1 for VP, so σ/m = sqrt(1/m² − 1) from the schedule's m
    m = float(sch.m(jnp.asarray(0.5)))
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, 0.5)), math.sqrt(1 / m**2 - 1), rtol=1e-12)
    # constant β (the Δβ = 0 branch of the inverse): s = log(1 + σ²)/β
    sch_c = S.vp_linear(4.0, 4.0)
    np.testing.assert_allclose(_f(C.t_of_sigma(sch_c, 2.0)), math.log(5.0) / 4.0, rtol=1e-14)
    # σ(τ) is finite: sqrt(e^{β_min + ½Δβ} − 1); λ(τ) finite
    np.testing.assert_allclose(_f(C.sigma_max(sch)), math.sqrt(math.exp(0.1 + 9.95) - 1),
                               rtol=1e-12)
    assert not C.m_vanishes_at_tau(sch)


def test_ve_hand_values():
    sch = S.ve(0.01, 10.0)
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, 0.5)), 0.01 * math.sqrt(999), rtol=1e-13)
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, 1.0)), math.sqrt(100 - 1e-4), rtol=1e-13)
    np.testing.assert_allclose(_f(C.log_snr_of_t(sch, 0.5)), -math.log(1e-4 * 999),
                               rtol=1e-13)
    # t = log(1 + σ²/σ_min²) / (2 log 1000)
    np.testing.assert_allclose(_f(C.t_of_sigma(sch, 1.0)),
                               math.log(1 + 1e4) / (2 * math.log(1000)), rtol=1e-14)


# ------------------------------------------------------------------ round trips


SCHEDULES = [
    ("cond-ot", lambda: S.cond_ot()), ("cond-ot-tau2", lambda: S.cond_ot(2.0)),
    ("cosine", lambda: S.cosine()), ("vp", lambda: S.vp_linear()),
    ("vp-const", lambda: S.vp_linear(3.0, 3.0)), ("ve", lambda: S.ve()),
    ("ve-tau3", lambda: S.ve(0.02, 50.0, tau=3.0)),
    ("polar", lambda: S.polar(3, 3, angle=jnp.array([1.0, 0.3, -0.1]),
                              log_radius=jnp.array([0.2, 0.0, 0.1]))),
    ("function", lambda: S.from_functions(lambda t: 1.0 - t, lambda t: t)),
]


@pytest.mark.parametrize("name,make", SCHEDULES)
def test_round_trips(name, make):
    sch = make()
    tau = float(sch.tau)
    t = jnp.linspace(0.0, tau, 41)[1:-1]
    sig = C.sigma_of_t(sch, t)
    lam = C.log_snr_of_t(sch, t)
    assert np.all(np.diff(_f(sig)) > 0) and np.all(np.diff(_f(lam)) < 0)
    np.testing.assert_allclose(_f(C.t_of_sigma(sch, sig)), _f(t), rtol=1e-13, atol=1e-14 * tau)
    np.testing.assert_allclose(_f(C.t_of_log_snr(sch, lam)), _f(t), rtol=1e-13,
                               atol=1e-14 * tau)
    np.testing.assert_allclose(_f(C.sigma_of_t(sch, C.t_of_sigma(sch, sig))), _f(sig),
                               rtol=1e-12)
    np.testing.assert_allclose(_f(C.log_snr_of_sigma(sig)), _f(lam), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_f(C.sigma_of_log_snr(lam)), _f(sig), rtol=1e-12)
    s = C.to_flow_time(t, tau)
    np.testing.assert_allclose(_f(C.from_flow_time(s, tau)), _f(t), rtol=1e-15, atol=1e-15)
    # 1 ulp: XLA may evaluate t/τ as t·(1/τ) (jax 0.10 does for some τ)
    np.testing.assert_allclose(_f(s), 1.0 - _f(t) / tau, rtol=0, atol=2.3e-16)
    # the ends map back to themselves
    assert float(C.t_of_sigma(sch, C.sigma_of_t(sch, 0.0))) == 0.0
    np.testing.assert_allclose(float(C.t_of_sigma(sch, C.sigma_of_t(sch, tau))), tau,
                               rtol=1e-12)


def test_generic_path_matches_closed_forms():
    """Bisection (generic schedules) against the closed forms of the same schedule."""
    gen_cot = S.from_functions(lambda t: 1.0 - t, lambda t: t)
    gen_cos = S.polar(1, 1)  # angle = e_0, log_radius = 0: exactly cosine
    t = jnp.linspace(0.0, 1.0, 17)
    for gen, ref in ((gen_cot, S.cond_ot()), (gen_cos, S.cosine())):
        np.testing.assert_allclose(_f(C.sigma_of_t(gen, t)), _f(C.sigma_of_t(ref, t)),
                                   rtol=1e-12)
        np.testing.assert_allclose(_f(C.log_snr_of_t(gen, t[1:-1])),
                                   _f(C.log_snr_of_t(ref, t[1:-1])), rtol=1e-11, atol=1e-12)
        sig = jnp.array([0.0, 0.01, 1.0, 7.0, 1e4, np.inf])
        np.testing.assert_allclose(_f(C.t_of_sigma(gen, sig)), _f(C.t_of_sigma(ref, sig)),
                                   rtol=1e-12, atol=1e-15)


def test_jit_and_grad():
    sch = S.cond_ot()
    # dσ/dt = τ/(τ − t)² = 4 at t = 1/2; dt/dσ = τ/(1 + σ)² = 1/4 at σ = 1
    np.testing.assert_allclose(float(jax.grad(lambda t: C.sigma_of_t(sch, t))(0.5)), 4.0,
                               rtol=1e-13)
    np.testing.assert_allclose(float(jax.grad(lambda s: C.t_of_sigma(sch, s))(1.0)), 0.25,
                               rtol=1e-13)
    f = jax.jit(lambda sch, t: C.t_of_log_snr(sch, C.log_snr_of_t(sch, t)))
    for sc in (S.cosine(), S.vp_linear(), S.ve(), S.polar(2, 2)):
        np.testing.assert_allclose(_f(f(sc, jnp.array([0.2, 0.7]))), [0.2, 0.7], rtol=1e-12)


# ------------------------------------------------------------------ errors


def test_errors():
    sch = S.cond_ot()
    with pytest.raises(ValueError, match="tau"):
        C.sigma_of_t(sch, 1.5)
    with pytest.raises(ValueError, match="tau"):
        C.log_snr_of_t(sch, -0.1)
    with pytest.raises(ValueError, match="sigma"):
        C.t_of_sigma(sch, -1.0)
    with pytest.raises(ValueError, match="sigma_max|below the schedule"):
        C.t_of_sigma(S.ve(0.01, 10.0), 20.0)  # above σ(τ) ≈ 10
    with pytest.raises(ValueError, match="below the schedule"):
        C.t_of_log_snr(S.vp_linear(), -20.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        C.from_flow_time(1.2)
    with pytest.raises(ValueError, match="NaN"):
        C.t_of_log_snr(sch, np.nan)
    rot = RotatingForce.create(h=1.0, g=1.0, t_fin=1.0)
    with pytest.raises(TypeError, match="schedule"):
        C.sigma_of_t(rot, 0.5)
