"""Figures of docs/reproduction.md from its JSON files (run after the other reproduction scripts):

    python3 docs/_scripts/reproduction_plots.py

writes docs/reproduction/table1_families.png and docs/reproduction/fig7_eta_vs_g.png.
"""

from __future__ import annotations

import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

D = "docs/reproduction"


def load(name):
    with open(os.path.join(D, name)) as fh:
        return json.load(fh)


def table1():
    t = load("table1_sweeps.json")
    r = t["std_0.5"]
    paper = t["paper"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = [("mean", "mean:MU  (start N(MU, 1))", "MU"),
              ("variance", "variance:V  (start N(0, V))", "V"),
              ("uniform", "uniform:a=-c,b=c", "c")]
    for ax, (fam, title, xl) in zip(axes, panels):
        xs = r[fam]["x"]
        ys = [row["eta"] if row["eta"] is not None else math.nan for row in r[fam]["rows"]]
        ax.semilogy(xs, ys, "k.-", ms=3, label="exact η (σ = 0.5)")
        for std, o in t["other_std"].items():
            ys2 = [row["eta"] if row["eta"] is not None else math.nan for row in o[fam]["rows"]]
            ax.semilogy(o[fam]["x"], ys2, ".-", ms=2, lw=0.8, label=f"data σ = {std}")
        for v, ls in zip(paper[fam], ("-", "--", ":")):
            ax.axhline(v, color="tab:red", ls=ls, lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xl)
    axes[0].set_ylabel("η")
    axes[0].legend(fontsize=7)
    ax = axes[3]
    g = r["gmm"]
    for j, s in enumerate(g["s"]):
        if j % 3:
            continue
        ys = [row[j] if row[j] is not None else math.nan for row in g["eta"]]
        ax.semilogy(g["a"], ys, ".-", ms=3, lw=0.8, label=f"s = {s:g}")
    for v, ls in zip(paper["gmm"], ("-", "--", ":")):
        ax.axhline(v, color="tab:red", ls=ls, lw=0.8)
    ax.set_title("gmm:means=-a|a,std=s", fontsize=9)
    ax.set_xlabel("a")
    ax.legend(fontsize=7)
    fig.suptitle("Table I families, exact 1-D η (red: the paper's cosine / cond-OT / OT values)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(D, "table1_families.png"), dpi=90)


def fig7():
    ex = load("fig7_exact.json")["rows"]
    gen = load("fig7_generator.json")["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    gs = (0.0, 3.0, 5.0)
    for tau, c in ((1.0, "tab:blue"), (2.0, "tab:green"), (3.0, "tab:purple")):
        m, e = [], []
        for g in gs:
            rs = [r for r in ex if r["tau"] == tau and r["g"] == g]
            m.append(sum(r["eta"] for r in rs) / len(rs))
            e.append(math.sqrt(sum(r["eta_stderr"] ** 2 for r in rs)) / len(rs))
        ax.errorbar(gs, m, yerr=e, color=c, marker="o", capsize=3,
                    label=f"exact, RK4×100, τ = {tau:g}" + (" (D₀ of Eq. G21)" if tau == 1 else ""))
    for steps, ls in ((20, ":"), (50, "--")):
        ys = [next(r["eta_vs_data"] for r in gen if r["tau"] == 3.0 and r["g"] == g
                   and r["solver"] == "euler" and r["n_steps"] == steps) for g in gs]
        ax.plot(gs, ys, "k" + ls, marker="s", ms=4, label=f"Euler×{steps}, τ = 3, ΔW₁ vs data")
    if os.path.exists(os.path.join(D, "fig7_learned_g0.json")):
        ys, es = [], []
        for g in gs:
            lr = load(f"fig7_learned_g{g:g}.json")
            ys.append(lr["eta"])
            es.append(lr["eta_stderr"])
        ax.errorbar(gs, ys, yerr=es, color="tab:orange", marker="^", capsize=3,
                    label="learned CFM, τ = 3 (satjax bound --model)")
    ax.plot(gs, [9.301e-2, 3.430e-1, 5.615e-1], "r*-", ms=9, label="paper")
    ax.set_yscale("log")
    ax.set_xlabel("g")
    ax.set_ylabel("η")
    ax.set_xticks(gs)
    ax.legend(fontsize=7)
    ax.set_title("Fig. 7: η against g (h = 1.1, T_fin = 0.5, start N(0, 0.9² I))", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(D, "fig7_eta_vs_g.png"), dpi=90)


if __name__ == "__main__":
    table1()
    fig7()
    print("wrote docs/reproduction/table1_families.png and docs/reproduction/fig7_eta_vs_g.png")
