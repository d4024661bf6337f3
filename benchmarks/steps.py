"""Sampling-step grids compared: uniform in t, uniform in log-SNR, EDM ρ = 7, equal W2 length and
satjax's optimised grid (issue 14), at N = 4, 8, 16, 32 with Euler and Heun.

    python benchmarks/steps.py [--quick] [--out DIR] [--name NAME]
    satjax bench --steps [--quick] [--out DIR]                       (the same)

Cases: the 1-D mixture ½N(−2, ¼) + ½N(2, ¼) and the 2-D Swiss roll (``mixtures.swiss_roll()``,
800 kernels), each under cond-OT and cosine, with the exact probability-flow velocity.

Errors are those of :mod:`satjax.steps`, always on data not used to optimise:

* 1-D: W2 between the sorted N-step images of 8192 midpoint quantiles of P_τ and the data
  quantiles at the same levels; the grid is optimised on 1024 other levels;
* Swiss roll: exact W2 (optimal assignment) between the N-step samples from exact P_τ
  samples and the images of the same samples under the exact flow (RK4), on a held-out set
  (sizes in the JSON's ``settings``); optimised on an independent training pool.

Writes ``NAME.json`` and ``NAME.png`` into ``--out`` (default ``benchmarks/results``, name
``steps-cpu-2core``) and prints a Markdown table. float64.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

GRID_ORDER = ("uniform", "log-snr", "edm", "w2-length", "optimised")


def settings(quick: bool = False) -> dict:
    """Sizes per case (the 1-D objective is cheap: library defaults; the Swiss roll is cut to fit
    a 2-core CPU in minutes)."""
    if quick:
        return {"ns": [4, 8], "solvers": ["euler", "heun"],
                "mixture-1d": {"n_train": 256, "n_test": 1024, "iterations": 30, "lr": 0.05},
                "swissroll": {"n_train": 256, "n_test": 256, "batch": 128, "iterations": 5,
                              "lr": 0.1, "reference_steps": 64}}
    return {"ns": [4, 8, 16, 32], "solvers": ["euler", "heun"],
            "mixture-1d": {"n_train": 1024, "n_test": 8192, "iterations": 300, "lr": 0.05},
            "swissroll": {"n_train": 512, "n_test": 1024, "batch": 256, "iterations": 40,
                          "lr": 0.1, "reference_steps": 256}}


def run(quick: bool = False, say=print) -> dict:
    """Every (data, protocol, solver, N): the held-out error of each grid; the JSON document."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from satjax import bench
    from satjax import mixtures as M
    from satjax import schedules as S
    from satjax import steps as ST

    cfg = settings(quick)
    datasets = {"mixture-1d": lambda: M.gmm([-2.0, 2.0], 0.5, [0.5, 0.5]),
                "swissroll": lambda: M.swiss_roll()}
    protocols = {"cond-ot": S.cond_ot, "cosine": S.cosine}
    rows = []
    t_all = time.perf_counter()
    for ci, (dname, make_data) in enumerate(datasets.items()):
        data = make_data()
        c = dict(cfg[dname])
        iters, lr = c.pop("iterations"), c.pop("lr")
        for pi, (pname, make_protocol) in enumerate(protocols.items()):
            p = make_protocol()
            t0 = time.perf_counter()
            problem = ST.make_problem(p, data, key=jax.random.PRNGKey(100 * ci + pi), **c)
            say(f"... {dname} / {pname}: problem built in {time.perf_counter() - t0:.1f} s "
                f"({problem.objective})")
            for solver in cfg["solvers"]:
                for n in cfg["ns"]:
                    t0 = time.perf_counter()
                    res = ST.optimize_steps(p, data, n, solver=solver, steps=iters, lr=lr,
                                            problem=problem)
                    errs = {**res.errors_standard, "optimised": res.error}
                    std_best = min(res.errors_standard, key=res.errors_standard.get)
                    rows.append({
                        "data": dname, "protocol": pname, "solver": solver, "n": n,
                        "errors": errs, "best_standard": std_best, "init": res.init,
                        "optimised_vs_uniform": res.error / res.error_uniform - 1.0,
                        "optimised_vs_best_standard":
                            res.error / res.errors_standard[std_best] - 1.0,
                        "t_optimised": res.t, "best_step": res.best_step,
                        "seconds": time.perf_counter() - t0})
                    say(f"... {dname} {pname} {solver} N={n}: optimised {res.error:.4g}, "
                        f"uniform {res.error_uniform:.4g}, best standard {std_best} "
                        f"{res.errors_standard[std_best]:.4g} ({rows[-1]['seconds']:.1f} s)")
    return {"machine": bench.machine(), "settings": cfg, "quick": quick, "rows": rows,
            "objectives": {"mixture-1d": "W2 to the data quantiles (held-out levels)",
                           "swissroll": "exact W2 (assignment) to the exact-flow images "
                                        "(held-out samples)"},
            "seconds": time.perf_counter() - t_all}


