"""Text specs for data and protocols (CLI), parsed once into satjax objects.

Data: ``gauss:mean=2,std=0.5[,dim=1]``, ``gmm:means=-2|2,std=0.5[,weights=0.5|0.5]`` (components
separated by ``|``, coordinates of a multi-dimensional mean by ``;``, e.g. ``means=-2;0|2;0``;
``std`` may be per component ``0.5|0.3``), ``swissroll:n=800,noise=0.3,scale=0.125,width=0.05,
seed=0``, ``digits:width=0.1[,n=...]``, ``npy:path=FILE,width=0.1``.

Protocols: ``cosine``, ``cond-ot``, ``vp-linear[:beta_min=..,beta_max=..]``,
``ve[:sigma_min=..,sigma_max=..]``, ``rotating:h=1,g=3,tfin=2``, ``polar[:n=6,vp=0]`` (the
learnable family at its cosine initialisation), ``ot`` (the W2 geodesic; needs the data).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from satjax import mixtures, schedules
from satjax.forces import RotatingForce


def _split(spec: str, what: str):
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty {what} spec")
    name, _, rest = spec.strip().partition(":")
    args: Dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, val = item.partition("=")
            if not eq or not key.strip() or not val.strip():
                raise ValueError(f"malformed {what} spec {spec!r}: expected key=value, got {item!r}")
            if key.strip() in args:
                raise ValueError(f"malformed {what} spec {spec!r}: {key.strip()!r} given twice")
            args[key.strip()] = val.strip()
    return name.strip().lower(), args


def _num(spec, key, val, kind=float):
    try:
        out = kind(val)
    except ValueError:
        raise ValueError(f"in spec {spec!r}: {key}={val!r} is not a valid {kind.__name__}") from None
    if kind is float and not np.isfinite(out):
        raise ValueError(f"in spec {spec!r}: {key}={val!r} must be finite")
    return out


def _vector_list(spec, key, val):
    """'-2|2' -> [[-2], [2]]; '-2;0|2;0' -> [[-2, 0], [2, 0]]."""
    rows = [[_num(spec, key, c) for c in comp.split(";")] for comp in val.split("|")]
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"in spec {spec!r}: all components of {key} need the same dimension")
    return np.asarray(rows, dtype=float)


def _scalar_list(spec, key, val):
    return np.asarray([_num(spec, key, c) for c in val.split("|")], dtype=float)


def _check_keys(spec, name, args, allowed, required=()):
    unknown = set(args) - set(allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in spec {spec!r}; "
                         f"{name} takes {sorted(allowed)}")
    missing = [k for k in required if k not in args]
    if missing:
        raise ValueError(f"spec {spec!r} is missing {missing}")


def parse_data(spec: str) -> mixtures.GaussianMixture:
    """Parse a data spec (module docstring) into a GaussianMixture."""
    name, a = _split(spec, "data")
    if name == "gauss":
        _check_keys(spec, name, a, {"mean", "std", "dim"})
        dim = _num(spec, "dim", a["dim"], int) if "dim" in a else None
        if dim is not None and dim < 1:
            raise ValueError(f"in spec {spec!r}: dim must be >= 1")
        mean = _vector_list(spec, "mean", a.get("mean", "0"))[0]
        std = _num(spec, "std", a.get("std", "1"))
        if std <= 0:
            raise ValueError(f"in spec {spec!r}: std must be > 0")
        return mixtures.gaussian(mean, std, dim=dim)
    if name == "gmm":
        _check_keys(spec, name, a, {"means", "std", "weights"}, ("means",))
        means = _vector_list(spec, "means", a["means"])
        std = _scalar_list(spec, "std", a.get("std", "1"))
        if np.any(std <= 0):
            raise ValueError(f"in spec {spec!r}: std must be > 0")
        std = std[0] if std.size == 1 else std
        w = _scalar_list(spec, "weights", a["weights"]) if "weights" in a else None
        return mixtures.gmm(means, std, w)
    if name == "swissroll":
        _check_keys(spec, name, a, {"n", "noise", "scale", "width", "seed"})
        return mixtures.swiss_roll(
            n=_num(spec, "n", a.get("n", "800"), int), noise=_num(spec, "noise", a.get("noise", "0.3")),
            scale=_num(spec, "scale", a.get("scale", "0.125")),
            width=_num(spec, "width", a.get("width", "0.05")), seed=_num(spec, "seed", a.get("seed", "0"), int))
    if name == "digits":
        _check_keys(spec, name, a, {"width", "n"})
        n = _num(spec, "n", a["n"], int) if "n" in a else None
        return mixtures.digits(width=_num(spec, "width", a.get("width", "0.1")), n=n)
    if name == "npy":
        _check_keys(spec, name, a, {"path", "width"}, ("path", "width"))
        try:
            x = np.load(a["path"])
        except (OSError, ValueError) as err:
            raise ValueError(f"in spec {spec!r}: cannot read {a['path']!r}: {err}") from None
        return mixtures.from_samples(x, _num(spec, "width", a["width"]))
    raise ValueError(f"unknown data {name!r} in spec {spec!r}; known: gauss, gmm, swissroll, "
                     "digits, npy")


def _ot_protocol(data, tau):
    try:
        from satjax.geometry import ot_protocol
    except ImportError:  # pragma: no cover - only before the geometry module exists
        raise ValueError("the `ot` protocol is not available in this version") from None
    if data is None:
        raise ValueError("the `ot` protocol needs the data distribution (pass `data=`)")
    return ot_protocol(data, tau=tau)



def parse_protocol(spec: str, *, tau: float = 1.0, data=None):
    """Parse a protocol spec (module docstring) into a schedule, force or OT protocol."""
    name, a = _split(spec, "protocol")
    f = lambda k, d: _num(spec, k, a.get(k, d))  # noqa: E731
    if name == "cosine":
        _check_keys(spec, name, a, set())
        return schedules.cosine(tau)
    if name in ("cond-ot", "condot", "rectified-flow"):
        _check_keys(spec, name, a, set())
        return schedules.cond_ot(tau)
    if name in ("vp-linear", "vp", "ddpm"):
        _check_keys(spec, name, a, {"beta_min", "beta_max"})
        return schedules.vp_linear(f("beta_min", "0.1"), f("beta_max", "20"), tau)
    if name == "ve":
        _check_keys(spec, name, a, {"sigma_min", "sigma_max"})
        return schedules.ve(f("sigma_min", "0.01"), f("sigma_max", "10"), tau)
    if name == "rotating":
        _check_keys(spec, name, a, {"h", "g", "tfin"})
        return RotatingForce.create(h=f("h", "1"), g=f("g", "0"), t_fin=f("tfin", "1"), tau=tau)
    if name == "polar":
        _check_keys(spec, name, a, {"n", "vp"})
        n = _num(spec, "n", a.get("n", "6"), int)
        return schedules.polar(n, n, vp=bool(_num(spec, "vp", a.get("vp", "0"), int)), tau=tau)
    if name == "ot":
        _check_keys(spec, name, a, set())
        return _ot_protocol(data, tau)
    raise ValueError(f"unknown protocol {name!r} in spec {spec!r}; known: cosine, cond-ot, "
                     "vp-linear, ve, rotating, polar, ot")
