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


def fail(message: str, code: int = 2):
    """Print a clear error and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def setup(x64: bool, tau: float):
    """Configure precision and validate common options before any computation."""
    import jax

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
        typer.echo("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if j == 0:
            typer.echo("  ".join("-" * w for w in widths))


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


def _not_yet(name: str, issue: int):
    fail(f"`satjax {name}` is not implemented in this version (tracked in issue {issue})", 3)


@app.command()
def path(data: DataSpec, protocol: ProtocolSpec, tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0,
         json_out: JsonOut = None,
         plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of v_2(t)^2 and E|nu_t|^2.")] = None,
         n_time: Annotated[int, typer.Option("--n-time", help="Gauss-Legendre time nodes.")] = 64,
         n_samples: Annotated[int, typer.Option("--n-samples", help="Monte-Carlo samples (n-D).")] = 4096):
    """Thermodynamic and Wasserstein cost of the forward path (c2, wD, S_tot, W2^2, path length)."""
    setup(x64, tau)
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
        typer.echo(f"{name}: {'holds' if ok else 'VIOLATED'}")
    emit_json(payload, json_out)
    if plot:
        from satjax.plotting import plot_path

        plot_path(payload, plot)
        typer.echo(f"wrote {plot}")


@app.command()
def bound(data: DataSpec, protocol: ProtocolSpec,
          perturb: Annotated[str, typer.Option("--perturb", help="Reverse-start perturbation, e.g. 'shift:0.1'.")],
          tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None):
    """The speed-accuracy relation eta <= c1 <= c2 (<= wD) for a reverse-start perturbation."""
    setup(x64, tau)
    _parse(data, protocol, tau)
    _not_yet("bound", 5)


@app.command()
def train(data: DataSpec, protocol: ProtocolSpec, tau: Tau = 1.0, x64: X64 = False, seed: Seed = 0,
          json_out: JsonOut = None):
    """Train a score or flow-matching model (DSM, CFM, OT-CFM)."""
    setup(x64, tau)
    _parse(data, protocol, tau)
    _not_yet("train", 4)


@app.command()
def optimize(data: DataSpec, tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None):
    """Optimise a learnable schedule for c2, wD or the conditional energy."""
    setup(x64, tau)
    _parse(data, None, tau)
    _not_yet("optimize", 5)


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
    typer.echo(f"eta equal across protocols: {res['eta_agrees_across_protocols']}; "
               f"all inequalities hold: {res['all_inequalities_hold']}; {res['seconds']:.1f} s")
    _write_json_atomic(res, outdir / "fig6.json")
    plot_fig6(res, str(outdir / "fig6.png"))
    typer.echo(f"wrote {outdir / 'fig6.json'} and {outdir / 'fig6.png'}")
    return res


@app.command()
def reproduce(name: Annotated[str, typer.Argument(help="fig6 | fig7 | fig8 | schedules | all")],
              quick: Annotated[bool, typer.Option("--quick", help="Small settings for CI.")] = False,
              out: Annotated[str, typer.Option("--out", help="Output folder.")] = "out",
              means: Annotated[str, typer.Option("--means", help="fig6: the two component means.")] = "-2,2",
              std: Annotated[float, typer.Option("--std", help="fig6: component standard deviation.")] = 0.5,
              tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None):
    """Reproduce one of the paper's experiments (figure PNG + JSON + table)."""
    setup(x64, tau)
    if name not in FIGURES + ("all",):
        fail(f"unknown figure {name!r}; choose fig6, fig7, fig8, schedules or all")
    outdir = _prepare_out(out)
    names = FIGURES if name == "all" else (name,)
    missing = [n for n in names if n != "fig6"]
    if missing and name != "all":
        _not_yet(f"reproduce {name}", 6)
    results = {}
    for n in names:
        if n == "fig6":
            results[n] = _reproduce_fig6(outdir, quick, tau, means, std)
    if json_out:
        emit_json({k: {kk: v[kk] for kk in ("cases", "eta_agrees_across_protocols",
                                             "all_inequalities_hold")} for k, v in results.items()},
                  json_out)
    if missing:
        _not_yet("reproduce " + ", ".join(missing), 6)


@app.command()
def bench(quick: Annotated[bool, typer.Option("--quick")] = False, tau: Tau = 1.0, x64: X64 = False,
          seed: Seed = 0, json_out: JsonOut = None):
    """Benchmarks against reference implementations (see benchmarks/)."""
    setup(x64, tau)
    _not_yet("bench", 7)


if __name__ == "__main__":  # pragma: no cover
    app()
