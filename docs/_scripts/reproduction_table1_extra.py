"""Follow-ups to reproduction_table1.py (docs/reproduction.md):

    python3 docs/_scripts/reproduction_table1_extra.py --out docs/reproduction/table1_extra.json

1. the centred two-component start ½N(−a, s²) + ½N(a, s²) at the paper's data (σ = 0.5) on a
   finer grid around its maximum (a ∈ [0.45, 0.70], s ∈ [0.40, 0.66]);
2. the variance family N(0, V) for narrower data, σ ∈ {0.2, 0.25, 0.28}: its maximum and the V
   that meet the paper's "different variance" values.
Same evaluator as reproduction_table1.py (exact 1-D η, cosine, τ = 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reproduction_table1 import PAPER, Evaluator, best, g, roots, sweep  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/reproduction/table1_extra.json")
    args = ap.parse_args()
    t0 = time.time()
    ev = Evaluator(0.5)
    a_s = np.round(np.linspace(0.45, 0.70, 11), 6)
    s_s = np.round(np.linspace(0.40, 0.66, 14), 6)
    mk = lambda a, s: f"gmm:means={g(-a)}|{g(a)},std={g(s)}"  # noqa: E731
    grid = [[ev(mk(a, s)) for s in s_s] for a in a_s]
    gmm = {"a": a_s.tolist(), "s": s_s.tolist(), "eta": [[r["eta"] for r in row] for row in grid],
           "max": best([r for row in grid for r in row]),
           "checks": [ev(mk(0.58, 0.55)), ev(mk(0.55, 0.62))]}
    var = {}
    vs = np.round(np.concatenate([np.linspace(0.02, 0.98, 49), np.linspace(1.02, 1.98, 49)]), 6)
    mk_var = lambda v: f"variance:{g(v)}"  # noqa: E731
    for std in (0.2, 0.25, 0.28):
        e = Evaluator(std)
        rows = sweep(e, mk_var, vs)
        var[str(std)] = {"x": vs.tolist(), "rows": rows, "max": best(rows),
                         "roots": {str(t): roots(e, mk_var, vs, rows, t)
                                   for t in PAPER["variance"]}}
    out = {"gmm_std_0.5_refined": gmm, "variance_other_std": var, "seconds": time.time() - t0}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
