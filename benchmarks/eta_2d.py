"""η in 2-D: the density grid against importance-weighted atoms and particles, at Fig. 7's
setting (issue 22).

    python benchmarks/eta_2d.py [--quick] [--json FILE] [--skip grid,particles,atoms]

The Swiss roll (800-point kernel mixture of standard deviation 0.05) under the rotating force
h = 1.1, g = 3, T_fin = 0.5, τ = 3, reverse start N(0, 0.9² I), exact velocity. Both sides call
:func:`satjax.bound.bound` with the same path estimator (its c_2 is not timed apart):

* **grid** — the density-grid transport at its default resolution (the value and its
  resolution error: the change on the n/2 grid plus the ODE check; docs/theory.md §6.4);
* **atoms** — importance-weighted quasi-Monte-Carlo atoms at their defaults (8 batches of
  1024; docs/theory.md §6.5), two seeds: η ± its standard error (error: bias from n/2 atoms);
* **particles** — n particles per set (RK4 × 100), exact assignment at 21 saved times, two
  seeds: η ± its standard error, and the seeds' difference.

Reported: wall times (cold: the first call, compilation included; warm: a second call),
η with its uncertainty on each side, and the precision ratio. The particle error falls as
n^(−1/2) at best while the assignment costs O(n³), so the particle time needed for the grid's
accuracy is extrapolated as t(n) (se(n)/error_grid)² — a lower bound on that time, stated as an
extrapolation, not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from satjax import bound as B  # noqa: E402
from satjax import specs  # noqa: E402
from satjax.estimators import Atoms, DensityGrid, Particles  # noqa: E402


def setting(n_data: int):
    data = specs.build_data(specs.parse_data(
        f"swissroll:n={n_data},noise=0.3,scale=0.125,width=0.05,seed=0"))
    proto = specs.build_protocol(specs.parse_protocol("rotating:h=1.1,g=3,tfin=0.5"), tau=3.0,
                                 data=data)
    pert = specs.build_perturbation(specs.parse_perturbation("gmm:means=0;0,std=0.9"))
    return data, proto, pert


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    float(r.eta.value)  # wait for the result
    return r, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200-point roll, smaller sizes")
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip", default="", help="comma-separated sides not to run")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    n_data, n_part, n_time = (200, 300, 8) if a.quick else (800, 1000, 16)
    data, proto, pert = setting(n_data)
    path = B.bound(proto, data, pert, n_time=n_time, transport=DensityGrid(n=16)).c2  # warm-up
    del path
    out = {"setting": f"swissroll n={n_data}, rotating h=1.1 g=3 tfin=0.5, tau=3, N(0,0.81 I)",
           "n_time": n_time}
    if "grid" not in skip:
        grid = DensityGrid()
        r, cold = timed(lambda: B.bound(proto, data, pert, n_time=n_time, transport=grid))
        r, warm = timed(lambda: B.bound(proto, data, pert, n_time=n_time, transport=grid))
        out["grid"] = {"method": r.eta.method, "eta": float(r.eta.value),
                       "eta_error": float(r.eta.error), "dW1": float(r.dW1.value),
                       "dW1_error": float(r.dW1.error), "cold_s": cold, "warm_s": warm}
        print(f"grid: eta = {float(r.eta.value):.6g} (error {float(r.eta.error):.2g}), "
              f"cold {cold:.1f} s, warm {warm:.1f} s", flush=True)
    if "atoms" not in skip:
        runs = []
        for seed in (0, 1):
            tr = Atoms(n=256, n_batches=4) if a.quick else Atoms()
            tr = tr.replace(key=jax.random.PRNGKey(seed))
            ra, wall = timed(lambda: B.bound(proto, data, pert, n_time=n_time, transport=tr))
            runs.append({"seed": seed, "eta": float(ra.eta.value),
                         "eta_stderr": float(ra.eta.stderr), "eta_error": float(ra.eta.error),
                         "dW1": float(ra.dW1.value), "dW1_stderr": float(ra.dW1.stderr),
                         "c1": float(ra.c1.value), "c1_stderr": float(ra.c1.stderr),
                         "c1_error": float(ra.c1.error), "wall_s": wall})
            print(f"atoms seed {seed}: eta = {runs[-1]['eta']:.6g} ± "
                  f"{runs[-1]['eta_stderr']:.2g} (error {runs[-1]['eta_error']:.2g}), "
                  f"{wall:.1f} s", flush=True)
        diff = abs(runs[0]["eta"] - runs[1]["eta"])
        comb = (runs[0]["eta_stderr"] ** 2 + runs[1]["eta_stderr"] ** 2) ** 0.5
        out["atoms"] = {"method": ra.eta.method, "runs": runs, "seed_difference": diff,
                        "seed_difference_in_combined_stderr": diff / comb}
    if "particles" in skip:
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
        return out
    parts = []
    for seed in (0, 1):
        tr = Particles(n=n_part, key=jax.random.PRNGKey(seed))
        rp, cold = timed(lambda: B.bound(proto, data, pert, n_time=n_time, transport=tr))
        parts.append({"seed": seed, "eta": float(rp.eta.value),
                      "eta_stderr": float(rp.eta.stderr), "dW1": float(rp.dW1.value),
                      "dW1_stderr": float(rp.dW1.stderr), "wall_s": cold})
        print(f"particles n={n_part} seed {seed}: eta = {float(rp.eta.value):.6g} "
              f"± {float(rp.eta.stderr):.2g}, {cold:.1f} s", flush=True)
    out["particles"] = {"n": n_part, "runs": parts,
                        "seed_difference": abs(parts[0]["eta"] - parts[1]["eta"])}
    if "grid" in out:
        g = out["grid"]
        se = max(p["eta_stderr"] for p in parts)
        t_p = min(p["wall_s"] for p in parts)
        err = max(g["eta_error"], 1e-300)
        out["precision_ratio"] = se / err
        out["particle_seconds_for_grid_accuracy_extrapolated"] = t_p * (se / err) ** 2
        out["speedup_at_equal_accuracy_extrapolated"] = t_p * (se / err) ** 2 / g["warm_s"]
        print(f"particle s.e. / grid error = {se / err:.3g}; particles would need ≥ "
              f"{t_p * (se / err) ** 2:.3g} s for the grid's accuracy (extrapolated n^-1/2), "
              f"{out['speedup_at_equal_accuracy_extrapolated']:.3g}× the grid's warm time")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
