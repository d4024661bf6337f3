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
         plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of v_2(t)^2 and E|nu_t|^2.")] = None):
    """Thermodynamic and Wasserstein cost of the forward path (c2, wD, S_tot, W2^2, path length)."""
    setup(x64, tau)
    check_writable(json_out)
    check_writable(plot, "--plot")
    d, p = _parse(data, protocol, tau)
    _not_yet("path", 3)


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


@app.command()
def reproduce(name: Annotated[str, typer.Argument(help="fig6 | fig7 | fig8 | schedules | all")],
              quick: Annotated[bool, typer.Option("--quick", help="Small settings for CI.")] = False,
              out: Annotated[str, typer.Option("--out", help="Output folder.")] = "out",
              tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None):
    """Reproduce one of the paper's experiments (figure PNG + JSON + table)."""
    setup(x64, tau)
    if name not in ("fig6", "fig7", "fig8", "schedules", "all"):
        fail(f"unknown figure {name!r}; choose fig6, fig7, fig8, schedules or all")
    _not_yet("reproduce", 6)


@app.command()
def bench(quick: Annotated[bool, typer.Option("--quick")] = False, tau: Tau = 1.0, x64: X64 = False,
          seed: Seed = 0, json_out: JsonOut = None):
    """Benchmarks against reference implementations (see benchmarks/)."""
    setup(x64, tau)
    _not_yet("bench", 7)


if __name__ == "__main__":  # pragma: no cover
    app()
