"""Benchmarks: each satjax kernel against a reference doing the same work, in the same run.

Comparisons (issue 7): the exact mixture velocity against a careful NumPy implementation of the
same formula (d = 2 and 64), the c_2 integral against the same NumPy loop over time nodes, a
fixed-step probability-flow ODE against diffrax, sample W1/W2 through ott-jax against POT's exact
solver, and one CFM training step against a PyTorch loop with the same MLP. Each row reports the
median wall time of repeats after compilation, ``speedup = reference_s / satjax_s``, the compile
time, XLA's compiled peak memory, and the difference between the two results (same work).

Also the machine's rooflines measured in the same run (a large XLA matrix product, XLA's and
NumPy's exponential throughput), and :func:`scaling`: time and memory of the c_2 integral as the
samples N, components M, dimension d and time nodes K double.

No timing is asserted anywhere; the tests run the quick mode and check shapes and agreement.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from satjax import mixtures as M
from satjax._util import compiled_peak_bytes
from satjax import path as P
from satjax import reverse as R
from satjax import schedules as S
from satjax.estimators import MonteCarlo
from satjax.protocol import draws as make_draws

NAMES = ("velocity_d2", "velocity_d64", "c2_integral", "ode_vs_diffrax", "w1_vs_pot",
         "w2_vs_pot", "cfm_step_vs_torch")


def median_time(fn: Callable, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (results are waited for)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compile_only(jitted, args):
    """(compiled, compile_s, peak_mb): XLA's memory analysis (arguments + outputs + temporaries)
    gives the peak."""
    t = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t
    peak = compiled_peak_bytes(compiled) / 2**20 or None
    return compiled, compile_s, peak


def compile_and_time(jitted, args, repeats):
    """(compiled, compile_s, peak_mb, median_s) after one warm-up call."""
    compiled, compile_s, peak = compile_only(jitted, args)
    jax.block_until_ready(compiled(*args))
    return compiled, compile_s, peak, median_time(lambda: compiled(*args), repeats)


def _row(name, reference, sat_s, ref_s, compile_s, peak, **extra):
    return {"name": name, "reference": reference, "satjax_s": sat_s, "reference_s": ref_s,
            "speedup": (ref_s / sat_s) if (sat_s and ref_s) else None, "compile_s": compile_s,
            "peak_mb": peak, **extra}


def _f32(tree):
    return jax.tree_util.tree_map(
        lambda v: v.astype(jnp.float32) if hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating) else v,
        tree)


# ---------------------------------------------------------------- rooflines


def rooflines(quick: bool = False) -> dict:
    """What this machine does at best, measured now: XLA GEMM GFLOP/s and exp throughput."""
    n = 512 if quick else 2048
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    jax.block_until_ready(mm(a))
    t_mm = median_time(lambda: mm(a), 5)
    z = jax.random.normal(jax.random.PRNGKey(1), (1000, 1000), jnp.float32)
    ex = jax.jit(lambda z: jax.lax.fori_loop(
        0, 10, lambda i, acc: acc + jnp.exp(z + i.astype(jnp.float32)).sum(1), jnp.zeros(1000)))
    jax.block_until_ready(ex(z))
    t_ex = median_time(lambda: ex(z), 5)
    zn = np.asarray(z)
    t_np = median_time(lambda: np.exp(zn).sum(1), 5)
    return {"xla_gemm_gflops": 2.0 * n**3 / t_mm / 1e9, "gemm_size": n,
            "xla_exp_per_ns": 1e7 / t_ex / 1e9, "numpy_exp_per_ns": 1e6 / t_np / 1e9}


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
    data = M.GaussianMixture(weights=jnp.asarray(w), means=jnp.asarray(mu), cov=jnp.asarray(var),
                             kind="iso")
    sch = S.Cosine(tau=jnp.asarray(1.0, jnp.float32))
    t = jnp.asarray(0.5, jnp.float32)
    fn = jax.jit(lambda sch, data, x, t: sch.fields(data, x, t, ("velocity",)).velocity)
    args = (sch, data, jnp.asarray(x), t)
    compiled, cs, peak, sat = compile_and_time(fn, args, repeats)
    ref = median_time(lambda: numpy_velocity(x, 0.5, mu, var, w), repeats)
    err = float(np.max(np.abs(np.asarray(compiled(*args)) - numpy_velocity(x, 0.5, mu, var, w))))
    # two N×M×d matrix products (logits, weighted average) + ~6 flops per (point, component)
    flops = 4.0 * n * m * d + 6.0 * n * m
    return _row(f"velocity_d{d}", "numpy (same formula, float32)", sat, ref, cs, peak,
                max_abs_diff=err, gflops=flops / sat / 1e9,
                exps_per_ns=n * m / sat / 1e9, sizes={"N": n, "M": m, "d": d})


# ---------------------------------------------------------------- c2 integral vs NumPy


def _c2_fn(n_time: int):
    """The jitted c_2 integral on [0, τ] by Monte Carlo (conservative protocol: c_2 = w_D)."""
    def c2(sch, data, draws):
        zero = jnp.zeros((), sch.tau.dtype)
        est = MonteCarlo(n=draws.n, draws=draws)
        return P.path_cost_kernel(sch, data, est, zero, sch.tau, n_time).c2.value
    return jax.jit(c2)


def bench_c2(n, k, repeats):
    data = _f32(M.swiss_roll(n=400))
    sch = S.Cosine(tau=jnp.asarray(1.0, jnp.float32))
    draws = make_draws(jax.random.PRNGKey(0), data, n)
    compiled, cs, peak, sat = compile_and_time(_c2_fn(k), (sch, data, draws), repeats)
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

    r = median_time(ref, repeats)
    diff = abs(float(compiled(sch, data, draws)) - ref())
    return _row("c2_integral", "numpy loop over time nodes (same formula, same draws)", sat, r,
                cs, peak, abs_diff=diff, sizes={"K": k, "N": n, "M": data.n_components})


# ---------------------------------------------------------------- fixed-step ODE vs diffrax


def bench_ode(n, steps, repeats):
    import diffrax

    data = _f32(M.gmm([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], 0.3))
    sch = S.Cosine(tau=jnp.asarray(1.0, jnp.float32))
    vel = R.exact_velocity(sch, data)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (n, 2), jnp.float32)
    one, zero = jnp.asarray(1.0, jnp.float32), jnp.asarray(0.0, jnp.float32)
    ours = jax.jit(lambda v, x: R.solve_ode(v, x, t_start=one, t_end=zero, method="heun",
                                            n_steps=steps).xs[-1])
    compiled, cs, peak, sat = compile_and_time(ours, (vel, x0), repeats)

    def dfx(v, x):
        term = diffrax.ODETerm(lambda t, y, args: v.batch(y, t))
        sol = diffrax.diffeqsolve(term, diffrax.Heun(), t0=1.0, t1=0.0, dt0=-1.0 / steps, y0=x,
                                  stepsize_controller=diffrax.ConstantStepSize(),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps + 1)
        return sol.ys[-1]

    dcomp = jax.jit(dfx).lower(vel, x0).compile()
    jax.block_until_ready(dcomp(vel, x0))
    ref = median_time(lambda: dcomp(vel, x0), repeats)
    diff = float(jnp.max(jnp.abs(compiled(vel, x0) - dcomp(vel, x0))))
    return _row("ode_vs_diffrax", "diffrax Heun, ConstantStepSize, same steps", sat, ref, cs,
                peak, max_abs_diff=diff, sizes={"N": n, "steps": steps})


# ---------------------------------------------------------------- W1 / W2 on samples vs POT


def bench_ot(p, n, repeats):
    from satjax.geometry.distances import ot_cost

    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(n, 2)) * 0.7 + 0.5
    t0 = time.perf_counter()
    res = ot_cost(jnp.asarray(x), jnp.asarray(y), p=p, backend="ott")
    cs = time.perf_counter() - t0
    sat = median_time(lambda: ot_cost(jnp.asarray(x), jnp.asarray(y), p=p, backend="ott").cost,
                      repeats)
    name = f"w{p}_vs_pot"
    try:
        import ot as pot
    except ImportError:
        return _row(name, "skipped: POT is not installed (pip install pot)", sat, None, cs, None)
    metric = "sqeuclidean" if p == 2 else "euclidean"
    a = np.full(n, 1.0 / n)
    ref = median_time(lambda: pot.emd2(a, a, pot.dist(x, y, metric=metric)), repeats)
    exact = float(pot.emd2(a, a, pot.dist(x, y, metric=metric)))
    return _row(name, "POT emd2 (exact network simplex, CPU)", sat, ref, cs, None,
                relative_error=abs(float(res.cost) - exact) / exact,
                converged=bool(res.converged), sizes={"n": n})


# ---------------------------------------------------------------- CFM step vs torch


def _torch_mlp(torch, dim, width, depth, n_freq):
    """The satjax MLPField in torch: hidden_i(h) + time_i(emb), SiLU; same parameter count."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            n_emb = 1 + 2 * n_freq
            self.hidden = torch.nn.ModuleList(
                [torch.nn.Linear(dim + n_emb if i == 0 else width, width) for i in range(depth)])
            self.time = torch.nn.ModuleList(
                [torch.nn.Linear(n_emb, width, bias=False) for _ in range(depth)])
            self.out = torch.nn.Linear(width, dim)
            self.register_buffer("k", torch.arange(1, n_freq + 1, dtype=torch.float32))

        def forward(self, x, t):
            ang = torch.pi * t[:, None] * self.k
            emb = torch.cat([t[:, None], torch.sin(ang), torch.cos(ang)], 1)
            h = torch.cat([x, emb], 1)
            for lin, tl in zip(self.hidden, self.time):
                h = torch.nn.functional.silu(lin(h) + tl(emb))
            return self.out(h)

    return Net()


