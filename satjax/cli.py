"""The ``satjax`` command line: validate every input, call the library, write one report.

Every command validates its options and specs first (without importing JAX; :mod:`satjax.specs`
and :mod:`satjax.report`), so bad input fails at once with exit code 2 and a one-line message,
before any computation and before anything is written. Exit codes: 0 done; 2 bad input;
3 computed, but the relation is vacuous or undefined (reported); 4 numerical failure (NaN, an
unconverged solver; reported); 130 interrupted; 1 an internal error (a bug: please report it).

Every command takes ``--json PATH`` (``-``: stdout) and ``--quiet``; all but ``measure`` and
``bench`` take ``--x64/--x32``, ``--seed`` and ``--no-cache`` (JAX's persistent compilation
cache, on by default, in ``$SATJAX_CACHE_DIR`` or ``~/.cache/satjax``; ``SATJAX_NO_CACHE=1``
turns it off like ``--no-cache``), and the commands that build a protocol take ``--tau``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from satjax import specs
from satjax.report import (Console, OutputError, WriteError, check_outputs, prepare_folder,
                           same_file)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="satjax: thermodynamics and optimal transport of diffusion models "
         "(speed-accuracy relations, arXiv:2407.04495). Time: t = 0 data, t = tau noise.")

Tau = Annotated[float, typer.Option("--tau", help="Protocol duration tau > 0.")]
CACHE_MAX_BYTES = 2 << 30  # the compilation cache evicts least recently used entries beyond it
X64 = Annotated[bool, typer.Option("--x64/--x32", help="Compute in float64 or float32.")]
Seed = Annotated[int, typer.Option("--seed", help="PRNG seed, 0 ... 2^32 - 1.")]
JsonOut = Annotated[Optional[str], typer.Option("--json", help="Write results as JSON to PATH ('-': stdout).")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not use JAX's persistent compilation cache.")]
DataSpec = Annotated[str, typer.Option("--data", help="Data spec, e.g. 'gmm:means=-2|2,std=0.5'.")]
ProtocolSpec = Annotated[str, typer.Option("--protocol", help="Protocol spec, e.g. 'cosine', 'rotating:h=1,g=3,tfin=2'.")]

EXIT_INPUT, EXIT_VACUOUS, EXIT_NUMERICAL, EXIT_INTERRUPTED = 2, 3, 4, 130
TAU_RANGE = {True: (1e-6, 1e6), False: (1e-3, 1e3)}
MODEL_META = "satjax_cli.json"


class InputError(ValueError):
    """Bad command-line input (exit code 2)."""


class NumericalError(RuntimeError):
    """A computation that produced NaN or did not converge (exit code 4)."""


@dataclass
class Run:
    """The common options of one command, validated."""

    tau: float
    x64: bool
    seed: int
    json_out: Optional[str]
    console: Console

    def key(self, *fold):
        import jax

        k = jax.random.PRNGKey(self.seed)
        for f in fold:
            k = jax.random.fold_in(k, f)
        return k


_INTERRUPT_REPORTED = []


def interrupt_reported() -> bool:
    """Whether a command already said why it stopped on Ctrl-C (see satjax.__main__)."""
    return bool(_INTERRUPT_REPORTED)


def fail(message: str, code: int = EXIT_INPUT):
    typer.echo(f"error: {message}", err=True)
    if code == EXIT_INTERRUPTED:
        _INTERRUPT_REPORTED.append(True)
    raise typer.Exit(code)


def handled(fn):
    """One error handler for every command: messages, exit codes, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except WriteError as err:  # the result was computed but could not be saved
            fail(str(err), EXIT_NUMERICAL)
        except (InputError, OutputError, specs.SpecError) as err:
            fail(str(err))
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except NumericalError as err:
            fail(str(err), EXIT_NUMERICAL)
        except FloatingPointError as err:
            fail(f"numerical failure: {err}", EXIT_NUMERICAL)
        except (ValueError, TypeError) as err:  # validation inside the library
            fail(str(err))
        except MemoryError:
            fail("out of memory: use smaller sizes", EXIT_NUMERICAL)
        except OSError as err:
            fail(f"{err.strerror or err}: {getattr(err, 'filename', '') or ''}".rstrip(": "))
        except Exception as err:  # pragma: no cover - a bug
            if os.environ.get("SATJAX_DEBUG"):
                raise
            fail(f"internal error ({type(err).__name__}: {err}); set SATJAX_DEBUG=1 for the "
                 "traceback and please report it", 1)

    return wrapper


def start(tau: float, x64: bool, seed: int, json_out: Optional[str], quiet: bool,
          no_cache: bool, outputs: Optional[dict] = None, inputs=(), folders=None) -> Run:
    """Validate the common options and the outputs (no JAX; ``inputs``: the files and folders
    the command reads, ``folders``: output folders whose files it writes), then configure JAX."""
    lo, hi = TAU_RANGE[bool(x64)]
    if not (math.isfinite(tau) and lo <= tau <= hi):
        raise InputError(f"--tau must be a number in [{lo:g}, {hi:g}] with "
                         f"{'--x64' if x64 else '--x32'}; got {tau:g}")
    if not 0 <= seed <= specs.SEED_MAX:
        raise InputError(f"--seed must be an integer in [0, {specs.SEED_MAX}]; got {seed}")
    check_outputs({"--json": json_out, **(outputs or {})}, inputs, folders or {})
    no_cache = no_cache or os.environ.get("SATJAX_NO_CACHE", "") not in ("", "0")
    if not no_cache:  # XLA:CPU logs a harmless machine-feature notice per cached program
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    jax.config.update("jax_enable_x64", bool(x64))
    if not no_cache:
        cache = os.environ.get("SATJAX_CACHE_DIR") or str(Path.home() / ".cache" / "satjax")
        try:
            Path(cache).mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
            # a size limit turns on JAX's file lock around cache reads and writes: without it an
            # entry is written in place, and a second satjax process reading it half-written
            # crashed (a segfault seen with two test workers)
            jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
        except OSError:
            pass  # an unwritable cache only costs compile time
    return Run(tau=tau, x64=bool(x64), seed=seed, json_out=json_out,
               console=Console(json_stdout=json_out == "-", quiet=quiet))


def check_dims(data: specs.Spec, protocol: Optional[specs.Spec] = None,
               perturbation: Optional[specs.Spec] = None) -> None:
    d = specs.data_dim(data)
    for other, what in ((protocol, "protocol"), (perturbation, "perturbation")):
        if other is None or d is None:
            continue
        od = specs.protocol_dim(other) if what == "protocol" else specs.data_dim(other)
        if od is not None and od != d:
            raise InputError(f"--{'perturb' if what == 'perturbation' else what} "
                             f"{other.text!r} has dimension {od} but --data {data.text!r} "
                             f"has dimension {d}")


def memory_limit() -> float:
    """The most memory a command may plan to use: 3/4 of this machine's physical memory."""
    return 0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(need: float, what: str, change: str) -> None:
    """Exit 2 before any work when an estimated peak of ``need`` bytes exceeds 3/4 of this
    machine's physical memory, naming the size and ``change`` (what to make smaller)."""
    total = memory_limit() / 0.75
    if need > memory_limit():
        raise InputError(f"{what} needs about {need / 2**30:.1f} GiB, more than 3/4 of this "
                         f"machine's {total / 2**30:.0f} GiB: {change}")


def check_range(name: str, value, lo, hi):
    if not (lo <= value <= hi):
        raise InputError(f"{name} must lie in [{lo}, {hi}]; got {value}")


def finish(run: Run, payload: dict, verdicts: Optional[dict] = None) -> None:
    """Write the JSON and exit 3 when a verdict is vacuous or undefined."""
    from satjax.report import write_json

    write_json(payload, run.json_out)
    bad = [k for k, v in (verdicts or {}).items() if v.status in ("vacuous", "undefined")]
    if bad:
        run.console.say(f"not meaningful: {', '.join(bad)} (see the reasons above)")
        raise typer.Exit(EXIT_VACUOUS)


# ------------------------------------------------------------------------------------ path


