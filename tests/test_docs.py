"""The documentation site builds in strict mode, with every page it promises.

``mkdocs build --strict`` (mkdocs.yml: Material theme, mkdocstrings' Python handler, the hook
docs/_scripts/hooks.py that generates the CLI reference, the API pages, the notebook pages and
the benchmarks page) into a temporary folder: any warning — a broken link or anchor, a page
missing from the nav, a docstring griffe cannot parse — fails the build. Then the output is
checked for the pages and the content that the nav and the sources promise.
"""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_PACKAGES = {"mkdocs": "mkdocs", "material": "mkdocs-material",
                 "mkdocstrings": "mkdocstrings",
                 "mkdocstrings_handlers.python": "mkdocstrings-python"}


def _missing():
    out = []
    for mod, dist in DOCS_PACKAGES.items():
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            out.append(dist)
    return out


pytestmark = pytest.mark.skipif(
    bool(_missing()), reason=f"documentation packages not installed: {', '.join(_missing())} "
                             "(pip install -e \".[test]\" installs them)")


def _nav_paths(nav):
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            yield from _nav_paths(value)
        else:
            yield value


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's end-of-life banner
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    seconds = time.monotonic() - t0
    assert res.returncode == 0, (f"mkdocs build --strict failed:\n{res.stdout[-4000:]}\n"
                                 f"{res.stderr[-8000:]}")
    assert not re.search(r"^WARNING", res.stderr, re.M), res.stderr[-8000:]
    print(f"mkdocs build --strict: {seconds:.1f} s")
    return out


def _page(site, path: str) -> str:
    html = site / (path[:-3] + "/index.html" if path != "index.md" else "index.html")
    assert html.is_file(), f"{path} was not built ({html})"
    return html.read_text(encoding="utf-8")


def test_every_nav_page_is_built(site):
    import yaml

    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    paths = list(_nav_paths(cfg["nav"]))
    for path in paths:
        _page(site, path)
    # every notebook has a page, and the pages the docs promise are in the nav
    notebooks = {f"notebooks/{p.stem}.md" for p in (ROOT / "notebooks").glob("*.py")}
    assert notebooks <= set(paths), notebooks - set(paths)
    for path in ("theory.md", "getting-started.md", "cli.md", "benchmarks.md", "multidevice.md"):
        assert path in paths
    for mod in ("protocol", "estimators", "estimate", "forward", "path", "bound", "perturb",
                "thermo", "reverse", "geometry.distances", "geometry.grid",
                "geometry.ot_protocol", "optimize", "learn", "measure", "report", "specs"):
        assert f"api/{mod}.md" in paths, mod


def test_api_pages_render_docstrings(site):
    thermo = _page(site, "api/thermo.md")
    assert 'id="satjax.thermo.entropy_production"' in thermo
    assert "Ṡ" in thermo and "τ" in thermo          # unicode math of the docstrings survives
    # underscores are subscripts, not emphasis (nor, with {..} after them, attribute lists)
    assert "∂_t ln m" in thermo and "T_{t0}" in thermo
    for path in site.glob("api/*/index.html"):
        text = path.read_text(encoding="utf-8")
        assert "doc doc-object" in text, path          # mkdocstrings rendered something
        # Sphinx roles were turned into references (docs/_scripts/griffe_roles.py)
        assert not re.search(r":(class|func|mod|meth|attr|data|exc):<code>", text), path
        assert not re.search(r"<em [^>]*>", text), path
    # a cross-reference between pages resolves to a link
    assert 'href="../estimators/#satjax.estimators.resolve"' in thermo
    assert 'id="satjax.learn.train.train"' in _page(site, "api/learn.md")


def test_cli_reference_lists_every_command(site):
    import typer

    from satjax import cli

    group = typer.main.get_command(cli.app)
    ctx = group.make_context("satjax", [], resilient_parsing=True)
    text = _page(site, "cli.md")
    for name in group.list_commands(ctx):
        assert f'id="satjax-{name}"' in text, name
        for param in group.get_command(ctx, name).params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and not getattr(param, "hidden", False):
                    assert opt in text, (name, opt)


def test_getting_started_has_the_readme_commands(site):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, re.S)
    assert len(commands) >= 2
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    for cmd in commands[:2]:
        assert cmd in page, cmd


def test_notebooks_and_benchmarks_rendered(site):
    import jupytext

    for src in sorted((ROOT / "notebooks").glob("*.py")):
        nb = jupytext.read(src)
        code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        page = _page(site, f"notebooks/{src.stem}.md")
        # every code cell is a highlighted Python block (rendered, not executed: no outputs)
        assert page.count('<div class="highlight">') == len(code), src.name
        assert '<span class="kn">import</span>' in page, src.name
        assert f"notebooks/{src.stem}.py" in page
    bench = _page(site, "benchmarks.md")
    assert "velocity_d2" in bench


def test_readme_python_example_runs():
    """The README's Python API example is real code: it runs as written."""
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.findall(r"```python\n(.*?)\n```", readme, re.S)[0]
    res = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
