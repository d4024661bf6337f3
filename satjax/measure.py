"""Measure a generator from its trajectories: kinetic and acceleration profiles, thermodynamic
length and cost (docs/theory.md §5, §10; Eq. G20).

For trajectories x_k^i = x^i(t_k) of any sampler with velocities v_k^i = dx/dt (from any
framework), in the paper's time (t = 0 data, t = τ noise):

    kinetic(t_k)      = E‖v_k‖²                       (the W2 speed² when v is a gradient field)
    acceleration(t_m) = E‖Dv/Dt‖² at interval midpoints, Dv/Dt ≈ (v_{k+1} − v_k)/(t_{k+1} − t_k)
    cost              = ∫ E‖v‖² dt  (trapezoid; = c_2 of Eq. G20 for a deterministic flow)
    length            = ∫ sqrt(E‖v‖²) dt

with standard errors over trajectories (each trajectory's own trapezoid integral is one sample).
:func:`measure_trajectories` takes arrays; :func:`read_trajectories` validates a ``.npz`` file
(``t`` (K,), ``x`` (K, N, d), ``v`` (K, N, d), ``convention``) and converts the time convention;
:func:`measure_flow` integrates a JAX velocity field and measures it.

Conventions: ``"paper"`` (t = 0 data, t = τ noise, v = dx/dt); ``"flow-matching"`` (s = 1 data,
s = 0 noise, u = dx/ds, τ = 1: t = 1 − s, v = −u); ``"edm"`` (σ-parametrised: t = σ, v = dx/dσ,
τ = σ_max, as in EDM / k-diffusion / diffusers Euler samplers).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

CONVENTIONS = ("paper", "flow-matching", "edm")


class TrajectoryError(ValueError):
    """A trajectory file or array that cannot be measured (the message names the problem)."""


def to_paper_time(t, v, convention: str):
    """(t, v) in the paper's convention (see the module docstring)."""
    t, v = np.asarray(t, np.float64), np.asarray(v, np.float64)
    if convention == "paper" or convention == "edm":
        return t, v
    if convention == "flow-matching":
        return 1.0 - t, -v
    raise TrajectoryError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")


def _validate(t, x, v):
    t, x, v = (np.asarray(a) for a in (t, x, v))
    for name, a in (("t", t), ("x", x), ("v", v)):
        if np.iscomplexobj(a) or a.dtype.kind not in "fiu":
            raise TrajectoryError(f"`{name}` must hold real numbers; got dtype {a.dtype}")
    if t.ndim != 1 or t.shape[0] < 2:
        raise TrajectoryError(f"`t` must have shape (K,) with K >= 2; got {t.shape}")
    K = t.shape[0]
    if x.ndim == 3 and x.shape[0] != K:
        raise TrajectoryError(f"`x` has {x.shape[0]} times (first axis) but `t` has {K}")
    if x.ndim != 3 or x.shape[0] != K or x.shape[1] < 2 or x.shape[2] < 1:
        raise TrajectoryError(f"`x` must have shape (K={K}, N >= 2, d); got {x.shape}")
    if v.shape != x.shape:
        raise TrajectoryError(f"`v` must have the shape of `x` {x.shape}; got {v.shape}")
    for name, a in (("t", t), ("x", x), ("v", v)):
        if not np.all(np.isfinite(a)):
            raise TrajectoryError(f"`{name}` contains NaN or inf")
    dt = np.diff(t)
    if not (np.all(dt > 0) or np.all(dt < 0)):
        raise TrajectoryError("`t` must be strictly monotone")
    return t.astype(np.float64), x.astype(np.float64), v.astype(np.float64)