def bench_cfm(batch, width, repeats):
    from satjax import learn

    depth, n_freq = 3, 16
    spec = learn.ModelSpec(dim=2, width=width, depth=depth, n_freq=n_freq)
    sch = S.cond_ot()
    init_fn, step_fn = learn.make_train_step(spec, sch, loss="cfm", lr=1e-3)
    state = init_fn(jax.random.PRNGKey(0))
    n_params = sum(v.size for v in jax.tree_util.tree_leaves(state.params))
    batch_ = learn.sample_batch(_f32(M.gmm([[-2.0, 0.0], [2.0, 0.0]], 0.5)),
                                jax.random.PRNGKey(1), batch, jnp.float32)
    key = jax.random.PRNGKey(2)
    t0 = time.perf_counter()
    jax.block_until_ready(step_fn(state, batch_, key))
    cs = time.perf_counter() - t0
    sat = median_time(lambda: step_fn(state, batch_, key)[1]["loss"], repeats)
    try:
        import torch
    except ImportError:
        return _row("cfm_step_vs_torch",
                    "skipped: torch is not installed (pip install -e '.[bench]')", sat, None, cs,
                    None, params=n_params)
    torch.manual_seed(0)
    net = _torch_mlp(torch, 2, width, depth, n_freq)
    t_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    y = torch.randn(batch, 2)
    eps = torch.randn(batch, 2)

    def tstep():
        t = torch.rand(batch) * (1 - 1e-3) + 1e-3
        x = (1 - t[:, None]) * y + t[:, None] * eps
        loss = ((net(x, t) - (eps - y)) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(3):
        tstep()
    ref = median_time(tstep, repeats)
    return _row("cfm_step_vs_torch",
                f"torch {torch.__version__} plain loop, same MLP ({t_params} parameters), "
                f"{torch.get_num_threads()} threads", sat, ref, cs, None, params=n_params,
                torch_params=t_params, sizes={"batch": batch, "width": width, "depth": depth})


# ---------------------------------------------------------------- scaling of the c2 integral


def synthetic_mixture(n_components: int, dim: int, seed: int = 0, var: float = 0.05):
    """An MNIST-sized stand-in: equal-weight isotropic components at random means (float32)."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-1.0, 1.0, size=(n_components, dim)).astype(np.float32)
    return M.GaussianMixture(weights=jnp.full((n_components,), 1.0 / n_components, jnp.float32),
                             means=jnp.asarray(mu),
                             cov=jnp.full((n_components,), var, jnp.float32), kind="iso")


def c2_run(n_samples: int, n_components: int, dim: int, n_time: int, repeats: int = 3):
    """Time, compile time and XLA peak memory of the c_2 integral (cosine, float32, MC)."""
    data = synthetic_mixture(n_components, dim)
    sch = S.Cosine(tau=jnp.asarray(1.0, jnp.float32))
    draws = make_draws(jax.random.PRNGKey(0), data, n_samples)
    fn = _c2_fn(n_time)
    if repeats == 0:  # long runs: one call, timed, whose value is the result
        compiled, cs, peak = compile_only(fn, (sch, data, draws))
        t = time.perf_counter()
        c2 = float(compiled(sch, data, draws))
        sec = time.perf_counter() - t
    else:
        compiled, cs, peak, sec = compile_and_time(fn, (sch, data, draws), repeats)
        c2 = float(compiled(sch, data, draws))
    if not np.isfinite(c2):
        raise FloatingPointError(f"c2 is not finite at N={n_samples}, M={n_components}, d={dim}")
    return {"N": n_samples, "M": n_components, "d": dim, "K": n_time, "seconds": sec,
            "compile_s": cs, "peak_mb": peak, "c2": c2}


def scaling(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Time and memory of c_2 as N, M, d, K double from a base size (each alone, up to 4×).

    ``exponent`` is log2(time ratio) per doubling: 1 means linear cost.
    """
    base = dict(N=512, M=64, d=4, K=4) if quick else dict(N=16384, M=1024, d=16, K=8)
    factors = (1, 2) if quick else (1, 2, 4)
    rows = []
    for axis in ("N", "M", "d", "K"):
        for f in factors:
            if f == 1 and axis != "N":
                continue
            size = dict(base)
            size[axis] = base[axis] * f
            if progress:
                progress(f"scaling: {size}")
            r = c2_run(size["N"], size["M"], size["d"], size["K"], repeats=3 if quick else 5)
            r["varied"] = "base" if f == 1 else axis
            r["factor"] = f
            rows.append(r)
    t0 = rows[0]["seconds"]
    for r in rows:
        r["time_ratio"] = r["seconds"] / t0
        r["exponent"] = float(np.log2(r["time_ratio"]) / np.log2(r["factor"])) if r["factor"] > 1 else None
    return {"base": base, "rows": rows}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM of its own address space on Linux
    (``ru_maxrss`` would also count the parent's memory copied at fork, kept across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def big_c2(n_samples: int = 100_000, n_components: int = 70_000, dim: int = 784,
           n_time: int = 2) -> dict:
    """The MNIST-sized c_2 run of issue 7: returns its time and the process's peak RSS."""
    t = time.perf_counter()
    r = c2_run(n_samples, n_components, dim, n_time, repeats=0)
    r["wall_s"] = time.perf_counter() - t
    r["peak_rss_mb"] = peak_rss_mb()
    return r


# ---------------------------------------------------------------- the whole run


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> dict:
    return {"platform": platform.platform(), "processor": _cpu_model(),
            "cpus": os.cpu_count(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()]}


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> dict:
    """All comparisons of issue 7 (float32); returns the JSON document."""
    q = quick
    rep = 3 if q else 15
    jobs = [
        ("velocity_d2", lambda: bench_velocity(2, 1000 if q else 10_000, 100 if q else 1000, rep)),
        ("velocity_d64", lambda: bench_velocity(64, 1000 if q else 10_000, 100 if q else 1000, rep)),
        ("c2_integral", lambda: bench_c2(512 if q else 4096, 8 if q else 32, rep)),
        ("ode_vs_diffrax", lambda: bench_ode(512 if q else 4096, 20 if q else 100, rep)),
        ("w1_vs_pot", lambda: bench_ot(1, 200 if q else 1000, rep)),
        ("w2_vs_pot", lambda: bench_ot(2, 200 if q else 1000, rep)),
        ("cfm_step_vs_torch", lambda: bench_cfm(256, 64 if q else 128, rep)),
    ]
    rows = []
    for name, job in jobs:
        if progress:
            progress(name)
        rows.append(job())
    return {"machine": machine(), "quick": q, "rooflines": rooflines(q), "comparisons": rows}


def write_json(doc: dict, path: str) -> None:
    """Write a results document atomically as strict JSON (:func:`satjax.report.write_json`)."""
    from satjax.report import write_json as _write

    _write(doc, path)


def run_cli(folder, *, quick: bool = False, scaling_table: bool = False, big: bool = False,
            say=print, **kw) -> dict:
    """What ``satjax bench`` does: the comparisons (or the MNIST-sized run), printed, and
    ``bench.json`` / ``bench.png`` written into ``folder``."""
    from pathlib import Path

    from satjax.plotting import plot_bench
    from satjax.report import write_png

    folder = Path(folder)
    scaling_table = scaling_table or kw.get("scaling", False)
    if big:
        say("MNIST-sized c_2: 70 000 components, d = 784, 100 000 samples, 2 time nodes ...")
        res = {"machine": machine(), "big": big_c2()}
        r = res["big"]
        say(f"c2 = {r['c2']:.6g} in {r['seconds']:.1f} s (compile {r['compile_s']:.1f} s); "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, XLA peak {r['peak_mb']:.0f} MB")
        write_json(res, str(folder / "bench_big.json"))
        return res
    res = run(quick, progress=lambda s: say(f"... {s}"))
    if scaling_table:
        res["scaling"] = scaling(quick, progress=lambda s: say(f"... {s}"))
    for line in format_rows(res["comparisons"]):
        say(line)
    rl = res["rooflines"]
    say(f"machine: XLA GEMM {rl['xla_gemm_gflops']:.0f} GFLOP/s, exp {rl['xla_exp_per_ns']:.2f}/ns "
        f"(XLA), {rl['numpy_exp_per_ns']:.2f}/ns (NumPy)")
    write_json(res, str(folder / "bench.json"))
    write_png(plot_bench, res, str(folder / "bench.png"))
    say(f"wrote {folder / 'bench.json'} and {folder / 'bench.png'}")
    return res


def format_rows(rows) -> list:
    """One printable line per comparison."""
    lines = []
    for r in rows:
        sp = "n/a" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        ref = "n/a" if r["reference_s"] is None else f"{r['reference_s'] * 1e3:9.2f} ms"
        lines.append(f"{r['name']:18s} satjax {r['satjax_s'] * 1e3:9.2f} ms   reference {ref:>12s}"
                     f"   speedup {sp:>7s}   compile {r['compile_s']:.2f} s   ({r['reference']})")
    return lines