@app.command()
@handled
def path(data: DataSpec, protocol: ProtocolSpec,
         estimator: Annotated[str, typer.Option("--estimator", help="auto | exact | quadrature | grid | mc")] = "auto",
         n_time: Annotated[int, typer.Option("--n-time", help="Gauss-Legendre time nodes.")] = 32,
         n_samples: Annotated[int, typer.Option("--n-samples", help="Monte-Carlo samples (estimator mc).")] = 4096,
         plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of v_2(t)^2 and E|nu_t|^2.")] = None,
         tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None,
         quiet: Quiet = False, no_cache: NoCache = False):
    """Thermodynamic and Wasserstein cost of the forward path (c2, wD, S_tot, W2^2, length)."""
    d_spec, p_spec = specs.parse_data(data), specs.parse_protocol(protocol)
    check_dims(d_spec, p_spec)
    check_range("--n-time", n_time, 4, 4096)
    check_range("--n-samples", n_samples, 4, 10_000_000)
    if estimator not in ("auto", "exact", "quadrature", "grid", "mc"):
        raise InputError(f"--estimator must be auto, exact, quadrature, grid or mc; got {estimator!r}")
    run = start(tau, x64, seed, json_out, quiet, no_cache, {"--plot": plot},
                specs.input_files(d_spec))
    from satjax import path as P
    from satjax.estimators import MonteCarlo

    d = specs.build_data(d_spec)
    p = specs.build_protocol(p_spec, tau=tau, data=d, key=run.key(3))
    est = MonteCarlo(n=n_samples, key=run.key(1)) if estimator == "mc" else estimator
    pc = P.path_cost(p, d, n_time=n_time, estimator=est, key=run.key(1))
    if not bool(pc.finite):
        raise NumericalError("the path cost is not finite (NaN or inf in E|nu_t|^2)")
    if not bool(pc.converged):
        raise NumericalError("a grid solve did not converge or its box missed mass")
    w2 = P.endpoint_w2sq(p, d, key=run.key(2))
    verdicts = P.hierarchy(pc, w2, p.tau)
    L2 = pc.path_length.replace(value=pc.path_length.value**2 / tau,
                                stderr=2 * pc.path_length.value * pc.path_length.stderr / tau,
                                error=2 * pc.path_length.value * pc.path_length.error / tau)
    payload = {"data": data, "protocol": protocol, "protocol_class": p.describe(), "tau": tau,
               **pc.wD.to_json("wD"), **pc.c2.to_json("c2"),
               **pc.path_length.to_json("path_length"), **L2.to_json("length_sq_over_tau"),
               **pc.S_tot.to_json("S_tot"), **w2.to_json("W2sq"),
               **w2.replace(value=w2.value / tau).to_json("W2sq_over_tau"),
               "c2_wD_covariance": pc.c2_wD_covariance, "rotational_gap": pc.rotational_gap,
               "verdicts": {k: v.to_json() for k, v in verdicts.items()},
               "identities_not_checks": ["wD >= c2 (projection)", "c2 >= L^2/tau (Cauchy-Schwarz)"],
               "t": pc.ts, "kinetic": pc.kinetic, "speed_sq": pc.speed_sq}
    run.console.estimates([("wD", pc.wD), ("c2", pc.c2), ("path_length", pc.path_length),
                           ("L^2/tau", L2), ("S_tot", pc.S_tot), ("W2^2", w2)])
    run.console.verdicts(verdicts)
    if plot:
        from satjax.plotting import plot_path
        from satjax.report import jsonable, write_png

        write_png(plot_path, jsonable(payload), plot)
        run.console.say(f"wrote {plot}")
    finish(run, payload, verdicts)


# ----------------------------------------------------------------------------------- bound


def _load_model(model: str, d, p, allow_mismatch: bool):
    """The learned velocity of a model folder, checked against the data and protocol."""
    from satjax import learn
    from satjax import reverse as R

    fn, spec = learn.load_model(model)
    if spec.dim != d.dim:
        raise InputError(f"--model {model!r} has dimension {spec.dim} but the data have "
                         f"dimension {d.dim}")
    if not allow_mismatch:
        try:
            learn.check_compatible(model, p, d)
        except ValueError as err:
            msg = str(err).split(" (allow=")[0]
            raise InputError(f"{msg}; pass --allow-mismatch to use it anyway") from None
    fld = R.as_field(fn)
    if spec.kind == "score":
        if not math.isfinite(float(p.temperature(p.tau))):
            raise InputError("a score model needs a finite temperature at t = tau to act as a "
                             "velocity (Eq. 11); this protocol has m_tau = 0: train a velocity "
                             "model (--loss cfm)")
        fld = R.velocity_from_score(p, fld)
    return fld


