"""Schedule optimisation study (docs/theory.md §7): c_2 of cosine, cond-OT and the optimised
polar schedule against the geodesic floor W_2²/τ, on the 1-D mixture, the Swiss roll and digits.

c_2 of the optimised schedule is re-evaluated with Monte-Carlo draws independent of those used
during the optimisation (n-D), so it carries no selection bias; in 2-D it is the grid estimate.
The floor W_2(q, N(0, I))²/τ is exact in 1-D and an exact-OT estimate between samples in n-D
(biased upwards by the finite sample, strongly so in 64-D: there it is only indicative).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from satjax import optimize as O
from satjax import path as P
from satjax import schedules as S
from satjax.estimators import MonteCarlo
from satjax.mixtures import digits, gmm, swiss_roll


def _datasets(quick: bool):
    if quick:
        return [("gmm-1d", gmm([-2.0, 2.0], 0.5), dict(steps=100, n_samples=0, n_time=24)),
                ("swissroll", swiss_roll(n=300), dict(steps=40, n_samples=512, n_time=16)),
                ("digits", digits(width=0.1, n=200), dict(steps=8, n_samples=128, n_time=12))]
    return [("gmm-1d", gmm([-2.0, 2.0], 0.5), dict(steps=300, n_samples=0, n_time=32)),
            ("swissroll", swiss_roll(n=800), dict(steps=150, n_samples=2048, n_time=24)),
            ("digits", digits(width=0.1), dict(steps=40, n_samples=256, n_time=16))]


def run(*, quick: bool = False, tau: float = 1.0, seed: int = 0, progress=None) -> dict:
    start = time.time()
    key = jax.random.PRNGKey(seed)
    results = {}
    sets = _datasets(quick)
    for i, (name, data, cfg) in enumerate(sets):
        k_opt, k_eval, k_w2 = jax.random.split(jax.random.fold_in(key, i), 3)
        est = "auto" if data.dim == 1 else MonteCarlo(n=cfg["n_samples"], key=k_opt)
        res = O.optimize_schedule(data, family="free", objective="c2", tau=tau,
                                  steps=cfg["steps"], learning_rate=0.05, n_time=cfg["n_time"],
                                  estimator=est)
        ev = "auto" if data.dim == 1 else MonteCarlo(n=4 * cfg["n_samples"], key=k_eval)

        def c2(sch):
            return P.path_cost(sch, data, estimator=ev, n_time=cfg["n_time"]).c2

        w2 = P.endpoint_w2sq(S.cosine(tau), data, key=k_w2)
        sch = res.schedule
        ts = np.linspace(0.0, tau, 101)
        entry = {"dim": data.dim, "n_components": data.n_components, "steps": res.steps,
                 "diverged": res.diverged, "W2sq_over_tau": float(w2.value) / tau,
                 "W2sq_method": w2.method, "t": ts.tolist(), "m": [float(sch.m(t)) for t in ts],
                 "sigma": [float(sch.sigma(t)) for t in ts]}
        for label, s in (("cosine", S.cosine(tau)), ("condot", S.cond_ot(tau)), ("optimised", sch)):
            e = c2(s)
            entry[f"c2_{label}"], entry[f"c2_{label}_stderr"] = float(e.value), float(e.stderr)
            entry[f"c2_{label}_method"] = e.method
        entry["beats_cosine_and_condot"] = bool(
            entry["c2_optimised"] + 2 * entry["c2_optimised_stderr"]
            < min(entry["c2_cosine"], entry["c2_condot"]))
        entry["gap_to_W2"] = entry["c2_optimised"] / entry["W2sq_over_tau"] - 1.0
        results[name] = entry
        if progress is not None:
            progress(i + 1, len(sets))
    return {"figure": "schedules",
            "settings": {"tau": tau, "quick": quick, "family": "free (polar)", "objective": "c2",
                         "datasets": {n: cfg for n, _, cfg in _datasets(quick)}},
            "results": results, "seconds": time.time() - start}
