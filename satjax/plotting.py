"""Figures (matplotlib, Agg backend): kept apart from the numerical core."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_path(report: dict, filename: str) -> None:
    """E‖ν_t‖² = T_t Ṡ_tot and v_2(t)² over t, with the W_2²/τ² level of the geodesic."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(report["t"], report["kinetic"], "o-", ms=3, label=r"$E\|\nu_t\|^2 = T_t\dot S_{tot}$")
    ax.plot(report["t"], report["speed_sq"], "s--", ms=3, label=r"$v_2(t)^2$")
    tau = report["tau"]
    ax.axhline(report["W2sq"] / tau**2, color="k", lw=0.8, ls=":",
               label=r"geodesic $W_2^2/\tau^2$")
    ax.set_xlabel("t  (0 = data, τ = noise)")
    ax.set_ylabel("rate")
    ax.set_yscale("log")
    ax.set_title(f"{report['protocol']} on {report['data']}\n"
                 f"$w_D$={report['wD']:.4g}, $c_2$={report['c2']:.4g}, $W_2^2/τ$={report['W2sq_over_tau']:.4g}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, filename)


def plot_fig6(res: dict, filename: str) -> None:
    """Four panels: forward densities, reverse densities from the perturbed start, η/c_1/c_2 per
    case, and the instantaneous relation v_loss² ≤ T Ṡ_tot over t (Eq. 80)."""
    import numpy as np

    d = res["densities"]
    x, ts = np.asarray(d["x"]), d["t"]
    fig, axs = plt.subplots(2, 2, figsize=(12, 8.5))
    cmap = plt.get_cmap("viridis")
    ax = axs[0, 0]
    for i, t in enumerate(ts):
        for pname, ls in (("cosine", "-"), ("ot", "--")):
            ax.plot(x, d[pname]["forward"][i], ls, color=cmap(i / max(len(ts) - 1, 1)),
                    label=f"{pname}, t={t:.2f}" if pname == "cosine" or i in (0, len(ts) - 1) else None)
    ax.set_title("(a) forward marginals $P_t$ (solid cosine, dashed ot)")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, ncol=2)
    ax = axs[0, 1]
    for i, t in enumerate(ts):
        ax.plot(x, d["cosine"]["reverse"][i], color=cmap(i / max(len(ts) - 1, 1)), label=f"t={t:.2f}")
    ax.plot(x, d["cosine"]["forward"][0], "k:", lw=1.2, label="q = P_0 (data)")
    ax.set_title(f"(b) reverse from perturbed start {d['perturb']} (cosine): $\\tilde P_t$")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    ax = axs[1, 0]
    cases = res["cases"]
    # one tick per perturbation; the protocols side by side within it (colour), the three
    # quantities by marker: 27 stacked "protocol / perturbation" labels were unreadable
    perts = list(dict.fromkeys(c["perturb"] for c in cases))
    protos = list(dict.fromkeys(c["protocol"] for c in cases))
    width = 0.7 / max(len(protos), 1)
    for c in cases:
        j = protos.index(c["protocol"])
        xc = perts.index(c["perturb"]) + (j - (len(protos) - 1) / 2) * width
        col = f"C{j}"
        eta, c1, c2 = (np.nan if c[k] is None else c[k] for k in ("eta", "c1", "c2"))
        ax.plot([xc, xc], [eta, c2], "-", color=col, lw=0.8, alpha=0.6)
        ax.plot(xc, c2, "o", color=col, ms=4)
        ax.plot(xc, c1, "^", color=col, ms=4)
        ax.plot(xc, eta, "x", color="k", ms=4)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{j}", marker="s", ls="", label=p)
               for j, p in enumerate(protos)]
    handles += [Line2D([], [], color="0.3", marker=m, ls="", label=lab)
                for m, lab in (("o", "$c_2$"), ("^", "$c_1$"), ("x", r"$\eta$"))]
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(perts)))
    ax.set_xticklabels(perts, fontsize=7, rotation=30, ha="right")
    ax.set_xlabel("reverse-start perturbation")
    ax.set_ylabel("value")
    ax.set_title(r"(c) $\eta \leq c_1 \leq c_2$ per protocol and perturbation")
    ax.legend(handles=handles, fontsize=7, ncol=2)
    ax = axs[1, 1]
    pert = res["settings"]["perturbations"][0]
    for pname, col in zip(res["settings"]["protocols"], ("C0", "C1", "C2")):
        cv = res["curves"][f"{pname}|{pert}"]
        ax.plot(cv["t"], cv["kinetic"], "-", color=col, label=rf"{pname}: $T\dot S_{{tot}}=E\|\nu\|^2$")
        ax.plot(cv["t"], cv["v_loss_sq"], "--", color=col, label=rf"{pname}: $v_{{loss}}^2$")
    ax.set_yscale("log")
    ax.set_xlabel("t  (0 = data, τ = noise)")
    ax.set_ylabel("rate")
    ax.set_title(f"(d) Eq. 80: $v_{{loss}}(t)^2 \\leq T_t\\dot S_{{tot}}(t)$, perturbation {pert}")
    ax.legend(fontsize=7)
    dd = res["settings"]["data"]
    fig.suptitle(f"Fig. 6 — 1-D mixture ½N({dd['means'][0]:g}, {dd['std']:g}²) + "
                 f"½N({dd['means'][1]:g}, {dd['std']:g}²): speed–accuracy relation (exact)",
                 fontsize=11)
    fig.tight_layout()
    _save(fig, filename)


