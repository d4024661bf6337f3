"""Fig. 7 of arXiv:2407.04495 (Swiss roll, rotating force of Eq. 99): does η grow with g?
(docs/reproduction.md)

    python3 docs/_scripts/reproduction_fig7.py --part PART --out docs/reproduction/fig7_PART.json

PART (each writes its own JSON):

* ``exact``   the paper's h = 1.1, T_fin = 0.5, start N(0, 0.9² I), g ∈ {0, 3, 5}, τ ∈ {1, 2, 3},
              exact velocity, RK4 × 100, two seeds. At τ = 1 the Pearson D_0 of that start is
              infinite (P_τ's component variance 0.26 < 0.81/2), so η is reported with the
              second-order Gaussian-KL D_0 of Eq. G21 instead (flagged ``D0_method``).
* ``solver``  the same (seed 0) at τ = 1 and τ = 3 with coarse explicit Euler (20 and 50 steps)
              and, at τ = 3, RK4 × 20 — against RK4 × 100 of ``exact``: the mechanism of a
              spurious growth of η with g.
* ``sweep``   τ = 3: Swiss-roll scale ∈ {0.0625, 0.25, 0.5} and starts N(0, 0.8² I),
              N(0, 1.0² I), scale:0.9 (a map of P_τ), shift:0.3 (not rotation invariant).
* ``npart``   τ = 3, g = 0: particle number n ∈ {250, 500, 1000, 2000} (bias of empirical W_1).
* ``generator`` τ ∈ {1, 3}, g ∈ {0, 3, 5}: the generated p̃ (exact velocity, Euler × 20, × 50 or
              RK4 × 100) compared with fresh samples of the data q instead of with P_τ's particles
              carried by the same solver — ΔW_1 = W_1(q, p̃) − W_1(P_τ, P̃_τ) as the paper defines
              it, so the solver's own error enters ΔW_1. Also W_1(q, p) for the unperturbed start.

Every case: satjax.bound.bound (particle transport of P_τ and P̃_τ samples by the exact mixture
velocity, W_1 exact OT between the sets), path costs by Monte Carlo (n = 512 draws, 8 time
nodes: w_D is unbiased, c_2 a lower estimate) — only η and w_D are used on the page.
Data: satjax.mixtures.swiss_roll(n=800, noise=0.3, scale, width=0.05, seed=0).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from satjax import bound as B  # noqa: E402
from satjax import path as P  # noqa: E402
from satjax import perturb as PT  # noqa: E402
from satjax import specs  # noqa: E402
from satjax._util import gauss_legendre  # noqa: E402
from satjax.estimators import MonteCarlo, Particles  # noqa: E402
from satjax.forces import RotatingForce  # noqa: E402
from satjax.mixtures import swiss_roll  # noqa: E402

PAPER_ETA = {"g=0": 9.301e-2, "g=3": 3.430e-1, "g=5": 5.615e-1, "ot": 7.221e-6}
START = "gmm:means=0;0,std=0.9"
N_TIME = 8
_DATA = {}
_PATHS = {}


def data_of(scale):
    if scale not in _DATA:
        _DATA[scale] = swiss_roll(n=800, noise=0.3, scale=scale, width=0.05, seed=0)
    return _DATA[scale]


def case(*, g, tau, scale=0.125, start=START, n=500, solver="rk4", n_steps=100, n_save=10,
         seed=0, h=1.1, t_fin=0.5):
    data = data_of(scale)
    proto = RotatingForce.create(h=h, g=g, t_fin=t_fin, tau=tau)
    pert = specs.build_perturbation(specs.parse_perturbation(start))
    est = MonteCarlo(n=512, key=jax.random.PRNGKey(11))
    pk = (g, tau, scale, h, t_fin)
    if pk not in _PATHS:
        _PATHS[pk] = P.path_cost(proto, data, estimator=est, n_time=N_TIME)
    pc = _PATHS[pk]
    key = jax.random.PRNGKey(1000 + seed)
    tr = Particles(n=n, n_steps=n_steps, n_save=n_save, solver=solver, key=key)
    p_end = proto.reverse_start(data)
    st = pert.start(p_end)
    finite = PT.is_finite_divergence(st, p_end)
    t0 = time.time()
    if finite:
        r = B.bound(proto, data, pert, transport=tr, estimator=est, n_time=N_TIME, path=pc,
                    key=key)
        d0, d0_method = float(r.D0.value), r.D0.method
    else:
        # D_0 = ∞: the particle transport (ΔW_1) is still well defined; η with Eq. G21's D_0
        ts, _ = gauss_legendre(N_TIME, 0.0, tau)
        est_p = est.prepare(proto, data, ts)
        r = B.bound_kernel(proto, data, pert, None, est_p, tr, N_TIME, key, True, pc)
        d0 = float(PT.pearson(st, p_end, method="gaussian-kl").value)
        d0_method = "gaussian-kl (Eq. G21; Pearson D_0 = inf)"
    dW1, dW1_se = float(r.dW1.value), float(r.dW1.stderr)
    eta = dW1**2 / (tau * d0)
    eta_se = 2 * abs(dW1) * dW1_se / (tau * d0)
    out = {"g": g, "tau": tau, "scale": scale, "start": start, "n": n, "solver": solver,
           "n_steps": n_steps, "seed": seed, "h": h, "t_fin": t_fin,
           "pearson_D0_finite": bool(finite), "D0": d0, "D0_method": d0_method,
           "eta": eta, "eta_stderr": eta_se, "dW1": dW1, "dW1_stderr": dW1_se,
           "W1_start": float(r.W1_start.value), "W1_start_stderr": float(r.W1_start.stderr),
           "W1_end": float(r.W1_end.value), "W1_end_stderr": float(r.W1_end.stderr),
           "c1": float(r.c1.value) if finite else None,
           "wD": float(pc.wD.value), "wD_stderr": float(pc.wD.stderr),
           "P_tau_component_variance": float(jnp.max(jnp.diagonal(p_end.full_cov(), axis1=-2,
                                                                  axis2=-1))),
           "seconds": time.time() - t0}
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()
                      if k in ("g", "tau", "scale", "start", "n", "solver", "n_steps", "seed",
                               "eta", "eta_stderr", "dW1", "W1_start", "W1_end", "wD",
                               "D0", "seconds")}), flush=True)
    return out


def part_exact():
    rows = []
    for tau in (1.0, 2.0, 3.0):
        for g in (0.0, 3.0, 5.0):
            for seed in (0, 1):
                rows.append(case(g=g, tau=tau, seed=seed))
    return rows


def part_solver():
    rows = []
    # RK4 × 100 with the same particles (seed 0) is in the ``exact`` part
    for tau in (1.0, 3.0):
        runs = (("euler", 20), ("euler", 50)) + ((("rk4", 20),) if tau == 3.0 else ())
        for solver, steps in runs:
            for g in (0.0, 3.0, 5.0):
                rows.append(case(g=g, tau=tau, solver=solver, n_steps=steps, n_save=10))
    return rows


def part_sweep():
    rows = []
    for scale in (0.0625, 0.25, 0.5):
        for g in (0.0, 3.0, 5.0):
            rows.append(case(g=g, tau=3.0, scale=scale))
    for start in ("gmm:means=0;0,std=0.8", "gmm:means=0;0,std=1.0", "scale:0.9", "shift:0.3"):
        for g in (0.0, 3.0, 5.0):
            rows.append(case(g=g, tau=3.0, start=start))
    return rows


def part_npart():
    return [case(g=0.0, tau=3.0, n=n) for n in (250, 500, 1000, 2000)]


def part_generator():
    import numpy as np
    import ot

    from satjax.reverse import exact_velocity, solve_ode

    def w1(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        m = ot.dist(a, b, metric="euclidean")
        return float(ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), m,
                             numItermax=10_000_000))

    rows = []
    data = data_of(0.125)
    pert = specs.build_perturbation(specs.parse_perturbation(START))
    n = 500
    for tau in (1.0, 3.0):
        for g in (0.0, 3.0, 5.0):
            proto = RotatingForce.create(h=1.1, g=g, t_fin=0.5, tau=tau)
            p_end = proto.reverse_start(data)
            st = pert.start(p_end)
            if PT.is_finite_divergence(st, p_end):
                d0, d0_m = float(PT.pearson(st, p_end).value), "pearson (grid-2d)"
            else:
                d0, d0_m = float(PT.pearson(st, p_end, method="gaussian-kl").value), \
                    "gaussian-kl (Eq. G21; Pearson D_0 = inf)"
            k1, k2, k3 = jax.random.split(jax.random.PRNGKey(2024), 3)
            xa0, xb0, q = p_end.sample(k1, n), st.sample(k2, n), data.sample(k3, n)
            w_start = w1(xa0, xb0)
            vel = exact_velocity(proto, data)
            for solver, steps in (("euler", 20), ("euler", 50), ("rk4", 100)):
                t0 = time.time()
                kw = dict(t_start=tau, t_end=0.0, method=solver, n_steps=steps)
                pa = solve_ode(vel, xa0, **kw).xs[-1]
                pb = solve_ode(vel, xb0, **kw).xs[-1]
                w_qb, w_qa, w_ab = w1(q, pb), w1(q, pa), w1(pa, pb)
                row = {"g": g, "tau": tau, "solver": solver, "n_steps": steps, "n": n,
                       "D0": d0, "D0_method": d0_m, "W1_start": w_start,
                       "W1_q_ptilde": w_qb, "W1_q_p": w_qa, "W1_p_ptilde": w_ab,
                       "eta_vs_data": (w_qb - w_start) ** 2 / (tau * d0),
                       "eta_paired": (w_ab - w_start) ** 2 / (tau * d0),
                       "mean_sq_radius_generated": float(jnp.mean(jnp.sum(pa**2, -1))),
                       "mean_sq_radius_data": float(jnp.mean(jnp.sum(q**2, -1))),
                       "seconds": time.time() - t0}
                print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v)
                                  for k, v in row.items()}), flush=True)
                rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", required=True, choices=("exact", "solver", "sweep", "npart",
                                                           "generator"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t0 = time.time()
    rows = {"exact": part_exact, "solver": part_solver, "sweep": part_sweep,
            "npart": part_npart, "generator": part_generator}[args.part]()
    out = {"part": args.part, "paper_eta": PAPER_ETA,
           "settings": {"force": "rotating (Eq. 99)", "data": "swissroll n=800 noise=0.3 "
                        "width=0.05 seed=0 (scale per row)", "path": f"monte-carlo n=512, "
                        f"{N_TIME} time nodes", "transport": "particles, exact OT (pot)"},
           "rows": rows, "seconds": time.time() - t0}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