@app.command()
@handled
def bound(data: DataSpec, protocol: ProtocolSpec,
          perturb: Annotated[str, typer.Option("--perturb", help="Reverse start: shift:D, scale:S, gaussian, mean:MU, variance:V, uniform:a=A,b=B, gmm:..., npy:path=F,width=W.")],
          model: Annotated[Optional[str], typer.Option("--model", help="Learned velocity (model folder): Eq. 100.")] = None,
          allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Use --model with other data or protocol than it was trained on.")] = False,
          transport: Annotated[str, typer.Option("--transport", help="auto | grid | atoms | particles: how the perturbed path is carried (auto: exact CDFs in 1-D, the density grid in 2-D, importance-weighted atoms in 3-16 dimensions, also with --model; particles above 16 dimensions or in 1-D with --model).")] = "auto",
          grid_n: Annotated[Optional[int], typer.Option("--grid-n", help="Density grid: cells per side (even; default from the data's narrowest component, 32-128).")] = None,
          samples: Annotated[Optional[int], typer.Option("--samples", help="Particles per transported set (forces particles; default 1000, 4000 in 1-D).")] = None,
          atoms: Annotated[Optional[int], typer.Option("--atoms", help="Atoms per batch of the atom transport (a multiple of 4; a power of two keeps the halves quasi-Monte-Carlo nets; forces atoms; default 1024).")] = None,
          batches: Annotated[Optional[int], typer.Option("--batches", help="Independent batches of the atom transport, for its standard error (forces atoms; default 8).")] = None,
          lp: Annotated[Optional[str], typer.Option("--lp", help="The linear program of the density grid and the atoms: auto | simplex | sinkhorn (simplex: exact, POT on the host; sinkhorn: a certified bracket on the device, no host callback; auto: simplex on CPU, sinkhorn on accelerators, simplex for --grad).")] = None,
          n_time: Annotated[int, typer.Option("--n-time", help="Gauss-Legendre time nodes.")] = 48,
          grad: Annotated[Optional[str], typer.Option("--grad", help="NAME[,NAME]: derivatives of eta, c1, c2 w.r.t. protocol parameters.")] = None,
          grad_replicates: Annotated[int, typer.Option("--grad-replicates", help="Independent draws for the standard error of --grad (particle route).")] = 4,
          solver: Annotated[Optional[str], typer.Option("--solver", help="Particle transport ODE solver euler | heun | rk4 (forces particles; default rk4).")] = None,
          ode_steps: Annotated[Optional[int], typer.Option("--ode-steps", help="Particle transport ODE steps, a multiple of 20 or of --ode-steps itself (forces particles; default 100).")] = None,
          plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of v_loss^2, E|nu|^2 and W1 over t.")] = None,
          tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None,
          quiet: Quiet = False, no_cache: NoCache = False):
    """The speed-accuracy relation eta <= c1 <= c2 (<= wD) for a reverse-start perturbation."""
    d_spec, p_spec = specs.parse_data(data), specs.parse_protocol(protocol)
    q_spec = specs.parse_perturbation(perturb)
    check_dims(d_spec, p_spec, q_spec)
    if transport not in ("auto", "grid", "atoms", "particles"):
        raise InputError(f"--transport must be auto, grid, atoms or particles; got "
                         f"{transport!r}")
    particle_opts = [o for o, v in (("--samples", samples), ("--solver", solver),
                                    ("--ode-steps", ode_steps)) if v is not None]
    atom_opts = [o for o, v in (("--atoms", atoms), ("--batches", batches)) if v is not None]
    if transport == "grid" and particle_opts:
        raise InputError(f"{', '.join(particle_opts)} set the particle transport; "
                         "--transport grid takes --grid-n")
    if atom_opts and (particle_opts or grid_n is not None or transport in ("grid", "particles")):
        raise InputError(f"{', '.join(atom_opts)} set the atom transport; it does not combine "
                         "with --transport grid/particles, --grid-n, --samples, --solver or "
                         "--ode-steps")
    if transport == "atoms" and (particle_opts or grid_n is not None):
        raise InputError("--transport atoms takes --atoms and --batches, not --samples, "
                         "--solver, --ode-steps or --grid-n")
    if atoms is not None:
        check_range("--atoms", atoms, 16, 65_536)
        if atoms % 4:
            raise InputError(f"--atoms must be a multiple of 4 (two halves of q and p atoms); "
                             f"got {atoms}")
    if batches is not None:
        check_range("--batches", batches, 2, 1024)
    if lp is not None and lp not in ("auto", "simplex", "sinkhorn"):
        raise InputError(f"--lp must be auto, simplex or sinkhorn; got {lp!r}")
    if lp == "sinkhorn" and grad is not None:
        raise InputError("--lp sinkhorn with --grad: --grad differentiates the exact linear "
                         "program; use --lp simplex or auto (the Sinkhorn bracket's derivative "
                         "is 1-3 % off it)")
    dim = specs.data_dim(d_spec)  # None for a data file: checked once it is read
    if lp is not None and (particle_opts or transport == "particles"
                           or (dim is not None and not 2 <= dim <= 16)):
        raise InputError("--lp sets the linear program of the density grid (2-D) or the atoms "
                         "(2-16 dimensions); it does not apply to particles or 1-D data")
    if atom_opts:
        transport = "atoms"
    if transport == "atoms" and specs.data_dim(d_spec) == 1:
        raise InputError("--transport atoms needs data of dimension >= 2 (1-D has the exact "
                         "CDF transport)")
    if transport == "grid":
        if dim is not None and dim != 2:
            raise InputError(f"--transport grid needs 2-D data; --data has dimension {dim}")
    if grid_n is not None:
        check_range("--grid-n", grid_n, 8, 512)
        if grid_n % 2:
            raise InputError(f"--grid-n must be even (the error compares with n/2); got {grid_n}")
        if transport == "particles" or particle_opts:
            raise InputError("--grid-n sets the density grid; it does not apply to particles")
    if samples is not None:
        check_range("--samples", samples, 16, 20_000)
    check_range("--n-time", n_time, 4, 4096)
    check_range("--grad-replicates", grad_replicates, 2, 64)
    names = _grad_names(grad, p_spec)
    if names and model is not None and transport != "particles" and samples is None \
            and (transport == "atoms" or (dim is not None and 2 <= dim <= 16)):
        raise InputError("--grad with --model: the derivatives of the density grid (2-D) and "
                         "of the atoms (3-16 dimensions) omit the response of their dual "
                         "potential to a learned velocity; add --transport particles")
    if solver is not None and solver not in ("euler", "heun", "rk4"):
        raise InputError(f"--solver must be euler, heun or rk4; got {solver!r}")
    if ode_steps is not None:
        check_range("--ode-steps", ode_steps, 1, 100_000)
    if model is not None and not Path(model).is_dir():
        raise InputError(f"--model {model!r} is not a folder")
    inputs = [model] + specs.input_files(d_spec, q_spec)
    run = start(tau, x64, seed, json_out, quiet, no_cache, {"--plot": plot}, inputs)
    from satjax import bound as B

    d = specs.build_data(d_spec)
    p = specs.build_protocol(p_spec, tau=tau, data=d, key=run.key(3))
    pert = specs.build_perturbation(q_spec)
    fld = _load_model(model, d, p, allow_mismatch) if model is not None else None
    if grid_n is not None:
        transport = "grid"
    if lp is not None and transport == "auto":  # the transport whose program --lp sets
        if not 2 <= d.dim <= B.ATOMS_MAX_DIM:
            raise InputError(f"--lp applies to the density grid (2-D) and the atoms (3-"
                             f"{B.ATOMS_MAX_DIM} dimensions); the data have dimension {d.dim}")
        transport = "grid" if d.dim == 2 else "atoms"
    if transport == "grid":
        from satjax.estimators import DensityGrid

        if d.dim != 2:
            raise InputError(f"--transport grid needs 2-D data; got dimension {d.dim}")
        transport = B.resolve_transport(DensityGrid(n=grid_n or 0, lp=lp or "auto"), d, None,
                                        run.key(4))
    elif transport == "atoms":
        from satjax.estimators import Atoms

        # no key: bound draws the atoms from its own key, so --grad's first replicate
        # differentiates the value's atoms
        transport = Atoms(n=atoms or 1024, n_batches=batches or 8, lp=lp or "auto")
    elif solver is not None or ode_steps is not None:
        from satjax.estimators import Particles

        steps = ode_steps or 100
        transport = Particles(n=samples or 1000, solver=solver or "rk4", n_steps=steps,
                              n_save=20 if steps % 20 == 0 else steps, key=run.key(4))
    elif transport == "particles" or samples is not None:
        transport = "particles"
    r = B.bound(p, d, pert, velocity=fld, n_time=n_time, key=run.key(1), particles=samples,
                transport=transport)
    verdicts = r.verdicts()
    payload = bound_payload(r, verdicts)
    payload = {"data": data, "protocol": protocol, "protocol_class": p.describe(),
               "perturb": perturb, "tau": tau, "model": model, **payload}
    if names:
        payload.update(_gradients(p, d, pert, fld, n_time, run, names, samples, transport,
                                  grad_replicates))
    rows = [(k, getattr(r, k)) for k in ("eta", "c1", "c2", "wD", "D0", "dW1", "W1_start",
                                          "W1_end")]
    if r.eq100 is not None:
        rows += [(k, getattr(r.eq100, k)) for k in ("D_max", "L_alpha", "lhs", "rhs")]
    run.console.estimates(rows)
    run.console.verdicts(verdicts)
    if names:
        for q, g in payload["grad"].items():
            run.console.say(f"d{q}/d" + ", d".join(
                _with_uncertainty(k, v, payload["grad_stderr"][q][k], payload["grad_error"][q][k])
                for k, v in g.items()))
        run.console.say(f"gradients: {payload['grad_method']}")
    if plot:
        from satjax.plotting import plot_bound
        from satjax.report import jsonable, write_png

        write_png(plot_bound, jsonable(payload), plot)
        run.console.say(f"wrote {plot}")
    finish(run, payload, verdicts)


def _with_uncertainty(name, value, stderr, error) -> str:
    import numpy as np

    v, se, err = (np.ravel(np.asarray(a, float)) for a in (value, stderr, error))
    # a derivative whose uncertainty reaches its size does not tell its sign: not a number
    parts = [f"unresolved ({a:.3g}, uncertainty {b + c:.2g})" if 0 < b + c >= abs(a) else
             f"{a:.6g}" + (f" ± {b:.2g}" if b > 0 else "") + (f" (error {c:.2g})" if c > 0 else "")
             for a, b, c in zip(v, se, err)]
    return f"{name} = " + (parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]")


def bound_payload(r, verdicts) -> dict:
    """The JSON fields of a BoundResult (the same keys with and without a learned model)."""
    out = {"method": r.method}
    for k in ("eta", "c1", "c2", "wD", "D0", "dW1", "W1_start", "W1_end"):
        out.update(getattr(r, k).to_json(k))
    out.update({"verdicts": {k: v.to_json() for k, v in verdicts.items()},
                "holds": {k: v.status for k, v in verdicts.items()},
                "t": r.t, "W1": r.W1, "t_rate": r.t_rate, "v_loss_sq": r.v_loss_sq,
                "v_loss_sq_stderr": r.v_loss_sq_stderr, "kinetic": r.kinetic,
                "kinetic_stderr": r.kinetic_stderr})
    if r.v_loss_sq_error is not None:
        out["v_loss_sq_error"] = r.v_loss_sq_error
    if r.eq100 is not None:
        e = r.eq100
        for k in ("D_max", "L_alpha", "lhs", "rhs"):
            out.update(getattr(e, k).to_json(k))
        out["eq100"] = {"t": e.t, "D": e.D, "D_stderr": e.D_stderr}
    return out


GRADIENT_PARAMS = {"vp-linear": ("beta_min", "beta_max"), "ve": ("sigma_min", "sigma_max"),
                   "rotating": ("h", "g", "tfin"), "polar": ("angle", "log_radius")}
_FIELD = {"tfin": "t_fin"}


