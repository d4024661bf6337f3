"""Do the c_2-optimal and the η-optimal schedules coincide on the Swiss roll? (issue 13;
docs/optimal-schedules.md)

    python3 docs/_scripts/eta_vs_c2_swissroll.py --out docs/reproduction/eta_vs_c2_swissroll.json

Data: satjax.mixtures.swiss_roll(n=800, noise=0.3, scale=0.125, width=0.05, seed=0) (a mixture
of 800 Gaussians), τ = 1, perturbed reverse start shift:0.15 (P̃_τ = P_τ shifted by 0.15 along
every axis). Schedules: the free polar family (m, σ independent; 4 Legendre coefficients for
the angle, 4 for ln r), started at cosine, Adam.

* c_2-optimal: ``optimize_schedule(objective="c2")``, c_2 by Monte Carlo with 2048 fixed draws,
  16 Gauss–Legendre nodes.
* η-optimal: ``optimize_schedule(objective="eta")``, η by particles (512 of P_τ and of P̃_τ with
  common random numbers, RK4 × 32, exact OT between the sets), differentiated through the
  transport; 16 nodes for the path part.

Every schedule (cosine, cond-OT, both optima) is then evaluated on fresh random numbers the
optimisers never saw: c_2 by Monte Carlo (8192 draws, 32 nodes; = w_D for schedules) and η, c_1
by particles (2048, RK4 × 64) over several seeds, as mean ± standard error over seeds.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from satjax import bound as B  # noqa: E402
from satjax import optimize as O  # noqa: E402
from satjax import path as P  # noqa: E402
from satjax import schedules as S  # noqa: E402
from satjax import specs  # noqa: E402
from satjax.estimators import MonteCarlo, Particles  # noqa: E402

DATA = "swissroll:n=800,noise=0.3,scale=0.125,width=0.05,seed=0"
PERTURB = "shift:0.15"


def curve(sch, n=101):
    t = jnp.linspace(0.0, float(sch.tau), n)
    return {"t": np.asarray(t).tolist(), "m": np.asarray(jax.vmap(sch.m)(t)).tolist(),
            "sigma": np.asarray(jax.vmap(sch.sigma)(t)).tolist()}


def evaluate(sch, data, pert, seeds, n_particles, n_steps):
    c2 = P.path_cost(sch, data, estimator=MonteCarlo(n=8192, key=jax.random.PRNGKey(1000)),
                     n_time=32).c2
    etas, c1s = [], []
    for s in seeds:
        tr = Particles(n=n_particles, n_steps=n_steps, n_save=16, key=jax.random.PRNGKey(2000 + s))
        r = B.bound(sch, data, pert, transport=tr, n_time=16,
                    estimator=MonteCarlo(n=1024, key=jax.random.PRNGKey(3000 + s)))
        etas.append(float(r.eta.value))
        c1s.append(float(r.c1.value))
    k = len(seeds)
    return {"c2": float(c2.value), "c2_stderr": float(c2.stderr), "c2_method": c2.method,
            "eta": float(np.mean(etas)), "eta_stderr": float(np.std(etas, ddof=1) / np.sqrt(k)),
            "c1": float(np.mean(c1s)), "c1_stderr": float(np.std(c1s, ddof=1) / np.sqrt(k)),
            "eta_c1_method": f"particles (n={n_particles}, rk4 × {n_steps}, W1 by pot), "
                             f"mean ± se over {k} seeds",
            "eta_per_seed": etas, "c1_per_seed": c1s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps-c2", type=int, default=150)
    ap.add_argument("--steps-c1", type=int, default=60)
    ap.add_argument("--steps-eta", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--eval-particles", type=int, default=2048)
    args = ap.parse_args()
    t0 = time.time()
    data = specs.build_data(specs.parse_data(DATA))
    pert = specs.build_perturbation(specs.parse_perturbation(PERTURB))
    key = jax.random.PRNGKey(0)
    runs = {}
    common = dict(family="free", n_basis=4, learning_rate=args.lr, key=key, n_time=16)

    def progress(name, total):
        def show(i, v):
            if i % 10 == 0 or i == total - 1:
                print(f"  {name} step {i:4d}  objective {v:.6g}  ({time.time() - t0:.0f} s)",
                      flush=True)
        return show

    t = time.time()
    res_c2 = O.optimize_schedule(data, objective="c2", steps=args.steps_c2,
                                 estimator=MonteCarlo(n=2048, key=jax.random.PRNGKey(7)),
                                 progress=progress("c2", args.steps_c2), **common)
    runs["c2"] = {"seconds": time.time() - t, "history": np.asarray(res_c2.history).tolist(),
                  "diverged": res_c2.diverged, "steps": res_c2.steps}
    found = {"c2-optimal": res_c2.schedule}
    for obj, steps in (("c1", args.steps_c1), ("eta", args.steps_eta)):
        t = time.time()
        res = O.optimize_schedule(data, objective=obj, steps=steps, perturbation=pert,
                                  transport=Particles(n=512, n_steps=32, n_save=8),
                                  estimator=MonteCarlo(n=1024, key=jax.random.PRNGKey(8)),
                                  progress=progress(obj, steps), **common)
        runs[obj] = {"seconds": time.time() - t, "history": np.asarray(res.history).tolist(),
                     "diverged": res.diverged, "steps": res.steps}
        found[f"{obj}-optimal"] = res.schedule
    schedules = {"cosine": S.cosine(), "cond-ot": S.cond_ot(), **found}
    # η under the exact dynamics is the same for every schedule with this P_τ
    # (docs/optimal-schedules.md): its spread across schedules on common particles must shrink
    # with the solver's step count
    spread = []
    for n_steps in (16, 32, 64, 128):
        tr = Particles(n=1024, n_steps=n_steps, n_save=8, key=jax.random.PRNGKey(4000))
        etas = {name: float(B.bound(sch, data, pert, transport=tr, n_time=16,
                                    estimator=MonteCarlo(n=256, key=jax.random.PRNGKey(1))
                                    ).eta.value) for name, sch in schedules.items()}
        v = np.asarray(list(etas.values()))
        spread.append({"n_steps": n_steps, "eta": etas,
                       "max_relative_spread": float((v.max() - v.min()) / v.mean())})
        print(f"  rk4 × {n_steps:3d}: eta spread across schedules "
              f"{spread[-1]['max_relative_spread']:.2e}", flush=True)
    seeds = list(range(args.seeds))
    table = {}
    for name, sch in schedules.items():
        table[name] = evaluate(sch, data, pert, seeds, args.eval_particles, 64)
        table[name]["curve"] = curve(sch)
        r = table[name]
        print(f"{name:12s} c2 {r['c2']:.5f} ± {r['c2_stderr']:.5f}   eta {r['eta']:.5f} ± "
              f"{r['eta_stderr']:.5f}   c1 {r['c1']:.5f} ± {r['c1_stderr']:.5f}", flush=True)
    gap = {}
    for other in ("c1-optimal", "eta-optimal"):
        a, b = table["c2-optimal"]["curve"], table[other]["curve"]
        gap[f"c2-optimal vs {other}"] = {
            "max_abs_m": float(np.max(np.abs(np.subtract(a["m"], b["m"])))),
            "max_abs_sigma": float(np.max(np.abs(np.subtract(a["sigma"], b["sigma"]))))}
    params = {n: {k: np.asarray(getattr(s, k)).tolist() for k in ("angle", "log_radius")}
              for n, s in schedules.items() if n.endswith("optimal")}
    out = {"data": DATA, "perturb": PERTURB, "tau": 1.0, "family": "free (polar, 4 + 4)",
           "optimisers": runs, "evaluation": table, "schedule_gap": gap,
           "eta_spread_vs_solver_steps": spread, "parameters": params,
           "seconds": time.time() - t0}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    plot(out, args.out.replace(".json", ".png"))
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")


def plot(out, filename):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    for name, r in out["evaluation"].items():
        ax[0].plot(r["curve"]["sigma"], r["curve"]["m"], label=name)
    ax[0].set_xlabel("σ_t")
    ax[0].set_ylabel("m_t")
    ax[0].set_title("schedules in the (σ, m) plane")
    ax[0].legend()
    for k, (name, r) in enumerate(out["optimisers"].items()):
        h = np.asarray(r["history"])
        ax[1 + k].plot(h / h[0])
        ax[1 + k].set_title(f"training objective {name} / initial (cosine)")
        ax[1 + k].set_xlabel("Adam step")
    fig.tight_layout()
    fig.savefig(filename, dpi=110)


if __name__ == "__main__":
    main()