def measure_trajectories(t, x, v, *, convention: str = "paper") -> dict:
    """Kinetic and acceleration profiles, length and cost of trajectories (module docstring).

    Returns a dict with ``t`` (K,) in the paper's time (increasing), ``kinetic`` and
    ``kinetic_stderr`` (K,), ``t_mid`` and ``acceleration`` / ``acceleration_stderr`` (K − 1,),
    ``cost`` / ``cost_stderr``, ``length`` / ``length_stderr`` (delta method), ``n``; ``finite``
    is False when a quantity overflows float64, and ``overflow`` names those quantities.

    Raises:
      TrajectoryError: shapes, non-finite values, non-monotone times, unknown convention.
    """
    if convention not in CONVENTIONS:
        raise TrajectoryError(f"unknown convention {convention!r}; expected one of "
                              f"{', '.join(CONVENTIONS)}")
    t, x, v = _validate(t, x, v)
    t, v = to_paper_time(t, v, convention)
    if t[1] < t[0]:  # order by increasing paper time
        t, x, v = t[::-1], x[::-1], v[::-1]
    n = x.shape[1]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # overflow is reported through ``finite`` (and by the CLI as a numerical failure)
        sq = np.sum(v**2, -1)  # (K, N)
        kinetic = sq.mean(1)
        kinetic_se = sq.std(1, ddof=1) / math.sqrt(n)
        w = np.zeros_like(t)
        dt = np.diff(t)
        w[:-1] += 0.5 * dt
        w[1:] += 0.5 * dt
        per_path = w @ sq
        cost, cost_se = per_path.mean(), per_path.std(ddof=1) / math.sqrt(n)
        speed = np.sqrt(kinetic)
        length = w @ speed
        lin = w @ (sq / (2.0 * np.maximum(speed, 1e-300))[:, None])
        length_se = lin.std(ddof=1) / math.sqrt(n)
        acc = np.sum(((v[1:] - v[:-1]) / dt[:, None, None]) ** 2, -1)  # (K - 1, N)
        acc_mean, acc_se = acc.mean(1), acc.std(1, ddof=1) / math.sqrt(n)
        t_mid = 0.5 * t[1:] + 0.5 * t[:-1]
    overflow = [name for name, a in (("time steps", dt), ("E|v|^2", kinetic), ("cost", cost),
                                     ("length", length), ("E|Dv/Dt|^2", acc_mean))
                if not np.all(np.isfinite(a))]
    return {"t": t, "kinetic": kinetic, "kinetic_stderr": kinetic_se,
            "t_mid": t_mid, "acceleration": acc_mean,
            "acceleration_stderr": acc_se, "finite": not overflow, "overflow": overflow,
            "cost": float(cost), "cost_stderr": float(cost_se),
            "cost_method": "trapezoid over the given times, mean over trajectories (Eq. G20)",
            "length": float(length), "length_stderr": float(length_se), "n": int(n),
            "convention": convention}


def _declared_bytes(path) -> int:
    """Bytes of the arrays of an .npz archive as float64, from their headers (nothing loaded;
    a compressed archive can expand far beyond its size on disk). 0 when unreadable: the
    loader then names the problem."""
    import zipfile

    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                        else np.lib.format.read_array_header_2_0
                    shape, _, _ = read(f)
                    total += 8 * math.prod(shape)
    except Exception:  # corrupt archives raise several kinds
        return 0
    return total


def read_trajectories(path) -> tuple:
    """(t, x, v, convention) from a ``.npz`` file, validated before any work.

    Raises:
      TrajectoryError: a missing or unreadable file, missing keys, bad shapes or values.
    """
    p = Path(path)
    if not p.is_file():
        raise TrajectoryError(f"no file {str(p)!r}")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise TrajectoryError(f"cannot read {str(p)!r}: {err.strerror or err}") from None
    if magic == b"\x93NUMPY":
        raise TrajectoryError(f"{str(p)!r} is a single .npy array, not an .npz archive (write "
                              "t, x, v and convention with numpy.savez)")
    if not magic.startswith(b"PK"):
        raise TrajectoryError(f"{str(p)!r} is not an .npz archive (numpy.savez of t, x, v and "
                              "convention)")
    need = 4 * _declared_bytes(p)  # the arrays as float64, their squares and differences
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.75 * total:
        raise TrajectoryError(f"{str(p)!r} holds arrays that need about {need / 2**30:.1f} GiB to "
                              f"measure, more than 3/4 of this machine's {total / 2**30:.0f} GiB: "
                              "save fewer trajectories or times")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {"t", "x", "v"} - keys
            if missing:
                raise TrajectoryError(f"{str(p)!r} lacks {', '.join(sorted(missing))} (needs t, "
                                      "x, v and convention)")
            t, x, v = z["t"], z["x"], z["v"]
            conv = str(z["convention"]) if "convention" in keys else None
    except TrajectoryError:
        raise
    except Exception as err:  # corrupt archives raise several kinds
        raise TrajectoryError(f"cannot read {str(p)!r} as .npz: {err}") from None
    if conv is None:
        raise TrajectoryError(f"{str(p)!r} lacks `convention` ({', '.join(CONVENTIONS)})")
    if conv not in CONVENTIONS:
        raise TrajectoryError(f"{str(p)!r}: unknown convention {conv!r}; expected one of "
                              f"{', '.join(CONVENTIONS)}")
    t, x, v = _validate(t, x, v)
    return t, x, v, conv


def measure_flow(velocity, x_start, *, t_start, t_end=0.0, n_steps: int = 100,
                 method: str = "rk4") -> dict:
    """Integrate dx/dt = ν(x, t) (a :mod:`satjax.reverse` field or callable) from ``x_start``
    (N, d) with a fixed-step solver, saving every step, and measure the trajectories."""
    import jax

    from satjax import reverse as R

    traj = R.solve_ode(velocity, x_start, t_start=t_start, t_end=t_end, method=method,
                       n_steps=n_steps, n_save=n_steps)
    fld = R.as_field(velocity)
    v = jax.vmap(fld.batch)(traj.xs, traj.ts)
    return measure_trajectories(np.asarray(traj.ts), np.asarray(traj.xs), np.asarray(v))


__all__ = ["CONVENTIONS", "TrajectoryError", "measure_flow", "measure_trajectories",
           "read_trajectories", "to_paper_time"]
