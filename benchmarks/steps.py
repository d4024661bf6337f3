"""Sampling-step grids compared: uniform in t, uniform in log-SNR, EDM ρ = 7, equal W2 length
(equal increments of ∫ sqrt(E‖ν‖²) dt: the equal-cost placement with the kinetic profile as
local cost), "ays-interp" (the optimised grid of the previous N carried to this N log-linearly
in σ, Align Your Steps' rule, :func:`satjax.export.interpolate_grid`) and satjax's optimised grid
(issue 14), at N = 4, 8, 16, 32 with Euler and Heun.

    python benchmarks/steps.py [--quick] [--out DIR] [--name NAME]
    satjax bench --steps [--quick] [--out DIR]                       (the same)
    python benchmarks/steps.py --digits [--quick] [--model-dir DIR]  (the trained digits model)

Cases: the 1-D mixture ½N(−2, ¼) + ½N(2, ¼) and the 2-D Swiss roll (``mixtures.swiss_roll()``,
800 kernels), each under cond-OT and cosine, with the exact probability-flow velocity.

Errors are those of :mod:`satjax.steps`, always on data not used to optimise:

* 1-D: W2 between the sorted N-step images of 8192 midpoint quantiles of P_τ and the data
  quantiles at the same levels; the grid is optimised on 1024 other levels;
* Swiss roll: exact W2 (optimal assignment) between the N-step samples from exact P_τ
  samples and the images of the same samples under the exact flow (RK4), on a held-out set
  (sizes in the JSON's ``settings``); optimised on an independent training pool.

``--digits``: a CFM velocity trained on sklearn's 8×8 digits (``digits:width=0.1``, 64-D,
cond-OT) with ``satjax train`` into ``--model-dir`` (reused when it holds a model trained with
the same settings). Its error is the RMS distance between the N-step samples and a many-step RK4
solve of the same learned velocity from the same starts (``satjax steps --model``'s objective),
on held-out P_τ samples; the grid is optimised on an independent training pool.

Writes ``NAME.json`` and ``NAME.png`` into ``--out`` (default ``benchmarks/results``, name
``steps-cpu-2core``, ``steps-digits-cpu-2core`` with ``--digits``) and prints a Markdown table.
float64 (the digits model is trained in float32 and evaluated in float64).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

GRID_ORDER = ("uniform", "log-snr", "edm", "w2-length", "ays-interp", "optimised")


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


DIGITS_DATA = "digits:width=0.1"
DIGITS_PROTOCOL = "cond-ot"


def digits_settings(quick: bool = False) -> dict:
    """Sizes of the digits case: the model's training and the grid problem (cut to fit a 2-core
    CPU in minutes; the library defaults are 4096 / 2048 samples, 300 iterations, 512 RK4
    reference steps)."""
    if quick:
        return {"ns": [4, 8], "solvers": ["euler", "heun"],
                "train": {"loss": "cfm", "steps": 300, "width": 64, "depth": 3, "seed": 0},
                "problem": {"n_train": 128, "n_test": 128, "batch": 64, "reference_steps": 32},
                "iterations": 5, "lr": 0.1}
    return {"ns": [4, 8, 16, 32], "solvers": ["euler", "heun"],
            "train": {"loss": "cfm", "steps": 12000, "width": 256, "depth": 3, "seed": 0},
            "problem": {"n_train": 512, "n_test": 1024, "batch": 256, "reference_steps": 256},
            "iterations": 50, "lr": 0.1}


def default_model_dir(quick: bool = False) -> str:
    return os.path.join(tempfile.gettempdir(),
                        "satjax-steps-digits-model" + ("-quick" if quick else ""))


def train_digits(model_dir: str, tcfg: dict, say=print) -> dict:
    """Train (or reuse) the digits CFM model with ``satjax train``; its JSON report plus the
    command. The report is kept next to the folder as ``MODEL_DIR.train.json``."""
    cmd = [sys.executable, "-m", "satjax.cli", "train", "--data", DIGITS_DATA,
           "--protocol", DIGITS_PROTOCOL, "--loss", tcfg["loss"], "--steps", str(tcfg["steps"]),
           "--width", str(tcfg["width"]), "--depth", str(tcfg["depth"]),
           "--seed", str(tcfg["seed"]), "--quiet", "--out", model_dir]
    record = model_dir.rstrip(os.sep) + ".train.json"
    shown = "satjax " + " ".join(cmd[3:])
    if os.path.isfile(record) and os.path.isdir(model_dir):
        with open(record) as f:
            rep = json.load(f)
        if rep.get("command") == shown:
            say(f"... reusing the digits model in {model_dir} (trained by: {shown})")
            return rep
        raise SystemExit(f"{model_dir} holds a model trained by {rep.get('command')!r}, not "
                         f"{shown!r}: remove it or pass another --model-dir")
    if os.path.exists(model_dir):
        raise SystemExit(f"{model_dir} exists without {record}: remove it or pass another "
                         "--model-dir")
    say(f"... training: {shown}")
    t0 = time.perf_counter()
    subprocess.run(cmd + ["--json", record], check=True)
    with open(record) as f:
        rep = json.load(f)
    rep.update(command=shown, wall_seconds=time.perf_counter() - t0)
    with open(record, "w") as f:
        json.dump(rep, f, indent=1)
    return rep


def run_digits(quick: bool = False, model_dir: str = None, say=print) -> dict:
    """Every (solver, N) on the trained digits model: the held-out error of each grid."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from satjax import bench, specs
    from satjax import steps as ST
    from satjax.cli import _load_model
    from satjax.reverse import solve_ode

    cfg = digits_settings(quick)
    model_dir = model_dir or default_model_dir(quick)
    t_all = time.perf_counter()
    train = train_digits(model_dir, cfg["train"], say=say)
    d = specs.build_data(specs.parse_data(DIGITS_DATA))
    p = specs.build_protocol(specs.parse_protocol(DIGITS_PROTOCOL), tau=1.0, data=d,
                             key=jax.random.PRNGKey(3))
    fld = _load_model(model_dir, d, p, False)
    t0 = time.perf_counter()
    problem = ST.make_problem(p, d, velocity=fld, key=jax.random.PRNGKey(14), **cfg["problem"])
    # how well the reference itself is converged: half as many RK4 steps, held-out starts
    half = solve_ode(problem.field, problem.x_test, t_start=problem.tau, t_end=0.0,
                     method="rk4", n_steps=max(cfg["problem"]["reference_steps"] // 2, 1)).xs[-1]
    ref_check = float(jnp.sqrt(jnp.mean(jnp.sum((half - problem.target_test) ** 2, -1))))
    ref_scale = float(jnp.sqrt(jnp.mean(jnp.sum(
        (problem.target_test - problem.x_test) ** 2, -1))))
    say(f"... digits problem built in {time.perf_counter() - t0:.1f} s ({problem.objective}); "
        f"RMS(reference, half-step reference) = {ref_check:.3g}, RMS(start, reference) = "
        f"{ref_scale:.3g}")
    rows = []
    for solver in cfg["solvers"]:
        for n in cfg["ns"]:
            t0 = time.perf_counter()
            res = ST.optimize_steps(p, d, n, solver=solver, steps=cfg["iterations"],
                                    lr=cfg["lr"], problem=problem)
            errs = {**res.errors_standard, "optimised": res.error}
            std_best = min(res.errors_standard, key=res.errors_standard.get)
            rows.append({
                "data": "digits", "protocol": f"{DIGITS_PROTOCOL} (CFM model)", "solver": solver,
                "n": n, "errors": errs, "errors_train": res.errors_train,
                "best_standard": std_best, "init": res.init,
                "optimised_vs_uniform": res.error / res.error_uniform - 1.0,
                "optimised_vs_best_standard": res.error / res.errors_standard[std_best] - 1.0,
                "t_optimised": res.t, "best_step": res.best_step,
                "seconds": time.perf_counter() - t0})
            say(f"... digits {solver} N={n}: optimised {res.error:.4g}, uniform "
                f"{res.error_uniform:.4g}, best standard {std_best} "
                f"{res.errors_standard[std_best]:.4g}, best iteration {res.best_step} "
                f"({rows[-1]['seconds']:.1f} s)")
    return {"machine": bench.machine(), "settings": cfg, "quick": quick, "rows": rows,
            "data": DIGITS_DATA, "protocol": DIGITS_PROTOCOL, "model_dir": model_dir,
            "train": train, "method": problem.method,
            "reference_check": {"rms_half_steps_vs_reference": ref_check,
                                "rms_start_to_reference": ref_scale},
            "objectives": {"digits": "RMS distance to a many-step RK4 solve of the learned "
                                     "velocity from the same starts (held-out samples)"},
            "notes": ["the w2-length grid is built from the exact kinetic profile of the data "
                      "mixture (digits:width=0.1), not from the model"],
            "seconds": time.perf_counter() - t_all}


def run(quick: bool = False, say=print) -> dict:
    """Every (data, protocol, solver, N): the held-out error of each grid; the JSON document."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from satjax import bench
    from satjax import export as EX
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
                previous = None
                for n in cfg["ns"]:
                    t0 = time.perf_counter()
                    res = ST.optimize_steps(p, data, n, solver=solver, steps=iters, lr=lr,
                                            problem=problem)
                    errs = {**res.errors_standard, "optimised": res.error}
                    if previous is not None:  # Align Your Steps' rule: the previous optimum
                        errs["ays-interp"] = problem.error(     # carried log-linearly in σ
                            EX.interpolate_grid(p, previous, n), solver, "test")
                    previous = res.t
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
    ylabel = ("held-out RMS error to the RK4 reference" if "digits" in res.get("objectives", {})
              else "held-out W2 error")
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
    axs[0][0].set_ylabel(f"{ylabel} (solid Heun, dashed Euler)", fontsize=8)
    axs[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(filename, dpi=110)
    plt.close(fig)


def run_cli(folder, *, quick: bool = False, name: str = None, say=print, digits: bool = False,
            model_dir: str = None) -> dict:
    """What ``satjax bench --steps`` does: run, print the table, write NAME.json / NAME.png
    (``digits``: the trained digits model instead, :func:`run_digits`)."""
    from pathlib import Path

    from satjax.report import write_json, write_png

    folder = Path(folder)
    name = name or ("steps-quick" if quick else "steps")
    res = run_digits(quick, model_dir, say=say) if digits else run(quick, say=say)
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
                                                 "steps-quick with --quick; "
                                                 "steps-digits-cpu-2core / steps-digits-quick "
                                                 "with --digits)")
    ap.add_argument("--digits", action="store_true",
                    help="the trained digits CFM model (trains it first unless --model-dir "
                         "already holds it)")
    ap.add_argument("--model-dir", default=None,
                    help="digits model folder (default: satjax-steps-digits-model[-quick] in "
                         "the temporary folder)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    stem = "steps-digits" if args.digits else "steps"
    name = args.name or (f"{stem}-quick" if args.quick else f"{stem}-cpu-2core")
    return run_cli(args.out, quick=args.quick, name=name, digits=args.digits,
                   model_dir=args.model_dir,
                   say=lambda s: print(s, file=sys.stderr if s.startswith("...") else sys.stdout,
                                       flush=True))


if __name__ == "__main__":
    main()
