"""Specs are validated without JAX into Specs, then built into the right objects; malformed
specs raise SpecError naming the problem."""

import subprocess
import sys

import numpy as np
import pytest

from satjax import schedules as S
from satjax import specs
from satjax.forces import RotatingForce


def data(text):
    return specs.build_data(specs.parse_data(text))


def protocol(text, **kw):
    return specs.build_protocol(specs.parse_protocol(text), **kw)


def perturbation(text):
    return specs.build_perturbation(specs.parse_perturbation(text))


def test_data_specs():
    g = data("gauss:mean=2,std=0.5")
    np.testing.assert_allclose(g.means, [[2.0]])
    np.testing.assert_allclose(g.cov, [0.25])
    assert data("gauss:mean=2,std=0.5,dim=3").dim == 3
    np.testing.assert_allclose(data("gauss:mean=1;2,std=0.5").means, [[1.0, 2.0]])
    m = data("gmm:means=-2|2,std=0.5,weights=0.3|0.7")
    np.testing.assert_allclose(m.means[:, 0], [-2, 2])
    np.testing.assert_allclose(m.weights, [0.3, 0.7])
    m2 = data("gmm:means=-2;0|2;1,std=0.5|0.2")
    np.testing.assert_allclose(m2.means, [[-2, 0], [2, 1]])
    np.testing.assert_allclose(m2.cov, [0.25, 0.04])
    assert data("swissroll:n=100,noise=0.3,scale=0.125,width=0.05,seed=0").means.shape == (100, 2)
    assert data("digits:width=0.1,n=20").means.shape == (20, 64)
    assert specs.data_dim(specs.parse_data("digits")) == 64


def test_npy_spec(tmp_path):
    f = tmp_path / "x.npy"
    np.save(f, np.arange(6.0).reshape(3, 2))
    np.testing.assert_allclose(data(f"npy:path={f},width=0.1").means,
                               np.arange(6.0).reshape(3, 2))


def test_protocol_specs():
    assert isinstance(protocol("cosine", tau=2.0), S.Cosine)
    assert float(protocol("cosine", tau=2.0).tau) == 2.0
    assert isinstance(protocol("cond-ot"), S.ConditionalOT)
    vp = protocol("vp-linear:beta_min=0.2,beta_max=10")
    assert float(vp.beta_min) == 0.2 and float(vp.beta_max) == 10.0
    assert float(protocol("ve:sigma_max=5").sigma_max) == 5.0
    rf = protocol("rotating:h=1,g=3,tfin=2")
    assert isinstance(rf, RotatingForce) and float(rf.g) == 3.0 and float(rf.t_fin) == 2.0
    polar = protocol("polar:n=4,vp=1")
    assert isinstance(polar, S.PolarSchedule) and polar.vp
    q = data("gmm:means=-2|2,std=0.5")
    ot = protocol("ot", data=q)
    assert ot.describe()["class"] == "OTProtocol1D"
    with pytest.raises(specs.SpecError, match="needs the data"):
        protocol("ot")


def test_perturbation_specs():
    p_tau = data("gauss:mean=0.5,std=1")
    assert float(perturbation("shift:0.2").start(p_tau).means[0, 0]) == pytest.approx(0.7)
    sc = perturbation("scale:1.5").start(p_tau)
    assert float(sc.cov.ravel()[0]) == pytest.approx(2.25)
    assert float(perturbation("mean:1").start(p_tau).means[0, 0]) == 1.0
    v = perturbation("variance:0.81").start(p_tau)
    assert float(v.mean()[0]) == 0.5 and float(v.covariance()[0, 0]) == pytest.approx(0.81)
    u = perturbation("uniform:a=-1,b=2").start(p_tau)
    assert float(u.mean()[0]) == 0.5 and float(u.covariance()[0, 0]) == pytest.approx(0.75)
    g = perturbation("gmm:means=-1|1,std=0.5").start(p_tau)
    assert g.n_components == 2
    assert perturbation("gaussian").label() == "gaussian"


def test_parsing_imports_no_jax(tmp_path):
    f = tmp_path / "x.npy"
    np.save(f, np.ones((4, 2)))
    code = ("import sys; from satjax import specs; "
            f"specs.parse_data('npy:path={f},width=0.1'); specs.parse_protocol('rotating:g=3'); "
            "specs.parse_perturbation('uniform:a=0,b=1'); "
            "print(any(m == 'jax' or m.startswith('jax.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("spec,match", [
    ("blob:x=1", "unknown data"),
    ("GAUSS", "lower case"),
    ("gauss:mean=abc", "not a number"),
    ("gauss:mean=1,std=-1", "std="),
    ("gauss:mean", "expected key=value"),
    ("gmm:std=1", "missing means"),
    ("gmm:means=-2|2,colour=red", "unknown key 'colour'"),
    ("gmm:means=-2|2,weights=0.2|0.2", "sum to 1"),
    ("gmm:means=-2;1|2", "same dimension"),
    ("npy:path=/nonexistent.npy,width=0.1", "no file"),
    ("swissroll:n=2.5", "not an integer"),
    ("digits:n=5000", "n="),
    ("", "empty"),
])
def test_bad_data_specs(spec, match):
    with pytest.raises(specs.SpecError, match=match):
        specs.parse_data(spec)


@pytest.mark.parametrize("spec,match", [
    ("warp", "unknown protocol"),
    ("vp-linear:beta_min=x", "not a number"),
    ("vp-linear:beta_min=20,beta_max=0.1", "must not exceed"),
    ("cosine:foo=1", "unknown key"),
    ("ve:sigma_min=2,sigma_max=1", "below sigma_max"),
    ("rotating:tfin=-1", "tfin="),
    ("polar:vp=2", "vp="),
    ("ot:n=1", "n="),
])
def test_bad_protocol_specs(spec, match):
    with pytest.raises(specs.SpecError, match=match):
        specs.parse_protocol(spec)


@pytest.mark.parametrize("spec,match", [
    ("shift", "expected shift:NUMBER"),
    ("shift:0", "changes nothing"),
    ("scale:0", "scale="),
    ("variance:-1", "variance="),
    ("uniform:a=2,b=1", "a < b"),
    ("uniform:a=0", "missing b"),
    ("npy:path=x.npy", "missing width"),
    ("gaussian:x=1", "unknown key"),
])
def test_bad_perturbation_specs(spec, match):
    with pytest.raises(specs.SpecError, match=match):
        specs.parse_perturbation(spec)


def test_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        protocol("cosine", tau=0.0)
