"""The shape annotations of the main entry points (jaxtyping) are true, and enforced when asked.

A child process imports satjax under jaxtyping's import hook with beartype, so every annotated
function checks its arguments' and results' shapes at call time (and at trace time under jit).
A real workflow (exact marginals, the path cost, a reverse ODE solve, the bound) must pass
unchanged; calls with the wrong shapes must fail naming the parameter.
"""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("beartype")

CHILD = textwrap.dedent('''
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jaxtyping import install_import_hook

    with install_import_hook("satjax", "beartype.beartype"):
        from satjax import bound as B, mixtures as M, path as P, perturb as PT
        from satjax import reverse as R, schedules as S
        from satjax.forces import RotatingForce

    q = M.gmm([-2.0, 2.0], 0.5)
    sch = S.cosine()
    # a workflow through the annotated functions: all shapes right
    assert q.log_prob(jnp.zeros((5, 1))).shape == (5,)
    assert q.score(jnp.zeros((3, 4, 1))).shape == (3, 4, 1)
    f = sch.fields(q, jnp.linspace(-1, 1, 6)[:, None], 0.5)
    assert f.velocity.shape == (6, 1)
    x = sch.sample(jax.random.PRNGKey(0), q, 0.3, 8)
    assert x.shape == (8, 1)
    traj = R.solve_ode(R.exact_velocity(sch, q), x, t_start=1.0, t_end=0.0, n_steps=4)
    assert traj.xs.shape[-2:] == (8, 1)
    assert float(P.path_cost(sch, q, n_time=8).c2.value) > 0
    assert float(B.bound(sch, q, PT.shift(0.2), n_time=8).eta.value) > 0
    roll = M.swiss_roll(n=40)
    rot = RotatingForce.create(h=1.0, g=3.0, t_fin=2.0)
    assert rot.sample(jax.random.PRNGKey(1), roll, 0.5, 16).shape == (16, 2)

    def fails(fn, name):
        try:
            fn()
        except Exception as e:  # jaxtyping.TypeCheckError or beartype's violation
            msg = str(e)
            assert name in msg, msg
            return
        raise AssertionError(f"no shape error for {name}")

    fails(lambda: q.sample_given(jnp.zeros((4,), int), jnp.zeros((5, 1))), "eps")
    fails(lambda: sch.fields(q, jnp.zeros((6,)), 0.5), "x")
    fails(lambda: sch.fields(q, jnp.zeros((6, 1)), jnp.zeros((2,))), "t")
    fails(lambda: R.solve_ode(R.exact_velocity(sch, q), jnp.zeros((8,)), t_start=1.0,
                              t_end=0.0, n_steps=4), "x0")
    print("OK")
''')


def test_annotations_hold_and_are_enforced():
    res = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-4000:]
