"""CLI commands in-process, with their JSON; bad input fails before computing."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from satjax.cli import app

runner = CliRunner()
GMM = "gmm:means=-2|2,std=0.5"


def run_ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def test_path_json(tmp_path):
    out = tmp_path / "p.json"
    run_ok(["path", "--data", GMM, "--protocol", "cosine", "--json", str(out), "--plot", str(tmp_path / "p.png")])
    d = json.loads(out.read_text())
    for k in ("c2", "wD", "S_tot", "W2sq", "path_length"):
        assert k in d
    assert d["c2"] == pytest.approx(d["wD"]) and d["S_tot"] == float("inf")
    assert all(d["hierarchy"].values())
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_bound_json(tmp_path):
    out = tmp_path / "b.json"
    run_ok(["bound", "--data", GMM, "--protocol", "cond-ot", "--perturb", "scale:1.2", "--json", str(out)])
    d = json.loads(out.read_text())
    for k in ("eta", "c1", "c2", "wD", "D0", "dW1", "W1_start", "W1_end", "holds"):
        assert k in d
    assert all(d["holds"].values())
    assert d["D0"] == pytest.approx(1 / (1.2 * np.sqrt(2 - 1.44)) - 1, rel=1e-8)


def test_bound_nd_json_on_stdout():
    """n-D data: the sample-based route; with --json - stdout holds only the JSON document."""
    res = runner.invoke(app, ["bound", "--data", "swissroll:n=150", "--protocol", "rotating:h=2,g=3,tfin=4",
                              "--perturb", "shift:0.3", "--json", "-"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["method"] == "samples" and all(d["holds"].values())
    assert d["wD"] > d["c2"]  # rotation: entropy production beyond the W2 kinetic cost


def test_optimize_json(tmp_path):
    out = tmp_path / "o.json"
    run_ok(["optimize", "--data", "gauss:mean=0,std=0.3", "--family", "vp", "--steps", "60", "--json", str(out)])
    d = json.loads(out.read_text())
    for k in ("c2_initial", "c2_final", "c2_cosine", "c2_condot", "W2sq", "t", "m", "sigma"):
        assert k in d
    assert d["W2sq"] == pytest.approx(0.49, rel=1e-8)
    assert d["W2sq_over_tau"] <= d["c2_final"] < d["c2_cosine"]


def test_train_and_sample(tmp_path):
    model = tmp_path / "m"
    out = tmp_path / "t.json"
    run_ok(["train", "--data", GMM, "--protocol", "cond-ot", "--loss", "cfm", "--steps", "300",
            "--out", str(model), "--json", str(out)])
    d = json.loads(out.read_text())
    for k in ("final_loss", "residual", "W1_to_data", "train_seconds"):
        assert np.isfinite(d[k])
    assert d["W1_to_data"] < 0.5  # W1(N(0,1), q) ≈ 1.4: 300 steps already learn the modes
    npy = tmp_path / "s.npy"
    run_ok(["sample", "--model", str(model), "--n", "64", "--out", str(npy)])
    assert np.load(npy).shape == (64, 1)
    # the imperfect-velocity relation (Eq. 100) with the learned model
    bj = tmp_path / "b.json"
    run_ok(["bound", "--data", GMM, "--protocol", "cond-ot", "--perturb", "shift:0.2",
            "--model", str(model), "--json", str(bj)])
    b = json.loads(bj.read_text())
    assert b["holds"]["eq100"] and b["L_alpha"] > 0 and b["lhs"] <= b["rhs"]
    bad = runner.invoke(app, ["bound", "--data", "gmm:means=-2;0|2;0,std=0.5", "--protocol", "cond-ot",
                              "--perturb", "shift:0.2", "--model", str(model)])
    assert bad.exit_code != 0 and "dimension" in bad.output


def test_bound_with_learned_model_nd(tmp_path):
    """2-D: `bound --model` reports η, c1 by samples and Eq. 100 by samples (D_t along the
    learned flow with its exact divergence), and the relation holds."""
    model = tmp_path / "m2"
    data = "gmm:means=-1.5;0|1.5;0.5,std=0.4"
    run_ok(["train", "--data", data, "--protocol", "cond-ot", "--loss", "cfm", "--steps", "200",
            "--out", str(model)])
    bj = tmp_path / "b2.json"
    run_ok(["bound", "--data", data, "--protocol", "cond-ot", "--perturb", "shift:0.2",
            "--model", str(model), "--samples", "300", "--n-time", "16", "--json", str(bj)])
    b = json.loads(bj.read_text())
    e = b["eq100"]
    assert b["holds"]["eq100"] and e["lhs"] <= e["rhs"]
    assert e["L_alpha"] > 0 and e["D_max"] >= max(e["D"]) - 1e-12 and len(e["D"]) == len(e["t"])
    assert b["eta"] <= b["c1"] * (1 + 1e-6) + 0.05


def test_reproduce_all_quick(tmp_path):
    """`satjax reproduce all --quick`: every figure's JSON holds its inequalities (fig6: η ≤ c1 ≤
    c2 = wD and η equal across protocols; fig7: η ≤ c1 ≤ wD, wD growing with g; fig8: η ≤ c2;
    schedules: the optimiser beats cosine and cond-OT where c2 is exact or Monte Carlo)."""
    res = run_ok(["reproduce", "all", "--quick", "--out", str(tmp_path)])
    assert "holds" in res.output
    d6 = json.loads((tmp_path / "fig6.json").read_text())
    assert d6["all_inequalities_hold"] and all(d6["eta_agrees_across_protocols"].values())
    for case in d6["cases"]:
        for k in ("protocol", "perturb", "eta", "c1", "c2", "wD"):
            assert k in case
        assert case["eta"] <= case["c1"] * (1 + 1e-6) and case["c1"] <= case["c2"]
    d7 = json.loads((tmp_path / "fig7.json").read_text())
    assert d7["all_inequalities_hold"]
    for case in d7["cases"]:
        for k in ("protocol", "g", "eta", "c1", "c2", "wD"):
            assert k in case
    for k in ("h", "t_fin", "tau", "perturb"):
        assert k in d7["settings"]
    s = d7["summary"]
    assert s["g=0"]["wD"] < s["g=3"]["wD"] < s["g=5"]["wD"]
    assert s["g=5"]["wD"] > s["g=5"]["c2"] + 4 * s["g=5"]["c2_stderr"]
    assert isinstance(d7["eta_grows_with_g"], bool) and d7["statement"]
    d8 = json.loads((tmp_path / "fig8.json").read_text())
    assert d8["all_inequalities_hold"]
    assert {c["loss"] for c in d8["cases"]} == {"cfm", "ot-cfm"}
    assert all(c["D0_G21"] == pytest.approx(0.25) for c in d8["cases"])  # 2 KL = δ² for shift 0.5
    ds = json.loads((tmp_path / "schedules.json").read_text())["results"]
    assert ds["gmm-1d"]["beats_cosine_and_condot"] and ds["swissroll"]["beats_cosine_and_condot"]
    assert ds["gmm-1d"]["c2_optimised"] >= ds["gmm-1d"]["W2sq_over_tau"]
    for name in ("fig6", "fig7", "fig8", "schedules"):
        assert (tmp_path / f"{name}.png").stat().st_size > 30_000


@pytest.mark.parametrize("args,match", [
    (["reproduce", "fig99"], "unknown figure"),
    (["reproduce", "fig6", "--out", "/proc/forbidden/x"], "--out"),
    (["path", "--data", "blob", "--protocol", "cosine"], "unknown data"),
    (["path", "--data", GMM, "--protocol", "warp"], "unknown protocol"),
    (["path", "--data", GMM, "--protocol", "cosine", "--tau", "0"], "--tau"),
    (["bound", "--data", GMM, "--protocol", "cosine", "--perturb", "shove:1"], "unknown perturbation"),
    (["path", "--data", GMM, "--protocol", "cosine", "--json", "/nonexistent/dir/x.json"], "does not exist"),
    (["train", "--data", GMM, "--protocol", "cosine", "--loss", "gan"], "--loss"),
    (["optimize", "--data", GMM, "--family", "round"], "--family"),
])
def test_bad_input_fails_early(args, match):
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert match in res.output


def test_interrupted_reproduce_leaves_finished_figures(tmp_path, monkeypatch):
    """Outputs are replaced atomically: an interruption during a later figure leaves earlier
    figures intact and no partial files behind."""
    from satjax.experiments import fig7

    (tmp_path / "fig6.json").write_text('{"done": true}')
    (tmp_path / "fig6.png").write_bytes(b"png")

    def boom(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(fig7, "run", boom)
    res = runner.invoke(app, ["reproduce", "fig7", "--quick", "--out", str(tmp_path)])
    assert res.exit_code != 0
    assert json.loads((tmp_path / "fig6.json").read_text()) == {"done": True}
    assert (tmp_path / "fig6.png").read_bytes() == b"png"
    assert not list(tmp_path.glob("*.partial*")) and not (tmp_path / "fig7.json").exists()
