"""One writer for results: text tables with value ± standard error and method, strict JSON,
PNG figures; plus the output-path checks that run before any computation.

* :func:`jsonable` turns results (Estimates, Verdicts, arrays, NumPy and JAX scalars) into
  strict JSON values: non-finite numbers become ``null`` with a ``<key>_status`` entry
  ("nan", "+inf", "-inf") next to them, so standard parsers accept every document.
* :func:`write_json` writes atomically (temporary file, flushed, fsynced and its size checked,
  then renamed) or to stdout (``"-"``); a write that fails raises :class:`WriteError` (the CLI's
  exit code 4), so a lost result is never reported as done.
* :class:`Console` prints human-readable text to stdout, or to stderr when stdout carries the
  JSON document.
* :func:`check_outputs` verifies, before the work starts, that every output path can be written
  (a real probe file in its folder), is not a folder, differs from the other outputs, and
  neither equals nor lies inside an input (data files, model folders) or an output folder.
* :func:`ascii_fallback` makes the standard streams survive any terminal encoding.
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


class WriteError(OSError):
    """An output that could not be written completely (the CLI's exit code 4)."""


def write_json(payload, path: Optional[str]) -> None:
    """Write strict JSON to ``path`` atomically, or to stdout for ``"-"``; nothing for None."""
    if path is None:
        return
    text = dumps(payload) + "\n"
    if path == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as err:
            raise WriteError(f"cannot write the JSON to stdout: {err.strerror or err}") from None
        return
    atomic_write(Path(path), text.encode())


def _write_all(fd: int, data: bytes, path: Path, regular: bool) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(f"short write ({len(data) - len(view)} of {len(data)} bytes)")
        view = view[n:]
    if regular:
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if size != len(data):
            raise OSError(f"wrote {size} of {len(data)} bytes")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: a temporary file in the same folder, written in full, fsynced
    and its size checked, then renamed over ``path``. An existing non-regular target (a device,
    a FIFO) is written in place instead. Any failure raises :class:`WriteError` naming the path
    and leaves an existing regular file untouched."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            fd = os.open(path, os.O_WRONLY)
            try:
                _write_all(fd, data, path, regular=False)
            finally:
                os.close(fd)
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            try:
                _write_all(fd, data, path, regular=True)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as err:
        raise WriteError(f"cannot write {str(path)!r}: {err.strerror or err}") from None


def write_png(plot_fn, payload, path: str, *args) -> None:
    """Draw ``payload`` with ``plot_fn(payload, file, *args)`` and write it to ``path`` through
    :func:`atomic_write` (so a failed write is a :class:`WriteError`)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".satjax-plot-", suffix=".png")
    os.close(fd)
    try:
        plot_fn(payload, tmp, *args)
        data = Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)
    atomic_write(target, data)


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


def _resolve(path, what: str) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as err:  # a symlink loop (RuntimeError before Python 3.13)
        raise OutputError(f"{what} {str(path)!r} cannot be resolved: {err}") from None


def same_file(a, b) -> bool:
    """Whether two paths name the same file (symlinks followed; a path that cannot be resolved
    is compared as given)."""
    def full(p):
        try:
            return Path(p).expanduser().resolve()
        except (RuntimeError, OSError):
            return Path(p)

    return full(a) == full(b)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs(outputs: dict, inputs: Iterable = (), folders: Iterable = ()) -> None:
    """Fail before any work unless every output can be written without harming anything.

    ``outputs`` maps an option name (e.g. "--json") to a file path (None and "-" are skipped);
    a path ending in "/" or naming a folder is an error; each file must differ from the others,
    may not equal or lie inside an input (``inputs``: files and folders the command reads, e.g.
    data files and model folders), nor lie inside an output folder of the command (``folders``:
    option → folder whose files the command writes itself, e.g. a model folder).
    """
    seen = {}
    ins = [_resolve(p, "input") for p in inputs if p]
    outs = {opt: _resolve(f, opt) for opt, f in dict(folders).items() if f}
    for opt, path in outputs.items():
        if path is None or path == "-":
            continue
        if str(path).endswith(os.sep):
            raise OutputError(f"{opt} {path!r} names a folder; give a file name")
        p = Path(path).expanduser()
        full = _resolve(path, opt)
        if full.is_dir():
            raise OutputError(f"{opt} {path!r} is a folder; give a file name")
        if full in seen:
            raise OutputError(f"{opt} and {seen[full]} both write {str(p)!r}; give distinct files")
        for src in ins:
            if _inside(full, src):
                what = "is" if full == src else f"lies inside {str(src)!r}, which is"
                raise OutputError(f"{opt} {path!r} {what} an input of this command; "
                                  "give another file")
        for fopt, folder in outs.items():
            if _inside(full, folder):
                raise OutputError(f"{opt} {path!r} lies inside the folder of {fopt} "
                                  f"{str(folder)!r}, whose files this command writes itself; "
                                  "give a file elsewhere")
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


def prepare_folder(path: str, opt: str = "--out", inputs: Iterable = ()) -> Path:
    """An output folder that exists (created, with parents) and is writable, checked now; it
    may not equal, contain or lie inside an input (``inputs``)."""
    d = Path(path).expanduser()
    full = _resolve(d, opt)
    if d.exists() and not d.is_dir():
        raise OutputError(f"{opt} {path!r} exists and is not a folder")
    for src in (_resolve(p, "input") for p in inputs if p):
        if _inside(full, src) or _inside(src, full):
            raise OutputError(f"{opt} {path!r} overlaps the input {str(src)!r}; give another "
                              "folder")
    parent = d if d.exists() else next((p for p in d.parents if p.exists()), Path("."))
    probe_folder(parent.resolve(), opt)
    return d


# What the tables and messages print beyond ASCII, spelled in ASCII for terminals that cannot
# encode it (PYTHONIOENCODING=ascii, LANG=C on old systems).
_ASCII = {"±": "+/-", "η": "eta", "τ": "tau", "σ": "sigma", "ν": "nu", "λ": "lambda",
          "Δ": "Delta", "χ": "chi", "∞": "inf", "≤": "<=", "≥": ">=", "≈": "~", "≠": "!=",
          "—": "--", "–": "-", "−": "-", "→": "->", "∇": "grad ", "∫": "int ", "·": "*",
          "×": "x", "‖": "|", "²": "^2", "³": "^3", "₀": "0", "₁": "1", "₂": "2", "ᵀ": "^T",
          "…": "...", "§": "S", "̃": "~", "†": "+", "é": "e", "ü": "u", "ö": "o"}


def _ascii_errors(err: UnicodeEncodeError):
    text = err.object[err.start:err.end]
    return "".join(_ASCII.get(c, f"\\u{ord(c):04x}") for c in text), err.end


def ascii_fallback() -> None:
    """Let stdout and stderr print any text: characters the stream's encoding cannot hold are
    written in ASCII (``±`` as ``+/-``, Greek letters by name, others as ``\\uXXXX``)."""
    import codecs

    try:
        codecs.lookup_error("satjax-ascii")
    except LookupError:
        codecs.register_error("satjax-ascii", _ascii_errors)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="satjax-ascii")
            except (ValueError, OSError):  # a closed or detached stream
                pass


__all__ = ["Console", "OutputError", "WriteError", "ascii_fallback", "atomic_write", "same_file",
           "check_outputs", "dumps", "jsonable", "prepare_folder", "probe_folder", "write_json",
           "write_png"]