def _save(fig, filename: str) -> None:
    """Write atomically (temporary file, then rename) so an interrupted run leaves no half file."""
    import os

    tmp = f"{filename}.partial.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, filename)


def plot_bound(report: dict, filename: str) -> None:
    """v_loss(t)² against T_t Ṡ_tot(t) (Eq. 80) and W_1(P_t, P̃_t) over t."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(report["t"], report["kinetic"], "-", label=r"$T_t\dot S_{tot} = E\|\nu_t\|^2$")
    a.plot(report["t"], report["v_loss_sq"], "--", label=r"$v_{loss}(t)^2$")
    a.set_yscale("log")
    a.set_xlabel("t  (0 = data, τ = noise)")
    a.set_ylabel("rate")
    a.set_title("Eq. 80 at every t")
    a.legend(fontsize=8)
    b.plot(report["t"], report["W1"], "o-", ms=3)
    b.set_xlabel("t")
    b.set_ylabel(r"$W_1(P_t, \tilde P_t)$")
    b.set_title(f"η={report['eta']:.4g} ≤ c1={report['c1']:.4g} ≤ c2={report['c2']:.4g}")
    fig.suptitle(f"{report['protocol']} on {report['data']}, perturbation {report['perturb']}",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, filename)


def plot_schedules(report: dict, filename: str, tau: float = 1.0) -> None:
    """The optimised schedule against cosine and cond-OT in the (σ, m) plane."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(5, 5))
    s = np.linspace(0.0, 1.0, 101)
    ax.plot(np.sin(np.pi * s / 2), np.cos(np.pi * s / 2), "-", label=f"cosine (c2={report['c2_cosine']:.4g})")
    ax.plot(s, 1 - s, "-", label=f"cond-OT (c2={report['c2_condot']:.4g})")
    ax.plot(report["sigma"], report["m"], "k-", lw=2,
            label=f"optimised {report['family']}/{report['objective']} (c2={report['c2_final']:.4g})")
    ax.set_xlabel(r"$\sigma_t$")
    ax.set_ylabel(r"$m_t$")
    ax.set_aspect("equal")
    ax.set_title(f"{report['data']}\n$W_2^2/τ$ = {report['W2sq_over_tau']:.4g}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, filename)


def plot_fig7(res: dict, filename: str) -> None:
    """η, c_1, c_2, w_D against g (exact dynamics) and the learned models' η against g (each
    model a dot, mean ± s.e. as a bar), beside the exact η."""
    import numpy as np

    summ, learned = res["summary"], res.get("learned")
    panels = [p for p, on in (("exact", bool(summ)), ("learned", bool(learned))) if on]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "exact":
            keys = list(summ)
            pos = np.arange(len(keys))
            for k, (q, name) in enumerate((("eta", r"$\eta$"), ("c1", "$c_1$"), ("c2", "$c_2$"),
                                           ("wD", "$w_D$"))):
                vals = [summ[kk][q] for kk in keys]
                errs = [(summ[kk][q + "_stderr"] or 0.0) + (summ[kk].get(q + "_error") or 0.0)
                        for kk in keys]
                ax.bar(pos + (k - 1.5) * 0.2, vals, width=0.2, yerr=errs, capsize=2, label=name)
            ax.set_xticks(pos)
            ax.set_xticklabels(keys)
            ax.set_yscale("log")
            ax.set_ylabel("value ± s.e. over seeds (particles)\nor ± resolution error (grid)")
            ax.set_title(textwrap.fill("exact dynamics: " + res["statement"], 90), fontsize=7)
            ax.legend(fontsize=8, ncol=4)
        else:
            ls = learned["summary"]
            keys = list(ls)
            pos = np.arange(len(keys))
            ax.bar(pos, [ls[k]["eta"] for k in keys], width=0.5, alpha=0.5,
                   yerr=[ls[k]["eta_stderr"] for k in keys], capsize=3,
                   label=r"learned $\eta$ (mean ± s.e.)")
            for i, k in enumerate(keys):
                vals = [m["eta"] for m in learned["models"] if m["case"] == k]
                ax.plot(np.full(len(vals), i), vals, "k.", ms=5,
                        label="one model" if i == 0 else None)
                if summ.get(k):
                    ax.plot([i - 0.3, i + 0.3], [summ[k]["eta"]] * 2, "r-", lw=2,
                            label=r"exact $\eta$" if i == 0 else None)
                ax.annotate(f"res. error {ls[k]['eta_resolution_error']:.1g}",
                            (i, ls[k]["eta"] + (ls[k]["eta_stderr"] or 0.0)),
                            textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
            ax.set_xticks(pos)
            ax.set_xticklabels(keys)
            ax.set_ylabel(r"$\eta$ (learned velocity)")
            ax.set_title(textwrap.fill(learned["statement"], 90), fontsize=7)
            ax.legend(fontsize=8)
    st = res["settings"]
    fig.suptitle(textwrap.fill(f"Fig. 7 — Swiss roll, rotating force h={st['h']:g}, "
                               f"T_fin={st['t_fin']:g}, τ={st['tau']:g}, perturbation "
                               f"{st['perturb']}", 80), fontsize=10)
    fig.tight_layout()
    _save(fig, filename)


def plot_schedules_study(res: dict, filename: str) -> None:
    """Per data set: cosine, cond-OT and the optimised schedule in the (σ, m) plane."""
    import numpy as np

    items = list(res["results"].items())
    fig, axs = plt.subplots(1, len(items), figsize=(5 * len(items), 5))
    s = np.linspace(0.0, 1.0, 101)
    for ax, (name, e) in zip(np.atleast_1d(axs), items):
        ax.plot(np.sin(np.pi * s / 2), np.cos(np.pi * s / 2), label=f"cosine c2={e['c2_cosine']:.4g}")
        ax.plot(s, 1 - s, label=f"cond-OT c2={e['c2_condot']:.4g}")
        ax.plot(e["sigma"], e["m"], "k-", lw=2,
                label=f"optimised c2={e['c2_optimised']:.4g}±{e['c2_optimised_stderr']:.2g}")
        ax.set_xlabel(r"$\sigma_t$")
        ax.set_ylabel(r"$m_t$")
        ax.set_aspect("equal")
        ax.set_title(f"{name} (d={e['dim']}): $W_2^2/τ$ ≈ {e['W2sq_over_tau']:.4g} ({e['W2sq_method']})",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Schedule optimisation: c₂ of cosine, cond-OT and the optimised polar schedule", fontsize=11)
    fig.tight_layout()
    _save(fig, filename)


def plot_fig8(res: dict, filename: str) -> None:
    """Generated digits from the exact and the perturbed start per model, and η against c_2."""
    import numpy as np

    losses = list(res["images"])
    fig = plt.figure(figsize=(12, 3.2 * len(losses) + 3))
    gs = fig.add_gridspec(len(losses) + 1, 2)
    for r, loss in enumerate(losses):
        for c, which in enumerate(("exact", "perturbed")):
            ax = fig.add_subplot(gs[r, c])
            imgs = np.asarray(res["images"][loss][which]).reshape(-1, 8, 8)
            grid = np.concatenate([np.concatenate(list(imgs[i * 8:(i + 1) * 8]), axis=1)
                                   for i in range(len(imgs) // 8)], axis=0)
            ax.imshow(grid, cmap="gray_r", vmin=-1, vmax=1)
            ax.set_title(f"{loss}: generated from the {which} start", fontsize=9)
            ax.axis("off")
    ax = fig.add_subplot(gs[len(losses), :])
    cases = res["cases"]
    pos = np.arange(len(cases))
    ax.bar(pos - 0.2, [c["eta"] for c in cases], width=0.4, yerr=[c["eta_stderr"] for c in cases],
           label=r"$\eta$")
    ax.bar(pos + 0.2, [c["c2"] for c in cases], width=0.4, yerr=[c["c2_stderr"] for c in cases],
           label=r"$c_2$ (G20)")
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{c['loss']} ({c['n_models']} models)\nη/c₂ = {c['ratio_eta_over_c2']:.3g}"
                        for c in cases])
    ax.set_yscale("log")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)
    ax.set_title(r"$\eta \leq c_2$ for models trained on 8×8 digits (D$_0$ by G21; mean ± s.e. over "
                 "models)", fontsize=10)
    fig.suptitle("Fig. 8 analogue — sklearn digits (64-D), CFM under cond-OT", fontsize=11)
    fig.tight_layout()
    _save(fig, filename)


def plot_table1(res: dict, filename: str) -> None:
    """η per Table-I start and protocol: exact flow, exact velocity under the sampler, and the
    learned models (mean ± standard error over seeds)."""
    import numpy as np

    rows = res["rows"]
    fams = res["settings"]["families"]
    protos = res["settings"]["protocols"]
    fig, ax = plt.subplots(figsize=(2.6 * len(fams) + 3, 5.2))
    width = 0.8 / len(protos)
    for j, name in enumerate(protos):
        sel = [next(r for r in rows if r["protocol"] == name and r["perturb"] == f) for f in fams]
        pos = np.arange(len(fams)) - 0.4 + width * (j + 0.5)
        if "eta_learned" in sel[0]:
            ax.bar(pos, [r["eta_learned"] for r in sel], width=width * 0.9,
                   yerr=[r["eta_learned_stderr"] for r in sel], capsize=3,
                   label=f"{name}: learned ({sel[0]['n_seeds']} seeds)", alpha=0.8)
        ax.plot(pos, [r["eta_sampler"] for r in sel], "k_", ms=14, mew=2,
                label="exact velocity, same sampler" if j == 0 else None)
        ax.plot(pos, [r["paper_eta"] for r in sel], "rx", ms=7,
                label="paper (Table I)" if j == 0 else None)
    for i, f in enumerate(fams):
        r = next(r for r in rows if r["perturb"] == f)
        ax.hlines(r["eta_exact"], i - 0.45, i + 0.45, colors="C3", linestyles=":",
                  label="exact flow (every protocol)" if i == 0 else None)
    ax.set_xticks(np.arange(len(fams)))
    ax.set_xticklabels([next(r["family"] for r in rows if r["perturb"] == f) + f"\n{f}"
                        for f in fams], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(r"$\eta = \Delta W_1^2/(\tau D_0)$")
    ax.set_title(f"Table I, 1-D mixture: {res['settings']['sampler']}", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    _save(fig, filename)


def plot_bench(res: dict, filename: str) -> None:
    """Left: speedup of each comparison (reference time / satjax time, log scale) with the
    targets; right (when present): c_2 time against the doubling factor of N, M, d, K."""
    rows = [r for r in res.get("comparisons", []) if r.get("speedup")]
    scal = res.get("scaling")
    fig, axs = plt.subplots(1, 2 if scal else 1, figsize=(12 if scal else 6, 4), squeeze=False)
    ax = axs[0, 0]
    names = [r["name"] for r in rows]
    ax.barh(names, [r["speedup"] for r in rows], color="tab:blue")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvline(3.0, color="tab:red", lw=0.8, ls="--", label="3× target (velocity, c₂)")
    ax.set_xscale("log")
    ax.set_xlabel("speedup = reference time / satjax time")
    ax.legend(fontsize=8)
    mach = res["machine"]
    ax.set_title(f"{mach.get('processor') or ''} ({mach.get('cpus')} CPUs), {mach['devices'][0]}, "
                 f"jax {mach['jax']}", fontsize=9)
    if scal:
        ax = axs[0, 1]
        base = scal["rows"][0]
        for axis, marker in (("N", "o"), ("M", "s"), ("d", "^"), ("K", "v")):
            pts = [base] + [r for r in scal["rows"] if r["varied"] == axis]
            ax.plot([r["factor"] for r in pts], [r["seconds"] for r in pts], marker + "-",
                    label=axis, alpha=0.8)
        f = [1, max(r["factor"] for r in scal["rows"])]
        ax.plot(f, [base["seconds"] * v for v in f], "k:", lw=0.8, label="linear")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("factor over the base size")
        ax.set_ylabel("c₂ integral time (s)")
        ax.legend(fontsize=8)
        ax.set_title(f"base N={base['N']}, M={base['M']}, d={base['d']}, K={base['K']}",
                     fontsize=9)
    fig.tight_layout()
    _save(fig, filename)
