"""The benchmark's quick mode runs and its JSON has a ratio for every comparison (no timings
are asserted); the satjax and reference implementations compute the same numbers; the c_2
integral runs in bounded memory."""

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from satjax import bench
from satjax.cli import app

ROOT = Path(__file__).parent.parent
NAMES = {"velocity_d2", "velocity_d64", "c2_integral", "ode_vs_diffrax", "w1_vs_pot", "w2_vs_pot",
         "cfm_step_vs_torch"}


def test_quick_benchmark_cli_json_png(tmp_path):
    res = CliRunner().invoke(app, ["bench", "--quick", "--scaling", "--out", str(tmp_path),
                                   "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    d = json.loads((tmp_path / "b.json").read_text())
    assert d == json.loads((tmp_path / "bench.json").read_text())
    assert "machine" in d and d["rooflines"]["xla_gemm_gflops"] > 0
    rows = {r["name"]: r for r in d["comparisons"]}
    assert set(rows) == NAMES
    for name, r in rows.items():
        for k in ("reference", "satjax_s", "reference_s", "speedup", "compile_s", "peak_mb"):
            assert k in r
        assert r["satjax_s"] > 0
        if not r["reference"].startswith("skipped"):
            assert r["speedup"] > 0, name
    # same work: the kernels agree with their references
    assert rows["velocity_d2"]["max_abs_diff"] < 1e-3 and rows["velocity_d64"]["max_abs_diff"] < 1e-3
    assert rows["c2_integral"]["abs_diff"] < 1e-3
    assert rows["ode_vs_diffrax"]["max_abs_diff"] < 1e-5
    assert rows["w1_vs_pot"]["relative_error"] < 2e-2 and rows["w2_vs_pot"]["relative_error"] < 2e-2
    if "params" in rows["cfm_step_vs_torch"] and "torch_params" in rows["cfm_step_vs_torch"]:
        assert rows["cfm_step_vs_torch"]["params"] == rows["cfm_step_vs_torch"]["torch_params"]
    # scaling: every doubling present, each c2 finite and of the same order (same data law)
    scal = d["scaling"]["rows"]
    assert [(r["varied"], r["factor"]) for r in scal] == [("base", 1), ("N", 2), ("M", 2),
                                                          ("d", 2), ("K", 2)]
    base = scal[0]
    for r in scal:
        assert r["seconds"] > 0 and r["peak_mb"] > 0
    # more time nodes or samples refine the same integral: c2 changes by little
    for r in scal[1:2] + scal[4:5]:
        assert abs(r["c2"] / base["c2"] - 1) < 0.1


def test_run_py_is_the_same_entry_point(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("satjax_bench_run", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = bench._row("velocity_d2", "numpy", 1.0, 3.0, 0.1, 2.0)
    monkeypatch.setattr(bench, "run", lambda quick, progress=None: {
        "machine": {}, "quick": quick, "comparisons": [row]})
    out = tmp_path / "b.json"
    mod.main(["--quick", "--json", str(out)])
    d = json.loads(out.read_text())
    assert d["quick"] is True and d["comparisons"][0]["speedup"] == 3.0


def test_c2_memory_is_bounded_by_tiles():
    """c_2 over 2 nodes × 20 000 samples × 20 000 components (64-D): all (sample, component)
    pairs at once would take 3.2 GB in float32; the tiled engine stays under 1.5 GB RSS."""
    code = textwrap.dedent("""
        from satjax import bench
        r = bench.c2_run(20_000, 20_000, 64, 2, repeats=0)
        assert r["c2"] > 0
        print(r["peak_mb"], bench.peak_rss_mb())
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    xla_mb, rss_mb = map(float, res.stdout.strip().splitlines()[-1].split())
    assert xla_mb < 200, xla_mb
    assert rss_mb < 1500, rss_mb
