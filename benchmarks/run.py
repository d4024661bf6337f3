"""satjax benchmarks: each kernel against a reference doing the same work, in the same run.

    python benchmarks/run.py [--quick] [--json FILE]

Reports, per comparison, the median wall time of repeats after compilation for satjax and for
the reference, their ratio (``speedup`` = reference_s / satjax_s), satjax's compile time and
its compiled peak memory (XLA's memory analysis: arguments + outputs + temporaries). No timing
is asserted anywhere; tests only run ``--quick`` and check the JSON's shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from satjax import forward as F  # noqa: E402
from satjax import mixtures as M  # noqa: E402
from satjax import path as P  # noqa: E402
from satjax import reverse as R  # noqa: E402
from satjax import schedules as S  # noqa: E402
from satjax import thermo  # noqa: E402


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _compile_and_time(jitted, args, repeats):
    t = time.perf_counter()
    lowered = jitted.lower(*args)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    ma = compiled.memory_analysis()
    peak = None
    if ma is not None:
        peak = (ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes) / 2**20
    jax.block_until_ready(compiled(*args))
    return compiled, compile_s, peak, _median_time(lambda: compiled(*args), repeats)


def _row(name, reference, sat_s, ref_s, compile_s, peak, **extra):
    return {"name": name, "reference": reference, "satjax_s": sat_s, "reference_s": ref_s,
            "speedup": (ref_s / sat_s) if (sat_s and ref_s) else None, "compile_s": compile_s,
            "peak_mb": peak, **extra}


# ---------------------------------------------------------------- velocity kernel vs NumPy


def numpy_velocity(x, t, mu, var, w):
    """Careful NumPy reference of the stable mixture velocity under cosine (same formula)."""
    a = np.pi / 2 * t
    m, s = np.cos(a), np.sin(a)
    dm, ds = -np.sin(a) * np.pi / 2, np.cos(a) * np.pi / 2
    c = m**2 * var + s**2  # (M,)
    dc = 2 * m * dm * var + 2 * s * ds
    mean, dmean = m * mu, dm * mu
    d = x.shape[1]
    logits = (np.log(w) - 0.5 * d * np.log(2 * np.pi * c) - 0.5 * np.sum(mean**2, 1) / c)[None] \
        + x @ (mean / c[:, None]).T - 0.5 * np.sum(x**2, 1)[:, None] / c[None]
    mx = logits.max(1, keepdims=True)
    e = np.exp(logits - mx)
    r = e / e.sum(1, keepdims=True)
    aa = dc / (2 * c)
    lin = dmean - aa[:, None] * mean
    return r @ lin + (r @ aa)[:, None] * x


def bench_velocity(d, n, m, repeats):
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(m, d)).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    var = np.full(m, 0.01, np.float32)
    w = np.full(m, 1.0 / m, np.float32)
    data = M.GaussianMixture(weights=jnp.asarray(w), means=jnp.asarray(mu), cov=jnp.asarray(var), kind="iso")
    sch = S.Cosine(tau=jnp.asarray(1.0, jnp.float32))
    t = jnp.asarray(0.5, jnp.float32)
    fn = jax.jit(lambda sch, data, x, t: F._fields(sch, data, x, t, None)["velocity"])
    compiled, cs, peak, sat = _compile_and_time(fn, (sch, data, jnp.asarray(x), t), repeats)
    ref = _median_time(lambda: numpy_velocity(x, 0.5, mu, var, w), repeats)
    err = float(np.max(np.abs(np.asarray(compiled(sch, data, jnp.asarray(x), t)) - numpy_velocity(x, 0.5, mu, var, w))))
    flops = 4.0 * n * m * d + 10.0 * n * m  # logits + two weighted feature sums, + exp etc.
    return _row(f"velocity_d{d}", "numpy (same formula, float32)", sat, ref, cs, peak,
                max_abs_diff=err, gflops=flops / sat / 1e9, sizes={"N": n, "M": m, "d": d})


# ---------------------------------------------------------------- c2 integral vs NumPy


def bench_c2(n, k, repeats):
    data = M.swiss_roll(n=400)
    data = jax.tree_util.tree_map(lambda v: v.astype(jnp.float32) if hasattr(v, "dtype") else v, data)
    sch = S.Cosine(tau=jnp.asarray(1.0, jnp.float32))
    draws = thermo.draws(jax.random.PRNGKey(0), data, n)
    fn = jax.jit(lambda sch, data, d: P._path_cost(sch, data, jnp.zeros((), jnp.float32), sch.tau, d,
                                                   k, 16, None, "mc", 2, True).c2)
    compiled, cs, peak, sat = _compile_and_time(fn, (sch, data, draws), repeats)
    mu, var, w = (np.asarray(data.means), np.asarray(data.cov), np.asarray(data.weights))
    idx, eps = np.asarray(draws.idx), np.asarray(draws.eps)
    ts, wts = np.polynomial.legendre.leggauss(k)
    ts, wts = 0.5 * (ts + 1), 0.5 * wts

    def ref():
        total = 0.0
        for t, wt in zip(ts, wts):
            a = np.pi / 2 * t
            m, s = np.cos(a), np.sin(a)
            x = m * mu[idx] + np.sqrt(m**2 * var[idx] + s**2)[:, None] * eps
            v = numpy_velocity(x.astype(np.float32), t, mu, var, w)
            total += wt * np.mean(np.sum(v**2, 1))
        return total

    r = _median_time(ref, repeats)
    diff = abs(float(compiled(sch, data, draws)) - ref())
    return _row("c2_integral", "numpy loop over time nodes (same formula, same draws)", sat, r, cs,
                peak, abs_diff=diff, sizes={"K": k, "N": n, "M": data.n_components})


# ---------------------------------------------------------------- fixed-step ODE vs diffrax


def bench_ode(n, steps, repeats):
    import diffrax

    data = M.gmm([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], 0.3)
    data = jax.tree_util.tree_map(lambda v: v.astype(jnp.float32) if hasattr(v, "dtype") else v, data)
    sch = S.Cosine(tau=jnp.asarray(1.0, jnp.float32))
    vel = R.exact_velocity(sch, data)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (n, 2), jnp.float32)
    ours = jax.jit(lambda v, x: R._ode_fixed(v, x, jnp.asarray(1.0, jnp.float32),
                                             jnp.asarray(0.0, jnp.float32), "heun", steps, 1, False).xs[-1])
    compiled, cs, peak, sat = _compile_and_time(ours, (vel, x0), repeats)

    def dfx(v, x):
        term = diffrax.ODETerm(lambda t, y, args: jax.vmap(v, in_axes=(0, None))(y, t))
        sol = diffrax.diffeqsolve(term, diffrax.Heun(), t0=1.0, t1=0.0, dt0=-1.0 / steps, y0=x,
                                  stepsize_controller=diffrax.ConstantStepSize(),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps + 1)
        return sol.ys[-1]

    dj = jax.jit(dfx)
    dcomp = dj.lower(vel, x0).compile()
    jax.block_until_ready(dcomp(vel, x0))
    ref = _median_time(lambda: dcomp(vel, x0), repeats)
    diff = float(jnp.max(jnp.abs(compiled(vel, x0) - dcomp(vel, x0))))
    return _row("ode_vs_diffrax", "diffrax Heun, ConstantStepSize, same steps", sat, ref, cs, peak,
                max_abs_diff=diff, sizes={"N": n, "steps": steps})


# ---------------------------------------------------------------- W1 / W2 on samples vs POT


def bench_ot(p, n, repeats):
    import ot as pot

    from satjax.geometry.distances import ot_cost

    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(n, 2)) * 0.7 + 0.5
    t0 = time.perf_counter()
    res = ot_cost(jnp.asarray(x), jnp.asarray(y), p=p, backend="ott")
    cs = time.perf_counter() - t0
    sat = _median_time(lambda: ot_cost(jnp.asarray(x), jnp.asarray(y), p=p, backend="ott").cost, repeats)
    metric = "sqeuclidean" if p == 2 else "euclidean"
    a = np.full(n, 1.0 / n)
    ref = _median_time(lambda: pot.emd2(a, a, pot.dist(x, y, metric=metric)), repeats)
    exact = float(pot.emd2(a, a, pot.dist(x, y, metric=metric)))
    return _row(f"w{p}_vs_pot", "POT emd2 (exact network simplex, CPU)", sat, ref, cs, None,
                relative_error=abs(float(res.cost) - exact) / exact, converged=bool(res.converged),
                sizes={"n": n})


# ---------------------------------------------------------------- CFM step vs torch


def bench_cfm(batch, width, repeats):
    from satjax import learn

    spec = learn.ModelSpec(dim=2, width=width, depth=3)
    sch = S.cond_ot()
    init_fn, step_fn = learn.make_train_step(spec, sch, loss="cfm", lr=1e-3)
    state = init_fn(jax.random.PRNGKey(0))
    data = M.gmm([-2.0, 2.0], 0.5)
    from satjax.learn.train import _sample

    batch_ = _sample(M.gmm([[-2.0, 0.0], [2.0, 0.0]], 0.5), jax.random.PRNGKey(1), batch, jnp.float32)
    key = jax.random.PRNGKey(2)
    t0 = time.perf_counter()
    jax.block_until_ready(step_fn(state, batch_, key))
    cs = time.perf_counter() - t0
    sat = _median_time(lambda: step_fn(state, batch_, key)[1]["loss"], repeats)
    del data
    try:
        import torch
    except ImportError:
        return _row("cfm_step_vs_torch", "skipped: torch is not installed", sat, None, cs, None)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2 + 33, width), torch.nn.SiLU(),
                              *[m for _ in range(2) for m in (torch.nn.Linear(width, width), torch.nn.SiLU())],
                              torch.nn.Linear(width, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    y = torch.randn(batch, 2)
    eps = torch.randn(batch, 2)

    def tstep():
        t = torch.rand(batch, 1)
        x = (1 - t) * y + t * eps
        freqs = torch.arange(1, 17, dtype=torch.float32) * torch.pi
        emb = torch.cat([t, torch.sin(t * freqs), torch.cos(t * freqs)], 1)
        loss = ((net(torch.cat([x, emb], 1)) - (eps - y)) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    tstep()
    ref = _median_time(tstep, repeats)
    return _row("cfm_step_vs_torch", f"torch {torch.__version__} plain loop, same MLP size", sat, ref,
                cs, None, sizes={"batch": batch, "width": width})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    q = args.quick
    rep = 3 if q else 7
    rows = [
        bench_velocity(2, 1000 if q else 10_000, 100 if q else 1000, rep),
        bench_velocity(64, 1000 if q else 10_000, 100 if q else 1000, rep),
        bench_c2(512 if q else 4096, 8 if q else 32, rep),
        bench_ode(512 if q else 4096, 20 if q else 100, rep),
        bench_ot(1, 200 if q else 1000, rep),
        bench_ot(2, 200 if q else 1000, rep),
        bench_cfm(256, 64 if q else 128, rep),
    ]
    out = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "jax": jax.__version__,
                       "devices": [str(d) for d in jax.devices()]},
           "quick": q, "comparisons": rows}
    for r in rows:
        sp = "n/a" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"{r['name']:18s} satjax {r['satjax_s'] * 1e3:9.2f} ms   reference "
              f"{(r['reference_s'] or float('nan')) * 1e3:9.2f} ms   speedup {sp:>7s}   "
              f"compile {r['compile_s']:.2f} s   ({r['reference']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=float)
    return out


if __name__ == "__main__":
    main()
