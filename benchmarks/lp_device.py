"""Can the atom and grid transports' linear program move onto the device? (issue 22)

The density grid and the importance-weighted atoms (docs/theory.md §6.4, §6.5) need, at every
saved time, W_1 between two weightings a, b of the same atoms x and its rate Σ π_ij r_ij when
the atoms move with velocities v (r_ij = (x_i − x_j)·(v_i − v_j)/|x_i − x_j|, π the optimal
plan). :func:`satjax.geometry.atoms.w1_same_atoms` solves it with ``lp="simplex"`` (POT's exact
network simplex on the host) or ``lp="sinkhorn"`` (ott-jax on the device: a certified bracket,
the midpoint reported with the half-width as its error; the rate from the rounded entropic plan,
its error the change from a solve at 3 ε). This script runs both on the same inputs and reports
whether the bracket holds the exact W_1, its width, the rate's actual and reported errors, and
the warm wall time of each (jit-compiled, timed after one call).

Inputs: n atoms from N(0, I_d); a ∝ N(0.1·1, I), b ∝ N(0, 1.1 I) densities at the atoms (two
nearby laws, as in the transports); v a rotation plus a shear. Run:
``python benchmarks/lp_device.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from satjax.geometry import atoms

jax.config.update("jax_enable_x64", True)


def problem(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    a = np.exp(-0.5 * np.sum((x - 0.1) ** 2, 1))
    b = np.exp(-0.5 * np.sum(x**2, 1) / 1.1)
    rot = np.zeros((d, d))
    rot[0, 1], rot[1, 0] = -1.0, 1.0
    v = x @ rot.T + 0.3 * x[:, :1] * np.eye(d)[-1]
    return x, a / a.sum(), b / b.sum(), v


def timed(fn, *args):
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def run(quick: bool) -> list:
    rows = []
    sizes = ((2, 256), (3, 256)) if quick else ((2, 512), (2, 1024), (2, 2048), (3, 1024))
    for d, n in sizes:
        args = [jnp.asarray(z) for z in problem(n, d)]
        exact, t_ex = timed(jax.jit(lambda x, a, b, v: atoms.w1_same_atoms(x, a, b, v)), *args)
        sk, t_sk = timed(jax.jit(lambda x, a, b, v: atoms.w1_same_atoms(x, a, b, v,
                                                                         lp="sinkhorn")), *args)
        w_ex, r_ex = float(exact[0]), float(exact[1])
        w, r, _, w_err, r_err = (float(z) for z in sk)
        row = {"d": d, "n": n, "W1_exact": w_ex, "W1_sinkhorn": w, "W1_halfwidth": w_err,
               "bracket_holds": abs(w - w_ex) <= w_err, "halfwidth_relative": w_err / w_ex,
               "rate_exact": r_ex, "rate_sinkhorn": r, "rate_error_reported": r_err,
               "rate_error_actual": abs(r - r_ex), "seconds_simplex": t_ex,
               "seconds_sinkhorn": t_sk, "time_ratio_sinkhorn_over_simplex": t_sk / t_ex}
        rows.append(row)
        print(f"d={d} n={n:5d}: W1 {w:.6f} ± {w_err:.1e} ∋ {w_ex:.6f}: {row['bracket_holds']} "
              f"({row['halfwidth_relative']:.1e} rel.); rate {r:.5g} vs {r_ex:.5g} (off "
              f"{abs(r - r_ex) / abs(r_ex):.2%}, reported {r_err / abs(r_ex):.2%}); "
              f"{t_sk:.2f} s vs simplex {t_ex:.3f} s ({t_sk / t_ex:.0f}×)", flush=True)
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    out = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
           "rows": run(args.quick)}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
