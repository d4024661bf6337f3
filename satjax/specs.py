"""Text specs for data, protocols and perturbations: validated without JAX, then built.

``parse_data``, ``parse_protocol`` and ``parse_perturbation`` check a spec string completely
(names, keys, numbers, ranges, files) and return a :class:`Spec` — plain Python, no JAX import,
so the command line fails in milliseconds on bad input. ``build_*`` turn a Spec into satjax
objects (importing JAX). Names and keys are lower case; an unknown key is an error that lists
the allowed ones.

Data: ``gauss:mean=2,std=0.5[,dim=1]``, ``gmm:means=-2|2,std=0.5[,weights=0.5|0.5]``
(components separated by ``|``, coordinates by ``;``: ``means=-2;0|2;0``; ``std`` may be per
component ``0.5|0.3``), ``swissroll:n=800,noise=0.3,scale=0.125,width=0.05,seed=0``,
``digits:width=0.1[,n=1797]``, ``npy:path=FILE,width=0.1``.

Protocols: ``cosine``, ``cond-ot``, ``vp-linear[:beta_min=0.1,beta_max=20]``,
``ve[:sigma_min=0.01,sigma_max=10]``, ``rotating:h=1,g=3,tfin=2``, ``polar[:n=6,vp=0]``,
``ot[:method=auto|exact|gaussian|entropic|assignment,n=2048]`` (the W2 geodesic).

Perturbations of the reverse start: ``shift:D``, ``scale:S``, ``gaussian``, ``mean:MU``
(N(MU, Cov P_τ); MU a number or ``a;b``), ``variance:V`` (N(E P_τ, V I)), ``uniform:a=A,b=B``,
``gmm:`` with the data grammar, ``npy:path=FILE,width=W``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

SEED_MAX = 2**32 - 1
MAX_COMPONENTS = 1_000_000
MAX_DIM = 4096
MAX_ELEMENTS = 50_000_000  # entries of an npy data array (N × d)

DATA = {
    "gauss": {"mean", "std", "dim"},
    "gmm": {"means", "std", "weights"},
    "swissroll": {"n", "noise", "scale", "width", "seed"},
    "digits": {"width", "n"},
    "npy": {"path", "width"},
}
PROTOCOLS = {
    "cosine": set(), "cond-ot": set(), "vp-linear": {"beta_min", "beta_max"},
    "ve": {"sigma_min", "sigma_max"}, "rotating": {"h", "g", "tfin"}, "polar": {"n", "vp"},
    "ot": {"method", "n"},
}
PERTURBATIONS = {
    "shift": None, "scale": None, "gaussian": set(), "mean": None, "variance": None,
    "uniform": {"a", "b"}, "gmm": {"means", "std", "weights"}, "npy": {"path", "width"},
}
OT_METHODS = ("auto", "exact", "gaussian", "entropic", "assignment")


class SpecError(ValueError):
    """A spec that cannot be used; the message names the spec and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """A validated spec: ``kind`` (data | protocol | perturbation), ``name``, ``params``
    (validated Python values) and the original ``text``."""

    kind: str
    name: str
    params: Dict[str, Any]
    text: str

    def describe(self) -> dict:
        return {"spec": self.text, "name": self.name,
                **{k: v for k, v in self.params.items() if not isinstance(v, np.ndarray)}}


# ------------------------------------------------------------------------------ low level


def _split(text: str, kind: str, names) -> Tuple[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"empty {kind} spec")
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if name not in names:
        hint = ""
        if name.lower() in names:
            hint = f" (names are lower case: {name.lower()!r})"
        raise SpecError(f"unknown {kind} {name!r} in {text!r}{hint}; known: "
                        f"{', '.join(sorted(names))}")
    return name, rest


def _keys(text: str, kind: str, name: str, rest: str, allowed, required=()) -> Dict[str, str]:
    args: Dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, val = item.partition("=")
            key, val = key.strip(), val.strip()
            if not eq or not key or not val:
                raise SpecError(f"malformed {kind} spec {text!r}: expected key=value, got "
                                f"{item.strip()!r}")
            if key in args:
                raise SpecError(f"malformed {kind} spec {text!r}: {key!r} given twice")
            if key not in allowed:
                known = ", ".join(sorted(allowed)) if allowed else "no keys"
                hint = f" (keys are lower case: {key.lower()!r})" if key.lower() in allowed else ""
                raise SpecError(f"unknown key {key!r} in {text!r}{hint}; {name} takes {known}")
            args[key] = val
    missing = [k for k in required if k not in args]
    if missing:
        raise SpecError(f"{kind} spec {text!r} is missing {', '.join(missing)}")
    return args


