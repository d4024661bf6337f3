"""Fig. 6 and Table I of the paper: the 1-D two-component mixture (docs/theory.md §6, §9).

q = ½N(m_a, σ²) + ½N(m_b, σ²) (Eq. 96; default m_a = −2, m_b = 2, σ = 0.5, τ = 1), protocols
cosine, cond-OT and the W2 geodesic (ot), reverse-start perturbations of two kinds: maps of P_τ
(shift, scale) and the four families of the paper's Table I (different mean, different
variance, a Gaussian mixture, a uniform distribution) as distributions replacing P_τ. Every
number is exact (CDF transport and quadrature, :func:`satjax.bound.bound`); η does not depend on
the protocol (every protocol yields the same monotone map from P_τ to q), c_1 and c_2 do.
"""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from satjax import bound as B
from satjax import specs
from satjax.mixtures import gmm

PROTOCOLS = ("cosine", "cond-ot", "ot")
PERTURBATIONS_FULL = ("shift:0.1", "shift:0.3", "shift:-0.5", "scale:0.8", "scale:1.2")
PERTURBATIONS_QUICK = ("shift:0.2", "scale:1.2")
# Table I of the paper (η for cosine / cond-OT / OT); the paper's parameters are not known. The
# mean start N(1, 1) is a public reading's; its exact η is 3.1× the paper's, which N(1.44, 1)
# matches (docs/reproduction.md). The other three starts are our choices.
TABLE_I = {
    "mean:1": ("different mean", (9.188e-2, 8.781e-2, 8.537e-2)),
    "variance:0.5": ("different variance", (1.078e-1, 1.047e-1, 1.022e-1)),
    "gmm:means=-1|1,std=0.5": ("Gaussian mixture", (2.764e-2, 2.674e-2, 2.611e-2)),
    "uniform:a=-1.5,b=1.5": ("uniform", (2.142e-2, 2.068e-2, 2.033e-2)),
}


def densities(protocol, data, perturbation, ts, x):
    """P_t(x) and the reverse-time density P̃_t(x) from the perturbed start, on a grid x (n,).

    P̃_t/P_t is conserved along the common flow: P̃_t(x) = P_t(x) r(M(x)) with r = P̃_τ/P_τ and
    M = Q_τ ∘ F_t the flow map to τ."""
    start = perturbation.start(protocol.reverse_start(data))
    out = [_density_pair(protocol, data, start, jnp.asarray(t, x.dtype), x,
                         at_tau=float(t) == float(protocol.tau)) for t in ts]
    return tuple(np.asarray([np.asarray(o[i]) for o in out]) for i in (0, 1))


@partial(jax.jit, static_argnames=("at_tau",))
def _density_pair(protocol, data, start, t, x, at_tau: bool):
    p_end = protocol.reverse_start(data)
    marg = protocol.marginal(data, t)
    p = jnp.exp(marg.log_prob(x[:, None]))
    y = x if at_tau else p_end.quantile(jnp.clip(marg.cdf(x), 1e-300, 1 - 1e-16))
    r = jnp.exp(start.log_prob(y[:, None]) - p_end.log_prob(y[:, None]))
    return p, p * jnp.nan_to_num(r)


def run(*, quick: bool = False, tau: float = 1.0, means=(-2.0, 2.0), std: float = 0.5,
        perturbations=None, table_i: bool = True, progress=None) -> dict:
    """All cases: η, c_1, c_2, w_D, D_0 (Estimates) and the verdicts per protocol and
    perturbation, the Table-I panel, curves and densities."""
    start = time.time()
    data = gmm(list(means), std)
    perts = list(perturbations or (PERTURBATIONS_QUICK if quick else PERTURBATIONS_FULL))
    table = list(TABLE_I)[:2] if quick else list(TABLE_I)
    if table_i:
        perts += [p for p in table if p not in perts]
    n_time = 32 if quick else 48
    protos = {name: specs.build_protocol(specs.parse_protocol(name), tau=tau, data=data)
              for name in PROTOCOLS}
    cases, curves = [], {}
    pert_objs = [specs.build_perturbation(specs.parse_perturbation(s)) for s in perts]
    for i, pname in enumerate(PROTOCOLS):
        # one call per protocol: the path cost and the CDF frame are shared by all perturbations
        results = B.bound(protos[pname], data, pert_objs, n_time=n_time)
        for spec, r in zip(perts, results):
            v = r.verdicts()
            case = {"protocol": pname, "perturb": spec, "family": TABLE_I.get(spec, ("",))[0],
                    "verdicts": {k: x.to_json() for k, x in v.items()},
                    "holds": {k: x.status for k, x in v.items()}}
            for k in ("eta", "c1", "c2", "wD", "D0", "dW1", "W1_start", "W1_end"):
                case.update(getattr(r, k).to_json(k))
            cases.append(case)
            curves[f"{pname}|{spec}"] = {"t": np.asarray(r.t).tolist(),
                                         "v_loss_sq": np.asarray(r.v_loss_sq).tolist(),
                                         "kinetic": np.asarray(r.kinetic).tolist(),
                                         "W1": np.asarray(r.W1).tolist()}
        if progress is not None:
            progress((i + 1) * len(perts), len(PROTOCOLS) * len(perts))
    etas = {}
    for c in cases:
        etas.setdefault(c["perturb"], []).append(c["eta"])
    agree = {k: bool(np.allclose(v, v[0], rtol=1e-6)) for k, v in etas.items()}
    table_rows = []
    for spec in table:
        label, paper = TABLE_I[spec]
        ours = [c["eta"] for p in PROTOCOLS for c in cases if c["perturb"] == spec and c["protocol"] == p]
        table_rows.append({"perturb": spec, "family": label, "eta": ours[0],
                           "paper_eta": list(paper), "ratio_to_paper": [ours[0] / v for v in paper]})
    x = np.linspace(-4.5, 4.5, 301)
    ts = [0.0, 0.25 * tau, 0.5 * tau, 0.75 * tau, tau]
    dens = {}
    pert0 = specs.build_perturbation(specs.parse_perturbation(perts[0]))
    for pname in PROTOCOLS:
        p, pt = densities(protos[pname], data, pert0, ts, jnp.asarray(x))
        dens[pname] = {"forward": p.tolist(), "reverse": pt.tolist()}
    return {
        "figure": "fig6",
        "settings": {"data": {"means": list(means), "std": std, "weights": [0.5, 0.5]}, "tau": tau,
                     "protocols": list(PROTOCOLS), "perturbations": perts, "quick": quick,
                     "n_time": n_time,
                     "method": "exact 1-D: CDF transport and quadrature (satjax.bound.bound)"},
        "cases": cases,
        "table_i": table_rows,
        "eta_agrees_across_protocols": agree,
        "all_verdicts_hold": bool(all(s == "holds" for c in cases for s in c["holds"].values())),
        "curves": curves,
        "densities": {"x": x.tolist(), "t": ts, "perturb": perts[0], **dens},
        "seconds": time.time() - start,
    }

