"""Sphinx cross-reference roles in docstrings, rendered as mkdocstrings cross-references.

The docstrings of ``iai_prob`` name other objects with Sphinx's roles
(``:class:`~iai_prob.io.Table```, ``:func:`fit```, ``:mod:`.adapter```), which is what
Pyro's own docstrings do and what ``help()`` shows as plain text. mkdocstrings renders
docstrings as Markdown, where a role would be printed verbatim. This griffe extension,
loaded by mkdocstrings-python (``extensions:`` in ``mkdocs.yml``), rewrites every role of
the package's docstrings into an ``<autoref>`` element once the whole package is loaded,
so that mkdocs-autorefs turns it into a link:

- a target inside the documented package is a *required* cross-reference, so
  ``mkdocs build --strict`` fails when it names something the API reference does not
  render (a typo, a renamed function);
- a target outside it (``torch``, ``pyro``, ``numpy``) is *optional*: the site has no
  page for it and the build is offline (no Sphinx inventories), so it renders as code.

A target resolves as Sphinx resolves it: in the scope of the object whose docstring it is
in, then its parents (griffe's :meth:`griffe.Object.resolve`), and as written when that
fails. ``~a.b.C`` shows ``C``, ``title <a.b.C>`` shows ``title``, ``!a.b.C`` is code
without a link, and ``:func:`` / ``:meth:`` titles end in ``()`` as in Sphinx.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import AliasResolutionError, CyclicAliasError, Extension, Module, Object

__all__ = ["ROLE", "SphinxRoles", "convert_roles"]

ROLE = re.compile(
    r":(?:py:)?(?P<role>mod|func|class|meth|attr|data|exc|obj|const):"
    r"`(?P<content>[^`]+)`"
)
"""A Sphinx Python-domain role, with or without the ``py:`` domain prefix."""

_CALLABLE_ROLES = frozenset({"func", "meth"})
_ROLE_KINDS = {
    "mod": "module",
    "func": "function",
    "meth": "function",
    "class": "class",
    "exc": "class",
    "attr": "attribute",
    "data": "attribute",
    "const": "attribute",
}
"""The griffe kind (``Object.kind.value``) each role names; ``obj`` names any."""
_EXPLICIT_TITLE = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)


def _lookup(path: str, package: Module | None) -> Object | None:
    """The object of ``package`` at the dotted ``path`` (through aliases), else ``None``."""
    if package is None or not (path == package.name or path.startswith(f"{package.name}.")):
        return None
    try:
        found = package if path == package.name else package[path[len(package.name) + 1 :]]
        return found.final_target if found.is_alias else found
    except (KeyError, AliasResolutionError, CyclicAliasError):
        return None


def _in_scope(name: str, scope: Object) -> str | None:
    """Where ``name`` points seen from ``scope``: its members, then its parents' up to the
    module (Python's scoping, plus the class scope Sphinx searches too)."""
    obj = scope
    while obj is not None:
        member = (obj.all_members if obj.is_class else obj.members).get(name)
        if member is not None:
            return member.target_path if member.is_alias else member.path
        if obj.is_module:
            return None
        obj = obj.parent
    return None


def _nearest(name: str, role: str, scope: Object, package: Module | None) -> str | None:
    """The object of ``package`` of the role's kind whose path ends in ``.name`` and shares
    the longest prefix with ``scope``'s path (Sphinx's search for a name that is not in
    scope), if there is exactly one."""
    if package is None:
        return None
    kind = _ROLE_KINDS.get(role)
    candidates = [
        obj.path
        for obj in _walk(package)
        if obj.path.endswith(f".{name}") and kind in (None, obj.kind.value)
    ]
    if not candidates:
        return None

    def shared(path: str) -> int:
        common = 0
        for mine, theirs in zip(scope.path.split("."), path.split("."), strict=False):
            if mine != theirs:
                break
            common += 1
        return common

    best = max(shared(path) for path in candidates)
    nearest = [path for path in candidates if shared(path) == best]
    return nearest[0] if len(nearest) == 1 else None


def _resolve(target: str, role: str, scope: Object | None, package: Module | None) -> str | None:
    """The full dotted path of ``target`` seen from ``scope``, ``None`` when unknown.

    ``.name`` is relative to the package of ``scope``'s module, as in a relative import. A
    name that is not in scope goes to the nearest object of the package with that name.
    """
    name = target.lstrip(".")
    if _lookup(name, package) is not None:
        return name
    if scope is None:
        return None
    if target.startswith("."):
        module = scope.module
        base = module.path if module.is_package else module.path.rsplit(".", 1)[0]
        if _lookup(f"{base}.{name}", package) is not None:
            return f"{base}.{name}"
    first, _, rest = name.partition(".")
    resolved = _in_scope(first, scope)
    if resolved is not None:
        return f"{resolved}.{rest}" if rest else resolved
    return _nearest(name, role, scope, package)


def _rendered(obj: Object) -> bool:
    """Whether the API reference renders ``obj``: public path (``filters: public``) and a
    docstring (``show_if_no_docstring: false``)."""
    public = not any(part.startswith("_") for part in obj.path.split("."))
    return public and bool(obj.docstring and obj.docstring.value.strip())


def _replacement(match: re.Match, scope: Object | None, package: Module | None) -> str:
    role, content = match["role"], match["content"].strip()
    explicit = _EXPLICIT_TITLE.match(content)
    if explicit:
        title, target = explicit["title"], explicit["target"].strip()
    else:
        title, target = None, content
    no_link = target.startswith("!")
    shorten = target.startswith("~")
    target = target.lstrip("!~")
    if title is None:
        title = target.lstrip(".").rsplit(".", 1)[-1] if shorten else target.lstrip(".")
        if role in _CALLABLE_ROLES:
            title += "()"
    code = f"<code>{html.escape(title)}</code>"
    if no_link:
        return code
    resolved = _resolve(target, role, scope, package)
    identifier = resolved or target.lstrip(".")
    found = _lookup(identifier, package)
    if found is not None:
        identifier = found.path  # the canonical path: the one the reference renders
    internal = package is not None and identifier.split(".")[0] == package.name
    # Required: an object of the package that the reference renders, or a name that is
    # nowhere (a bare name not in scope, a path in the package that does not exist: a typo
    # fails the strict build). Optional: private or undocumented members, and other
    # packages' objects, which render as code since the site has no page for them.
    unknown_name = resolved is None and "." not in identifier
    required = unknown_name or (internal and (found is None or _rendered(found)))
    optional = "" if required else " optional"
    return f'<autoref identifier="{html.escape(identifier)}"{optional}>{code}</autoref>'


def convert_roles(text: str, *, scope: Object | None = None, package: Module | None = None) -> str:
    """``text`` with every Sphinx Python role replaced by an ``<autoref>`` element.

    :param scope: the object whose docstring ``text`` is; relative targets resolve in it.
    :param package: the loaded package: its objects are required cross-references (to
        their canonical paths), other packages' optional.
    """
    return ROLE.sub(lambda match: _replacement(match, scope, package), text)


def _walk(obj: Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias and member.parent is obj:
            yield from _walk(member)


class SphinxRoles(Extension):
    """Rewrite the Sphinx roles of every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = convert_roles(obj.docstring.value, scope=obj, package=pkg)