def _float(text, key, val, *, lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False) -> float:
    try:
        v = float(val)
    except ValueError:
        raise SpecError(f"in {text!r}: {key}={val!r} is not a number") from None
    if not math.isfinite(v):
        raise SpecError(f"in {text!r}: {key}={val!r} must be finite")
    if v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
        lb = ("(" if lo_open else "[") + (f"{lo:g}" if math.isfinite(lo) else "-inf")
        ub = (f"{hi:g}" if math.isfinite(hi) else "inf") + (")" if hi_open else "]")
        raise SpecError(f"in {text!r}: {key}={val!r} must lie in {lb}, {ub}")
    return v


def _int(text, key, val, *, lo=None, hi=None) -> int:
    try:
        v = int(val)
    except ValueError:
        try:
            f = float(val)
        except ValueError:
            raise SpecError(f"in {text!r}: {key}={val!r} is not an integer") from None
        if not (math.isfinite(f) and f == int(f)):
            raise SpecError(f"in {text!r}: {key}={val!r} is not an integer") from None
        v = int(f)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise SpecError(f"in {text!r}: {key}={val!r} must lie in [{lo}, {hi}]")
    return v


def _vectors(text, key, val):
    """'-2|2' -> [[-2], [2]]; '-2;0|2;0' -> [[-2, 0], [2, 0]]."""
    rows = [[_float(text, key, c) for c in comp.split(";")] for comp in val.split("|")]
    if len({len(r) for r in rows}) != 1:
        raise SpecError(f"in {text!r}: all components of {key} need the same dimension")
    if len(rows) > MAX_COMPONENTS or len(rows[0]) > MAX_DIM:
        raise SpecError(f"in {text!r}: {key} is too large")
    return [list(r) for r in rows]


def _scalars(text, key, val, **kw):
    return [_float(text, key, c, **kw) for c in val.split("|")]


def _npy(text, path, width):
    if not os.path.isfile(path):
        raise SpecError(f"in {text!r}: no file {path!r}")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SpecError(f"in {text!r}: cannot read {path!r} as .npy: {err}") from None
    if np.iscomplexobj(x):
        raise SpecError(f"in {text!r}: {path!r} holds complex numbers; samples must be real")
    if x.dtype.kind not in "fiu":
        raise SpecError(f"in {text!r}: {path!r} has dtype {x.dtype}; expected real numbers")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise SpecError(f"in {text!r}: {path!r} has shape {x.shape}; expected (N,) or (N, d)")
    if x.size > MAX_ELEMENTS or x.shape[1] > MAX_DIM:
        raise SpecError(f"in {text!r}: {path!r} is too large ({x.shape}); at most "
                        f"{MAX_ELEMENTS} entries and {MAX_DIM} dimensions")
    if not np.all(np.isfinite(x)):
        raise SpecError(f"in {text!r}: {path!r} contains NaN or inf")
    return {"path": path, "width": width, "samples": x.astype(np.float64)}


def _gmm_params(text, a):
    means = _vectors(text, "means", a["means"])
    k = len(means)
    std = _scalars(text, "std", a.get("std", "1"), lo=0.0, lo_open=True)
    if len(std) not in (1, k):
        raise SpecError(f"in {text!r}: std has {len(std)} entries for {k} components")
    weights = None
    if "weights" in a:
        weights = _scalars(text, "weights", a["weights"], lo=0.0)
        if len(weights) != k:
            raise SpecError(f"in {text!r}: weights has {len(weights)} entries for {k} components")
        if abs(sum(weights) - 1.0) > 1e-6:
            raise SpecError(f"in {text!r}: weights must sum to 1; got {sum(weights):.6g}")
    return {"means": means, "std": std, "weights": weights}


# ------------------------------------------------------------------------------ parsing


def parse_data(text: str) -> Spec:
    """Validate a data spec (module docstring); no JAX."""
    name, rest = _split(text, "data", DATA)
    a = _keys(text, "data", name, rest, DATA[name], ("means",) if name == "gmm" else
              ("path", "width") if name == "npy" else ())
    if name == "gauss":
        dim = _int(text, "dim", a["dim"], lo=1, hi=MAX_DIM) if "dim" in a else None
        mean = _vectors(text, "mean", a.get("mean", "0"))
        if len(mean) != 1:
            raise SpecError(f"in {text!r}: gauss takes one mean (coordinates separated by ';')")
        mean = mean[0]
        if dim is not None and len(mean) not in (1, dim):
            raise SpecError(f"in {text!r}: mean has {len(mean)} coordinates but dim={dim}")
        std = _float(text, "std", a.get("std", "1"), lo=0.0, lo_open=True)
        p = {"mean": mean, "std": std, "dim": dim}
    elif name == "gmm":
        p = _gmm_params(text, a)
    elif name == "swissroll":
        p = {"n": _int(text, "n", a.get("n", "800"), lo=1, hi=100_000),
             "noise": _float(text, "noise", a.get("noise", "0.3"), lo=0.0, hi=1e3),
             "scale": _float(text, "scale", a.get("scale", "0.125"), lo=0.0, lo_open=True,
                             hi=1e3),
             "width": _float(text, "width", a.get("width", "0.05"), lo=0.0, lo_open=True,
                             hi=1e3),
             "seed": _int(text, "seed", a.get("seed", "0"), lo=0, hi=SEED_MAX)}
    elif name == "digits":
        p = {"width": _float(text, "width", a.get("width", "0.1"), lo=0.0, lo_open=True, hi=1e3),
             "n": _int(text, "n", a["n"], lo=1, hi=1797) if "n" in a else None}
    else:
        p = _npy(text, a["path"], _float(text, "width", a["width"], lo=0.0, lo_open=True))
    return Spec("data", name, p, text)


