"""The benchmark's quick mode runs and its JSON has a ratio for every comparison (no timings
are asserted); the satjax and reference implementations compute the same numbers."""

import importlib.util
import json
from pathlib import Path

RUN = Path(__file__).parent.parent / "benchmarks" / "run.py"
NAMES = {"velocity_d2", "velocity_d64", "c2_integral", "ode_vs_diffrax", "w1_vs_pot", "w2_vs_pot",
         "cfm_step_vs_torch"}


def test_quick_benchmark_json(tmp_path):
    spec = importlib.util.spec_from_file_location("satjax_bench", RUN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "b.json"
    mod.main(["--quick", "--json", str(out)])
    d = json.loads(out.read_text())
    assert "machine" in d
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
    assert rows["c2_integral"]["abs_diff"] < 1e-3 * 1.0
    assert rows["ode_vs_diffrax"]["max_abs_diff"] < 1e-5
    assert rows["w1_vs_pot"]["relative_error"] < 2e-2 and rows["w2_vs_pot"]["relative_error"] < 2e-2
