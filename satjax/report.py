"""One writer for results: text tables with value ± standard error and method, strict JSON,
PNG figures; plus the output-path checks that run before any computation.

* :func:`jsonable` turns results (Estimates, Verdicts, arrays, NumPy and JAX scalars) into
  strict JSON values: non-finite numbers become ``null`` with a ``<key>_status`` entry
  ("nan", "+inf", "-inf") next to them, so standard parsers accept every document.
* :func:`write_json` writes atomically (temporary file, then rename) or to stdout (``"-"``).
* :class:`Console` prints human-readable text to stdout, or to stderr when stdout carries the
  JSON document.
* :func:`check_outputs` verifies, before the work starts, that every output path can be written
  (a real probe file in its folder), is not a folder, and differs from the other outputs and
  from the inputs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Optional


def _number(v):
    f = float(v)
    if math.isfinite(f):
        return f, None
    return None, ("nan" if math.isnan(f) else "+inf" if f > 0 else "-inf")


def jsonable(obj):
    """A strict-JSON version of ``obj`` (module docstring)."""
    import numpy as np

    if hasattr(obj, "to_json") and callable(obj.to_json):
        return jsonable(obj.to_json())
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(v, (float, np.floating)) or (hasattr(v, "shape") and np.ndim(v) == 0
                                                       and np.asarray(v).dtype.kind == "f"):
                num, status = _number(v)
                out[k] = num
                if status is not None:
                    out[f"{k}_status"] = status
            else:
                out[k] = jsonable(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _number(obj)[0]
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "shape"):  # arrays (NumPy or JAX)
        a = np.asarray(obj)
        if a.ndim == 0:
            return jsonable(a.item())
        return jsonable(a.tolist())
    return str(obj)


def dumps(payload) -> str:
    return json.dumps(jsonable(payload), indent=2, allow_nan=False)


def write_json(payload, path: Optional[str]) -> None:
    """Write strict JSON to ``path`` atomically, or to stdout for ``"-"``; nothing for None."""
    if path is None:
        return
    text = dumps(payload) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write(Path(path), text.encode())


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_png(plot_fn, payload, path: str, *args) -> None:
    """Draw ``payload`` with ``plot_fn(payload, tmp, *args)`` and move it to ``path``."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".png")
    os.close(fd)
    try:
        plot_fn(payload, tmp, *args)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Console:
    """Human-readable output: stdout, or stderr when the JSON document goes to stdout."""

    def __init__(self, json_stdout: bool = False, quiet: bool = False):
        self.stream = sys.stderr if json_stdout else sys.stdout
        self.quiet = quiet

    def say(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def table(self, rows, headers) -> None:
        cells = [list(headers)] + [[_fmt(v) for v in r] for r in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for j, r in enumerate(cells):
            self.say("  ".join(c.ljust(w) if i == len(r) - 1 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))))
            if j == 0:
                self.say("  ".join("-" * w for w in widths))

    def estimates(self, items: Iterable) -> None:
        """A table of (name, Estimate) pairs: value ± se (resolution) and method."""
        self.table([(name, est.text(), est.method) for name, est in items],
                   ["quantity", "value ± s.e.", "method"])

    def verdicts(self, verdicts: dict) -> None:
        for name, v in verdicts.items():
            extra = f" — {v.reason}" if v.reason else ""
            margin = "" if not math.isfinite(v.margin) else f" (margin {v.margin:.3g}"
            if margin:
                margin += f" ± {v.se:.2g})" if v.se > 0 else ")"
            self.say(f"{name}: {v.status}{margin}{extra}")

    def progress(self, total: int, desc: str):
        """A tqdm bar on a terminal; silent when stderr is not a terminal or ``quiet``."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=self.quiet or not sys.stderr.isatty(),
                    dynamic_ncols=True, leave=False)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else ("nan" if math.isnan(v) else
                                                     ("+inf" if v > 0 else "-inf"))
    return str(v)


class OutputError(ValueError):
    """An output path that cannot be used (checked before the work)."""


def check_outputs(outputs: dict, inputs: Iterable = ()) -> None:
    """Fail before any work unless every output can be written.

    ``outputs`` maps an option name (e.g. "--json") to a file path (None and "-" are skipped);
    a path ending in "/" or naming a folder is an error; each file must differ from the others
    and from the ``inputs`` (paths read by the command).
    """
    seen = {}
    ins = {Path(p).expanduser().resolve() for p in inputs if p}
    for opt, path in outputs.items():
        if path is None or path == "-":
            continue
        if str(path).endswith(os.sep):
            raise OutputError(f"{opt} {path!r} names a folder; give a file name")
        p = Path(path).expanduser()
        full = p.resolve()
        if full.is_dir():
            raise OutputError(f"{opt} {path!r} is a folder; give a file name")
        if full in seen:
            raise OutputError(f"{opt} and {seen[full]} both write {str(p)!r}; give distinct files")
        if full in ins:
            raise OutputError(f"{opt} {path!r} is also an input of this command")
        seen[full] = opt
        probe_folder(full.parent, opt)


def probe_folder(folder: Path, opt: str) -> None:
    """Create and remove a file in ``folder`` (``os.access`` can answer yes where writing fails,
    e.g. under /proc)."""
    if not folder.is_dir():
        raise OutputError(f"{opt}: folder {str(folder)!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".satjax-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise OutputError(f"{opt}: cannot write in {str(folder)!r}: {err.strerror or err}") from None


def prepare_folder(path: str, opt: str = "--out") -> Path:
    """An output folder that exists (created, with parents) and is writable, checked now."""
    d = Path(path).expanduser()
    if d.exists() and not d.is_dir():
        raise OutputError(f"{opt} {path!r} exists and is not a folder")
    parent = d if d.exists() else next((p for p in d.parents if p.exists()), Path("."))
    probe_folder(parent.resolve(), opt)
    return d


__all__ = ["Console", "OutputError", "atomic_write", "check_outputs", "dumps", "jsonable",
           "prepare_folder", "probe_folder", "write_json", "write_png"]
