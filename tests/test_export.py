"""Step-grid exports and interpolation (satjax.export) and host velocities (satjax.steps),
against closed forms written here and a second method (autodiff against differences)."""

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satjax import export as EX
from satjax import mixtures as M
from satjax import schedules as S
from satjax import steps as ST
from satjax.reverse import exact_velocity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import numpy_velocity  # noqa: E402  (the example: ½N(−2, ¼) + ½N(2, ¼) under cond-OT, NumPy)

GRID = np.array([1.0, 0.8, 0.55, 0.3, 0.12, 0.0])


def ddpm_lambda(b0, b1):
    """Log-SNR of diffusers' linear-beta DDPM table, written out here."""
    abar = np.cumprod(1.0 - np.linspace(b0, b1, 1000))
    return np.log(abar / (1.0 - abar))


def test_k_diffusion_on_ve_is_the_closed_form():
    p = S.ve(0.02, 50.0)
    out = EX.export_grid(p, GRID, "k-diffusion")
    s = np.asarray(out["export"])
    np.testing.assert_allclose(s[:-1], 0.02 * np.sqrt(2500.0 ** (2 * GRID[:-1]) - 1), rtol=1e-12)
    assert s[-1] == 0.0 and np.all(np.diff(s) < 0)
    comfy = EX.export_grid(p, GRID, "comfyui")["export"]
    np.testing.assert_array_equal([float(v) for v in comfy.split(",")], s)


def test_diffusers_timesteps_on_vp_linear_are_the_nearest_log_snr():
    p = S.vp_linear(0.1, 20.0)
    out = EX.export_grid(p, GRID, "diffusers")
    lam_k = ddpm_lambda(1e-4, 0.02)
    two_a = 0.1 * GRID[:-1] + 0.5 * 19.9 * GRID[:-1] ** 2
    lam = -np.log(np.expm1(two_a))
    expect = [int(np.argmin(np.abs(lam_k - v))) for v in lam]
    assert out["export"]["timesteps"] == expect
    # m_τ² = e^{-10.05} lies between ᾱ_996 and ᾱ_997 of the 1000-step table
    assert expect[0] == 996 and expect == sorted(expect, reverse=True)
    assert out["log_snr_mismatch"] == pytest.approx(np.max(np.abs(lam_k[expect] - lam)))
    assert out["log_snr_mismatch"] < 0.05   # the discrete and continuous schedules agree
    assert 'beta_schedule="linear"' in out["conversion"]


def test_diffusers_on_cond_ot_undoes_the_flow_match_shift():
    p = S.cond_ot()
    for shift in (None, 3.0):
        out = EX.export_grid(p, GRID, "diffusers", shift=shift)
        sig = np.asarray(out["export"]["sigmas"])
        assert sig.shape == (5,)
        s = 1.0 if shift is None else shift
        shifted = s * sig / (1 + (s - 1) * sig)     # what FlowMatchEulerDiscreteScheduler does
        np.testing.assert_allclose(shifted, GRID[:-1], rtol=1e-14)


def test_flow_matching_and_json():
    p = S.cosine(2.0)
    g = 2.0 * GRID
    np.testing.assert_allclose(EX.export_grid(p, g, "flow-matching")["export"], GRID, rtol=1e-15)
    assert EX.export_grid(p, g, "json")["export"] == list(g)


@pytest.mark.parametrize("proto,fmt,needle", [
    (S.cosine(), "k-diffusion", "infinite"),
    (S.cond_ot(), "comfyui", "infinite"),
    (S.ve(), "diffusers", "k-diffusion"),
    (S.vp_linear(), "nope", "unknown format"),
])
def test_formats_a_protocol_cannot_express_are_named(proto, fmt, needle):
    with pytest.raises(ValueError, match=needle):
        EX.export_grid(proto, GRID, fmt)


def test_diffusers_refuses_a_grid_finer_than_the_table():
    fine = np.concatenate([[1.0, 0.9995, 0.999], np.linspace(0.9, 0.0, 4)])
    with pytest.raises(ValueError, match="same DDPM timestep"):
        EX.export_grid(S.vp_linear(), fine, "diffusers")


def test_interpolation_of_a_geometric_sigma_grid_is_geometric():
    """A grid geometric in σ (log-linear in the index) stays geometric for any M, with the same
    first and last positive σ (AYS's rule is exact on it)."""
    p = S.ve(0.01, 10.0)
    n, lo, hi = 6, 0.05, 8.0
    sig = np.geomspace(hi, lo, n)
    t = np.concatenate([np.asarray(S.ve(0.01, 10.0).t_of_noise_level(jnp.asarray(sig))), [0.0]])
    t[0] = 1.0
    sig[0] = float(p.noise_level(1.0))   # t_0 = τ exactly: σ_0 = σ(τ)
    for m in (3, 6, 11):
        out = EX.interpolate_grid(p, t, m)
        assert out.shape == (m + 1,) and out[0] == 1.0 and out[-1] == 0.0
        assert np.all(np.diff(out) < 0)
        s = np.asarray(p.noise_level(jnp.asarray(out[:-1])))
        expect = np.exp(np.interp(np.linspace(0, 1, m), np.linspace(0, 1, n), np.log(sig)))
        np.testing.assert_allclose(s, expect, rtol=1e-10)
    np.testing.assert_allclose(EX.interpolate_grid(p, t, n), t, rtol=1e-12, atol=1e-15)


