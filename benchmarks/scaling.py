"""Scaling of the c_2 integral: time and memory as N, M, d, K double; the MNIST-sized run.

    python benchmarks/scaling.py [--quick] [--json FILE]     doubling table
    python benchmarks/scaling.py --big [--json FILE]         70 000 components × 784-D, 10⁵ samples

``--big`` runs in this process and reports the peak resident memory (VmHWM); issue 7 asks
for it to stay within 4 GB. Same as ``satjax bench --scaling`` / ``--big``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from satjax import bench  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--n-time", type=int, default=2, help="time nodes of the --big run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.big:
        out = {"machine": bench.machine(), "big": bench.big_c2(n_time=args.n_time)}
        print(json.dumps(out["big"], indent=2))
    else:
        out = {"machine": bench.machine(),
               "scaling": bench.scaling(args.quick, progress=lambda s: print(s, file=sys.stderr))}
        for r in out["scaling"]["rows"]:
            exp = "" if r["exponent"] is None else f"  exponent {r['exponent']:.2f}"
            print(f"{r['varied']:>4s} x{r['factor']}  N={r['N']:6d} M={r['M']:5d} d={r['d']:3d} "
                  f"K={r['K']:3d}  {r['seconds'] * 1e3:9.1f} ms  peak {r['peak_mb']:8.1f} MB{exp}")
    if args.json:
        bench.write_json(out, args.json)
    return out


if __name__ == "__main__":
    main()
