"""The n-D speed-accuracy bound as one compiled program against the eager particle route (issue 22).

    python benchmarks/bound_nd.py [--quick] [--json FILE]

Fig. 7's setting: the Swiss roll (800-point kernel mixture, 2-D) under the rotating force
h = 1.1, g = 3, T_fin = 0.5, τ = 3, reverse start N(0, 0.9² I); particles n = 1000 (RK4 × 100,
W1 by the exact assignment at 21 saved times), 48 time nodes for c_2. Both sides evaluate the
same function, :func:`satjax.bound.bound_kernel`, with the same inputs:

* **eager** — called directly, as `satjax.bound.bound` ran the particle route up to 2026-12-03
  (each piece compiled on its own, the assignment a host call between them);
* **compiled** — `satjax.bound.bound`, now one jitted program with the assignment as a host
  callback inside it.

Reported: the first (cold) and the median of the next ``repeats`` (warm) wall times, the warm
speed-up, the number of XLA compilations per call (JAX's backend-compile events), and the
difference of η between the two (0 up to rounding: the same arithmetic).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

from satjax import bound as B  # noqa: E402
from satjax import specs  # noqa: E402
from satjax._util import gauss_legendre  # noqa: E402
from satjax.estimators import resolve  # noqa: E402

COMPILES = [0]


def _count(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES[0] += 1


def setting(n: int):
    data = specs.build_data(specs.parse_data(
        "swissroll:n=800,noise=0.3,scale=0.125,width=0.05,seed=0"))
    proto = specs.build_protocol(specs.parse_protocol("rotating:h=1.1,g=3,tfin=0.5"), tau=3.0,
                                 data=data)
    pert = specs.build_perturbation(specs.parse_perturbation("gmm:means=0;0,std=0.9"))
    return data, proto, pert


def timed(fn, repeats: int) -> dict:
    out = []
    for _ in range(1 + repeats):
        c0, t0 = COMPILES[0], time.perf_counter()
        r = fn()
        jax.block_until_ready(r.eta.value)
        out.append((time.perf_counter() - t0, COMPILES[0] - c0, float(r.eta.value)))
    warm = [o[0] for o in out[1:]]
    return {"cold_s": out[0][0], "warm_s": float(np.median(warm)),
            "compilations_cold": out[0][1], "compilations_warm": out[-1][1], "eta": out[-1][2]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 200 particles, 16 nodes, 1 repeat")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    n, n_time, repeats = (200, 16, 1) if a.quick else (1000, 48, 3)
    jax.monitoring.register_event_duration_secs_listener(_count)
    data, proto, pert = setting(n)
    key = jax.random.PRNGKey(0)

    def compiled():
        return B.bound(proto, data, pert, n_time=n_time, key=key, particles=n)

    def eager():  # the same inputs as bound() prepares them
        keys = jax.random.split(key, 3)
        est = resolve(data, proto, "auto", key=keys[0])
        tr = B.resolve_transport("auto", data, None, keys[1], n)
        ts, _ = gauss_legendre(n_time, 0.0, proto.tau)
        est = est.prepare(proto, data, ts)
        return B.bound_kernel(proto, data, pert, None, est, tr, n_time, keys[2])

    res = {"setting": {"data": "swissroll:n=800,noise=0.3,scale=0.125,width=0.05,seed=0",
                       "protocol": "rotating:h=1.1,g=3,tfin=0.5", "tau": 3.0,
                       "perturb": "gmm:means=0;0,std=0.9", "particles": n, "n_time": n_time,
                       "repeats": repeats, "backend": jax.default_backend(),
                       "jax": jax.__version__}}
    res["eager"] = timed(eager, repeats)
    res["compiled"] = timed(compiled, repeats)
    res["warm_speedup"] = res["eager"]["warm_s"] / res["compiled"]["warm_s"]
    res["cold_speedup"] = res["eager"]["cold_s"] / res["compiled"]["cold_s"]
    res["eta_difference"] = abs(res["eager"]["eta"] - res["compiled"]["eta"])
    for side in ("eager", "compiled"):
        r = res[side]
        print(f"{side:9s} cold {r['cold_s']:7.2f} s ({r['compilations_cold']} compilations)  "
              f"warm {r['warm_s']:7.2f} s ({r['compilations_warm']} compilations)  "
              f"eta {r['eta']:.6g}")
    print(f"warm speed-up {res['warm_speedup']:.2f}x, cold {res['cold_speedup']:.2f}x; "
          f"|eta difference| {res['eta_difference']:.2g}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