def parse_protocol(text: str) -> Spec:
    """Validate a protocol spec (module docstring); no JAX."""
    name, rest = _split(text, "protocol", PROTOCOLS)
    a = _keys(text, "protocol", name, rest, PROTOCOLS[name])
    if name == "vp-linear":
        bmin = _float(text, "beta_min", a.get("beta_min", "0.1"), lo=0.0, hi=1e4)
        bmax = _float(text, "beta_max", a.get("beta_max", "20"), lo=0.0, lo_open=True, hi=1e4)
        if bmin > bmax:
            raise SpecError(f"in {text!r}: beta_min={bmin:g} must not exceed beta_max={bmax:g}")
        p = {"beta_min": bmin, "beta_max": bmax}
    elif name == "ve":
        smin = _float(text, "sigma_min", a.get("sigma_min", "0.01"), lo=0.0, lo_open=True,
                      hi=1e6)
        smax = _float(text, "sigma_max", a.get("sigma_max", "10"), lo=0.0, lo_open=True, hi=1e6)
        if not smin < smax:
            raise SpecError(f"in {text!r}: sigma_min={smin:g} must be below sigma_max={smax:g}")
        p = {"sigma_min": smin, "sigma_max": smax}
    elif name == "rotating":
        p = {"h": _float(text, "h", a.get("h", "1"), lo=-1e3, hi=1e3),
             "g": _float(text, "g", a.get("g", "0"), lo=-1e3, hi=1e3),
             "tfin": _float(text, "tfin", a.get("tfin", "1"), lo=0.0, hi=1e3)}
    elif name == "polar":
        vp = _int(text, "vp", a.get("vp", "0"), lo=0, hi=1)
        p = {"n": _int(text, "n", a.get("n", "6"), lo=1, hi=64), "vp": bool(vp)}
    elif name == "ot":
        method = a.get("method", "auto")
        if method not in OT_METHODS:
            raise SpecError(f"in {text!r}: method={method!r}; expected one of "
                            f"{', '.join(OT_METHODS)}")
        p = {"method": method, "n": _int(text, "n", a.get("n", "2048"), lo=2, hi=20_000)}
    else:
        p = {}
    return Spec("protocol", name, p, text)


def parse_perturbation(text: str) -> Spec:
    """Validate a perturbation spec (module docstring); no JAX."""
    name, rest = _split(text, "perturbation", PERTURBATIONS)
    if PERTURBATIONS[name] is None:  # a bare value: shift:D, scale:S, mean:MU, variance:V
        if not rest.strip():
            raise SpecError(f"perturbation {text!r}: expected {name}:NUMBER")
        if name == "shift":
            v = _float(text, "shift", rest)
            if v == 0:
                raise SpecError(f"perturbation {text!r} changes nothing (D_0 = 0)")
            p = {"delta": v}
        elif name == "scale":
            v = _float(text, "scale", rest, lo=0.0, lo_open=True, hi=1e3)
            if v == 1:
                raise SpecError(f"perturbation {text!r} changes nothing (D_0 = 0)")
            p = {"s": v}
        elif name == "mean":
            p = {"mean": [_float(text, "mean", c) for c in rest.split(";")]}
        else:
            p = {"variance": _float(text, "variance", rest, lo=0.0, lo_open=True, hi=1e6)}
        return Spec("perturbation", name, p, text)
    a = _keys(text, "perturbation", name, rest, PERTURBATIONS[name],
              ("a", "b") if name == "uniform" else ("means",) if name == "gmm" else
              ("path", "width") if name == "npy" else ())
    if name == "uniform":
        lo = [_float(text, "a", c) for c in a["a"].split(";")]
        hi = [_float(text, "b", c) for c in a["b"].split(";")]
        if len(lo) != len(hi) or not all(x < y for x, y in zip(lo, hi)):
            raise SpecError(f"in {text!r}: uniform needs a < b (coordinate-wise, same length)")
        p = {"a": lo, "b": hi}
    elif name == "gmm":
        p = _gmm_params(text, a)
    elif name == "npy":
        p = _npy(text, a["path"], _float(text, "width", a["width"], lo=0.0, lo_open=True))
    else:
        p = {}
    return Spec("perturbation", name, p, text)


