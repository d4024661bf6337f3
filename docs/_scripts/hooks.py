"""MkDocs hooks: the pages that are generated from the sources at build time.

Nothing is written into ``docs/``; the generated pages exist only in the build. The nav of
``mkdocs.yml`` stays the one list of pages:

* ``cli.md`` — the command-line reference, from the Typer app ``satjax.cli.app`` (its click
  commands: usage, help, every option with its type and default), so it cannot drift from the
  commands;
* ``api/<module>.md`` for every nav entry of that form — a mkdocstrings page
  ``::: satjax.<module>`` (rendered from the docstrings by static analysis: JAX is not imported);
* ``notebooks/<name>.md`` for every nav entry of that form — the jupytext percent script
  ``notebooks/<name>.py`` rendered as Markdown (markdown cells as they are, code cells as
  Python blocks), **without executing it**;
* ``benchmarks.md`` — ``benchmarks/README.md``.

It also switches off ``_underscore_`` emphasis in Markdown (``*asterisks*`` still work): the
sources write subscripts with underscores (``∂_t ln m … T_{t0}``), which Markdown would turn
into emphasis — and ``{t0}`` after it into an attribute list.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

from markdown.extensions import Extension
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]


def _nav_paths(nav) -> list[str]:
    out = []
    for item in nav or []:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            out.extend(_nav_paths(value))
        elif isinstance(value, str):
            out.append(value)
    return out


# ------------------------------------------------------------------------------ API pages


# Objects a package re-exports under the name of one of its submodules: griffe (like Python's
# attribute lookup order in static analysis) sees the submodule, so they are added explicitly.
_SHADOWED = {"learn": ["satjax.learn.train.train"]}


def _api_page(module: str) -> str:
    page = f"::: satjax.{module}\n"
    for path in _SHADOWED.get(module, []):
        page += (f"\n::: {path}\n    options:\n      heading_level: 2\n"
                 f"      show_root_full_path: false\n")
    return f"---\ntitle: {module}\n---\n\n" + page


# ------------------------------------------------------------------------------ notebooks


def _notebook_page(name: str) -> str:
    import jupytext

    src = ROOT / "notebooks" / f"{name}.py"
    nb = jupytext.read(src)
    parts = []
    for cell in nb.cells:
        text = cell.source.strip("\n")
        if not text.strip():
            continue
        if cell.cell_type == "markdown":
            parts.append(text)
        elif cell.cell_type == "code":
            parts.append(f"```python\n{text}\n```")
    note = (f'!!! note "Notebook `notebooks/{name}.py`"\n    Rendered from the jupytext percent '
            f"script without running it. To run it: `pip install -e \".[notebooks]\"`, then "
            f"`jupytext --to ipynb notebooks/{name}.py` and open the notebook in Jupyter, or "
            f"`jupytext --execute --to ipynb notebooks/{name}.py`.")
    if parts and parts[0].startswith("# "):  # keep the notebook's own title first
        title, _, rest = parts[0].partition("\n")
        parts[0] = title + "\n\n" + note + ("\n\n" + rest.strip() if rest.strip() else "")
    else:
        parts.insert(0, f"# {name}\n\n{note}")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------ CLI


_ROLE = re.compile(r":(?:py:)?[a-z]+:`~?\.?([^`]+?)`")


def _md(text: str) -> str:
    """Help text as Markdown: Sphinx roles and ``literals`` as code, the rest HTML-escaped and
    with Markdown's special characters (``* [ ] | \\``) escaped."""
    text = _ROLE.sub(lambda m: f"``{m.group(1)}``", text or "")
    parts = re.split(r"(``.+?``|`[^`]+`)", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a code span, kept as it is
            out.append(part)
        else:
            part = html.escape(part, quote=False)
            out.append(re.sub(r"([*\\\[\]|])", r"\\\1", part))
    return "".join(out)


def _param_line(param, ctx) -> str:
    """One option or argument as a bullet: its ``--help`` record (names, metavar, help with
    default and required marks). Duck-typed: Typer >= 0.24 builds on its own copy of click."""
    record = param.get_help_record(ctx) if not getattr(param, "hidden", False) else None
    if record is None:
        if getattr(param, "param_type_name", "") != "argument":
            return ""
        name = getattr(param, "human_readable_name", param.name)
        help_text = getattr(param, "help", None) or ""
        if getattr(param, "required", False):
            help_text = (help_text + "  [required]").strip()
        record = (str(name), help_text)
    names, help_text = record
    return f"* `{names}`" + (f": {_md(help_text)}" if help_text else "")


def _cli_page() -> str:
    import typer

    sys.path.insert(0, str(ROOT))
    from satjax import cli

    group = typer.main.get_command(cli.app)
    ctx = group.make_context("satjax", [], resilient_parsing=True)
    doc = (cli.__doc__ or "").strip()
    lines = ["# Command line", "",
             "Generated from the commands themselves (`satjax.cli`, a Typer app) when the site "
             "is built; `satjax COMMAND --help` prints the same.", "",
             _md(group.help or ""), ""]
    if doc:
        lines += [_md(" ".join(p.split())) + "\n" for p in doc.split("\n\n")]
    lines += ["", "| command | what it does |", "|---|---|"]
    names = group.list_commands(ctx)
    for name in names:
        cmd = group.get_command(ctx, name)
        summary = _md((cmd.help or "").strip().split("\n\n")[0].replace("\n", " "))
        lines.append(f"| [`{name}`](#satjax-{name}) | {summary} |")
    for name in names:
        cmd = group.get_command(ctx, name)
        sub = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        usage = " ".join(["satjax", name] + cmd.collect_usage_pieces(sub))
        lines += ["", f"## `satjax {name}` {{#satjax-{name}}}", "", "```text", usage, "```", ""]
        for para in (cmd.help or "").strip().split("\n\n"):
            if para.strip():
                lines += [_md(" ".join(para.split())), ""]
        params = [_param_line(p, sub) for p in cmd.get_params(sub) if p.name != "help"]
        params = [p for p in params if p]
        if params:
            lines += ["**Arguments and options**", ""] + params
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ hooks


class NoUnderscoreEmphasis(Extension):
    """``_x_`` stays text (subscripts): only ``*x*`` and ``**x**`` are emphasis."""

    def extendMarkdown(self, md):
        if hasattr(md, "delimiters"):  # Python-Markdown >= 3.11
            md.delimiters.remove("_")
        else:
            for name in ("em_strong2", "strong_em2", "strong2", "emphasis2"):
                md.inlinePatterns.deregister(name, strict=False)


@event_priority(100)  # before mkdocstrings copies the extensions for the docstrings
def on_config(config):
    config.markdown_extensions.append(NoUnderscoreEmphasis())
    return config


def on_files(files, config):
    pages = {}
    for path in _nav_paths(config.get("nav")):
        if files.get_file_from_path(path) is not None:
            continue
        if path == "cli.md":
            pages[path] = _cli_page()
        elif path == "benchmarks.md":
            pages[path] = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
        elif m := re.fullmatch(r"api/([\w.]+)\.md", path):
            pages[path] = _api_page(m.group(1))
        elif m := re.fullmatch(r"notebooks/(\w+)\.md", path):
            pages[path] = _notebook_page(m.group(1))
    for path, text in pages.items():
        files.append(File.generated(config, path, content=text))
    return files
