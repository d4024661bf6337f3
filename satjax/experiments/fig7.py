"""Fig. 7 of the paper: the 2-D Swiss roll under the rotating force of Eq. 99, and the W2 geodesic.

Settings (the paper does not give its h, T_fin, τ or perturbation): h = 2, T_fin = 4, τ = 1, so
that ∫_0^τ H = −h τ/2 − T_fin τ/3 = −2.33 shrinks the data mean by e^{−2.33} ≈ 0.1 and P_τ is
close to an isotropic Gaussian; g ∈ {0, 3, 5}; perturbation ``shift:0.3`` of the reverse start;
plus the n-D OT protocol (exact assignment of data and N(0, I) samples, G19 kernel velocity).
Every quantity is a Monte-Carlo / sample estimate (:func:`satjax.bound.bound_samples`); error
bars are standard errors over independent seeds.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from satjax import bound as B
from satjax import perturb as PT
from satjax.forces import RotatingForce
from satjax.geometry.ot_protocol import ot_protocol
from satjax.mixtures import swiss_roll

PAPER_ETA = {"g=0": 9.301e-2, "g=3": 3.430e-1, "g=5": 5.615e-1, "ot": 7.221e-6}


def run(*, quick: bool = False, tau: float = 1.0, h: float = 2.0, t_fin: float = 4.0,
        g_values=(0.0, 3.0, 5.0), perturb: str = "shift:0.3", seed: int = 0,
        progress: bool = True) -> dict:
    start = time.time()
    n_data, n, n_steps, n_save, seeds = (400, 400, 40, 10, 2) if quick else (800, 1000, 100, 20, 5)
    data = swiss_roll(n=n_data, noise=0.3, scale=0.125, width=0.05, seed=0)
    pert = PT.parse(perturb)
    jobs = [(f"g={g:g}", g, s) for g in g_values for s in range(seeds)] + \
           [("ot", None, s) for s in range(seeds)]
    it = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc="fig7 cases")
    cases, snapshots = [], {}
    for label, g, s in it:
        key = jax.random.PRNGKey(1000 * seed + s)
        if g is None:
            proto = ot_protocol(data, tau=tau, key=jax.random.fold_in(key, 7), n_samples=2000)
        else:
            proto = RotatingForce.create(h=h, g=g, t_fin=t_fin, tau=tau)
        r = B.bound_samples(key, proto, data, pert, n=n, n_steps=n_steps, n_save=n_save)
        cases.append({"protocol": "ot" if g is None else "rotating", "g": g, "seed": s,
                      **r.summary(), "holds": r.holds(), "conservative": r.conservative})
        if s == 0:
            idx = [0, n_save // 2, n_save]
            snapshots[label] = {"t": [float(r.ts[i]) for i in idx],
                                "exact": [np.asarray(r.xs_exact[i][:300]).tolist() for i in idx],
                                "perturbed": [np.asarray(r.xs_perturbed[i][:300]).tolist() for i in idx]}
    summary = {}
    for label in [f"g={g:g}" for g in g_values] + ["ot"]:
        sel = [c for c in cases if (c["protocol"] == "ot") == (label == "ot")
               and (label == "ot" or f"g={c['g']:g}" == label)]
        row = {}
        for k in ("eta", "c1", "c2", "wD"):
            v = np.array([c[k] for c in sel])
            row[k] = float(v.mean())
            row[k + "_stderr"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
        row["paper_eta"] = PAPER_ETA.get(label)
        summary[label] = row
    etas = [summary[f"g={g:g}"] for g in g_values]
    grows = all(b["eta"] - 2 * b["eta_stderr"] > a["eta"] + 2 * a["eta_stderr"]
                for a, b in zip(etas[:-1], etas[1:]))
    wd_grows = all(b["wD"] > a["wD"] for a, b in zip(etas[:-1], etas[1:]))
    statement = ("eta grows with g beyond two standard errors, as the paper reports" if grows else
                 "eta does NOT grow with g beyond two standard errors at these settings "
                 "(the paper reports 9.301e-2, 3.430e-1, 5.615e-1 for g = 0, 3, 5)")
    return {
        "figure": "fig7",
        "settings": {"data": {"kind": "swissroll", "n": n_data, "noise": 0.3, "scale": 0.125,
                              "width": 0.05, "seed": 0},
                     "force": "rotating (Eq. 99)", "h": h, "t_fin": t_fin, "tau": tau,
                     "g_values": list(g_values), "perturb": perturb, "particles": n,
                     "n_steps": n_steps, "n_save": n_save, "seeds": seeds, "quick": quick,
                     "method": "sample-based (bound_samples): exact OT between transported particle sets"},
        "cases": cases,
        "summary": summary,
        "eta_grows_with_g": grows,
        "wD_grows_with_g": wd_grows,
        "statement": statement,
        "all_inequalities_hold": bool(all(all(c["holds"].values()) for c in cases)),
        "snapshots": snapshots,
        "seconds": time.time() - start,
    }