def data_dim(spec: Spec) -> Optional[int]:
    """The dimension a data or gmm/uniform/mean perturbation spec fixes (None if it does not)."""
    p = spec.params
    if spec.name == "gauss":
        return p["dim"] or len(p["mean"])
    if spec.name == "gmm":
        return len(p["means"][0])
    if spec.name in ("swissroll",):
        return 2
    if spec.name == "digits":
        return 64
    if spec.name == "npy":
        return int(p["samples"].shape[1])
    if spec.name == "uniform":
        return len(p["a"])
    if spec.name == "mean":
        return len(p["mean"]) if len(p["mean"]) > 1 else None
    return None


def input_files(*spec_list: Optional[Spec]) -> list:
    """The files the given specs read (``npy:path=...``), for the output checks."""
    return [s.params["path"] for s in spec_list if s is not None and s.name == "npy"]


def protocol_dim(spec: Spec) -> Optional[int]:
    return 2 if spec.name == "rotating" else None


# ------------------------------------------------------------------------------ building


def build_data(spec: Spec):
    """The GaussianMixture of a data Spec (imports JAX)."""
    from satjax import mixtures

    p = spec.params
    if spec.name == "gauss":
        return mixtures.gaussian(np.asarray(p["mean"]), p["std"], dim=p["dim"])
    if spec.name == "gmm":
        std = p["std"][0] if len(p["std"]) == 1 else np.asarray(p["std"])
        return mixtures.gmm(np.asarray(p["means"]), std, p["weights"])
    if spec.name == "swissroll":
        return mixtures.swiss_roll(n=p["n"], noise=p["noise"], scale=p["scale"],
                                   width=p["width"], seed=p["seed"])
    if spec.name == "digits":
        return mixtures.digits(width=p["width"], n=p["n"])
    return mixtures.from_samples(p["samples"], p["width"])


def build_protocol(spec: Spec, *, tau: float = 1.0, data=None, key=None):
    """The Protocol of a protocol Spec (imports JAX); ``data`` is needed for ``ot``."""
    from satjax import schedules
    from satjax.forces import RotatingForce

    p = spec.params
    if spec.name == "cosine":
        return schedules.cosine(tau)
    if spec.name == "cond-ot":
        return schedules.cond_ot(tau)
    if spec.name == "vp-linear":
        return schedules.vp_linear(p["beta_min"], p["beta_max"], tau)
    if spec.name == "ve":
        return schedules.ve(p["sigma_min"], p["sigma_max"], tau)
    if spec.name == "rotating":
        return RotatingForce.create(h=p["h"], g=p["g"], t_fin=p["tfin"], tau=tau)
    if spec.name == "polar":
        return schedules.polar(p["n"], p["n"], vp=p["vp"], tau=tau)
    from satjax.geometry.ot_protocol import ot_protocol

    if data is None:
        raise SpecError("the `ot` protocol needs the data distribution")
    return ot_protocol(data, tau=tau, method=p["method"], n_samples=p["n"], key=key)


def build_perturbation(spec: Spec):
    """The Perturbation of a perturbation Spec (imports JAX)."""
    from satjax import mixtures
    from satjax import perturb as PT

    p = spec.params
    if spec.name == "shift":
        return PT.shift(p["delta"])
    if spec.name == "scale":
        return PT.scale(p["s"])
    if spec.name == "gaussian":
        return PT.moment_gaussian()
    if spec.name == "mean":
        m = p["mean"]
        return PT.mean_change(m[0] if len(m) == 1 else np.asarray(m))
    if spec.name == "variance":
        return PT.variance_change(p["variance"])
    if spec.name == "uniform":
        return PT.replace(PT.Uniform.create(np.asarray(p["a"]), np.asarray(p["b"])), spec.text)
    if spec.name == "gmm":
        std = p["std"][0] if len(p["std"]) == 1 else np.asarray(p["std"])
        return PT.replace(mixtures.gmm(np.asarray(p["means"]), std, p["weights"]), spec.text)
    return PT.replace(mixtures.from_samples(p["samples"], p["width"]), spec.text)


__all__ = ["DATA", "PERTURBATIONS", "PROTOCOLS", "SEED_MAX", "Spec", "SpecError", "build_data",
           "build_perturbation", "build_protocol", "data_dim", "input_files", "parse_data",
           "parse_perturbation", "parse_protocol", "protocol_dim"]
