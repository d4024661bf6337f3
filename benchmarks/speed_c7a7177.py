"""The n-D bound against c7a7177 (the code issue 22 was filed on) at the same accuracy, in one run.

    git worktree add /tmp/c7a7177 c7a7177
    python benchmarks/speed_c7a7177.py --old /tmp/c7a7177 [--seeds 0,1] [--particles 1000,4000]
                                       [--grids 22,32,44,56,64] [--json FILE]

Fig. 7's setting (the Swiss roll of 800 components of sd 0.05, rotating:h=1.1,g=3,tfin=0.5,
τ = 3, reverse start N(0, 0.9² I), exact velocity, 16 time nodes). Each side, in its own
process, times two parts of ``satjax.bound.bound``:

* **the transport** (η, ΔW_1, c_1: ``bound`` with the path cost c_2, w_D given, computed
  beforehand by ``satjax.path.path_cost``, the same estimator on both sides), cold and warm —
  c7a7177: its n-D route (particles, exact assignment by POT through a host callback at each
  saved time; a subprocess importing the old package from ``--old``) at each particle count
  and seed; this code: the density grid (its default in 2-D) at its default resolution (the
  reference η and its resolution error) and on coarser grids.

* **the value** (the whole ``bound`` call, its path included) on the cheapest configuration,
  cold and warm: the path's share of a value is the warm value less that configuration's warm
  transport, and a warm value of any configuration is that share plus its warm transport.

Accuracy is measured, not assumed: each
η's error is its distance from the reference (whose own error is printed beside it). For each
particle count, the speed-up at the same accuracy is c7a7177's warm time over the warm time of
the cheapest grid that is at least as accurate, on the transport alone and on the whole value,
by two criteria: (a) closer to the reference than c7a7177's most accurate seed, with its own
reported error below that distance too; (b) a reported error below c7a7177's standard error and
a distance from the reference below c7a7177's RMS distance over the seeds
(benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from satjax import bench  # noqa: E402
from satjax.estimators import DensityGrid  # noqa: E402

DATA = "swissroll:n=800,noise=0.3,scale=0.125,width=0.05,seed=0"
PROTOCOL = "rotating:h=1.1,g=3,tfin=0.5"
PERTURB = "gmm:means=0;0,std=0.9"
TAU, N_TIME = 3.0, 16

# both sides: the setting and the timing of the path, through the package on sys.path
COMMON = f"""
import time, jax
jax.config.update("jax_enable_x64", True)
from satjax import bound as B, path as P, specs
data = specs.build_data(specs.parse_data({DATA!r}))
proto = specs.build_protocol(specs.parse_protocol({PROTOCOL!r}), tau={TAU}, data=data)
pert = specs.build_perturbation(specs.parse_perturbation({PERTURB!r}))


def make_path():
    return P.path_cost(proto, data, n_time={N_TIME})


def time_bound(path, **kw):
    t0 = time.perf_counter()
    r = B.bound(proto, data, pert, n_time={N_TIME}, path=path, **kw)
    eta = float(r.eta.value)
    return r, eta, time.perf_counter() - t0
"""

# the old side: one JSON line per call
OLD = COMMON + """
import json, sys
path = make_path()
seeds = [int(s) for s in sys.argv[1].split(",")]
counts = [int(s) for s in sys.argv[2].split(",")]
for call in ("cold", "warm"):  # the whole value (its own path) at the first count
    r, eta, wall = time_bound(None, key=jax.random.PRNGKey(seeds[0]), particles=counts[0])
    print(json.dumps({"part": "value", "particles": counts[0], "seed": seeds[0], "call": call,
                      "wall_s": wall, "eta": eta}), flush=True)
for n in counts:
    for i, seed in enumerate([seeds[0]] + seeds):
        r, eta, wall = time_bound(path, key=jax.random.PRNGKey(seed), particles=n)
        print(json.dumps({"part": "transport", "particles": n, "seed": seed,
                          "call": "cold" if i == 0 else "warm", "wall_s": wall, "eta": eta,
                          "eta_stderr": float(r.eta.stderr), "method": r.eta.method}),
              flush=True)
