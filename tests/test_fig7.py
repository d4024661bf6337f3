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
    assert lr["eta_grows_with_g"] in ("grows", "does not grow", "grows in part", "not resolved")
    # each record carries η at n/2 atoms, so the step has its own resolution error
    assert all(m["eta_coarse"] > 0 for m in lr["models"])
    assert "paired mean difference from n/2 atoms" in step["resolution_method"]
    assert all(m["wD"] > 0 and m["wD_stderr"] > 0 for m in lr["models"])  # the flow's own w_D
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


def _record(case, seed, eta, coarse, error):
    base = {q: 1.0 for q in ("c1", "dW1", "W1_end", "W1_to_data", "eq100_D_max",
                             "eq100_L_alpha")}
    return {"case": case, "seed": seed, "eta": eta, "eta_coarse": coarse, "eta_error": error,
            "c1_error": 0.0, "dW1_error": 0.0, **base}


def test_learned_step_resolution_is_that_of_the_paired_difference():
    # g=3 − g=0 per seed: 1.0, 1.1, 1.1 (mean 1.0667); at n/2 atoms 1.1, 1.2, 1.2 (mean 1.1667):
    # resolution (√2 + 1) × 0.1 = 0.2414 (bias ∝ n^(−1/2) in 2-D), smaller than the difference,
    # while the per-model errors (0.6 each) summed would hide it
    models = [_record("g=0", k, e, e, 0.6) for k, e in enumerate((1.0, 1.1, 1.2))]
    models += [_record("g=3", k, e, c, 0.6)
               for k, (e, c) in enumerate(((2.0, 2.1), (2.2, 2.3), (2.3, 2.4)))]
    step = fig7.learned_summary(models, (0.0, 3.0))["eta_steps_in_g"][0]
    assert step["mean_difference"] == pytest.approx(3.2 / 3, rel=1e-12)
    assert step["mean_difference_coarse"] == pytest.approx(3.5 / 3, rel=1e-12)
    assert step["resolution_error"] == pytest.approx(0.1 * (np.sqrt(2) + 1), rel=1e-12)
    assert step["per_model_errors_summed"] == pytest.approx(1.2)
    # p of the paired t-test on (1.0, 1.1, 1.1): t = 1.0667 / (0.0577 / √3) with 2 d.o.f.
    assert step["p_value"] == pytest.approx(2 * stats.t.sf((3.2 / 3) / (np.sqrt(1 / 300)
                                                                      / np.sqrt(3)), 2), rel=1e-6)
    res = fig7.learned_summary(models, (0.0, 3.0))
    assert res["eta_grows_with_g"] == "grows" and step["status"] == "grows"
    # a third g, flat within noise (differences −0.1, +0.1, 0: p = 1): grows in part
    models3 = models + [_record("g=5", k, e, e, 0.6) for k, e in enumerate((2.1, 2.1, 2.3))]
    res3 = fig7.learned_summary(models3, (0.0, 3.0, 5.0))
    assert [s["status"] for s in res3["eta_steps_in_g"]] == ["grows",
                                                             "not significant (p >= 0.05)"]
    assert res3["eta_grows_with_g"] == "grows in part"
    # without the n/2 values the step falls back to the summed per-model errors: not resolved
    for m in models:
        m.pop("eta_coarse")
    res = fig7.learned_summary(models, (0.0, 3.0))
    assert res["eta_steps_in_g"][0]["resolution_error"] == pytest.approx(1.2)
    assert res["eta_grows_with_g"] == "not resolved"


def test_kinetic_cost_of_a_flow_matches_the_grid_w_D():
    # Eq. G20 along trajectories of the exact flow (Monte Carlo, RK4) against w_D of the path by
    # the 2-D grid solve (a second method: the Fokker-Planck velocity on a 192² grid)
    import jax

    from satjax import path as P
    from satjax.forces import RotatingForce
    from satjax.mixtures import swiss_roll
    from satjax.reverse import exact_velocity

    data = swiss_roll(n=50, width=0.1)
    proto = RotatingForce.create(h=1.1, g=3.0, t_fin=0.5, tau=3.0)
    wD = P.path_cost(proto, data, n_time=16, key=jax.random.PRNGKey(0)).wD
    r = fig7._learned_kinetic_cost(exact_velocity(proto, data), proto, data,
                                   jax.random.PRNGKey(1), 2000, 40)
    assert 0 < r["wD_stderr"] < 0.02 * r["wD"] and r["wD_error"] < 0.02 * r["wD"]
    assert abs(r["wD"] - float(wD.value)) < 3 * r["wD_stderr"] + r["wD_error"] + float(wD.error)
