"""Samples split over devices (satjax.sharding): same results as one device, really split.

The device count is fixed when JAX starts, and the rest of the suite runs with one CPU device, so
the multi-device checks run in child processes started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (four CPU devices) and x64. Each child
computes the single-device reference itself (``shard=False``, the unchanged default path) and
asserts, for the sharded run:

* ``jax.device_count() == 4``;
* outputs split over all 4 devices (4 distinct shards of N/4 samples), or, for scalar results,
  sharded inputs and a compiled program whose only cross-device collective is all-reduce (no
  all-gather: per-sample work is not gathered onto one device);
* equality with the single-device result: random numbers bit-identical (threefry partitionable),
  samples and trajectories to 1e-12 absolute, reductions (means, integrals) to 1e-12 relative
  (only the summation order differs).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satjax import forward, mixtures, reverse, schedules, thermo
from satjax import sharding as sh
from satjax.protocol import draws

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import re
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import satjax as sj
from satjax import forward, likelihood, mixtures, path, reverse, schedules, thermo
from satjax import sharding as sh
from satjax.estimators import MonteCarlo as MC
from satjax.protocol import draws

assert jax.device_count() == 4, jax.devices()
MESH = sh.samples_mesh()
KEY = jax.random.PRNGKey(0)
REL = 1e-12   # reductions: only the summation order differs
ABS = 1e-12   # samples, trajectories


def split4(a, n, axis=0):
    # split over all 4 devices, each holding n/4 samples along `axis`
    assert sh.is_sharded(a, MESH), a.sharding
    shards = a.addressable_shards
    assert len(shards) == 4 and len({s.device for s in shards}) == 4
    assert all(s.data.shape[axis] == n // 4 for s in shards), [s.data.shape for s in shards]


def collectives(compiled):
    return set(re.findall(r"all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter",
                          compiled.as_text()))


def close(a, b, rel=REL, atol=0.0):
    a, b = np.asarray(a), np.asarray(b)
    assert np.allclose(a, b, rtol=rel, atol=atol), (a, b, np.max(np.abs(a - b)))
"""


def run_child(body: str, timeout: int = 300) -> str:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    code = PRELUDE + textwrap.dedent(body) + "\nprint('CHILD OK')\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         timeout=timeout, env=env, cwd=ROOT)
    assert res.returncode == 0 and "CHILD OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]
    return res.stdout