"""

# the same definitions on this side, with this package: the two sides run the same text
THIS = {}
exec(COMMON, THIS)


def run_old(where: str, seeds, particles) -> list:
    if not os.path.isfile(os.path.join(where, "satjax", "bound.py")):
        raise SystemExit(f"--old {where}: no satjax/bound.py there "
                         "(git worktree add PATH c7a7177)")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(where))
    rows = []
    args = [sys.executable, "-c", OLD, ",".join(map(str, seeds)), ",".join(map(str, particles))]
    with subprocess.Popen(args, env=env, cwd=os.path.abspath(where), stdout=subprocess.PIPE,
                          text=True) as p:
        for line in p.stdout:
            r = json.loads(line)
            rows.append(r)
            if r["part"] == "value":
                print(f"c7a7177 value, {r['particles']} particles, seed {r['seed']} "
                      f"({r['call']}): {r['wall_s']:.1f} s", flush=True)
            else:
                print(f"c7a7177 {r['particles']} particles, seed {r['seed']} ({r['call']}): "
                      f"eta = {r['eta']:.6g} ± {r['eta_stderr']:.2g}, {r['wall_s']:.1f} s",
                      flush=True)
    if p.returncode != 0 or len(rows) != 2 + len(particles) * (len(seeds) + 1):
        raise SystemExit(f"the c7a7177 side failed (exit {p.returncode})")
    return rows


def run_grid(n, path) -> dict:
    n = DensityGrid().prepare(THIS["data"]).n if n is None else n
    walls = []
    for _ in range(2):
        r, eta, wall = THIS["time_bound"](path, transport=DensityGrid(n=n))
        walls.append(wall)
    row = {"n": n, "eta": eta, "eta_error": float(r.eta.error), "method": r.eta.method,
           "cold_s": walls[0], "warm_s": walls[1]}
    print(f"grid n = {n}: eta = {eta:.6g} (error {row['eta_error']:.2g}), cold "
          f"{walls[0]:.1f} s, warm {walls[1]:.1f} s", flush=True)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="a checkout of c7a7177")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--particles", default="1000,4000", help="c7a7177's particle counts")
    ap.add_argument("--grids", default="22,32,44,56,64", help="coarser grids (cells per side)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    particles = [int(s) for s in a.particles.split(",")]
    old = run_old(a.old, seeds, particles)
    old_value = [r for r in old if r["part"] == "value"]
    old = [r for r in old if r["part"] == "transport"]
    path = THIS["make_path"]()
    ref = run_grid(None, path)
    grids = [int(n) for n in a.grids.split(",")]
    coarse = [run_grid(n, path) for n in grids]
    new_value = []
    for call in ("cold", "warm"):
        _, _, wall = THIS["time_bound"](None, transport=DensityGrid(n=grids[0]))
        new_value.append({"part": "value", "n": grids[0], "call": call, "wall_s": wall})
        print(f"value, grid n = {grids[0]} ({call}): {wall:.1f} s", flush=True)
    # the path's share of a warm value, on each side
    old_first = next(r for r in old if r["particles"] == particles[0]
                     and r["seed"] == seeds[0] and r["call"] == "warm")
    old_path = old_value[1]["wall_s"] - old_first["wall_s"]
    new_path = new_value[1]["wall_s"] - coarse[0]["warm_s"]
    print(f"the path's share of a warm value: c7a7177 {old_path:.1f} s, this code "
          f"{new_path:.1f} s", flush=True)
    for row in old + [ref] + coarse:
        row["off_reference"] = abs(row["eta"] - ref["eta"])
    out = {"machine": bench.machine(), "data": DATA, "protocol": PROTOCOL, "perturb": PERTURB,
           "tau": TAU, "n_time": N_TIME, "c7a7177": old, "c7a7177_value": old_value,
           "c7a7177_path_share_s": old_path, "reference": ref, "grids": coarse,
           "value": new_value, "path_share_s": new_path, "comparisons": []}
    for n in particles:
        rows = [r for r in old if r["particles"] == n]
        warm = min(r["wall_s"] for r in rows if r["call"] == "warm")
        by_seed = {r["seed"]: r for r in rows}.values()
        best = min(r["off_reference"] for r in by_seed)
        rms = (sum(r["off_reference"] ** 2 for r in by_seed) / len(by_seed)) ** 0.5
        se = max(r["eta_stderr"] for r in by_seed)
        cmp = {"particles": n, "c7a7177_transport_warm_s": warm,
               "c7a7177_value_warm_s": warm + old_path,
               "c7a7177_best_off_reference": best, "c7a7177_rms_off_reference": rms,
               "c7a7177_stderr": se}
        print(f"c7a7177, {n} particles: transport warm {warm:.1f} s, value "
              f"{warm + old_path:.1f} s; off the reference by {best:.2g} (its best "
              f"seed), {rms:.2g} (RMS over seeds); standard error {se:.2g}")
        # as accurate as (a) its most accurate seed: closer to the reference, with a reported
        # error below that distance too; (b) its standard error: a reported error below it, and
        # closer to the reference than its RMS distance
        for name, (off_max, error_max) in {"best_seed": (best, best),
                                           "stderr": (rms, se)}.items():
            g = min((g for g in coarse + [ref] if g["eta_error"] <= error_max
                     and g["off_reference"] + ref["eta_error"] <= off_max),
                    key=lambda r: r["warm_s"], default=None)
            if g is None:
                print(f"  as accurate ({name}): no grid here", flush=True)
                continue
            value = g["warm_s"] + new_path
            cmp[name] = {"grid_n": g["n"], "grid_transport_warm_s": g["warm_s"],
                         "grid_value_warm_s": value,
                         "speedup_transport": warm / g["warm_s"],
                         "speedup_value": cmp["c7a7177_value_warm_s"] / value}
            print(f"  as accurate ({name}): grid n = {g['n']} ({g['off_reference']:.2g} off, "
                  f"error {g['eta_error']:.2g}): transport {warm / g['warm_s']:.1f}x, value "
                  f"{cmp['c7a7177_value_warm_s'] / value:.1f}x faster", flush=True)
        out["comparisons"].append(cmp)
    if a.json:
        bench.write_json(out, a.json)
    return out


if __name__ == "__main__":
    main()