def test_interpolation_keeps_an_infinite_first_sigma():
    p = S.cond_ot()
    out = EX.interpolate_grid(p, GRID, 9)
    assert out.shape == (10,) and out[0] == 1.0 and out[-1] == 0.0 and np.all(np.diff(out) < 0)
    # σ = t/(1 − t); the finite σ_1 … σ_{N−1} are carried log-linearly, ends kept
    s_in = GRID[1:-1] / (1 - GRID[1:-1])
    s_out = out[1:-1] / (1 - out[1:-1])
    expect = np.exp(np.interp(np.linspace(0, 1, 8), np.linspace(0, 1, 4), np.log(s_in)))
    np.testing.assert_allclose(s_out, expect, rtol=1e-10)
    with pytest.raises(ValueError, match="two positive finite sigmas"):
        EX.interpolate_grid(p, np.array([1.0, 0.5, 0.0]), 5)


# ----------------------------------------------------------------------- host velocities


def test_host_velocity_conventions_give_the_paper_velocity():
    """VE on N(μ, s²): the EDM velocity dx/dσ = σ (x − μ)/(s² + σ²) (written here) through the
    "edm" convention, and the flow-matching form, equal satjax's exact ν_t."""
    mu, s = 0.7, 0.4
    p = S.ve(0.01, 5.0)
    data = M.gaussian(mu, s)
    ex = exact_velocity(p, data)
    x = np.linspace(-2, 3, 9)[:, None]

    def edm(y, sigma):
        return sigma * (y - mu) / (s**2 + sigma**2)

    h_edm = ST.HostVelocity(edm, p, "edm")
    fm = ST.HostVelocity(lambda y, u: -np.asarray(jax.vmap(lambda z: ex(z, 1.0 - u))(
        jnp.asarray(y))), p, "flow-matching")
    for t in (0.1, 0.5, 0.97):
        ref = np.asarray(jax.vmap(lambda z: ex(z, t))(jnp.asarray(x)))
        np.testing.assert_allclose(h_edm(x, t), ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fm(x, t), ref, rtol=1e-13, atol=1e-14)


def test_host_velocity_errors_are_named():
    p = S.cond_ot()
    with pytest.raises(ValueError, match="edm convention"):
        ST.HostVelocity(lambda x, t: x, p, "edm")
    bad = ST.HostVelocity(lambda x, t: x[:, :0], p)
    with pytest.raises(ValueError, match="shape"):
        bad(np.zeros((3, 1)), 0.5)
    nan = ST.HostVelocity(lambda x, t: x * np.nan, p)
    with pytest.raises(FloatingPointError, match="NaN"):
        nan(np.ones((3, 1)), 0.5)
    boom = ST.HostVelocity(lambda x, t: 1 / 0, p, name="boom")
    with pytest.raises(ValueError, match="boom.*ZeroDivisionError"):
        boom(np.ones((3, 1)), 0.5)


def test_host_optimisation_follows_the_autodiff_one():
    """The same velocity as a JAX field (gradients by autodiff) and as the NumPy example
    (examples/numpy_velocity.py; central differences in the N logits): the same grid after 15 Adam steps, and the same
    errors; differences of the grid's logits agree with autodiff to the step's O(h²)."""
    data = M.gmm(jnp.array([[-2.0], [2.0]]), 0.5, jnp.array([0.5, 0.5]))
    p = S.cond_ot()
    ex = exact_velocity(p, data)
    hv = ST.HostVelocity(numpy_velocity.velocity, p)
    kw = dict(n_train=256, n_test=512, reference_steps=128)
    pj = ST.make_problem(p, data, velocity=ex, **kw)
    ph = ST.make_problem(p, data, velocity=hv, **kw)
    np.testing.assert_allclose(np.asarray(ph.target_test), np.asarray(pj.target_test),
                               rtol=1e-11, atol=1e-12)
    theta = ST.logits_from_grid(jnp.asarray(ST.uniform_grid(p, 5)))
    vj, gj = pj.loss_and_grad(theta, "heun")
    vh, gh = ph.loss_and_grad(theta, "heun")
    assert float(vh) == pytest.approx(float(vj), rel=1e-11)
    np.testing.assert_allclose(np.asarray(gh), np.asarray(gj), rtol=1e-6, atol=1e-9)
    rj = ST.optimize_steps(p, data, 5, steps=15, problem=pj)
    rh = ST.optimize_steps(p, data, 5, steps=15, problem=ph)
    np.testing.assert_allclose(rh.t, rj.t, atol=1e-7)
    assert rh.error == pytest.approx(rj.error, rel=1e-6) and rh.error < rh.error_uniform
    assert math.isfinite(rh.error_uniform)
