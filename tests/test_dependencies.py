"""Every package that satjax, its tests, notebooks, benchmarks and docs scripts import is declared
in pyproject.toml (a core dependency or the `test` extra), so `pip install -e ".[test]"` on a
fresh machine runs the whole suite (a test once imported mpmath, which only a hand-installed
torch had brought in).

The imports are read with `ast` (top-level names of `import x` and `from x import ...`, at any
depth, including imports inside functions); standard-library modules and the repository's own
modules are skipped; each remaining module is mapped to the distributions that provide it
(importlib.metadata.packages_distributions) and one of them must be named in satjax's installed
requirements.
"""

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["satjax", "tests", "notebooks", "benchmarks", "docs/_scripts", "examples"]
# imported only behind pytest.importorskip or a guarded import, and declared in an extra
OPTIONAL = {"torch": "bench"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def _local_modules():
    names = {"satjax"}
    for folder in SCANNED:
        for p in (ROOT / folder).rglob("*.py"):
            names.add(p.stem)
    return names


def _declared(extras=("test",)):
    out = {}
    for req in md.requires("satjax") or []:
        name, _, marker = req.partition(";")
        extra = re.search(r'extra\s*==\s*"([^"]+)"', marker)
        if extra is None or extra.group(1) in extras:
            out[_norm(re.split(r"[<>=!~\[ ;(]", name.strip(), maxsplit=1)[0])] = req
    return out


def test_every_import_is_declared():
    declared = _declared()
    providers = md.packages_distributions()
    local = _local_modules()
    std = set(sys.stdlib_module_names)
    missing = []
    files = [p for folder in SCANNED for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 50, "the scan found too few files"
    for path in files:
        for mod, line in _imports(path):
            if mod in std or mod in local or mod == "__future__":
                continue
            if mod in OPTIONAL:
                assert OPTIONAL[mod] in (md.metadata("satjax").get_all("Provides-Extra") or [])
                continue
            dists = {_norm(d) for d in providers.get(mod, [])}
            if not dists & set(declared):
                missing.append(f"{path.relative_to(ROOT)}:{line} imports {mod!r} "
                               f"(provided by {sorted(dists) or 'nothing installed'})")
    assert not missing, "undeclared imports:\n" + "\n".join(sorted(set(missing)))


def test_the_scan_sees_the_imports_it_must_see():
    # the checker itself: a module import inside a function, a from-import, a dotted import
    found = {m for m, _ in _imports(ROOT / "tests" / "test_perturb.py")}
    assert {"mpmath", "jax", "numpy", "satjax"} <= found
    assert "mpmath" in _declared(), "mpmath (tests/test_perturb.py) must be in the test extra"
    assert "torch" not in _declared(), "torch is the bench extra's, not the tests'"
