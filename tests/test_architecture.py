"""The shape of the library: no side doors, no dispatch on concrete protocol classes, a thin
CLI, a start-up without JAX, docstrings that cite the repository's own theory."""

import ast
import pathlib
import subprocess
import sys

PKG = pathlib.Path(__file__).resolve().parent.parent / "satjax"
MODULES = sorted(PKG.rglob("*.py"))
PRIVATE_MODULES = {"_util"}
# concrete classes (the abstract families Protocol, LinearForce and Schedule state a requirement,
# e.g. "Gaussian transitions" for conditional flow matching, and may be checked anywhere)
PROTOCOL_CLASSES = {
    "satjax/schedules.py": {"ConditionalOT", "Cosine", "VPLinear", "VE", "PolarSchedule",
                            "FunctionSchedule"},
    "satjax/forces.py": {"RotatingForce", "GeneralLinearForce"},
    "satjax/geometry/ot_protocol.py": {"OTProtocol1D", "OTProtocolGaussian",
                                       "OTProtocolEntropic", "OTProtocolSamples"},
}


def _rel(path):
    return str(path.relative_to(PKG.parent))


def _tree(path):
    return ast.parse(path.read_text())


def test_no_module_uses_another_modules_private_names():
    problems = []
    for path in MODULES:
        tree = _tree(path)
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("satjax")):
                for alias in node.names:
                    if (alias.name.startswith("_") and not alias.name.startswith("__")
                            and alias.name not in PRIVATE_MODULES):
                        problems.append(f"{_rel(path)}:{node.lineno} imports {alias.name}")
                    modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                modules |= {a.asname or a.name.split(".")[0] for a in node.names
                            if a.name.startswith("satjax")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                problems.append(f"{_rel(path)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not problems, "\n".join(problems)


def test_no_isinstance_on_concrete_protocol_classes_outside_their_module():
    concrete = {name: where for where, names in PROTOCOL_CLASSES.items() for name in names}
    problems = []
    for path in MODULES:
        rel = _rel(path)
        for node in ast.walk(_tree(path)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2):
                target = node.args[1]
                names = [e for e in (target.elts if isinstance(target, ast.Tuple) else [target])]
                for e in names:
                    n = e.id if isinstance(e, ast.Name) else e.attr if isinstance(e, ast.Attribute) else None
                    if n in concrete and concrete[n] != rel:
                        problems.append(f"{rel}:{node.lineno} isinstance(..., {n})")
    assert not problems, "\n".join(problems)


def test_cli_holds_no_numerical_routing():
    """cli.py imports no numerical kernel at module level and never branches on dimensions."""
    tree = _tree(PKG / "cli.py")
    top_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    for n in top_imports:
        mod = n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
        assert mod in ("__future__", "functools", "json", "math", "os", "sys", "dataclasses",
                       "pathlib", "typing", "typer", "typing_extensions", "satjax",
                       "satjax.report"), mod
    src = (PKG / "cli.py").read_text()
    assert ".dim > 1" not in src and ".dim == 1" not in src


def test_help_imports_no_jax():
    code = ("import sys; from satjax.cli import app; "
            "from typer.main import get_command; "
            "get_command(app).main(['--help'], standalone_mode=False); "
            "print('JAX' if any(m == 'jax' or m.startswith('jax.') for m in sys.modules) else 'NOJAX')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "NOJAX", out.stdout + out.stderr
    for cmd in ("path", "bound", "train", "sample", "optimize", "reproduce", "bench"):
        code = ("import sys; from satjax.cli import app; from typer.main import get_command\n"
                f"try:\n    get_command(app).main(['{cmd}', '--help'], standalone_mode=False)\n"
                "except SystemExit:\n    pass\n"
                "print('JAX' if any(m == 'jax' or m.startswith('jax.') for m in sys.modules) else 'NOJAX')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120)
        assert out.stdout.strip().splitlines()[-1] == "NOJAX", (cmd, out.stdout + out.stderr)


def test_docstrings_cite_the_repository_theory_not_outside_files():
    for path in MODULES:
        text = path.read_text()
        assert "PAPER.md" not in text, _rel(path)
    assert (PKG.parent / "docs" / "theory.md").is_file()
