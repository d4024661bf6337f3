"""satjax benchmarks: each kernel against a reference doing the same work, in the same run.

    python benchmarks/run.py [--quick] [--json FILE]        (same as: satjax bench)

See satjax/bench.py for what is compared and benchmarks/README.md for the numbers.
No timing is asserted anywhere; tests only run ``--quick`` and check the JSON's shape.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from satjax import bench  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI)")
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args(argv)
    out = bench.run(args.quick, progress=lambda s: print(f"... {s}", file=sys.stderr))
    for line in bench.format_rows(out["comparisons"]):
        print(line)
    if args.json:
        bench.write_json(out, args.json)
    return out


if __name__ == "__main__":
    main()