def format_table(rows) -> list:
    """A Markdown table: one line per (data, protocol, solver, N), the best grid in bold."""
    head = ("| data | protocol | solver | N | " + " | ".join(GRID_ORDER)
            + " | optimised vs uniform | optimised vs best standard |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        e = r["errors"]
        best = min(e, key=e.get)
        cells = [(f"**{e[g]:.3g}**" if g == best else f"{e[g]:.3g}") if g in e else "–"
                 for g in GRID_ORDER]
        lines.append(f"| {r['data']} | {r['protocol']} | {r['solver']} | {r['n']} | "
                     + " | ".join(cells)
                     + f" | {100 * r['optimised_vs_uniform']:+.0f} % | "
                       f"{100 * r['optimised_vs_best_standard']:+.0f} % |")
    return lines


def wins(rows) -> dict:
    """How often each standard grid is the best standard grid, per (data, protocol)."""
    out = {}
    for r in rows:
        key = f"{r['data']} / {r['protocol']}"
        out.setdefault(key, {})
        out[key][r["best_standard"]] = out[key].get(r["best_standard"], 0) + 1
    return out


def plot(res: dict, filename: str) -> None:
    """Held-out error against N per grid (solid Heun, dashed Euler), one panel per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys((r["data"], r["protocol"]) for r in res["rows"]))
    fig, axs = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 4), squeeze=False)
    for ax, (dname, pname) in zip(axs[0], cases):
        for gi, g in enumerate(GRID_ORDER):
            for solver, ls in (("heun", "-"), ("euler", "--")):
                rr = [r for r in res["rows"] if (r["data"], r["protocol"], r["solver"])
                      == (dname, pname, solver) and g in r["errors"]]
                if rr:
                    ax.plot([r["n"] for r in rr], [r["errors"][g] for r in rr], ls,
                            marker="o", ms=3, color="k" if g == "optimised" else f"C{gi}",
                            lw=2 if g == "optimised" else 1,
                            label=g if solver == "heun" else None)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (steps)")
        ax.set_title(f"{dname}, {pname}", fontsize=9)
    axs[0][0].set_ylabel("held-out W2 error (solid Heun, dashed Euler)")
    axs[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(filename, dpi=110)
    plt.close(fig)


def run_cli(folder, *, quick: bool = False, name: str = None, say=print) -> dict:
    """What ``satjax bench --steps`` does: run, print the table, write NAME.json / NAME.png."""
    from pathlib import Path

    from satjax.report import write_json, write_png

    folder = Path(folder)
    name = name or ("steps-quick" if quick else "steps")
    res = run(quick, say=say)
    for line in format_table(res["rows"]):
        say(line)
    for case, w in wins(res["rows"]).items():
        say(f"best standard grid, {case}: " + ", ".join(f"{g} {k}×" for g, k in w.items()))
    say(f"total {res['seconds']:.0f} s")
    write_json(res, str(folder / f"{name}.json"))
    write_png(plot, res, str(folder / f"{name}.png"))
    say(f"wrote {folder / (name + '.json')} and {folder / (name + '.png')}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--name", default=None, help="file stem (default steps-cpu-2core, "
                                                 "steps-quick with --quick)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    name = args.name or ("steps-quick" if args.quick else "steps-cpu-2core")
    return run_cli(args.out, quick=args.quick, name=name,
                   say=lambda s: print(s, file=sys.stderr if s.startswith("...") else sys.stdout,
                                       flush=True))


if __name__ == "__main__":
    main()
