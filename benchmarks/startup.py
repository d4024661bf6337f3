"""Start-up and compilation-cache benchmark (issue 16).

    python benchmarks/startup.py [--quick] [--repeats R] [--json FILE]

1. ``satjax --help`` against ``python -c "import jax"`` in the same run (median of R runs of
   each, fresh processes), and whether ``satjax --help`` imported jax at all (``-X importtime``).
2. ``satjax reproduce fig6`` (``--quick`` with --quick) twice with an empty persistent
   compilation cache, and once with ``--no-cache``: the second run's saving is the compile time
   the cache removes (tracing still runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CLI = [sys.executable, "-c", "from satjax.cli import app; app()"]


def timed(cmd, env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)
    return time.perf_counter() - t0


def imports_jax(cmd) -> bool:
    """True when ``cmd`` (a python -c command line) imports a module named jax."""
    res = subprocess.run([cmd[0], "-X", "importtime"] + cmd[1:], capture_output=True, text=True,
                         check=True)
    return any(line.rsplit("|", 1)[-1].strip() == "jax" for line in res.stderr.splitlines())


def startup(repeats: int) -> dict:
    help_s = [timed(CLI + ["--help"]) for _ in range(repeats)]
    jax_s = [timed([sys.executable, "-c", "import jax"]) for _ in range(repeats)]
    h, j = statistics.median(help_s), statistics.median(jax_s)
    return {"satjax_help_s": h, "import_jax_s": j, "ratio": h / j,
            "help_imports_jax": imports_jax(CLI + ["--help"]), "repeats": repeats,
            "target": "satjax --help below import jax (ratio < 1)"}


def cache_saving(quick: bool) -> dict:
    args = ["reproduce", "fig6"] + (["--quick"] if quick else []) + ["--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SATJAX_CACHE_DIR=os.path.join(tmp, "cache"))
        env.pop("SATJAX_NO_CACHE", None)
        cold = timed(CLI + args + ["--out", os.path.join(tmp, "a")], env)
        warm = timed(CLI + args + ["--out", os.path.join(tmp, "b")], env)
        none = timed(CLI + args + ["--out", os.path.join(tmp, "c"), "--no-cache"], env)
    return {"command": "satjax " + " ".join(args), "first_run_s": cold, "second_run_s": warm,
            "no_cache_s": none, "saving_s": cold - warm, "saving_fraction": 1 - warm / cold}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fig6 --quick for the cache runs")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = {"startup": startup(a.repeats)}
    s = out["startup"]
    print(f"satjax --help {s['satjax_help_s']:.2f} s   import jax {s['import_jax_s']:.2f} s   "
          f"ratio {s['ratio']:.2f}   --help imports jax: {s['help_imports_jax']}")
    out["cache"] = c = cache_saving(a.quick)
    print(f"{c['command']}: first {c['first_run_s']:.1f} s, second {c['second_run_s']:.1f} s "
          f"(saves {c['saving_s']:.1f} s, {100 * c['saving_fraction']:.0f} %), "
          f"--no-cache {c['no_cache_s']:.1f} s")
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=2)
        os.replace(tmp, a.json)
    return out


if __name__ == "__main__":
    main()