def test_four_devices_thermo():
    """Draws, entropy production and path cost by MC, path_entropy_mc; errors for bad counts."""
    run_child("""
    q = mixtures.gmm([[-2.0, 0.0], [2.0, 1.0]], 0.5)
    sched = schedules.cosine(tau=1.0)
    n = 64

    # common random numbers: bit-identical, each device holds n/4
    d0, d1 = draws(KEY, q, n), draws(KEY, q, n, shard=True)
    split4(d1.idx, n); split4(d1.eps, n)
    assert np.array_equal(d0.idx, d1.idx) and np.array_equal(d0.eps, d1.eps)
    assert draws(KEY, q, n, shard=MESH).eps.sharding == d1.eps.sharding   # explicit mesh

    # entropy production: the whole public call compiled as one program from a key
    ep0 = thermo.entropy_production(sched, q, estimator=MC(n=n, key=KEY), n_time=8)
    comp = jax.jit(lambda k: thermo.entropy_production(
        sched, q, estimator=MC(n=n, key=k, shard=True), n_time=8)).lower(KEY).compile()
    assert collectives(comp) == {"all-reduce"}, collectives(comp)
    ep1 = comp(KEY)
    for f in ("kinetic", "system"):
        close(getattr(ep1, f), getattr(ep0, f))
    close(ep1.wD.value, ep0.wD.value); close(ep1.wD.stderr, ep0.wD.stderr)
    close(ep1.S_sys.value, ep0.S_sys.value)
    ep2 = thermo.entropy_production(sched, q, estimator=MC(n=n, key=KEY, shard=True), n_time=8)
    close(ep2.wD.value, ep0.wD.value)

    # path cost: cosine (whole call compiled, collectives checked) and a rotating force
    # (gradient projection over the samples; not jittable as a whole call).
    rf = sj.RotatingForce.create(h=1.0, g=3.0, t_fin=2.0)
    pc0 = [path.path_cost(p, q, estimator=MC(n=n, key=KEY), n_time=8, check_time=False)
           for p in (sched, rf)]
    comp = jax.jit(lambda k: path.path_cost(sched, q, estimator=MC(n=n, key=k, shard=True),
                                            n_time=8, check_time=False)).lower(KEY).compile()
    pc1 = [comp(KEY), path.path_cost(rf, q, estimator=MC(n=n, key=KEY, shard=True), n_time=8,
                                     check_time=False)]
    assert collectives(comp) == {"all-reduce"}, collectives(comp)
    for a, b in zip(pc1, pc0):
        for f in ("wD", "c2", "path_length"):
            close(getattr(a, f).value, getattr(b, f).value)
        close(a.c2.stderr, b.c2.stderr); close(a.speed_sq, b.speed_sq)

    # path-probability entropy (forward SDE paths drawn inside jit)
    kw = dict(t0=0.2, t1=0.8, n_paths=n, n_steps=10)
    pe0 = thermo.path_entropy_mc(KEY, sched, q, **kw)
    pe1 = thermo.path_entropy_mc(KEY, sched, q, shard=True, **kw)
    for f in ("s_aux", "s_aux_stderr", "s_rev", "ift_aux", "ift_rev_stderr"):
        close(getattr(pe1, f), getattr(pe0, f), atol=1e-14)
    # (path_entropy_mc checks T_t0 eagerly, so inspect its compiled core)
    f64 = lambda v: jnp.asarray(v, jnp.float64)
    comp = thermo._path_entropy.lower(KEY, sched, q, f64(0.2), f64(0.8), n, 10,
                                      MESH).compile()
    assert collectives(comp) == {"all-reduce"}, collectives(comp)

    # counts not divisible by 4: a ValueError naming both sizes, no silent padding
    for call in (lambda: draws(KEY, q, 66, shard=True),
                 lambda: thermo.entropy_production(sched, q,
                                                   estimator=MC(n=66, key=KEY, shard=True)),
                 lambda: thermo.path_entropy_mc(KEY, sched, q, t0=0.2, n_paths=66, n_steps=2,
                                                shard=True)):
        try:
            call()
        except ValueError as e:
            assert "66" in str(e) and "4 devices" in str(e), e
        else:
            raise AssertionError("no ValueError for 66 samples on 4 devices")
    """)


def test_four_devices_samplers():
    """sample_marginal moments, forward SDE, reverse ODE/SDE, adaptive ODE, likelihood."""
    run_child("""
    q = mixtures.gmm([[-2.0, 0.0], [2.0, 1.0]], 0.5)
    sched = schedules.cosine(tau=1.0)
    n = 64

    x0 = forward.sample_marginal(KEY, sched, q, 0.99, n)
    x1 = forward.sample_marginal(KEY, sched, q, 0.99, n, shard=True)
    split4(x1, n)
    close(x1, x0, atol=ABS)
    close(jnp.mean(x1, 0), jnp.mean(x0, 0), atol=ABS)            # moments: reductions over devices
    close(jnp.cov(x1.T), jnp.cov(x0.T), atol=ABS)

    tr0 = forward.forward_sde(KEY, sched, x0, t0=0.0, t1=0.9, n_steps=12, n_save=3)
    tr1 = forward.forward_sde(KEY, sched, x0, t0=0.0, t1=0.9, n_steps=12, n_save=3, shard=True)
    split4(tr1.xs, n, axis=1)
    close(tr1.xs, tr0.xs, atol=ABS)

    v = reverse.exact_velocity(sched, q)
    r0 = reverse.reverse_ode(v, x0, n_steps=12, n_save=2, method="rk4")
    r1 = reverse.reverse_ode(v, x0, n_steps=12, n_save=2, method="rk4", shard=True)
    split4(r1.xs, n, axis=1)
    close(r1.xs[-1], r0.xs[-1], atol=ABS)   # endpoints
    comp = jax.jit(lambda x: reverse.reverse_ode(v, x, n_steps=12, shard=True).xs).lower(x0).compile()
    assert "all-gather" not in collectives(comp), collectives(comp)   # also under an outer jit
    split4(comp(x0), n, axis=1)

    s = reverse.exact_score(sched, q)
    rs0 = reverse.reverse_sde(KEY, sched, s, x0, t_start=0.95, n_steps=12)
    rs1 = reverse.reverse_sde(KEY, sched, s, x0, t_start=0.95, n_steps=12, shard=True)
    split4(rs1.xs, n, axis=1)
    close(rs1.xs, rs0.xs, atol=ABS)

    a0 = reverse.solve_ode_adaptive(v, x0, rtol=1e-6, atol=1e-8)
    a1 = reverse.solve_ode_adaptive(v, x0, rtol=1e-6, atol=1e-8, shard=MESH)
    split4(a1.xs, n, axis=1)
    assert int(a1.n_steps) == int(a0.n_steps)
    close(a1.xs, a0.xs, atol=ABS)

    P1 = forward.marginal(sched, q, 0.99)
    prior = lambda y: P1.log_prob(y[None])[0]
    kw = dict(prior_log_prob=prior, t_end=0.99, n_steps=8, divergence="hutchinson", key=KEY,
              n_probes=2)
    l0 = likelihood.log_likelihood(v, x0, **kw)
    l1 = likelihood.log_likelihood(v, x0, shard=True, **kw)
    split4(l1.log_prob, n)
    close(l1.log_prob, l0.log_prob, atol=ABS)
    close(l1.stderr, l0.stderr, atol=ABS)

    # helpers: placement, inside-jit constraint, per-process blocks (one process here)
    y = sh.shard_samples({"a": x0, "s": jnp.float64(1.0)})
    split4(y["a"], n)
    assert y["s"].sharding.is_fully_replicated
    g = jax.jit(lambda k: sh.constrain(jax.random.normal(k, (n, 3)), MESH))(KEY)
    split4(g, n)
    assert np.array_equal(g, jax.random.normal(KEY, (n, 3)))
    z = sh.from_process_local(np.asarray(x0))
    split4(z, n)
    assert np.array_equal(z, x0)
    for call in (lambda: sh.shard_samples(np.zeros((6, 2))),
                 lambda: forward.sample_marginal(KEY, sched, q, 0.5, 10, shard=True),
                 lambda: reverse.reverse_ode(v, x0[:6], n_steps=2, shard=True)):
        try:
            call()
        except ValueError as e:
            assert "4 devices" in str(e), e
        else:
            raise AssertionError("no ValueError for a count not divisible by 4")
    """)


