"""Schedule optimisation recovers the known optima (Eq. 93–95) and approaches W2²/τ."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satjax import mixtures as M
from satjax import optimize as O
from satjax import path as P
from satjax import schedules as S


def max_dev(a, b):
    ts = jnp.linspace(0.0, 1.0, 41)
    return max(float(jnp.max(jnp.abs(jnp.vectorize(a.m)(ts) - jnp.vectorize(b.m)(ts)))),
               float(jnp.max(jnp.abs(jnp.vectorize(a.sigma)(ts) - jnp.vectorize(b.sigma)(ts)))))


def test_conditional_energy_free_family_gives_cond_ot():
    """Eq. 94: minimiser cond-OT with value 2 n_d / τ; recovered to 1e-3 in m and σ."""
    r = O.optimize_schedule(M.gaussian(0.0, 1.0, dim=2), family="free", objective="conditional",
                            steps=400, learning_rate=0.05)
    assert float(r.best_value) == pytest.approx(4.0, rel=1e-4)
    assert max_dev(r.schedule, S.cond_ot()) < 1e-3
    assert not r.diverged


def test_conditional_energy_vp_family_gives_cosine():
    """Eq. 95: under m² + σ² = 1 the minimiser is cosine, value (π/2)² n_d / τ."""
    init = S.polar(5, vp=True, edge=False, angle=[1.0, 0.3, -0.2, 0.1, 0.05])
    r = O.optimize_schedule(M.gaussian(0.0, 1.0), family="vp", objective="conditional", steps=400,
                            learning_rate=0.05, init=init)
    assert float(r.best_value) == pytest.approx(np.pi**2 / 4, rel=1e-6)
    assert max_dev(r.schedule, S.cosine()) < 1e-4


def test_exact_c2_reaches_W2_on_centred_gaussian_vp():
    """Centred N(0, s²): the geodesic to N(0, 1) lies in the VP family; c_2 → W2²/τ = (1 − s)²."""
    s = 0.3
    data = M.gaussian(0.0, s)
    r = O.optimize_schedule(data, family="vp", objective="c2", steps=500, learning_rate=0.1, n_basis=8)
    w2 = (1 - s) ** 2
    c2_cos = float(P.path_cost(S.cosine(), data).c2.value)
    assert w2 <= float(r.best_value) < 1.02 * w2 < c2_cos


def test_exact_c2_on_mixture_beats_cosine_and_cond_ot():
    data = M.gmm([-2.0, 2.0], 0.5)
    r = O.optimize_schedule(data, family="free", objective="c2", steps=150, learning_rate=0.05)
    c2 = float(P.path_cost(r.schedule, data).c2.value)
    assert c2 < float(P.path_cost(S.cosine(), data).c2.value)
    assert c2 < float(P.path_cost(S.cond_ot(), data).c2.value)


def test_divergence_stops_with_best_schedule():
    def objective(sch):  # finite while angle[1] <= 0.3, NaN beyond: descent walks into it
        a = sch.angle[1]
        return jnp.where(a > 0.3, jnp.nan, (a - 1.0) ** 2)

    r = O.optimize_schedule(M.gaussian(0.0, 1.0), objective=objective, steps=200, learning_rate=0.05)
    assert r.diverged and r.steps < 200
    assert float(r.schedule.angle[1]) <= 0.3
    assert np.isfinite(float(r.best_value))


@pytest.mark.parametrize("kw,match", [
    (dict(family="weird"), "family"),
    (dict(objective="speed"), "objective"),
    (dict(steps=0), "steps"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        O.optimize_schedule(M.gaussian(0.0, 1.0), **kw)


def test_conditional_energy_refuses_the_edge_component():
    """With the arcsine edge θ' ∝ s^-1/2, so ∫θ'² diverges: refused, not under-integrated."""
    with pytest.raises(ValueError, match="edge"):
        O.optimize_schedule(M.gaussian(0.0, 1.0), family="vp", objective="conditional", steps=1,
                            init=S.polar(4, vp=True, edge=True))


def test_memory_is_estimated_before_the_first_step():
    """XLA's estimate of one step's peak is checked before any step runs: the c_2 objective on
    a 50-component roll with 4096 Monte-Carlo draws holds at least the (draws × components)
    responsibilities of one tile, far above a 1 MB limit; the refusal names the size."""
    calls = []
    with pytest.raises(ValueError, match=r"one optimisation step needs about .* GiB"):
        O.optimize_schedule(M.swiss_roll(n=50), objective="c2", estimator="mc", steps=3,
                            key=jax.random.PRNGKey(0), max_bytes=2**20,
                            progress=lambda i, v: calls.append(i))
    assert calls == []
    from satjax._util import compiled_peak_bytes

    n = 1000  # an outer product returned: its n² output is part of the peak
    x = jnp.zeros(n)
    compiled = jax.jit(lambda x: x[:, None] * x[None, :]).lower(x).compile()
    assert n * n * x.dtype.itemsize <= compiled_peak_bytes(compiled) < 2 * n * n * 8
    r = O.optimize_schedule(M.gaussian(0.0, 1.0), objective="c2", steps=2, max_bytes=2**30)
    assert r.steps == 2


def test_mc_objective_needs_key():
    with pytest.raises(ValueError, match="key"):
        O.optimize_schedule(M.swiss_roll(n=50), objective="c2", estimator="mc", steps=1)


def test_eta_and_c1_objectives_in_1d():
    """1-D, exact CDF transport: η is the same for every schedule of the polar family
    (docs/theory.md §7), so its gradient in the schedule's coefficients vanishes to quadrature
    accuracy; c_1 is a path property, its gradient is not small and equals central differences
    of the same objective; a few Adam steps on c_1 lower it below cosine's."""
    import jax

    from satjax import perturb as PT
    from satjax.estimators import CDF

    q = M.gmm([-2.0, 2.0], 0.5)
    tmpl = S.polar(3, 3)
    kw = dict(key=jax.random.PRNGKey(0), n_time=24, perturbation=PT.shift(0.2),
              transport=CDF(n_points=4096))
    eta = jax.jit(O.make_objective(q, "eta", tmpl, **kw))
    c1 = jax.jit(O.make_objective(q, "c1", tmpl, **kw))
    sch = tmpl.replace(angle=jnp.asarray([1.0, 0.3, -0.2]),
                       log_radius=jnp.asarray([0.2, -0.1, 0.05]))
    g_eta = jax.jit(jax.grad(eta))(sch)
    g_c1 = jax.jit(jax.grad(c1))(sch)
    scale = float(eta(sch))
    assert float(jnp.max(jnp.abs(g_eta.angle))) < 1e-7 * scale
    assert float(jnp.max(jnp.abs(g_eta.log_radius))) < 1e-7 * scale
    assert float(jnp.max(jnp.abs(g_c1.angle))) > 1e-2 * float(c1(sch))
    for field, i in (("angle", 1), ("log_radius", 0)):
        h = 1e-4
        v = getattr(sch, field)
        up = float(c1(sch.replace(**{field: v.at[i].add(h)})))
        dn = float(c1(sch.replace(**{field: v.at[i].add(-h)})))
        assert float(getattr(g_c1, field)[i]) == pytest.approx((up - dn) / (2 * h), rel=1e-5)
    r = O.optimize_schedule(q, objective="c1", steps=15, learning_rate=0.05, n_basis=3, **kw)
    assert not r.diverged
    assert float(r.best_value) < 0.97 * float(c1(S.polar(3, 3)))
