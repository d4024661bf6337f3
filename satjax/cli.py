"""The ``satjax`` command line: parse specs, call the library, print tables, write JSON/PNG.

Every command takes ``--tau``, ``--x64``, ``--seed`` and ``--json PATH`` (``-`` for stdout).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="satjax: thermodynamics and optimal transport of diffusion models "
         "(speed-accuracy relations, arXiv:2407.04495). Time: t = 0 data, t = tau noise.")

Tau = Annotated[float, typer.Option("--tau", help="Protocol duration tau > 0.")]
X64 = Annotated[bool, typer.Option("--x64/--x32", help="Compute in float64 (default) or float32.")]
Seed = Annotated[int, typer.Option("--seed", help="PRNG seed.")]
JsonOut = Annotated[Optional[str], typer.Option("--json", help="Write results as JSON to PATH ('-': stdout).")]
DataSpec = Annotated[str, typer.Option("--data", help="Data spec, e.g. 'gmm:means=-2|2,std=0.5'.")]
ProtocolSpec = Annotated[str, typer.Option("--protocol", help="Protocol spec, e.g. 'cosine', 'rotating:h=1,g=3,tfin=2'.")]


_STATE = {"json_stdout": False}


def say(text: str = ""):
    """Human-readable output: stdout, or stderr when the JSON goes to stdout (--json -)."""
    typer.echo(text, err=_STATE["json_stdout"])


def fail(message: str, code: int = 2):
    """Print a clear error and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def setup(x64: bool, tau: float, json_out: Optional[str] = None):
    """Configure precision and validate common options before any computation."""
    import jax

    _STATE["json_stdout"] = json_out == "-"
    jax.config.update("jax_enable_x64", bool(x64))
    if not (math.isfinite(tau) and tau > 0):
        fail(f"--tau must be a finite number > 0; got {tau}")


