"""`satjax reproduce fig7 --dynamics learned` (satjax.experiments.fig7): K trained models per g,
each measured by importance-weighted atoms carried by its learned velocity, paired across g,
resumed from the output folder. (The atom route with a learned velocity is checked in
tests/test_bound_atoms.py; here: the experiment's statistics and its resume.)"""


import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from satjax.cli import app
from satjax.experiments import fig7


def test_fig7_learned_quick_statistics_and_resume(tmp_path):
    res = fig7.run(quick=True, dynamics="learned", g_values=(0.0, 5.0), seeds=2,
                   folder=tmp_path)
    lr = res["learned"]
    assert res["summary"] == {} and res["settings"]["learned"]["models_per_g"] == 2
    assert len(lr["models"]) == 4 and not any(m["resumed"] for m in lr["models"])
    for m in lr["models"]:  # every number carries its method and uncertainty
        assert m["eta"] > 0 and m["eta_error"] >= 0 and "learned velocity" in m["dW1_method"]
        assert m["W1_to_data"] > 0 and m["W1_to_data_stderr"] > 0
    # the summary and the paired step, recomputed here from the per-model values
    eta = {g: [m["eta"] for m in sorted(lr["models"], key=lambda m: m["seed"])
               if m["case"] == g] for g in ("g=0", "g=5")}
    for g, v in eta.items():
        assert lr["summary"][g]["eta"] == pytest.approx(np.mean(v), rel=1e-12)
        assert lr["summary"][g]["eta_stderr"] == pytest.approx(np.std(v, ddof=1) / np.sqrt(2),
                                                               rel=1e-10)
    step = lr["eta_steps_in_g"][0]
    assert step["mean_difference"] == pytest.approx(np.mean(np.subtract(eta["g=5"],
                                                                        eta["g=0"])), rel=1e-12)
    assert step["p_value"] == pytest.approx(stats.ttest_rel(eta["g=5"], eta["g=0"]).pvalue,
                                            rel=1e-8)
    assert lr["eta_grows_with_g"] in ("grows", "does not grow", "not resolved")
    # rerun on the same folder: the models are loaded, not retrained, and the deterministic grid
    # gives the same numbers
    again = fig7.run(quick=True, dynamics="learned", g_values=(5.0,), seeds=2, folder=tmp_path)
    assert all(m["resumed"] for m in again["learned"]["models"])
    assert [m["eta"] for m in again["learned"]["models"]] == pytest.approx(eta["g=5"], rel=1e-9)
    assert again["learned"]["eta_grows_with_g"] == "not applicable (one g)"


def test_fig7_dynamics_options_are_checked_before_work(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["reproduce", "fig7", "--seeds", "3", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--dynamics learned or both" in res.output
    res = runner.invoke(app, ["reproduce", "fig6", "--dynamics", "learned", "--out",
                              str(tmp_path)])
    assert res.exit_code == 2 and "table1 and fig7" in res.output
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="seeds"):
        fig7.run(quick=True, dynamics="learned", seeds=1)