def _grad_names(grad: Optional[str], p_spec: specs.Spec):
    if grad is None:
        return []
    allowed = GRADIENT_PARAMS.get(p_spec.name, ())
    names = [n.strip() for n in grad.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if not names or bad:
        raise InputError(f"--grad {grad!r}: protocol {p_spec.name!r} has differentiable "
                         f"parameters {', '.join(allowed) or 'none'}")
    return names


def _gradients(p, d, pert, fld, n_time, run, names, samples, transport, replicates) -> dict:
    """Forward-mode autodiff of η, c_1, c_2 with respect to the named protocol parameters, with
    the values' random numbers (so re-running with a moved parameter checks them), and the
    uncertainty of each derivative: on the deterministic routes (1-D CDF transport, 2-D density
    grid, each with a deterministic path estimator) the change when the CDF points or grid
    cells per side are halved; otherwise the standard deviation of the
    derivative over ``replicates`` independent draws of the particles and nodes (the standard
    error of the one reported)."""
    import jax
    import numpy as np

    from satjax import bound as B
    from satjax.estimators import CDF, Atoms, DensityGrid, resolve
    from satjax._util import compile_within, gauss_legendre

    ts, _ = gauss_legendre(n_time, 0.0, p.tau)
    fields = {n: _FIELD.get(n, n) for n in names}
    theta = {n: getattr(p, f) for n, f in fields.items()}

    def jacobian(key, tr=None):
        keys = jax.random.split(key, 3)
        est = resolve(d, p, "auto", key=keys[0]).prepare(p, d, ts)
        tr = tr if tr is not None else B.resolve_transport(
            transport, d, fld, keys[1], samples,
            exact_pairs=fld is None and B.particles_exact(p, d, pert),
            **B.cdf_context(p, d, pert))
        if isinstance(tr, DensityGrid):  # the value's n/2 check is not differentiated
            tr = tr.replace(check_coarse=False, lp="simplex")
        if isinstance(tr, Atoms):  # the value's n/2 check is not differentiated; derivatives
            tr = tr.replace(check_half=False, lp="simplex")  # need the exact linear program

        def outputs(th):
            r = B.bound_kernel(p.replace(**{fields[n]: v for n, v in th.items()}), d, pert,
                               fld, est, tr, n_time, keys[2])
            return {"eta": r.eta.value, "c1": r.c1.value, "c2": r.c2.value}

        # forward mode: a protocol has at most three differentiable parameters, and forward
        # mode stores no residuals of the flow (reverse mode through a grid of cells did)
        jac = compile_within(jax.jit(jax.jacfwd(outputs)), (theta,), memory_limit(),
                             "the gradient (--grad)", "use fewer time nodes (--n-time), grid "
                             "cells (--grid-n), atoms (--atoms) or particles (--samples)")(theta)
        return {q: {n: np.asarray(v, float) for n, v in g.items()} for q, g in jac.items()}, \
            est, tr

    base, est, tr = jacobian(run.key(1))
    if isinstance(tr, CDF) and not est.per_sample:
        half, _, _ = jacobian(run.key(1), tr.replace(n_points=tr.n_points // 2))
        error = {q: {n: np.abs(v - half[q][n]) for n, v in g.items()} for q, g in base.items()}
        stderr = {q: {n: np.zeros_like(v) for n, v in g.items()} for q, g in base.items()}
        method = (f"autodiff of the exact 1-D route; error: change at {tr.n_points // 2} CDF "
                  "points")
    elif isinstance(tr, DensityGrid) and not est.per_sample:
        half, _, _ = jacobian(run.key(1), tr.replace(n=tr.n // 2))
        error = {q: {n: np.abs(v - half[q][n]) for n, v in g.items()} for q, g in base.items()}
        stderr = {q: {n: np.zeros_like(v) for n, v in g.items()} for q, g in base.items()}
        method = (f"autodiff of the 2-D density grid (envelope of the exact linear programs); "
                  f"error: change on the {tr.n // 2} x {tr.n // 2} grid")
    else:
        reps = [base]
        for k in range(1, replicates):
            run.console.say(f"gradient replicate {k + 1}/{replicates}")
            reps.append(jacobian(jax.random.fold_in(run.key(1), k))[0])
        stderr = {q: {n: np.std([r[q][n] for r in reps], axis=0, ddof=1) for n in g}
                  for q, g in base.items()}
        error = {q: {n: np.zeros_like(v) for n, v in g.items()} for q, g in base.items()}
        method = (f"autodiff of the estimate with the values' random numbers; standard error: "
                  f"spread over {replicates} independent draws of particles (or atoms) and "
                  "nodes")

    def tolist(tree):
        return {q: {n: v.tolist() for n, v in g.items()} for q, g in tree.items()}

    status = {q: {n: np.where(stderr[q][n] + error[q][n] >= np.abs(v), "unresolved",
                              "resolved").tolist() for n, v in g.items()} for q, g in base.items()}
    return {"grad": tolist(base), "grad_stderr": tolist(stderr), "grad_error": tolist(error),
            "grad_status": status, "grad_method": method}


# ----------------------------------------------------------------------------------- train


@app.command()
@handled
def train(data: DataSpec, protocol: ProtocolSpec,
          loss: Annotated[str, typer.Option("--loss", help="dsm | cfm | ot-cfm")] = "cfm",
          steps: Annotated[int, typer.Option("--steps", help="Total optimisation steps (resume: extend).")] = 2000,
          out: Annotated[str, typer.Option("--out", help="Model folder (checkpoints).")] = "model",
          batch_size: Annotated[int, typer.Option("--batch-size")] = 256,
          lr: Annotated[float, typer.Option("--lr", help="Adam learning rate > 0.")] = 3e-3,
          width: Annotated[int, typer.Option("--width")] = 64,
          depth: Annotated[int, typer.Option("--depth")] = 3,
          checkpoint_minutes: Annotated[float, typer.Option("--checkpoint-minutes", help="Also checkpoint every that many minutes.")] = 5.0,
          tau: Tau = 1.0,
          x64: Annotated[bool, typer.Option("--x64/--x32", help="Train in float64 or float32.")] = False,
          seed: Seed = 0, json_out: JsonOut = None,
          quiet: Quiet = False, no_cache: NoCache = False):
    """Train a score (DSM) or flow-matching (CFM, OT-CFM) model; writes the model to --out."""
    d_spec, p_spec = specs.parse_data(data), specs.parse_protocol(protocol)
    check_dims(d_spec, p_spec)
    if loss not in ("dsm", "cfm", "ot-cfm"):
        raise InputError(f"--loss must be dsm, cfm or ot-cfm; got {loss!r}")
    check_range("--steps", steps, 1, 10_000_000)
    check_range("--batch-size", batch_size, 2, 65_536)
    check_range("--width", width, 1, 8192)
    check_range("--depth", depth, 1, 64)
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise InputError(f"--lr must be a number in (0, 10]; got {lr}")
    if not (math.isfinite(checkpoint_minutes) and checkpoint_minutes >= 0):
        raise InputError(f"--checkpoint-minutes must be >= 0 (0: by steps only); got "
                         f"{checkpoint_minutes}")
    if p_spec.name == "ot":
        raise InputError("--protocol ot is a deterministic transport: train with a schedule or force")
    from satjax.learn.train import TrainConfig

    config = TrainConfig(loss=loss, steps=steps, batch_size=batch_size, lr=lr, width=width,
                         depth=depth, lr_schedule="cosine", checkpoint_every=max(steps // 20, 1),
                         checkpoint_seconds=60.0 * checkpoint_minutes or None,
                         dtype="float64" if x64 else "float32").validate()
    check_memory(config.peak_bytes(specs.data_dim(d_spec) or 1), "training",
                 "choose a smaller --width, --depth or --batch-size")
    folder = prepare_folder(out, inputs=specs.input_files(d_spec))
    run = start(tau, x64, seed, json_out, quiet, no_cache, inputs=specs.input_files(d_spec),
                folders={"--out": out})
    from satjax import learn

    d = specs.build_data(d_spec)
    p = specs.build_protocol(p_spec, tau=tau)
    existed = folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    bar = run.console.progress(steps, f"train {loss}")
    try:
        res = learn.train(run.key(0), p, d, config, checkpoint_dir=str(folder),
                          callbacks=[lambda ev: (bar.update(1), ev.final and bar.close())])
    except KeyboardInterrupt:
        bar.close()
        fail(f"interrupted; the last state is saved in {str(folder)!r}: run the same command to "
             "resume", EXIT_INTERRUPTED)
    except BaseException:
        bar.close()
        if not existed and not any(folder.iterdir()):
            folder.rmdir()  # nothing was saved: do not leave an empty folder behind
        raise
    meta = {"data": data, "protocol": protocol, "tau": tau, "loss": loss}
    from satjax.report import atomic_write

    atomic_write(folder / MODEL_META, (json.dumps(meta) + "\n").encode())
    fn = res.field()
    r = learn.residual(run.key(5), fn, p, d, kind=res.spec.kind, n_samples=1024, n_time=16)
    payload = {"data": data, "protocol": protocol, "loss": loss, "steps": steps,
               "start_step": res.start_step, "final_loss": float(res.losses[-1]),
               "residual": r.value, "residual_stderr": r.stderr,
               "residual_relative": r.relative, "train_seconds": res.train_seconds,
               "model": str(folder)}
    payload.update(_w1_report(str(folder), d, p, run))
    from satjax.report import jsonable

    atomic_write(folder / "quality.json", (json.dumps(jsonable(
        {k: payload[k] for k in payload if k.startswith(("W1_to_data", "residual"))}))
        + "\n").encode())
    rows = [(k, payload[k]) for k in ("final_loss", "residual", "residual_relative")]
    rows.append(("W1 to data", _w1_text(payload)))
    rows.append(("train_seconds", payload["train_seconds"]))
    run.console.table(rows, ["quantity", "value"])
    if payload.get("W1_to_data_method"):
        run.console.say(f"W1 to data: {payload['W1_to_data_method']}")
    finish(run, payload)


def _w1_report(model: str, d, p, run) -> dict:
    """W1_to_data of a model folder's generator (:func:`satjax.learn.w1_to_data`), as JSON
    fields; null with a status where the model cannot act as a velocity."""
    from satjax import learn

    try:
        fld = _load_model(model, d, p, True)
    except InputError as err:
        return {"W1_to_data": None, "W1_to_data_stderr": None,
                "W1_to_data_status": f"undefined: {err}"}
    w = learn.w1_to_data(fld, p, d, key=run.key(6))
    return {"W1_to_data": float(w.value), "W1_to_data_stderr": float(w.stderr),
            "W1_to_data_error": float(w.error), "W1_to_data_kind": w.kind,
            "W1_to_data_method": w.method}


def _w1_text(payload: dict) -> str:
    if payload.get("W1_to_data") is None:
        return "undefined"
    bound = "<= " if payload["W1_to_data_kind"] == "upper" else ""
    return (f"{bound}{payload['W1_to_data']:.4g} ± {payload['W1_to_data_stderr']:.2g} "
            f"(resolution {payload['W1_to_data_error']:.2g})")


def _read_meta(model: str) -> dict:
    path = Path(model) / MODEL_META
    if not path.is_file():
        raise InputError(f"{model!r} is not a model folder written by `satjax train` "
                         f"(no {MODEL_META})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{str(path)!r} is not valid JSON ({err}); retrain or restore it") from None
    if not isinstance(meta, dict) or not {"data", "protocol", "tau"} <= set(meta):
        raise InputError(f"{str(path)!r} lacks data, protocol or tau; retrain or restore it")
    for k in ("data", "protocol"):
        if not isinstance(meta[k], str):
            raise InputError(f"{str(path)!r}: {k} must be a spec string; got {meta[k]!r}; "
                             "retrain or restore it")
    tau = meta["tau"]
    lo, hi = TAU_RANGE[True]
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not lo <= tau <= hi:
        raise InputError(f"{str(path)!r}: tau must be a number in [{lo:g}, {hi:g}]; got "
                         f"{json.dumps(tau)}; retrain or restore it")
    return meta


@app.command()
@handled
def sample(model: Annotated[str, typer.Option("--model", help="Model folder written by `satjax train`.")],
           n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 1000,
           out: Annotated[str, typer.Option("--out", help="Output .npy file.")] = "samples.npy",
           n_steps: Annotated[int, typer.Option("--n-steps", help="ODE steps.")] = 200,
           x64: X64 = False, seed: Seed = 0, json_out: JsonOut = None, quiet: Quiet = False,
           no_cache: NoCache = False):
    """Generate samples from a trained model (probability-flow ODE from exact P_tau samples);
    tau is the model's own."""
    meta = _read_meta(model)
    d_spec, p_spec = specs.parse_data(meta["data"]), specs.parse_protocol(meta["protocol"])
    if not out.endswith(".npy"):
        raise InputError(f"--out {out!r} must end in .npy")
    check_range("--n", n, 1, 10_000_000)
    check_range("--n-steps", n_steps, 1, 100_000)
    dim = specs.data_dim(d_spec) or 1
    # the batch, its solver stages and the engine tiles: 8 float64 arrays of n × d
    check_memory(n * dim * 8 * 8, f"--n {n}", "generate fewer samples per call (another "
                 "--seed each) and concatenate")
    run = start(float(meta["tau"]), x64, seed, json_out, quiet, no_cache, {"--out": out},
                [model] + specs.input_files(d_spec))
    import numpy as np

    from satjax import forward as F
    from satjax import reverse as R

    d = specs.build_data(d_spec)
    p = specs.build_protocol(p_spec, tau=float(meta["tau"]))
    fld = _load_model(model, d, p, False)
    x_tau = F.sample_marginal(run.key(0), p, d, p.tau, n)
    t_start = p.tau if not math.isinf(float(p.temperature(p.tau))) else p.tau * (1 - 1e-3)
    gen = R.reverse_ode(fld, x_tau, t_start=t_start, n_steps=n_steps)
    if not bool(gen.finite):
        raise NumericalError("generation produced non-finite samples")
    from satjax.report import atomic_write
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(gen.xs[-1]))
    atomic_write(Path(out), buf.getvalue())
    run.console.say(f"wrote {n} samples of dimension {d.dim} to {out}")
    payload = {"model": model, "n": n, "out": out, **_w1_report(model, d, p, run)}
    run.console.say(f"W1 from the model's generated law to its data {meta['data']!r}: "
                    f"{_w1_text(payload)}")
    finish(run, payload)


# -------------------------------------------------------------------------------- optimize


@app.command()
@handled
def optimize(data: DataSpec,
             family: Annotated[str, typer.Option("--family", help="free | vp")] = "free",
             objective: Annotated[str, typer.Option("--objective", help="c2 | wD | conditional | eta | c1 (eta is schedule-invariant under exact dynamics: docs/theory.md §7)")] = "c2",
             perturb: Annotated[Optional[str], typer.Option("--perturb", help="Reverse start for --objective eta/c1.")] = None,
             steps: Annotated[int, typer.Option("--steps")] = 300,
             lr: Annotated[float, typer.Option("--lr", help="Adam learning rate > 0.")] = 0.05,
             n_basis: Annotated[int, typer.Option("--n-basis")] = 6,
             n_time: Annotated[int, typer.Option("--n-time")] = 32,
             plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of the schedules in the (sigma, m) plane.")] = None,
             tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None,
             quiet: Quiet = False, no_cache: NoCache = False):
    """Optimise a learnable schedule for c2, wD, the conditional energy (Eq. 93), eta or c1."""
    d_spec = specs.parse_data(data)
    if family not in ("free", "vp"):
        raise InputError(f"--family must be free or vp; got {family!r}")
    if objective not in ("c2", "wD", "conditional", "eta", "c1"):
        raise InputError(f"--objective must be c2, wD, conditional, eta or c1; got {objective!r}")
    q_spec = None
    if objective in ("eta", "c1"):
        if perturb is None:
            raise InputError(f"--objective {objective} needs --perturb")
    elif perturb is not None:
        raise InputError(f"--perturb is used only by --objective eta or c1; got --objective "
                         f"{objective}: drop --perturb")
    if perturb is not None:
        q_spec = specs.parse_perturbation(perturb)
        check_dims(d_spec, None, q_spec)
    check_range("--steps", steps, 1, 100_000)
    check_range("--n-basis", n_basis, 1, 32)
    check_range("--n-time", n_time, 4, 1024)
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise InputError(f"--lr must be a number in (0, 10]; got {lr}")
    run = start(tau, x64, seed, json_out, quiet, no_cache, {"--plot": plot},
                specs.input_files(d_spec, q_spec))
    import numpy as np

    from satjax import optimize as O
    from satjax import path as P
    from satjax import schedules as S

    d = specs.build_data(d_spec)
    pert = specs.build_perturbation(q_spec) if q_spec is not None else None
    bar = run.console.progress(steps, f"optimise {family}/{objective}")
    res = O.optimize_schedule(d, family=family, objective=objective, tau=tau, n_basis=n_basis,
                              steps=steps, learning_rate=lr, key=run.key(0), n_time=n_time,
                              perturbation=pert, progress=lambda i, v: bar.update(1),
                              max_bytes=memory_limit())
    bar.close()

    def c2(sch):  # fresh random numbers: no selection bias in n-D
        return P.path_cost(sch, d, key=run.key(1), n_time=n_time).c2

    w2 = P.endpoint_w2sq(S.cosine(tau), d, key=run.key(2))
    ts = np.linspace(0.0, tau, 101)
    sch = res.schedule
    finals = {"initial": c2(res.initial), "final": c2(sch), "cosine": c2(S.cosine(tau)),
              "condot": c2(S.cond_ot(tau))}
    payload = {"data": data, "family": family, "objective": objective, "perturb": perturb,
               "steps": res.steps, "diverged": res.diverged,
               "objective_final": res.best_value,
               **{k: v for name, e in finals.items() for k, v in e.to_json(f"c2_{name}").items()},
               **w2.to_json("W2sq"), "W2sq_over_tau": float(w2.value) / tau,
               "gap_to_W2": float(finals["final"].value) / (float(w2.value) / tau) - 1.0,
               "t": ts, "m": [float(sch.m(t)) for t in ts],
               "sigma": [float(sch.sigma(t)) for t in ts], "angle": sch.angle,
               "log_radius": sch.log_radius, "log_edge": sch.log_edge,
               "history": res.history}
    rows = [(f"c2 {k}", e) for k, e in finals.items()] + [("W2^2", w2)]
    if objective in ("eta", "c1"):
        # the objective evaluated afresh, where the optimiser could not have tuned the schedule
        # to the estimator's discretisation: 1-D the exact CDF route; 2-D the density grid at
        # twice the cells per side and twice the saved times (the descent can place the rate's
        # peaks between saved times); d >= 3 the transport bound chooses (atoms up to 16-D) with new
        # random numbers
        from satjax import bound as B
        from satjax.estimators import DensityGrid

        check = DensityGrid(cells_per_sd=2.0, n_save=20, n_steps=200) if d.dim == 2 else "auto"
        fresh = {}
        for name, s_ in (("final", sch), ("cosine", S.cosine(tau))):
            run.console.say(f"evaluating {objective} of the {name} schedule afresh")
            fresh[name] = getattr(B.bound(s_, d, pert, n_time=n_time, key=run.key(5),
                                          transport=check), objective)
            payload.update(fresh[name].to_json(f"{objective}_{name}_fresh"))
            rows.append((f"{objective} {name} (fresh)", fresh[name]))
        f, c = fresh["final"], fresh["cosine"]
        diff = float(f.value) - float(c.value)
        unc = float(np.hypot(f.stderr, c.stderr)) + float(f.error) + float(c.error)
        payload["final_minus_cosine"] = {"difference": diff, "uncertainty": unc,
                                         "below_by_3_uncertainties": bool(diff < -3 * unc)}
    run.console.estimates(rows)
    run.console.say(f"gap to W2^2/tau: {payload['gap_to_W2']:.4g}")
    if objective in ("eta", "c1"):
        v = payload["final_minus_cosine"]
        run.console.say(f"{objective}: final - cosine = {v['difference']:.4g} (uncertainty "
                        f"{v['uncertainty']:.2g}: s.e. and resolution errors); below cosine by "
                        f"more than 3 uncertainties: {v['below_by_3_uncertainties']}")
    if objective == "eta":
        payload["note"] = ("eta of the exact dynamics is the same for every schedule of this "
                           "family (docs/theory.md §7); the descent reduces only the particle "
                           "solver's discretisation error. Use --objective c1 for a schedule "
                           "property.")
        run.console.say(payload["note"])
    if res.diverged:
        run.console.say("optimisation diverged (non-finite objective); the best schedule so far "
                        "is reported")
    if plot:
        from satjax.plotting import plot_schedules
        from satjax.report import jsonable, write_png

        write_png(plot_schedules, jsonable(payload), plot, tau)
        run.console.say(f"wrote {plot}")
    finish(run, payload)
    if res.diverged:
        raise typer.Exit(EXIT_NUMERICAL)


# ----------------------------------------------------------------------------------- steps


@app.command("steps")
@handled
def steps_cmd(data: DataSpec, protocol: ProtocolSpec,
              n: Annotated[int, typer.Option("--n", help="Number of sampler steps N (N + 1 times).")],
              solver: Annotated[str, typer.Option("--solver", help="euler | heun")] = "heun",
              model: Annotated[Optional[str], typer.Option("--model", help="Learned velocity (model folder): the objective is the RMS distance to a many-step RK4 solve of it.")] = None,
              allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Use --model with other data or protocol than it was trained on.")] = False,
              iterations: Annotated[int, typer.Option("--iterations", help="Adam iterations on the grid (0: only compare the standard grids).")] = 300,
              lr: Annotated[float, typer.Option("--lr", help="Adam learning rate > 0 (on the grid's logits).")] = 0.05,
              reference_steps: Annotated[int, typer.Option("--reference-steps", help="RK4 steps of the reference solves (n-D data, --model).")] = 512,
              velocity: Annotated[Optional[str], typer.Option("--velocity", help="A velocity written outside satjax, MODULE:FUNCTION or FILE.py:FUNCTION, f(x: numpy (n, d), t: float) -> numpy (n, d); optimised without its gradients (central differences in the grid).")] = None,
              velocity_convention: Annotated[str, typer.Option("--velocity-convention", help="Time of --velocity: paper (t = 0 data, tau noise; dx/dt) | flow-matching (s = 1 - t/tau, 0 noise; dx/ds) | edm (sigma, state x/m_t; dy/dsigma).")] = "paper",
              export_format: Annotated[str, typer.Option("--format", help="The list to paste, under 'export': json (t) | k-diffusion (sigmas + 0) | comfyui (ManualSigmas string) | diffusers (VP: integer timesteps; cond-OT: sigmas) | flow-matching (t/tau, 1 to 0).")] = "json",
              interpolate: Annotated[Optional[int], typer.Option("--interpolate", help="Also carry the optimised grid to M steps (log-linear in sigma, as Align Your Steps) and score it against the uniform M-step grid; 'export' is then the M-step list.")] = None,
              shift: Annotated[Optional[float], typer.Option("--shift", help="--format diffusers on cond-OT: the shift S of FlowMatchEulerDiscreteScheduler; the sigmas are pre-compensated for it.")] = None,
              plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of the grids and their held-out errors.")] = None,
              tau: Tau = 1.0, x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None,
              quiet: Quiet = False, no_cache: NoCache = False):
    """The N + 1 sampling times that minimise an N-step Euler/Heun sampler's error (gradient
    descent through the sampler, started from the best standard grid), exported for other
    samplers (--format) and carried to other step counts (--interpolate)."""
    d_spec, p_spec = specs.parse_data(data), specs.parse_protocol(protocol)
    check_dims(d_spec, p_spec)
    check_range("--n", n, 1, 1024)
    from satjax.export import FORMATS

    if export_format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {export_format!r}")
    if interpolate is not None:
        check_range("--interpolate", interpolate, 2, 1024)
    if shift is not None and not (math.isfinite(shift) and shift > 0):
        raise InputError(f"--shift must be a finite number > 0; got {shift}")
    if velocity is not None and model is not None:
        raise InputError("give --model or --velocity, not both")
    if velocity_convention not in ("paper", "flow-matching", "edm"):
        raise InputError("--velocity-convention must be paper, flow-matching or edm; got "
                         f"{velocity_convention!r}")
    if velocity_convention != "paper" and velocity is None:
        raise InputError("--velocity-convention needs --velocity")
    if solver not in ("euler", "heun"):
        raise InputError(f"--solver must be euler or heun; got {solver!r}")
    check_range("--iterations", iterations, 0, 100_000)
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise InputError(f"--lr must be a number in (0, 10]; got {lr}")
    check_range("--reference-steps", reference_steps, 1, 100_000)
    if model is not None and not Path(model).is_dir():
        raise InputError(f"--model {model!r} is not a folder")
    velocity_file = velocity.rsplit(":", 1)[0] if velocity and ":" in velocity else None
    run = start(tau, x64, seed, json_out, quiet, no_cache, {"--plot": plot},
                [model, velocity_file if velocity_file and velocity_file.endswith(".py")
                 else None] + specs.input_files(d_spec))
    fn = _load_velocity(velocity) if velocity is not None else None
    from satjax import export as EX
    from satjax import steps as ST

    d = specs.build_data(d_spec)
    p = specs.build_protocol(p_spec, tau=tau, data=d, key=run.key(3))
    if fn is not None:
        fld = ST.HostVelocity(fn, p, velocity_convention, name=velocity)
    else:
        fld = _load_model(model, d, p, allow_mismatch) if model is not None else None
    # the export must be possible before the optimisation runs (checked on the uniform grid)
    EX.export_grid(p, ST.uniform_grid(p, interpolate or n), export_format, shift=shift)
    problem = ST.make_problem(p, d, velocity=fld, key=run.key(0),
                              reference_steps=reference_steps)
    res = ST.optimize_steps(p, d, n, solver=solver, steps=iterations, lr=lr, problem=problem)
    if not (math.isfinite(res.error) and math.isfinite(res.error_uniform)):
        raise NumericalError("the sampler's error is not finite (NaN or inf samples)")
    out = res.to_dict()
    payload = {"data": data, "protocol": protocol, "model": model, "velocity": velocity,
               "velocity_convention": velocity_convention if velocity else None,
               **{k: out.pop(k) for k in ("t", "t_flow", "sigmas", "error", "error_uniform", "n")},
               **out}
    exported = EX.export_grid(p, res.t, export_format, shift=shift)
    payload["export_optimised"] = exported
    if interpolate is not None:
        t_m = EX.interpolate_grid(p, res.t, interpolate)
        e_m = problem.error(t_m, solver, "test")
        e_u = problem.error(ST.uniform_grid(p, interpolate), solver, "test")
        exported = EX.export_grid(p, t_m, export_format, shift=shift)
        payload["interpolated"] = {
            "m": interpolate, "t": [float(v) for v in t_m], "error": e_m, "error_uniform": e_u,
            "improvement_vs_uniform": 1.0 - e_m / e_u if e_u > 0 else 0.0,
            "method": "log-linear interpolation in sigma of the optimised N-step grid "
                      "(Align Your Steps' rule), scored on the same held-out set"}
    payload["export"] = exported["export"]
    payload["export_format"] = export_format
    payload["export_conversion"] = exported["conversion"]
    if payload["sigmas"] is None:
        payload["sigmas_status"] = (f"undefined: protocol {protocol!r} is not a noise schedule "
                                    "(sigma = sigma_t/m_t needs m_t and sigma_t)")
        payload.pop("sigmas_note", None)
    errs = res.errors_standard
    rows = [(name, errs[name], f"{100 * (errs[name] / res.error_uniform - 1):+.1f} %",
             res.errors_train.get(name, float("nan"))) for name in errs]
    rows.append(("optimised", res.error, f"{100 * (res.error / res.error_uniform - 1):+.1f} %",
                 min((h for _, h in res.history if math.isfinite(h)), default=float("nan"))))
    run.console.table(rows, ["grid", "held-out error", "vs uniform", "train error"])
    run.console.say(f"objective: {res.objective} ({res.method})")
    run.console.say(f"started from: {res.init}; best iteration {res.best_step} of {iterations}"
                    + (f"; {res.n_nonfinite} non-finite iterations undone"
                       if res.n_nonfinite else ""))
    for name, why in res.skipped.items():
        run.console.say(f"grid {name} skipped: {why}")
    run.console.say("t (paper time, tau -> 0): " + " ".join(f"{v:.6g}" for v in res.t))
    if res.sigmas is not None:
        run.console.say("sigmas: " + " ".join(f"{v:.6g}" for v in res.sigmas))
    if interpolate is not None:
        itp = payload["interpolated"]
        run.console.say(f"interpolated to M = {interpolate} steps: held-out error "
                        f"{itp['error']:.4g}, uniform {itp['error_uniform']:.4g} "
                        f"({100 * (itp['error'] / itp['error_uniform'] - 1):+.1f} %)")
    run.console.say(f"export ({export_format}"
                    + (f", M = {interpolate}" if interpolate is not None else "") + "): "
                    + json.dumps(payload["export"]))
    run.console.say(f"conversion: {payload['export_conversion']}")
    if plot:
        from satjax.report import jsonable, write_png

        write_png(_plot_steps, jsonable(payload), plot)
        run.console.say(f"wrote {plot}")
    finish(run, payload)


def _load_velocity(spec: str):
    """The callable named by MODULE:FUNCTION or FILE.py:FUNCTION (imported now, so a bad name
    fails before any computation)."""
    import importlib
    import importlib.util

    if ":" not in spec:
        raise InputError(f"--velocity must be MODULE:FUNCTION or FILE.py:FUNCTION; got {spec!r}")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py") or os.sep in where:
            if not Path(where).is_file():
                raise InputError(f"--velocity: no file {where!r}")
            mod_spec = importlib.util.spec_from_file_location(Path(where).stem, where)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
    except InputError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as err:
        raise InputError(f"--velocity: importing {where!r} failed: {type(err).__name__}: {err}")
    fn = getattr(module, name, None)
    if fn is None:
        raise InputError(f"--velocity: {where!r} has no {name!r}")
    if not callable(fn):
        raise InputError(f"--velocity: {spec!r} is not callable")
    return fn


def _plot_steps(report: dict, filename: str) -> None:
    """The standard and optimised grids (t_i over i) and their held-out errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(report["grids_standard"])
    for name in names:
        g = report["grids_standard"][name]
        ax.plot(range(len(g)), g, "o--", ms=3, lw=0.8, label=name)
    ax.plot(range(len(report["t"])), report["t"], "ks-", ms=4, lw=1.5, label="optimised")
    ax.set_xlabel("step i")
    ax.set_ylabel("t_i  (0 = data, τ = noise)")
    ax.legend(fontsize=8)
    errs = [report["errors_standard"][k] for k in names] + [report["error"]]
    bx.bar(names + ["optimised"], errs, color=["C0"] * len(names) + ["k"])
    bx.set_yscale("log")
    bx.set_ylabel("held-out error")
    fig.suptitle(f"{report['protocol']} on {report['data']}, {report['solver']} N = {report['n']}"
                 f" ({report['objective']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(filename, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------- measure


@app.command("measure")
@handled
def measure_cmd(trajectories: Annotated[str, typer.Option("--trajectories", help=".npz with t (K,), x (K, N, d), v (K, N, d) and convention (paper | flow-matching | edm).")],
                plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of the kinetic and acceleration profiles.")] = None,
                json_out: JsonOut = None, quiet: Quiet = False):
    """Measure a generator from its trajectories (any framework): kinetic and acceleration
    profiles, thermodynamic length and the cost of integral E|v|^2 dt (Eq. G20)."""
    check_outputs({"--json": json_out, "--plot": plot}, [trajectories])
    from satjax import measure as MS

    t, x, v, convention = MS.read_trajectories(trajectories)
    console = Console(json_stdout=json_out == "-", quiet=quiet)
    r = MS.measure_trajectories(t, x, v, convention=convention)
    if not r["finite"]:
        raise NumericalError(f"{', '.join(r['overflow'])} overflow float64 for "
                             f"{trajectories!r}: rescale the times or the velocities")
    K, N, dim = x.shape
    payload = {"trajectories": trajectories, "convention": convention, "K": K, "n": N, "d": dim,
               **{k: r[k] for k in ("cost", "cost_stderr", "cost_method", "length",
                                    "length_stderr", "t", "kinetic", "kinetic_stderr", "t_mid",
                                    "acceleration", "acceleration_stderr")},
               "time_note": ("t in the paper's convention, increasing (t = 0 data); for "
                             "convention edm t is sigma. acceleration is at t_mid, the "
                             "interval midpoints")}
    console.table([("cost = int E|v|^2 dt", f"{r['cost']:.6g} ± {r['cost_stderr']:.2g}",
                    r["cost_method"]),
                   ("length = int sqrt(E|v|^2) dt", f"{r['length']:.6g} ± "
                    f"{r['length_stderr']:.2g}", "trapezoid; s.e. by the delta method")],
                  ["quantity", "value ± s.e.", "method"])
    console.say(f"{N} trajectories, {K} times, d = {dim}, convention {convention}")
    idx = sorted(set(int(round(i)) for i in
                     [j * (K - 2) / min(10, K - 2) for j in range(min(10, K - 2) + 1)])) \
        if K > 2 else [0]
    console.table([(float(r["t"][i]), f"{r['kinetic'][i]:.6g} ± {r['kinetic_stderr'][i]:.2g}",
                    float(r["t_mid"][i]),
                    f"{r['acceleration'][i]:.6g} ± {r['acceleration_stderr'][i]:.2g}")
                   for i in idx], ["t", "E|v|^2", "t_mid", "E|Dv/Dt|^2"])
    if plot:
        from satjax.report import jsonable, write_png

        write_png(_plot_measure, jsonable(payload), plot)
        console.say(f"wrote {plot}")
    from satjax.report import write_json

    write_json(payload, json_out)


def _plot_measure(report: dict, filename: str) -> None:
    """E|v|^2 over t and E|Dv/Dt|^2 over the interval midpoints, with ±2 s.e. bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for a, tk, yk, label in ((ax, "t", "kinetic", r"$E\|v\|^2$"),
                             (bx, "t_mid", "acceleration", r"$E\|Dv/Dt\|^2$")):
        t, y = np.asarray(report[tk], float), np.asarray(report[yk], float)
        se = np.asarray(report[f"{yk}_stderr"], float)
        a.plot(t, y, "o-", ms=2, label=label)
        a.fill_between(t, y - 2 * se, y + 2 * se, alpha=0.3, lw=0)
        a.set_xlabel("t  (paper time: 0 = data)" if report["convention"] != "edm" else "σ")
        a.set_ylabel(label)
        if np.all(y > 0):
            a.set_yscale("log")
        a.legend(fontsize=8)
    fig.suptitle(f"{report['trajectories']}: cost {report['cost']:.5g} ± "
                 f"{report['cost_stderr']:.2g}, length {report['length']:.5g} "
                 f"({report['n']} trajectories, {report['K']} times)", fontsize=9)
    fig.tight_layout()
    fig.savefig(filename, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------- reproduce

FIGURES = ("fig6", "table1", "fig7", "fig8", "schedules")


@app.command()
@handled
def reproduce(name: Annotated[str, typer.Argument(help="fig6 | table1 | fig7 | fig8 | schedules | all")],
              quick: Annotated[bool, typer.Option("--quick", help="Small settings for CI.")] = False,
              out: Annotated[str, typer.Option("--out", help="Output folder.")] = "out",
              means: Annotated[str, typer.Option("--means", help="fig6: the two component means 'a,b'.")] = "-2,2",
              std: Annotated[float, typer.Option("--std", help="fig6: component standard deviation.")] = 0.5,
              tau: Annotated[Optional[float], typer.Option("--tau", help="Protocol duration tau > 0 (default: each experiment's own, 1 for fig6 and 3 for fig7).")] = None,
              dynamics: Annotated[str, typer.Option("--dynamics", help="table1, fig7: exact | learned | both (learned: K trained velocity models per protocol or g; table1 integrates them by RK4, fig7 measures them by importance-weighted atoms; reused from --out when rerun).")] = "exact",
              seeds: Annotated[Optional[int], typer.Option("--seeds", help="table1/fig7 learned: models per protocol or g, K >= 2 (default 5; 2 with --quick); fig8: models per loss (default 3).")] = None,
              train_steps: Annotated[Optional[int], typer.Option("--train-steps", help="table1/fig7 learned and fig8: training steps of every model (default 4000; 300 with --quick).")] = None,
              x64: X64 = True, seed: Seed = 0, json_out: JsonOut = None,
              quiet: Quiet = False, no_cache: NoCache = False):
    """Reproduce one of the paper's experiments (figure PNG + JSON + table)."""
    if name not in FIGURES + ("all",):
        raise InputError(f"unknown figure {name!r}; choose fig6, table1, fig7, fig8, "
                         "schedules or all")
    if dynamics not in ("exact", "learned", "both"):
        raise InputError(f"--dynamics must be exact, learned or both; got {dynamics!r}")
    if name not in ("table1", "fig7", "all") and dynamics != "exact":
        raise InputError("--dynamics applies to table1 and fig7 only "
                         f"(the learned mode of {name} is not built)")
    if name not in ("table1", "fig7", "fig8", "all") and (seeds is not None
                                                          or train_steps is not None):
        raise InputError(f"--seeds and --train-steps apply to table1, fig7 and fig8 only; "
                         f"{name} trains no models")
    if name == "fig7" and dynamics == "exact" and (seeds is not None or train_steps is not None):
        raise InputError("--seeds and --train-steps set fig7's learned models: add --dynamics "
                         "learned or both")
    if seeds is not None and not 2 <= seeds <= 100:
        raise InputError(f"--seeds must be an integer in [2, 100]; got {seeds}")
    if train_steps is not None and not 1 <= train_steps <= 10**6:
        raise InputError(f"--train-steps must be an integer in [1, 1000000]; got {train_steps}")
    try:
        m = tuple(float(v) for v in means.split(","))
    except ValueError:
        raise InputError(f"--means must be two numbers 'a,b'; got {means!r}") from None
    if len(m) != 2 or not all(math.isfinite(v) for v in m) or m[0] == m[1]:
        raise InputError(f"--means must be two distinct finite numbers 'a,b'; got {means!r}")
    if not (math.isfinite(std) and 0 < std <= 100):
        raise InputError(f"--std must be a number in (0, 100]; got {std}")
    folder = prepare_folder(out)
    names = FIGURES if name == "all" else (name,)
    targets = {f"{n}.{ext}": str(folder / f"{n}.{ext}") for n in names for ext in ("json", "png")}
    if folder.exists():
        check_outputs(targets)
    if json_out not in (None, "-") and any(same_file(json_out, v) for v in targets.values()):
        raise InputError(f"--json {json_out!r} is a file that the experiment writes itself "
                         "into --out; give another file")
    run = start(1.0 if tau is None else tau, x64, seed, json_out, quiet, no_cache)
    folder.mkdir(parents=True, exist_ok=True)
    from satjax import experiments

    settings = dict(quick=quick, seed=seed, means=m, std=std, dynamics=dynamics, seeds=seeds,
                    train_steps=train_steps)
    if tau is not None:
        settings["tau"] = tau
    results = {}
    for n in names:
        results[n] = experiments.run_and_save(n, folder, run.console, **settings)
    finish(run, {k: {kk: v[kk] for kk in ("cases", "all_verdicts_hold", "summary") if kk in v}
                 for k, v in results.items()})


# ----------------------------------------------------------------------------------- bench


@app.command()
@handled
def bench(quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes (seconds; for CI).")] = False,
          scaling: Annotated[bool, typer.Option("--scaling", help="Also the doubling table of c_2 (N, M, d, K).")] = False,
          big: Annotated[bool, typer.Option("--big", help="Only the MNIST-sized c_2 run (minutes).")] = False,
          out: Annotated[str, typer.Option("--out", help="Folder for bench.json and bench.png.")] = "out",
          steps: Annotated[bool, typer.Option("--steps", help="Only the sampling-step grids benchmark (benchmarks/steps.py of a source checkout; float64; about 8 minutes on 2 cores, --quick 2-4): steps.json and steps.png (steps-quick.* with --quick).")] = False,
          json_out: JsonOut = None, quiet: Quiet = False):
    """Benchmarks against reference implementations in the same run (float32; see benchmarks/)."""
    folder = prepare_folder(out)
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "steps.py"
    if steps and (big or scaling):
        raise InputError("--steps runs alone: drop --big and --scaling")
    if steps and not script.is_file():
        raise InputError(f"--steps needs the benchmarks/ folder of a source checkout; "
                         f"{str(script)!r} is missing")
    run = start(1.0, False, 0, json_out, quiet, True)
    folder.mkdir(parents=True, exist_ok=True)
    if steps:
        import importlib.util

        spec = importlib.util.spec_from_file_location("satjax_benchmarks_steps", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        finish(run, module.run_cli(folder, quick=quick, say=run.console.say))
        return
    from satjax import bench as B

    res = B.run_cli(folder, quick=quick, scaling_table=scaling, big=big, say=run.console.say)
    finish(run, res)


if __name__ == "__main__":  # pragma: no cover
    app()