def check_writable(path: Optional[str], what: str = "--json"):
    """Fail early when an output file cannot be written."""
    if path is None or path == "-":
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        fail(f"{what}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        fail(f"{what}: folder {parent} is not writable")


def emit_json(payload: dict, path: Optional[str]):
    """Write a JSON document to PATH or stdout."""
    if path is None:
        return
    text = json.dumps(payload, indent=2, default=float, allow_nan=True)
    if path == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(path).write_text(text + "\n")


def print_table(rows, headers):
    """Plain aligned text table."""
    cells = [[h for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, r in enumerate(cells):
        say("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if j == 0:
            say("  ".join("-" * w for w in widths))


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _parse(data: str, protocol: Optional[str], tau: float):
    from satjax import specs

    try:
        d = specs.parse_data(data)
        p = specs.parse_protocol(protocol, tau=tau, data=d) if protocol is not None else None
    except (ValueError, TypeError) as err:
        fail(str(err))
    return d, p


@app.command()
def path(data: DataSpec, protocol: ProtocolSpec, tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0,
         json_out: JsonOut = None,
         plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of v_2(t)^2 and E|nu_t|^2.")] = None,
         n_time: Annotated[int, typer.Option("--n-time", help="Gauss-Legendre time nodes.")] = 64,
         n_samples: Annotated[int, typer.Option("--n-samples", help="Monte-Carlo samples (n-D).")] = 4096):
    """Thermodynamic and Wasserstein cost of the forward path (c2, wD, S_tot, W2^2, path length)."""
    setup(x64, tau, json_out)
    check_writable(json_out)
    check_writable(plot, "--plot")
    if n_time < 2 or n_samples < 2:
        fail("--n-time and --n-samples must be >= 2")
    d, p = _parse(data, protocol, tau)
    import jax

    from satjax import path as sjpath

    key = jax.random.PRNGKey(seed)
    try:
        res = sjpath.path_report(p, d, key=key, n_time=n_time, n_samples=n_samples)
    except (ValueError, TypeError) as err:
        fail(str(err))
    payload = {"data": data, "protocol": protocol, "tau": tau, **res}
    rows = [(k, payload[k]) for k in ("wD", "c2", "path_length", "S_tot", "W2sq", "W2sq_over_tau",
                                      "length_sq_over_tau", "method")]
    print_table(rows, ["quantity", "value"])
    for name, ok in payload["hierarchy"].items():
        say(f"{name}: {'holds' if ok else 'VIOLATED'}")
    emit_json(payload, json_out)
    if plot:
        from satjax.plotting import plot_path

        plot_path(payload, plot)
        say(f"wrote {plot}")


@app.command()
def bound(data: DataSpec, protocol: ProtocolSpec,
          perturb: Annotated[str, typer.Option("--perturb", help="Reverse-start perturbation: shift:D, scale:S, gaussian, npy:path=F,width=W.")],
          tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None,
          plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of v_loss^2, T S_tot and W1 over t.")] = None,
          model: Annotated[Optional[str], typer.Option("--model", help="Learned velocity (model folder).")] = None,
          n_time: Annotated[int, typer.Option("--n-time", help="Gauss-Legendre time nodes.")] = 48,
          samples: Annotated[int, typer.Option("--samples", help="n-D: particles per transported set.")] = 1000):
    """The speed-accuracy relation eta <= c1 <= c2 (<= wD) for a reverse-start perturbation."""
    setup(x64, tau, json_out)
    check_writable(json_out)
    check_writable(plot, "--plot")
    from satjax import perturb as PT

    try:
        pert = PT.parse(perturb)
    except ValueError as err:
        fail(str(err))
    d, p = _parse(data, protocol, tau)
    if samples < 2 or n_time < 2:
        fail(f"--samples and --n-time must be >= 2; got {samples} and {n_time}")
    import jax

    from satjax import bound as B

    if model is not None:
        _bound_learned(model, d, p, pert, data, protocol, perturb, tau, json_out, seed, samples,
                       n_time)
        return

    try:
        if d.dim == 1:
            r = B.bound_1d(p, d, pert, n_time=n_time)
            method, ts = "exact-1d", r.ts
        else:
            r = B.bound_samples(jax.random.PRNGKey(seed), p, d, pert, n=samples)
            method, ts = "samples", r.t_mid
    except (ValueError, TypeError) as err:
        fail(str(err))
    payload = {"data": data, "protocol": protocol, "perturb": perturb, "tau": tau,
               **r.summary(), "holds": r.holds(), "method": method,
               "t": [float(v) for v in ts], "v_loss_sq": [float(v) for v in r.v_loss_sq],
               "kinetic": [float(v) for v in r.kinetic],
               "W1": [float(v) for v in (r.W1 if d.dim == 1 else 0.5 * (r.W1[1:] + r.W1[:-1]))]}
    print_table([(k, payload[k]) for k in ("eta", "c1", "c2", "wD", "D0", "dW1", "W1_start", "W1_end")],
                ["quantity", "value"])
    for name, ok in payload["holds"].items():
        say(f"{name}: {'holds' if ok else 'VIOLATED'}")
    emit_json(payload, json_out)
    if plot:
        from satjax.plotting import plot_bound

        plot_bound(payload, plot)
        say(f"wrote {plot}")


def _bound_learned(model, d, p, pert, data, protocol, perturb, tau, json_out, seed, samples,
                   n_time):
    """Eq. 100 with a learned velocity: exact in 1-D; in n-D by samples, with η and c1."""
    import math

    from satjax import bound as B
    from satjax import learn
    from satjax import reverse as R

    try:
        fn, spec = learn.load_model(model)
    except ValueError as err:
        fail(str(err))
    if spec.dim != d.dim:
        fail(f"model {model} has dimension {spec.dim} but the data have dimension {d.dim}")
    fld = R.as_field(fn)
    if spec.kind == "score":
        if not math.isfinite(float(p.temperature(p.tau))):
            fail("a score model needs a finite temperature at t = tau to act as a velocity "
                 "(Eq. 11); this protocol has m_tau = 0 — train a velocity model (cfm) instead")
        fld = R.velocity_from_score(p, fld)
    if d.dim > 1:
        import jax

        try:
            k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
            r = B.bound_samples(k1, p, d, pert, velocity=fld, n=samples, n_time=n_time)
            r100 = B.bound_imperfect_samples(k2, p, d, pert, fld, n=samples, n_time=n_time)
        except (ValueError, TypeError) as err:
            fail(str(err))
        eq100 = {k: v for k, v in r100.summary().items() if k not in ("wD", "dW1")}
        payload = {"data": data, "protocol": protocol, "perturb": perturb, "tau": tau,
                   "model": model, "method": "samples, learned velocity (Eq. 100 by samples)",
                   **r.summary(), "eq100": {**eq100, "dW1": float(r100.dW1),
                                            "t": [float(v) for v in r100.ts],
                                            "D": [float(v) for v in r100.D],
                                            "D_stderr": [float(v) for v in r100.D_stderr]},
                   "holds": {**r.holds(), **r100.holds()}}
        print_table([(k, payload[k]) for k in ("eta", "c1", "c2", "wD", "D0", "dW1")]
                    + [(k, eq100[k]) for k in ("D_max", "L_alpha", "lhs", "rhs")],
                    ["quantity", "value"])
        say(f"Eq. 100 (by samples) |dW1|/sqrt(tau D_max) <= sqrt(wD) + sqrt(1 + 1/D_max) "
            f"sqrt(tau L_alpha): {'holds' if r100.holds()['eq100'] else 'VIOLATED'}")
        emit_json(payload, json_out)
        return
    try:
        r = B.bound_imperfect_1d(p, d, pert, fld)
    except (ValueError, TypeError) as err:
        fail(str(err))
    payload = {"data": data, "protocol": protocol, "perturb": perturb, "tau": tau,
               "model": model, "method": "learned-velocity-1d (Eq. 100)", **r.summary(),
               "holds": r.holds(), "t": [float(v) for v in r.ts], "D": [float(v) for v in r.D],
               "W1": [float(v) for v in r.W1]}
    print_table([(k, payload[k]) for k in ("D_max", "L_alpha", "wD", "dW1", "lhs", "rhs")],
                ["quantity", "value"])
    say(f"Eq. 100 |dW1|/sqrt(tau D_max) <= sqrt(wD) + sqrt(1 + 1/D_max) sqrt(tau L_alpha): "
        f"{'holds' if r.holds()['eq100'] else 'VIOLATED'}")
    emit_json(payload, json_out)


def _generate(fn, kind, p, d, key, n, n_steps=200):
    """Samples of the learned model: exact P_tau samples carried back by the probability-flow ODE."""

    from satjax import reverse as R
    from satjax.forward import sample_marginal

    x_tau = sample_marginal(key, p, d, p.tau, n)
    fld = R.as_field(fn)
    t_start = p.tau
    if kind == "score":
        fld = R.velocity_from_score(p, fld)
        t_start = p.tau * (1 - 1e-3)  # f and T may be singular at tau (m_tau = 0)
    out = R.reverse_ode(fld, x_tau, t_start=t_start, n_steps=n_steps)
    if not bool(out.finite):
        fail("generation produced non-finite samples")
    return out.xs[-1]


def _w1_to_data(x, d, key):
    from satjax.geometry import distances

    ref = d.sample(key, max(4 * x.shape[0], 4000) if d.dim == 1 else x.shape[0])
    if d.dim == 1:
        return float(distances.wasserstein_1d_samples(x[:, 0], ref[:, 0], p=1))
    return float(distances.ot_cost(x, ref, p=1, backend="pot").cost)


@app.command()
def train(data: DataSpec, protocol: ProtocolSpec,
          loss: Annotated[str, typer.Option("--loss", help="dsm | cfm | ot-cfm")] = "cfm",
          steps: Annotated[int, typer.Option("--steps")] = 2000,
          out: Annotated[str, typer.Option("--out", help="Model folder (checkpoints).")] = "model",
          batch_size: Annotated[int, typer.Option("--batch-size")] = 256,
          lr: Annotated[float, typer.Option("--lr")] = 3e-3,
          width: Annotated[int, typer.Option("--width")] = 64,
          depth: Annotated[int, typer.Option("--depth")] = 3,
          tau: Tau = 1.0, x64: X64 = False, seed: Seed = 0, json_out: JsonOut = None):
    """Train a score (DSM) or flow-matching (CFM, OT-CFM) model; writes the model to --out."""
    setup(x64, tau, json_out)
    check_writable(json_out)
    if loss not in ("dsm", "cfm", "ot-cfm"):
        fail(f"--loss must be dsm, cfm or ot-cfm; got {loss!r}")
    if steps < 1:
        fail("--steps must be >= 1")
    d, p = _parse(data, protocol, tau)
    outdir = _prepare_out(out)
    import jax

    from satjax import learn

    key = jax.random.PRNGKey(seed)
    k_train, k_res, k_gen, k_ref = jax.random.split(key, 4)
    try:
        res = learn.train(k_train, p, d, loss=loss, steps=steps, batch_size=batch_size, lr=lr,
                          width=width, depth=depth, lr_schedule="cosine", checkpoint_dir=str(outdir),
                          checkpoint_every=max(steps // 4, 1), protocol_spec=protocol, tau=tau)
    except (ValueError, TypeError) as err:
        fail(str(err))
    except FloatingPointError as err:
        fail(f"training stopped: {err}", 4)
    (outdir / "satjax_cli.json").write_text(json.dumps({"data": data, "protocol": protocol,
                                                         "tau": tau, "loss": loss}) + "\n")
    fn = res.field()
    kind = res.spec.kind
    r = learn.residual(k_res, fn, p, d, kind=kind, n_samples=1024, n_time=16)
    x = _generate(fn, kind, p, d, k_gen, 2000)
    payload = {"data": data, "protocol": protocol, "loss": loss, "steps": steps,
               "final_loss": float(res.losses[-1]), "residual": float(r.value),
               "residual_stderr": float(r.stderr), "residual_relative": float(r.relative),
               "W1_to_data": _w1_to_data(x, d, k_ref), "train_seconds": float(res.train_seconds),
               "model": str(outdir)}
    print_table([(k, payload[k]) for k in ("final_loss", "residual", "residual_relative",
                                           "W1_to_data", "train_seconds")], ["quantity", "value"])
    emit_json(payload, json_out)


@app.command()
def sample(model: Annotated[str, typer.Option("--model", help="Model folder written by `satjax train`.")],
           n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 1000,
           out: Annotated[str, typer.Option("--out", help="Output .npy file.")] = "samples.npy",
           tau: Tau = 1.0, x64: X64 = False, seed: Seed = 0, json_out: JsonOut = None):
    """Generate samples from a trained model (probability-flow ODE from exact P_tau samples)."""
    setup(x64, tau, json_out)
    check_writable(out, "--out")
    if n < 1:
        fail("--n must be >= 1")
    meta_path = Path(model) / "satjax_cli.json"
    if not meta_path.is_file():
        fail(f"{model} is not a model folder written by `satjax train` (no satjax_cli.json)")
    import jax
    import numpy as np

    from satjax import learn

    meta = json.loads(meta_path.read_text())
    try:
        fn, spec = learn.load_model(model)
    except ValueError as err:
        fail(str(err))
    d, p = _parse(meta["data"], meta["protocol"], meta["tau"])
    x = _generate(fn, spec.kind, p, d, jax.random.PRNGKey(seed), n)
    np.save(out, np.asarray(x))
    say(f"wrote {n} samples of dimension {x.shape[1]} to {out}")
    emit_json({"model": model, "n": n, "out": out}, json_out)


@app.command()
def optimize(data: DataSpec,
             family: Annotated[str, typer.Option("--family", help="free | vp")] = "free",
             objective: Annotated[str, typer.Option("--objective", help="c2 | wD | conditional")] = "c2",
             steps: Annotated[int, typer.Option("--steps")] = 300,
             lr: Annotated[float, typer.Option("--lr")] = 0.05,
             n_basis: Annotated[int, typer.Option("--n-basis")] = 6,
             tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None,
             plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of the schedules in the (sigma, m) plane.")] = None):
    """Optimise a learnable schedule for c2, wD or the conditional energy (Eq. 93)."""
    setup(x64, tau, json_out)
    check_writable(json_out)
    check_writable(plot, "--plot")
    if family not in ("free", "vp"):
        fail(f"--family must be free or vp; got {family!r}")
    if objective not in ("c2", "wD", "conditional"):
        fail(f"--objective must be c2, wD or conditional; got {objective!r}")
    d, _ = _parse(data, None, tau)
    import jax
    import numpy as np

    from satjax import optimize as O
    from satjax import path as sjpath
    from satjax import schedules as S

    key = jax.random.PRNGKey(seed)
    k_opt, k_eval, k_w2 = jax.random.split(key, 3)
    try:
        res = O.optimize_schedule(d, family=family, objective=objective, tau=tau, n_basis=n_basis,
                                  steps=steps, learning_rate=lr, key=k_opt, progress=True)
    except (ValueError, TypeError) as err:
        fail(str(err))

    def c2(sch):
        pc = sjpath.path_cost(sch, d, key=k_eval)
        return float(pc.c2), float(pc.c2_stderr)

    w2sq, w2_method = sjpath.endpoint_w2sq(S.cosine(tau), d, key=k_w2)
    ts = np.linspace(0.0, tau, 101)
    sch = res.schedule
    payload = {"data": data, "family": family, "objective": objective, "steps": res.steps,
               "diverged": res.diverged, "objective_final": float(res.best_value),
               "c2_initial": c2(res.initial)[0], "c2_final": c2(sch)[0],
               "c2_final_stderr": c2(sch)[1], "c2_cosine": c2(S.cosine(tau))[0],
               "c2_condot": c2(S.cond_ot(tau))[0], "W2sq": w2sq, "W2sq_over_tau": w2sq / tau,
               "W2sq_method": w2_method,
               "t": ts.tolist(), "m": [float(sch.m(t)) for t in ts],
               "sigma": [float(sch.sigma(t)) for t in ts],
               "angle": np.asarray(sch.angle).tolist(), "log_radius": np.asarray(sch.log_radius).tolist()}
    payload["gap_to_W2"] = payload["c2_final"] / payload["W2sq_over_tau"] - 1.0
    print_table([(k, payload[k]) for k in ("c2_initial", "c2_final", "c2_cosine", "c2_condot",
                                           "W2sq_over_tau", "gap_to_W2")], ["quantity", "value"])
    if res.diverged:
        say("optimisation diverged (non-finite objective); the best schedule so far is reported")
    emit_json(payload, json_out)
    if plot:
        from satjax.plotting import plot_schedules

        plot_schedules(payload, plot, tau)
        say(f"wrote {plot}")


FIGURES = ("fig6", "fig7", "fig8", "schedules")


def _prepare_out(out: str) -> Path:
    """Create the output folder or fail before any computation."""
    d = Path(out).expanduser()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"--out: cannot create folder {d}: {err}")
    if not os.access(d, os.W_OK):
        fail(f"--out: folder {d} is not writable")
    return d


def _write_json_atomic(payload: dict, path: Path):
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def _reproduce_fig6(outdir: Path, quick: bool, tau: float, means: str, std: float):
    from satjax.experiments import fig6
    from satjax.plotting import plot_fig6

    try:
        m = tuple(float(v) for v in means.split(","))
    except ValueError:
        fail(f"--means must be two numbers 'a,b'; got {means!r}")
    if len(m) != 2 or not std > 0:
        fail("--means needs two numbers and --std must be > 0")
    res = fig6.run(quick=quick, tau=tau, means=m, std=std)
    rows = [(c["protocol"], c["perturb"], c["eta"], c["c1"], c["c2"], c["wD"], c["D0"],
             "yes" if all(c["holds"].values()) else "NO") for c in res["cases"]]
    print_table(rows, ["protocol", "perturb", "eta", "c1", "c2", "wD", "D0", "holds"])
    say(f"eta equal across protocols: {res['eta_agrees_across_protocols']}; "
        f"all inequalities hold: {res['all_inequalities_hold']}")
    return _save_figure(outdir, "fig6", res, plot_fig6)


def _save_figure(outdir: Path, name: str, res: dict, plot_fn) -> dict:
    """Write NAME.json and NAME.png atomically and say so."""
    _write_json_atomic(res, outdir / f"{name}.json")
    plot_fn(res, str(outdir / f"{name}.png"))
    say(f"wrote {outdir / (name + '.json')} and {outdir / (name + '.png')} ({res['seconds']:.1f} s)")
    return res


def _reproduce_fig7(outdir: Path, quick: bool, tau: float, seed: int):
    from satjax.experiments import fig7
    from satjax.plotting import plot_fig7

    res = fig7.run(quick=quick, tau=tau, seed=seed)
    rows = [(k, v["eta"], v["eta_stderr"], v["c1"], v["c2"], v["wD"], v["paper_eta"])
            for k, v in res["summary"].items()]
    print_table(rows, ["case", "eta", "eta_se", "c1", "c2", "wD", "paper eta"])
    say(res["statement"] + f"; all inequalities hold: {res['all_inequalities_hold']}")
    return _save_figure(outdir, "fig7", res, plot_fig7)


def _reproduce_schedules(outdir: Path, quick: bool, tau: float, seed: int):
    from satjax.experiments import schedules as study
    from satjax.plotting import plot_schedules_study

    res = study.run(quick=quick, tau=tau, seed=seed)
    rows = [(k, v["c2_cosine"], v["c2_condot"], v["c2_optimised"], v["c2_optimised_stderr"],
             v["W2sq_over_tau"], v["gap_to_W2"], "yes" if v["beats_cosine_and_condot"] else "no")
            for k, v in res["results"].items()]
    print_table(rows, ["data", "c2 cosine", "c2 cond-OT", "c2 optimised", "s.e.", "W2^2/tau",
                       "gap", "beats both"])
    return _save_figure(outdir, "schedules", res, plot_schedules_study)


def _reproduce_fig8(outdir: Path, quick: bool, tau: float, seed: int):
    from satjax.experiments import fig8
    from satjax.plotting import plot_fig8

    res = fig8.run(quick=quick, tau=tau, seed=seed)
    rows = [(c["loss"], c["eta"], c["c2"], c["c2_stderr"], c["ratio_eta_over_c2"], c["D0_G21"],
             "yes" if c["holds"]["eta<=c2"] else "NO") for c in res["cases"]]
    print_table(rows, ["model", "eta", "c2", "c2_se", "eta/c2", "D0 (G21)", "eta<=c2"])
    return _save_figure(outdir, "fig8", res, plot_fig8)


@app.command()
def reproduce(name: Annotated[str, typer.Argument(help="fig6 | fig7 | fig8 | schedules | all")],
              quick: Annotated[bool, typer.Option("--quick", help="Small settings for CI.")] = False,
              out: Annotated[str, typer.Option("--out", help="Output folder.")] = "out",
              means: Annotated[str, typer.Option("--means", help="fig6: the two component means.")] = "-2,2",
              std: Annotated[float, typer.Option("--std", help="fig6: component standard deviation.")] = 0.5,
              tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None):
    """Reproduce one of the paper's experiments (figure PNG + JSON + table)."""
    setup(x64, tau, json_out)
    if name not in FIGURES + ("all",):
        fail(f"unknown figure {name!r}; choose fig6, fig7, fig8, schedules or all")
    outdir = _prepare_out(out)
    names = FIGURES if name == "all" else (name,)
    results = {}
    for n in names:
        if n == "fig6":
            results[n] = _reproduce_fig6(outdir, quick, tau, means, std)
        elif n == "fig7":
            results[n] = _reproduce_fig7(outdir, quick, tau, seed)
        elif n == "fig8":
            results[n] = _reproduce_fig8(outdir, quick, tau, seed)
        elif n == "schedules":
            results[n] = _reproduce_schedules(outdir, quick, tau, seed)
    if json_out:
        emit_json({k: {kk: v[kk] for kk in ("cases", "all_inequalities_hold") if kk in v}
                   for k, v in results.items()}, json_out)


@app.command()
def bench(quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes (seconds; for CI).")] = False,
          scaling: Annotated[bool, typer.Option("--scaling", help="Also the doubling table of c_2 (N, M, d, K).")] = False,
          big: Annotated[bool, typer.Option("--big", help="Only the MNIST-sized c_2 run (70 000 components, 784-D, 1e5 samples; minutes).")] = False,
          out: Annotated[str, typer.Option("--out", help="Folder for bench.json and bench.png.")] = "out",
          json_out: JsonOut = None):
    """Benchmarks against reference implementations in the same run (float32; see benchmarks/)."""
    setup(False, 1.0, json_out)
    check_writable(json_out)
    outdir = _prepare_out(out)
    from satjax import bench as B

    if big:
        say("MNIST-sized c_2: 70 000 components, d = 784, 100 000 samples, 2 time nodes ...")
        res = {"machine": B.machine(), "big": B.big_c2()}
        r = res["big"]
        say(f"c2 = {r['c2']:.6g} in {r['seconds']:.1f} s (compile {r['compile_s']:.1f} s); "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, XLA peak {r['peak_mb']:.0f} MB")
        _write_json_atomic(res, outdir / "bench_big.json")
        emit_json(res, json_out)
        return
    res = B.run(quick, progress=lambda s: say(f"... {s}"))
    if scaling:
        res["scaling"] = B.scaling(quick, progress=lambda s: say(f"... {s}"))
    for line in B.format_rows(res["comparisons"]):
        say(line)
    rl = res["rooflines"]
    say(f"machine: XLA GEMM {rl['xla_gemm_gflops']:.0f} GFLOP/s, exp {rl['xla_exp_per_ns']:.2f}/ns "
        f"(XLA), {rl['numpy_exp_per_ns']:.2f}/ns (NumPy)")
    if scaling:
        print_table([[r["varied"], r["factor"], r["N"], r["M"], r["d"], r["K"], r["seconds"],
                      r["peak_mb"], "" if r["exponent"] is None else round(r["exponent"], 2)]
                     for r in res["scaling"]["rows"]],
                    ["varied", "x", "N", "M", "d", "K", "seconds", "peak MB", "exponent"])
    from satjax.plotting import plot_bench

    _write_json_atomic(res, outdir / "bench.json")
    plot_bench(res, str(outdir / "bench.png"))
    say(f"wrote {outdir / 'bench.json'} and {outdir / 'bench.png'}")
    emit_json(res, json_out)


if __name__ == "__main__":  # pragma: no cover
    app()
