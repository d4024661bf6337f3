"""Table I with exact and learned dynamics (satjax.experiments.table1, `satjax reproduce table1`)."""

import math

import numpy as np
import pytest
from scipy import stats

from satjax.experiments import table1


def test_table1_quick_exact_sampler_learned_and_resume(tmp_path):
    """Closed forms for the exact rows, the RK4 sampler near the exact flow, the paired test
    against scipy's, and a rerun that reuses the saved models (same numbers, no training)."""
    res = table1.run(quick=True, dynamics="both", folder=tmp_path)
    rows = {(r["protocol"], r["perturb"]): r for r in res["rows"]}
    for fam in res["settings"]["families"]:
        etas = [rows[(p, fam)]["eta_exact"] for p in table1.PROTOCOLS]
        assert np.allclose(etas, etas[0], rtol=1e-6)  # schedule invariance (docs/theory.md §7)
        for p in table1.PROTOCOLS:
            r = rows[(p, fam)]
            # RK4 with 40 steps: within 2 % of the exact flow's η (docs/reproduction.md §3.9)
            assert r["eta_sampler"] == pytest.approx(r["eta_exact"], rel=2e-2)
            assert r["n_seeds"] == 2 and math.isfinite(r["eta_learned_stderr"])
    # cond-OT ends at P_τ = N(0, 1): the start N(1, 1) has W1 = 1 and D0 = χ² = e − 1
    r = rows[("cond-ot", "mean:1")]
    assert r["W1_start"] == pytest.approx(1.0, rel=1e-9)
    assert r["D0"] == pytest.approx(math.e - 1, rel=1e-9)
    # the paired comparison is scipy's paired t-test on the per-seed η
    for fam, v in res["verdict"].items():
        for pair in v["pairs"]:
            a, b = ([m["eta"][fam] for m in sorted(res["models"], key=lambda m: m["seed"])
                     if m["protocol"] == name] for name in (pair["smaller_c2"], pair["larger_c2"]))
            assert pair["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
        assert v["status"] in ("supported", "contradicted", "not resolved")
    assert not any(m["resumed"] for m in res["models"])
    again = table1.run(quick=True, dynamics="learned", folder=tmp_path)
    assert all(m["resumed"] for m in again["models"])
    assert [m["eta"] for m in again["models"]] == [m["eta"] for m in res["models"]]
    assert [m["c2"] for m in again["models"]] == [m["c2"] for m in res["models"]]
    # each learned flow's c_2 (its own kinetic cost) with its mean over seeds; the exact path's
    # c_2 beside it is the quadrature value of the rows
    for name, v in res["c2_learned"].items():
        c2s = [m["c2"] for m in res["models"] if m["protocol"] == name]
        assert v["mean"] == pytest.approx(np.mean(c2s), rel=1e-12)
        assert v["stderr"] == pytest.approx(np.std(c2s, ddof=1) / np.sqrt(len(c2s)), rel=1e-9)
        assert v["exact"] == rows[(name, res["settings"]["families"][0])]["c2_exact"]


def test_dynamics_option_is_checked():
    from typer.testing import CliRunner

    from satjax.cli import app

    res = CliRunner().invoke(app, ["reproduce", "fig6", "--dynamics", "learned"])
    assert res.exit_code == 2 and "table1 and fig7 only" in res.output
    res = CliRunner().invoke(app, ["reproduce", "table1", "--dynamics", "trained"])
    assert res.exit_code == 2 and "--dynamics must be" in res.output
    with pytest.raises(ValueError, match="seeds"):
        table1.run(quick=True, dynamics="learned", seeds=1)
