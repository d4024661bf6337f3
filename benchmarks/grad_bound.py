"""Cost of differentiating the n-D speed-accuracy bound, and W1 by Sinkhorn vs exact OT (issue 13).

    python benchmarks/grad_bound.py [--quick] [--json FILE]

Swiss roll (800-point kernel mixture, 2-D) under vp-linear, reverse start shifted by 0.15; the two
particle sets (n = 2048 each) go back through the exact probability-flow ODE (RK4, 64 steps, W1
at 8 saved times); c_2 is the closed form of the schedule, so the time is that of the transport.

1. jit(η) against jit(value_and_grad(η)) with respect to β_max, with and without checkpointing of
   the ODE steps: median wall time, the ratio (target ≤ 4×) and XLA's compiled peak memory
   (arguments + outputs + temporaries).
2. W1 along the flow by the exact assignment (POT, via a host callback; differentiable by the
   envelope theorem) against ott-jax's debiased Sinkhorn divergence (ε annealed to 10⁻³ × the
   mean cost): time of η and η's difference, at n = 512.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from satjax import bench  # noqa: E402
from satjax import bound as B  # noqa: E402
from satjax import mixtures as M  # noqa: E402
from satjax import perturb as PT  # noqa: E402
from satjax import schedules as S  # noqa: E402
from satjax._util import gauss_legendre  # noqa: E402
from satjax.estimators import Particles, resolve  # noqa: E402


def eta_function(n, n_steps, n_save, backend, checkpoint, n_time=16):
    data = M.swiss_roll()
    p = S.vp_linear()
    pert = PT.shift(0.15)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    ts, _ = gauss_legendre(n_time, 0.0, p.tau)
    est = resolve(data, p, "auto").prepare(p, data, ts)
    tr = Particles(n=n, n_steps=n_steps, n_save=n_save, backend=backend, checkpoint=checkpoint,
                   key=k1)

    def eta(beta_max):
        r = B.bound_kernel(p.replace(beta_max=beta_max), data, pert, None, est, tr, n_time, k2)
        return r.eta.value

    return eta, p.beta_max


def grad_cost(n, n_steps, n_save, repeats, checkpoint) -> dict:
    eta, b = eta_function(n, n_steps, n_save, "pot", checkpoint)
    value = jax.jit(eta)
    both = jax.jit(jax.value_and_grad(eta))
    _, c_v, peak_v, t_v = bench.compile_and_time(value, (b,), repeats)
    _, c_g, peak_g, t_g = bench.compile_and_time(both, (b,), repeats)
    v, g = both(b)
    fd = {h: (float(value(b + h)) - float(value(b - h))) / (2 * h) for h in (0.05,)}
    return {"checkpoint": checkpoint, "value_s": t_v, "value_and_grad_s": t_g,
            "ratio": t_g / t_v, "target": "<= 4", "value_peak_mb": peak_v,
            "grad_peak_mb": peak_g, "compile_value_s": c_v, "compile_grad_s": c_g,
            "eta": float(v), "d_eta_d_beta_max": float(g),
            "central_difference": {f"h={h}": v for h, v in fd.items()}}


def backends(n, n_steps, n_save, repeats) -> dict:
    out = {}
    for backend in ("pot", "ott"):
        eta, b = eta_function(n, n_steps, n_save, backend, True)
        f = jax.jit(eta)
        _, c, peak, t = bench.compile_and_time(f, (b,), repeats)
        out[backend] = {"eta_s": t, "compile_s": c, "eta": float(f(b))}
    out["eta_rel_difference"] = abs(out["ott"]["eta"] / out["pot"]["eta"] - 1)
    out["speedup_ott_over_pot"] = out["pot"]["eta_s"] / out["ott"]["eta_s"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n = 256, 16 steps (seconds)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed calls after the warm-up, median reported (default 2 quick, 3 full)")
    a = ap.parse_args(argv)
    n, n_steps, n_save, repeats = (256, 16, 4, 2) if a.quick else (2048, 64, 8, 3)
    if a.repeats is not None:
        if a.repeats < 1:
            ap.error("--repeats must be >= 1")
        repeats = a.repeats
    n_ot = 256 if a.quick else 512  # Sinkhorn at n = 2048 × every saved time is minutes here
    out = {"machine": bench.machine(), "sizes": {"n": n, "n_steps": n_steps, "n_save": n_save,
                                                 "n_backends": n_ot, "repeats": repeats},
           "grad": [grad_cost(n, n_steps, n_save, repeats, ck) for ck in (True, False)],
           "w1_backends": backends(n_ot, n_steps, n_save, max(repeats, 2))}
    for r in out["grad"]:
        print(f"checkpoint={r['checkpoint']!s:5}  η {r['value_s']:.2f} s  η+∇η "
              f"{r['value_and_grad_s']:.2f} s  ratio {r['ratio']:.2f}  peak {r['value_peak_mb']:.0f}"
              f" / {r['grad_peak_mb']:.0f} MB  dη/dβ_max {r['d_eta_d_beta_max']:.5g} "
              f"(central differences {r['central_difference']})")
    w = out["w1_backends"]
    print(f"W1 along the flow: POT {w['pot']['eta_s']:.2f} s (η {w['pot']['eta']:.5g}), ott "
          f"Sinkhorn {w['ott']['eta_s']:.2f} s (η {w['ott']['eta']:.5g}); relative difference "
          f"{w['eta_rel_difference']:.2e}")
    if a.json:
        bench.write_json(out, a.json)
    return out


if __name__ == "__main__":
    main()
