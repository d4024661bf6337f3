"""Fig. 8 with several trained models per loss (satjax.experiments.fig8)."""

import math

import numpy as np
import pytest
from scipy import stats

from satjax.experiments import fig8


def test_fig8_quick_models_statistics_and_resume(tmp_path):
    """Closed forms of the setting (D0 = 2 KL = δ², W1 between a particle set and its translate
    = |δ|), the across-model means and standard errors, scipy's paired t-test, and a rerun that
    reuses the saved models."""
    res = fig8.run(quick=True, folder=tmp_path)
    models = res["models"]
    assert len(models) == 6 and not any(m["resumed"] for m in models)
    for c in res["cases"]:
        assert c["D0"] == pytest.approx(0.25, rel=1e-12)
        assert c["W1_start"] == pytest.approx(0.5, rel=1e-9)
        etas = [m["eta"] for m in models if m["loss"] == c["loss"]]
        assert c["n_models"] == 3
        assert c["eta"] == pytest.approx(np.mean(etas), rel=1e-12)
        assert c["eta_stderr"] == pytest.approx(np.std(etas, ddof=1) / math.sqrt(3), rel=1e-9)
        # the G20 cost of a trained model is far above its η (the bound is loose here)
        assert c["c2"] > 0 and c["ratio_eta_over_c2"] < 1
    by = {loss: [m["eta"] for m in sorted(models, key=lambda m: m["seed"]) if m["loss"] == loss]
          for loss in fig8.LOSSES}
    p = res["paired_ot_cfm_minus_cfm"]["eta"]["p_value"]
    assert p == pytest.approx(stats.ttest_rel(by["ot-cfm"], by["cfm"]).pvalue, rel=1e-9)
    again = fig8.run(quick=True, folder=tmp_path)
    assert all(m["resumed"] for m in again["models"])
    assert [m["eta"] for m in again["models"]] == [m["eta"] for m in models]
    with pytest.raises(ValueError, match="seeds"):
        fig8.run(quick=True, seeds=1)
