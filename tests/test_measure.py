"""`satjax measure`: trajectories from any framework, against closed forms derived by hand.

Data N(μ, s²) in 1-D under cond-OT, x_t = (1 − t) x₀ + t ε (t = 0 data, t = 1 noise). The
marginal is N(m μ, C) with m = 1 − t, C = m² s² + t², and the probability-flow velocity is
linear: ν_t(x) = −μ + (½C'/C)(x − m μ), ½C' = −m s² + t. With x − m μ ~ N(0, C):

    E ν² = μ² + (½C')²/C.

Write a = s², D = C = (1 + a) t² − 2 a t + a, so ½C' = ½D' and (½D')²/D = (1 + a)[1 − h/D] with
D = (1 + a)(t − t₀)² + h, t₀ = a/(1 + a), h = a/(1 + a). Then (1 + a) h = a and

    ∫₀¹ h/D dt = (h / sqrt((1 + a) h)) [arctan((1 + a)(t − t₀)/s)]₀¹
              = (h/s) [arctan(1/s) + arctan(s)] = (h/s)(π/2),

so the cost is  ∫₀¹ E ν² dt = μ² + (1 + a) − (π/2) a/s = μ² + 1 + s² − (π/2) s.
In d dimensions with isotropic std s: ‖μ‖² + d (1 + s² − π s/2).

Along a trajectory x_t = m μ + sqrt(C_t) z (z = the start point at t = 1, C_1 = 1), so
ν = −μ + (sqrt C)' z and Dν/Dt = (sqrt C)'' z: E(Dν/Dt)² = ((sqrt C)'')², with
(sqrt C)'' = C''/(2 sqrt C) − C'²/(4 C^{3/2}), C'' = 2(1 + a).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.special import ndtri
from typer.testing import CliRunner

from satjax.cli import app

runner = CliRunner()
MU, S = 1.0, 0.5
A = S * S
N_PART = 4096
ROOT = Path(__file__).resolve().parents[1]


def cost_closed_form(mu_sq, s, d=1):
    return mu_sq + d * (1.0 + s * s - math.pi * s / 2.0)


def kinetic_closed_form(t):
    C = (1 - t) ** 2 * A + t**2
    return MU**2 + (-(1 - t) * A + t) ** 2 / C


def acceleration_closed_form(t):
    C = (1 - t) ** 2 * A + t**2
    dC = 2 * (-(1 - t) * A + t)
    d2 = 2 * (1 + A) / (2 * np.sqrt(C)) - dC**2 / (4 * C**1.5)
    return d2**2


def length_closed_form():
    return integrate.quad(lambda t: math.sqrt(kinetic_closed_form(t)), 0, 1, epsabs=1e-13)[0]


@pytest.fixture(scope="module")
def flow_files(tmp_path_factory):
    """satjax's exact probability flow of N(1, 0.25) under cond-OT: 4096 particles started at
    the midpoint quantiles of P_1 = N(0, 1), RK4 with 100 steps, every step saved; written in
    the paper's convention (t from 1 down to 0, as the sampler runs) and in flow-matching time
    (s = 1 − t, u = −v)."""
    import jax

    from satjax import mixtures as M
    from satjax import schedules as SC
    from satjax.reverse import exact_velocity, solve_ode

    fld = exact_velocity(SC.cond_ot(), M.gaussian(MU, S))
    x0 = ndtri((np.arange(N_PART) + 0.5) / N_PART)[:, None]
    tr = solve_ode(fld, x0, t_start=1.0, t_end=0.0, method="rk4", n_steps=100, n_save=100)
    t, x = np.asarray(tr.ts), np.asarray(tr.xs)
    v = np.asarray(jax.vmap(fld.batch)(tr.xs, tr.ts))
    folder = tmp_path_factory.mktemp("traj")
    paper, fm = folder / "paper.npz", folder / "fm.npz"
    np.savez(paper, t=t, x=x, v=v, convention="paper")
    np.savez(fm, t=1.0 - t, x=x, v=-v, convention="flow-matching")
    return {"paper": paper, "fm": fm, "t": t, "x": x, "v": v, "folder": folder}


def measure(path, tmp_path, *extra):
    out = tmp_path / "m.json"
    res = runner.invoke(app, ["measure", "--trajectories", str(path), "--json", str(out),
                              *extra])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    return json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(c)), res


def test_cost_length_and_profiles_match_the_closed_forms(flow_files, tmp_path):
    png = tmp_path / "m.png"
    d, res = measure(flow_files["paper"], tmp_path, "--plot", str(png))
    exact = cost_closed_form(MU**2, S)
    assert exact == pytest.approx(1.4646018366, rel=1e-9)  # 2.25 − π/4
    assert d["cost"] == pytest.approx(exact, rel=1e-2)  # the acceptance: 1 %
    assert d["cost"] == pytest.approx(exact, rel=1e-3)  # what it actually reaches
    assert 0 < d["cost_stderr"] < 0.05 * exact
    assert d["length"] == pytest.approx(length_closed_form(), rel=1e-3)
    t = np.asarray(d["t"])
    assert abs(t[0]) < 1e-12 and abs(t[-1] - 1) < 1e-12  # paper time, increasing
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(d["kinetic"], kinetic_closed_form(t), rtol=2e-3)
    tm = np.asarray(d["t_mid"])
    np.testing.assert_allclose(d["acceleration"], acceleration_closed_form(tm), rtol=1e-2)
    assert d["n"] == N_PART and d["K"] == 101 and d["d"] == 1 and d["convention"] == "paper"
    for k in ("cost", "cost_stderr", "length", "t", "kinetic", "acceleration"):
        assert k in d
    assert "cost" in res.stdout and "E|Dv/Dt|^2" in res.stdout  # the table
    assert png.stat().st_size > 10_000


def test_flow_matching_file_gives_the_same_cost(flow_files, tmp_path):
    d, _ = measure(flow_files["fm"], tmp_path)
    assert d["convention"] == "flow-matching"
    assert d["cost"] == pytest.approx(cost_closed_form(MU**2, S), rel=1e-3)
    ref, _ = measure(flow_files["paper"], tmp_path)
    assert d["cost"] == pytest.approx(ref["cost"], rel=1e-12)
    np.testing.assert_allclose(d["t"], ref["t"], atol=1e-15)  # converted to paper time


def test_json_on_stdout(flow_files):
    res = runner.invoke(app, ["measure", "--trajectories", str(flow_files["paper"]),
                              "--json", "-"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["cost"] == pytest.approx(cost_closed_form(MU**2, S), rel=1e-3)


# ------------------------------------------------------------------------- malformed files


def _bad_files(folder, t, x, v):
    """{case: (path, words the one-line message must contain)}."""
    cases = {}

    def npz(name, needles, **arrays):
        p = folder / f"{name}.npz"
        np.savez(p, **arrays)
        cases[name] = (p, needles)

    conv = "paper"
    npz("missing_v", ["lacks v"], t=t, x=x, convention=conv)
    npz("missing_convention", ["lacks `convention`"], t=t, x=x, v=v)
    npz("v_shape", ["`v`", "shape"], t=t, x=x, v=v[:, :, [0, 0]], convention=conv)
    npz("x_2d", ["`x`", "shape"], t=t, x=x[:, :, 0], v=v[:, :, 0], convention=conv)
    npz("t_length", ["`x` has 101 times", "`t` has 100"], t=t[:-1], x=x, v=v, convention=conv)
    npz("t_2d", ["`t`", "shape"], t=t[:, None], x=x, v=v, convention=conv)
    xn = x.copy()
    xn[3, 7, 0] = np.nan
    npz("nan_x", ["`x`", "NaN"], t=t, x=xn, v=v, convention=conv)
    vi = v.copy()
    vi[0, 0, 0] = np.inf
    npz("inf_v", ["`v`", "inf"], t=t, x=x, v=vi, convention=conv)
    tn = t.copy()
    tn[[10, 11]] = tn[[11, 10]]
    npz("non_monotone", ["`t`", "monotone"], t=tn, x=x, v=v, convention=conv)
    npz("repeated_time", ["`t`", "monotone"], t=np.where(np.arange(t.size) == 5, t[4], t), x=x,
        v=v, convention=conv)
    npz("unknown_convention", ["unknown convention", "'ddpm'"], t=t, x=x, v=v,
        convention="ddpm")
    npz("complex", ["`v`", "real"], t=t, x=x, v=v + 0j, convention=conv)
    obj = folder / "object.npz"
    np.savez(obj, t=t, x=np.array([x, "a"], dtype=object), v=v, convention=conv)
    cases["object"] = (obj, ["cannot read", ".npz"])
    text = folder / "text.npz"
    text.write_text("t,x,v\n1,2,3\n")
    cases["not_npz_text"] = (text, ["not an .npz archive"])
    trunc = folder / "truncated.npz"
    trunc.write_bytes((folder / "missing_v.npz").read_bytes()[:200])
    cases["truncated"] = (trunc, ["cannot read", "as .npz"])
    npy = folder / "array.npy"
    np.save(npy, x)
    cases["not_npz_npy"] = (npy, ["single .npy array", "not an .npz"])
    cases["missing_file"] = (folder / "absent.npz", ["no file"])
    return cases


@pytest.fixture(scope="module")
def bad_files(flow_files):
    f = flow_files
    small = slice(0, 64)  # small files: the checks do not depend on the size
    folder = f["folder"] / "bad"
    folder.mkdir()
    return _bad_files(folder, f["t"], f["x"][:, small], f["v"][:, small])


BAD_CASES = ["missing_v", "missing_convention", "v_shape", "x_2d", "t_length", "t_2d", "nan_x",
             "inf_v", "non_monotone", "repeated_time", "unknown_convention", "complex", "object",
             "not_npz_text", "truncated", "not_npz_npy", "missing_file"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_malformed_file_is_one_line_exit_2(bad_files, case, tmp_path):
    path, needles = bad_files[case]
    out, png = tmp_path / "m.json", tmp_path / "m.png"
    res = runner.invoke(app, ["measure", "--trajectories", str(path), "--json", str(out),
                              "--plot", str(png)])
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert res.stdout == ""
    assert not out.exists() and not png.exists()  # nothing written


def test_bad_outputs_fail_before_reading(flow_files, tmp_path):
    res = runner.invoke(app, ["measure", "--trajectories", str(flow_files["paper"]),
                              "--json", str(tmp_path / "no" / "m.json")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["measure", "--trajectories", str(flow_files["paper"]),
                              "--json", str(flow_files["paper"])])
    assert res.exit_code == 2 and "is an input" in res.output


# ------------------------------------------------------------------------- a PyTorch writer


def test_torch_example_writes_a_file_satjax_measures(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed: the PyTorch example "
                                        "(examples/torch_trajectories.py) is not run")
    out = tmp_path / "torch.npz"
    script = ROOT / "examples" / "torch_trajectories.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(out), "--n", "4096",
                           "--steps", "100", "--mean", "1,-0.5", "--std", "0.5", "--seed", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    d, _ = measure(out, tmp_path)
    assert d["convention"] == "flow-matching" and d["d"] == 2 and d["n"] == 4096
    exact = cost_closed_form(1.0 + 0.25, 0.5, d=2)  # ‖μ‖² = 1.25
    # random (torch.randn) starts: within 4 standard errors, and the error bar is honest (< 2 %)
    assert abs(d["cost"] - exact) < 4 * d["cost_stderr"], (d["cost"], exact, d["cost_stderr"])
    assert d["cost_stderr"] < 0.02 * exact
