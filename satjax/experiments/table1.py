"""Table I of the paper with exact and with learned dynamics (docs/theory.md §6, §7;
docs/reproduction.md §3.10).

The 1-D mixture of Fig. 6 (q = ½N(−2, ¼) + ½N(2, ¼), τ = 1), the four Table-I starts P̃_τ
(different mean, different variance, a Gaussian mixture, a uniform distribution) and three
protocols. For each start and protocol, η = ΔW_1²/(τ D_0) (Eq. 77) of three generators:

* **exact** — the exact probability flow (:func:`satjax.bound.bound`; CDF transport): the same
  for every protocol (docs/theory.md §7).
* **sampler** — the exact velocity integrated by the sampler the learned models use (RK4, N
  equal steps; :func:`satjax.discretisation.sampler_eta`): the discretisation part alone.
* **learned** — K velocity models per protocol, each trained at the same stated budget
  (:func:`satjax.learn.train`; seeds 0 … K−1), integrated by the same sampler: learning and
  discretisation errors together; mean ± standard error over the K models. Each model's c_2 is
  its own flow's kinetic cost from P_τ (:func:`satjax.discretisation.sampler_c2`), beside the
  exact path's.

Protocols: ``cosine`` and ``cond-ot`` (CFM loss, Eq. 19) and ``ot``. For ``ot`` the exact rows
use the 1-D W2 geodesic (:mod:`satjax.geometry.ot_protocol`) and the learned rows an OT-CFM
model (minibatch-OT pairs on the cond-OT path): its marginal flow approximates the geodesic
between the same end points (P_τ = N(0, 1)); the pairing of a finite minibatch makes it an
approximation, and the exact row beside it is the geodesic's.

Every W_1(q, ·) of a generated law is the midpoint rule over M quantile levels of the sorted
images of the start's quantiles (deterministic; its ``error`` is the change at M/2); W_1(P_τ,
P̃_τ) and D_0 are exact. The verdict compares protocols paired by seed (the same training key):
for each start and each pair of protocols, the mean difference of learned η ± its standard
error and a two-sided paired t-test.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from satjax import bound as B
from satjax import specs
from satjax.experiments.fig6 import TABLE_I
from satjax.experiments.seeds import budget, mean_se, paired
from satjax.mixtures import gmm

PROTOCOLS = ("cosine", "cond-ot", "ot")
DYNAMICS = ("exact", "learned", "both")
# what each protocol's learned model is trained on: (protocol spec, loss)
TRAINING = {"cosine": ("cosine", "cfm"), "cond-ot": ("cond-ot", "cfm"), "ot": ("cond-ot", "ot-cfm")}


def _train_model(protocol_name, data, tau, cfg_kwargs, seed, folder, progress_say=None):
    """Train (or resume from ``folder``) one model; returns (velocity Field, TrainResult)."""
    from satjax import learn

    spec_name, loss = TRAINING[protocol_name]
    p = specs.build_protocol(specs.parse_protocol(spec_name), tau=tau, data=data)
    cfg = learn.TrainConfig(loss=loss, dtype="float64", eval_every=0, checkpoint_every=10**9,
                            **cfg_kwargs)
    res = learn.train(jax.random.PRNGKey(seed), p, data, cfg, checkpoint_dir=folder,
                      resume=True)
    field = learn.param_field(res.spec, res.params, tau=p.tau)
    return field, p, res


def run(*, quick: bool = False, tau: float = 1.0, means=(-2.0, 2.0), std: float = 0.5,
        dynamics: str = "both", seeds=None, train_steps=None, folder=None, progress=None) -> dict:
    """Table I with exact, sampler and learned η (module docstring). ``folder``: trained models
    are saved under ``folder/table1-models`` and reused when rerun (no retraining)."""
    from satjax import learn
    from satjax.discretisation import sampler_c2, sampler_eta

    if dynamics not in DYNAMICS:
        raise ValueError(f"`dynamics` must be one of {DYNAMICS}; got {dynamics!r}")
    start_time = time.time()
    data = gmm(list(means), std)
    families = list(TABLE_I)[:2] if quick else list(TABLE_I)
    k_seeds = int(seeds) if seeds is not None else (2 if quick else 5)
    if k_seeds < (2 if dynamics != "exact" else 1):
        raise ValueError(f"`seeds` must be >= 2 (a standard error needs two models); got {k_seeds}")
    n_steps, n_levels = (40, 1024) if quick else (100, 4096)
    learned = dynamics in ("learned", "both")
    b = budget(quick, train_steps)
    perts = [specs.build_perturbation(specs.parse_perturbation(f)) for f in families]
    protos = {name: specs.build_protocol(specs.parse_protocol(name), tau=tau, data=data)
              for name in PROTOCOLS}
    n_jobs = len(PROTOCOLS) * (1 + (k_seeds if learned else 0))
    done = 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, n_jobs)

    rows, bounds = {}, {}
    for name in PROTOCOLS:
        results = B.bound(protos[name], data, perts, n_time=32)
        for fam, pert, r in zip(families, perts, results):
            bounds[(name, fam)] = r
            s = r.summary()
            smp = sampler_eta(protos[name], data, pert, solver="rk4", n_steps=n_steps,
                              n_levels=n_levels, exact=r)
            rows[(name, fam)] = {
                "protocol": name, "perturb": fam, "family": TABLE_I[fam][0],
                "eta_exact": s["eta"], "D0": s["D0"], "W1_start": s["W1_start"],
                "dW1_exact": s["dW1"], "c1_exact": s["c1"], "c2_exact": s["c2"],
                "eta_sampler": float(smp["eta"].value), "eta_sampler_error": float(smp["eta"].error),
                "paper_eta": TABLE_I[fam][1][PROTOCOLS.index(name)]}
        tick()
    models = []
    if learned:
        base = None if folder is None else Path(folder) / "table1-models"
        for name in PROTOCOLS:
            for k in range(k_seeds):
                ck = None if base is None else base / f"{name}-seed{k}"
                field, p_train, res = _train_model(name, data, tau, b, k, ck)
                w = learn.w1_to_data(field, p_train, data, n_levels=n_levels, n_steps=n_steps)
                m = {"protocol": name, "seed": k, "trained_on": TRAINING[name][0],
                     "loss": TRAINING[name][1], "final_loss": float(np.mean(res.losses[-50:]))
                     if len(res.losses) else None, "resumed": res.start_step > 0,
                     "W1_to_data": float(w.value), "W1_to_data_error": float(w.error),
                     "eta": {}, "dW1": {}, "eta_error": {}}
                # c_2 of the learned flow: its own kinetic cost from P_τ (satjax.measure)
                c2 = sampler_c2(p_train, data, solver="rk4", n_steps=n_steps, n_levels=n_levels,
                                velocity=field)
                m["c2"], m["c2_error"] = float(c2.value), float(c2.error)
                for fam, pert in zip(families, perts):
                    # W_1(P_τ, P̃_τ) and D_0 of the protocol trained on (the same P_τ)
                    e = sampler_eta(p_train, data, pert, solver="rk4", n_steps=n_steps,
                                    n_levels=n_levels, exact=bounds[(TRAINING[name][0], fam)],
                                    velocity=field)
                    m["eta"][fam] = float(e["eta"].value)
                    m["eta_error"][fam] = float(e["eta"].error)
                    m["dW1"][fam] = float(e["dW1"].value)
                models.append(m)
                tick()
        for (name, fam), row in rows.items():
            sel = [m for m in models if m["protocol"] == name]
            row["eta_learned"], row["eta_learned_stderr"] = mean_se([m["eta"][fam] for m in sel])
            row["dW1_learned"], row["dW1_learned_stderr"] = mean_se([m["dW1"][fam] for m in sel])
            row["eta_learned_resolution_error"] = max(m["eta_error"][fam] for m in sel)
            row["n_seeds"] = len(sel)
        w1 = {name: mean_se([m["W1_to_data"] for m in models if m["protocol"] == name])
              for name in PROTOCOLS}
        c2_learned = {}
        for name in PROTOCOLS:
            sel = [m for m in models if m["protocol"] == name]
            c2_mean, c2_se = mean_se([m["c2"] for m in sel])
            c2_learned[name] = {"mean": c2_mean, "stderr": c2_se,
                                "resolution_error": max(m["c2_error"] for m in sel),
                                "exact": rows[(name, families[0])]["c2_exact"]}
    verdict = _verdict(rows, families, models) if learned else None
    return {
        "figure": "table1",
        "settings": {"data": {"means": list(means), "std": std, "weights": [0.5, 0.5]},
                     "tau": tau, "protocols": list(PROTOCOLS), "families": families,
                     "dynamics": dynamics, "quick": quick, "seeds": k_seeds if learned else 0,
                     "sampler": f"rk4, {n_steps} equal steps", "quantile_levels": n_levels,
                     "training": ({"budget": b, "per_protocol": {k: {"trained_on": v[0],
                                                                     "loss": v[1]}
                                                                 for k, v in TRAINING.items()},
                                   "dtype": "float64", "seed_of_model_k": "PRNGKey(k)"}
                                  if learned else None),
                     "method": ("exact: CDF transport (satjax.bound.bound); sampler and learned: "
                                "W1(q, p_N) by quantile images (satjax.discretisation."
                                "sampler_eta), D0 and W1(P_tau, start) exact")},
        "rows": list(rows.values()),
        "models": models,
        "W1_to_data": ({k: {"mean": v[0], "stderr": v[1]} for k, v in w1.items()}
                       if learned else None),
        "c2_learned": c2_learned if learned else None,
        "verdict": verdict,
        "seconds": time.time() - start_time,
    }



def _verdict(rows, families, models) -> dict:
    """Does the protocol with the smaller c_2 give the smaller learned η? Per start, every pair
    of protocols ordered by exact c_2, paired by seed; "supported" when every pair's difference
    is negative at p < 0.05, "contradicted" when one is positive at p < 0.05, else "not
    resolved"."""
    out = {}
    for fam in families:
        c2 = {name: rows[(name, fam)]["c2_exact"] for name in PROTOCOLS}
        order = sorted(PROTOCOLS, key=lambda n: c2[n])
        eta = {name: [m["eta"][fam] for m in sorted((m for m in models if m["protocol"] == name),
                                                     key=lambda m: m["seed"])]
               for name in PROTOCOLS}
        pairs = []
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                pairs.append({"smaller_c2": a, "larger_c2": b, **paired(eta[a], eta[b])})
        sig = [p for p in pairs if p["p_value"] is not None and p["p_value"] < 0.05]
        if any(p["mean_difference"] > 0 for p in sig):
            status = "contradicted"
        elif len(sig) == len(pairs) and all(p["mean_difference"] < 0 for p in sig):
            status = "supported"
        else:
            status = "not resolved"
        out[fam] = {"c2_exact": c2, "order_by_c2": order, "pairs": pairs, "status": status}
    return out
