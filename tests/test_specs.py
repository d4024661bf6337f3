"""CLI specs parse into the right objects; malformed specs raise ValueError naming the problem."""

import numpy as np
import pytest

from satjax import schedules as S
from satjax import specs
from satjax.forces import RotatingForce


def test_data_specs():
    g = specs.parse_data("gauss:mean=2,std=0.5")
    np.testing.assert_allclose(g.means, [[2.0]]); np.testing.assert_allclose(g.cov, [0.25])
    g3 = specs.parse_data("gauss:mean=2,std=0.5,dim=3")
    assert g3.dim == 3
    m = specs.parse_data("gmm:means=-2|2,std=0.5,weights=0.3|0.7")
    np.testing.assert_allclose(m.means[:, 0], [-2, 2]); np.testing.assert_allclose(m.weights, [0.3, 0.7])
    m2 = specs.parse_data("gmm:means=-2;0|2;1,std=0.5|0.2")
    np.testing.assert_allclose(m2.means, [[-2, 0], [2, 1]]); np.testing.assert_allclose(m2.cov, [0.25, 0.04])
    sr = specs.parse_data("swissroll:n=100,noise=0.3,scale=0.125,width=0.05,seed=0")
    assert sr.means.shape == (100, 2)
    dg = specs.parse_data("digits:width=0.1,n=20")
    assert dg.means.shape == (20, 64)


def test_npy_spec(tmp_path):
    f = tmp_path / "x.npy"
    np.save(f, np.arange(6.0).reshape(3, 2))
    d = specs.parse_data(f"npy:path={f},width=0.1")
    np.testing.assert_allclose(d.means, np.arange(6.0).reshape(3, 2))


def test_protocol_specs():
    assert isinstance(specs.parse_protocol("cosine", tau=2.0), S.Cosine)
    assert float(specs.parse_protocol("cosine", tau=2.0).tau) == 2.0
    assert isinstance(specs.parse_protocol("cond-ot"), S.ConditionalOT)
    vp = specs.parse_protocol("vp-linear:beta_min=0.2,beta_max=10")
    assert float(vp.beta_min) == 0.2 and float(vp.beta_max) == 10.0
    ve = specs.parse_protocol("ve:sigma_max=5")
    assert float(ve.sigma_max) == 5.0
    rf = specs.parse_protocol("rotating:h=1,g=3,tfin=2")
    assert isinstance(rf, RotatingForce) and float(rf.g) == 3.0 and float(rf.t_fin) == 2.0
    assert isinstance(specs.parse_protocol("polar:n=4,vp=1"), S.PolarSchedule)


@pytest.mark.parametrize("spec,match", [
    ("blob:x=1", "unknown data"),
    ("gauss:mean=abc", "not a valid float"),
    ("gauss:mean=1,std=-1", "std must be > 0"),
    ("gauss:mean", "expected key=value"),
    ("gmm:std=1", "missing"),
    ("gmm:means=-2|2,colour=red", "unknown key"),
    ("gmm:means=-2|2,weights=0.2|0.2", "sum to 1"),
    ("gmm:means=-2;1|2", "same dimension"),
    ("npy:path=/nonexistent.npy,width=0.1", "cannot read"),
    ("", "empty"),
])
def test_bad_data_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        specs.parse_data(spec)


@pytest.mark.parametrize("spec,match", [
    ("warp", "unknown protocol"),
    ("vp-linear:beta_min=x", "not a valid float"),
    ("cosine:foo=1", "unknown key"),
    ("ve:sigma_min=2,sigma_max=1", "sigma_min < sigma_max"),
    ("rotating:tfin=-1", "t_fin"),
])
def test_bad_protocol_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        specs.parse_protocol(spec)


def test_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        specs.parse_protocol("cosine", tau=0.0)
