"""Griffe extension: Sphinx cross-reference roles in satjax docstrings become autorefs links.

satjax's docstrings are Google style with reStructuredText roles (``:class:`~satjax.x.Y```,
``:func:`draws```, ``:mod:`.distances```). Markdown would show the role name as text; this
extension rewrites each role, before the docstrings are rendered, into an *optional* autorefs
reference: a link when the target is documented on the site, plain code otherwise (never a
warning, so ``mkdocs build --strict`` is unaffected by references to undocumented or external
objects). Names are resolved as Sphinx does: relative names (``.distances``) against the current
module and its package, unqualified names against the current class and module, imported names
to the object they import.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`<>]+?)`")


def _lookup(root, path: str):
    parts = path.split(".")
    if parts[0] != root.name:
        return None
    obj = root
    for part in parts[1:]:
        try:
            obj = obj.members.get(part)
        except Exception:  # an alias that cannot be resolved
            return None
        if obj is None:
            return None
    return obj


def _canonical(obj) -> str:
    if obj.is_alias:
        try:
            return obj.final_target.path
        except Exception:
            return obj.target_path
    return obj.path


def _exported(module) -> list[str]:
    names = module.exports
    return [n if isinstance(n, str) else getattr(n, "name", str(n)) for n in (names or [])]


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the package into optional autorefs."""

    def on_package(self, *, pkg, **kwargs) -> None:
        self.root = pkg
        # objects re-exported by a package's __init__ (``__all__``) are documented there, e.g.
        # satjax.learn.train.train as satjax.learn.train: canonical path -> public path
        self.public = {}
        packages = [pkg]
        while packages:
            mod = packages.pop()
            for sub in mod.modules.values():
                if sub.is_package:
                    packages.append(sub)
            if mod.is_package:
                for name in _exported(mod):
                    member = mod.members.get(name)
                    if member is not None and member.is_alias:
                        self.public.setdefault(_canonical(member), member.path)
        stack = [pkg]
        while stack:
            obj = stack.pop()
            if obj.is_alias:
                continue
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(lambda m, o=obj: self._ref(o, m),
                                               obj.docstring.value)
            stack.extend(obj.members.values())

    def _candidates(self, obj, target: str):
        module = obj if obj.is_module else obj.module
        if target.startswith("."):
            name = target.lstrip(".")
            yield f"{module.path}.{name}"
            if module.parent is not None:
                yield f"{module.parent.path}.{name}"
            return
        scope = obj if obj.is_class else (obj.parent if obj.parent is not None and
                                          obj.parent.is_class else None)
        if scope is not None:
            yield f"{scope.path}.{target}"
        yield f"{module.path}.{target}"
        if module.parent is not None:
            yield f"{module.parent.path}.{target}"
        yield target
        yield f"{self.root.name}.{target}"

    def _ref(self, obj, m: re.Match) -> str:
        _, tilde, target = m.groups()
        target = target.strip().rstrip("()")
        shown = target.lstrip(".")
        if tilde:
            shown = shown.rsplit(".", 1)[-1]
        identifier = target.lstrip(".")
        for cand in self._candidates(obj, target):
            found = _lookup(self.root, cand)
            if found is not None:
                identifier = _canonical(found)
                identifier = self.public.get(identifier, identifier)
                break
        return (f'<autoref identifier="{html.escape(identifier)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>")