# ----------------------------------------------------------------------- one device (in process)

one_device = pytest.mark.skipif(jax.device_count() != 1, reason="needs a single device")


@one_device
def test_single_device_is_noop():
    x = jnp.arange(12.0).reshape(6, 2)
    assert sh.resolve(True) is None and sh.resolve(False) is None
    assert sh.shard_samples(x) is x                   # 6 samples, 1 device: nothing to split
    tree = {"x": x, "k": jax.random.PRNGKey(1)}
    assert sh.shard_samples(tree, True) is tree
    assert sh.constrain(x, None) is x
    assert not sh.is_sharded(x)
    q, sched, key = mixtures.gmm([-2.0, 2.0], 0.5), schedules.cosine(), jax.random.PRNGKey(0)
    d0, d1 = draws(key, q, 7), draws(key, q, 7, shard=True)   # 7: any n on 1 device
    assert np.array_equal(d0.idx, d1.idx) and np.array_equal(d0.eps, d1.eps)
    x0 = forward.sample_marginal(key, sched, q, 0.9, 7)
    assert np.array_equal(x0, forward.sample_marginal(key, sched, q, 0.9, 7, shard=True))
    a = forward.forward_sde(key, sched, x0, t1=0.9, n_steps=4, n_save=2)
    b = forward.forward_sde(key, sched, x0, t1=0.9, n_steps=4, n_save=2, shard=True)
    assert np.array_equal(a.xs, b.xs)
    v = reverse.exact_velocity(sched, q)
    assert np.array_equal(reverse.reverse_ode(v, x0, n_steps=4).xs,
                          reverse.reverse_ode(v, x0, n_steps=4, shard=True).xs)


def test_bad_shard_arguments():
    with pytest.raises(TypeError, match="bool or a jax.sharding.Mesh"):
        sh.resolve("all")
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match="'samples'"):
        sh.resolve(mesh)
    with pytest.raises(ValueError, match="at least 2"):
        draws(jax.random.PRNGKey(0), mixtures.gmm([0.0], 1.0), 1, shard=True)


def test_divisibility_message():
    class FakeMesh:
        shape = {"samples": 4}

    with pytest.raises(ValueError, match=r"10 samples cannot be split evenly over 4 devices.*8 or 12"):
        sh.check_divisible(10, FakeMesh())
    sh.check_divisible(12, FakeMesh())
    sh.check_divisible(10, None)
    assert sh.spec(3, axis=1) == jax.sharding.PartitionSpec(None, "samples", None)
