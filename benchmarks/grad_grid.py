"""Derivatives of the density-grid bound on the issue's Swiss roll: cost and accuracy (issue 22).

    python benchmarks/grad_grid.py [--quick] [--g G] [--n N] [--repeats R] [--steps H,..]
                                   [--json FILE]

Setting of issue 22's `--grad g` example: the Swiss roll (800 components of sd 0.05) under
rotating:h=1,g=3,tfin=2, τ = 1, the reverse start shifted by 0.15; the density grid at its
default resolution without its n/2 pass (the function `satjax bound --grad` differentiates),
``n_time`` path nodes for c_2. Both sides are jitted functions of g:

* **value** — (η, c_1, c_2) of :func:`satjax.bound.bound_kernel`;
* **value + derivative** — the same with its forward-mode derivative in g (``jax.jvp``).

Reported: cold (first) and warm (median of the repeats) wall times, XLA compilations per call
(JAX's backend-compile events), the warm ratio derivative/value, and the derivatives against
central differences of the same value at g ± 0.02 and g ± 0.01 (c_1(g) has structure on the
scale 0.1, so wider steps are off by ~10 %; docs/theory.md §6.4), with the change of the
autodiff derivative on the n/2 grid as its resolution error. ``--quick``: the 100-component
roll of width 0.1 on a 32² grid. ``--g``, ``--n``, ``--repeats``, ``--steps``: another
point, grid, number of warm repeats (0: the cold call only) and difference steps, to resolve a
derivative where the default grid does not (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

from satjax import bench  # noqa: E402
from satjax import bound as B  # noqa: E402
from satjax import perturb as PT  # noqa: E402
from satjax import specs  # noqa: E402
from satjax._util import gauss_legendre  # noqa: E402
from satjax.estimators import DensityGrid, resolve  # noqa: E402

COMPILES = [0]
NAMES = ("eta", "c1", "c2")


def _count(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES[0] += 1


def timed(fn, x, repeats: int):
    """(result, cold s, warm s, compilations cold, compilations warm); warm None if no repeat."""
    runs = []
    for _ in range(1 + repeats):
        c0, t0 = COMPILES[0], time.perf_counter()
        r = jax.block_until_ready(fn(x))
        runs.append((time.perf_counter() - t0, COMPILES[0] - c0))
    if repeats == 0:
        return r, runs[0][0], None, runs[0][1], None
    return r, runs[0][0], float(np.median([s for s, _ in runs[1:]])), runs[0][1], runs[-1][1]


def _s(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="100-component roll of width 0.1, 32 x 32 cells, 4 nodes, 1 repeat")
    ap.add_argument("--g", type=float, default=3.0, help="the point g (default 3)")
    ap.add_argument("--n", type=int, default=None, help="cells per side (default: the grid's)")
    ap.add_argument("--repeats", type=int, default=None, help="warm repeats (default 2)")
    ap.add_argument("--steps", default="0.02,0.01", help="central-difference steps")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    steps = [float(h) for h in a.steps.split(",")]
    jax.monitoring.register_event_duration_secs_listener(_count)
    data_spec = ("swissroll:n=100,noise=0.3,scale=0.125,width=0.1,seed=0" if a.quick else
                 "swissroll:n=800,noise=0.3,scale=0.125,width=0.05,seed=0")
    n_time, repeats = (4, 1) if a.quick else (16, 2)
    repeats = repeats if a.repeats is None else a.repeats
    data = specs.build_data(specs.parse_data(data_spec))
    prot = specs.build_protocol(specs.parse_protocol("rotating:h=1,g=3,tfin=2"), tau=1.0)
    pert = PT.shift(0.15)
    ts, _ = gauss_legendre(n_time, 0.0, prot.tau)
    est = resolve(data, prot, "auto").prepare(prot, data, ts)
    n = 32 if a.quick else a.n
    grid = DensityGrid(check_coarse=False) if n is None else DensityGrid(n=n, check_coarse=False)
    tr = B.resolve_transport(grid, data, None, None)
    g0 = jnp.asarray(a.g)

    def value_fn(transport):
        def value(g):
            r = B.bound_kernel(prot.replace(g=g), data, pert, None, est, transport, n_time,
                               jax.random.PRNGKey(0))
            return jnp.stack([r.eta.value, r.c1.value, r.c2.value])
        return value

    value = jax.jit(value_fn(tr))
    with_derivative = jax.jit(lambda g: jax.jvp(value_fn(tr), (g,), (jnp.ones_like(g),)))
    v, v_cold, v_warm, v_c_cold, v_c_warm = timed(value, g0, repeats)
    print(f"value: cold {v_cold:.1f} s ({v_c_cold} compilations), warm {_s(v_warm)} "
          f"({v_c_warm})", flush=True)
    (_, d), d_cold, d_warm, d_c_cold, d_c_warm = timed(with_derivative, g0, repeats)
    ratio = d_warm / v_warm if repeats else None
    print(f"value + derivative: cold {d_cold:.1f} s ({d_c_cold}), warm {_s(d_warm)} "
          f"({d_c_warm}); ratio {'-' if ratio is None else f'{ratio:.2f}'}", flush=True)
    central = {}
    for h in steps:
        central[h] = (np.asarray(value(g0 + h)) - np.asarray(value(g0 - h))) / (2 * h)
        print(f"central differences h = {h}: {central[h]}", flush=True)
    half = tr.replace(n=tr.n // 2)
    _, d_half = jax.jit(lambda g: jax.jvp(value_fn(half), (g,), (jnp.ones_like(g),)))(g0)
    out = {"machine": bench.machine(), "data": data_spec, "protocol": f"rotating:h=1,g={a.g:g},tfin=2",
           "perturb": "shift:0.15", "tau": 1.0, "n_time": n_time, "grid_n": tr.n,
           "repeats": repeats,
           "value": {"cold_s": v_cold, "warm_s": v_warm, "compilations_cold": v_c_cold,
                     "compilations_warm": v_c_warm},
           "value_and_derivative": {"cold_s": d_cold, "warm_s": d_warm,
                                    "compilations_cold": d_c_cold,
                                    "compilations_warm": d_c_warm},
           "warm_ratio": ratio, "quantities": {}}
    for i, q in enumerate(NAMES):
        row = {"value": float(v[i]), "autodiff": float(d[i]),
               "autodiff_error": abs(float(d[i]) - float(d_half[i])),
               "autodiff_half_grid": float(d_half[i])}
        for h in steps:
            row[f"central_{h:g}"] = float(central[h][i])
        row["off_central"] = max(abs(row["autodiff"] / row[f"central_{h:g}"] - 1.0)
                                 for h in steps)
        out["quantities"][q] = row
        cd = ", ".join(f"{central[h][i]:.6g} (h = {h:g})" for h in steps)
        print(f"d{q}/dg = {row['autodiff']:.6g} (error {row['autodiff_error']:.2g}); central "
              f"{cd}; off by at most {100 * row['off_central']:.1f} %", flush=True)
    if a.json:
        bench.write_json(out, a.json)
    return out


if __name__ == "__main__":
    main()
