"""Math typeset at build time: the TeX of every page becomes MathML, with no script.

The pages write math as ``$...$`` and ``$$...$$``; ``pymdownx.arithmatex`` (generic mode)
wraps it in ``<span class="arithmatex">\\(...\\)</span>`` and
``<div class="arithmatex">\\[...\\]</div>``. This MkDocs hook (``hooks:`` in
``mkdocs.yml``) replaces each with the MathML that ``latex2mathml`` (a pure-Python
package, in the ``docs`` extra) makes of it, so the site needs no MathJax or KaTeX from a
CDN and reads the same offline: browsers render MathML Core natively. A formula that
``latex2mathml`` cannot convert, or that keeps a command it does not know (it would show
as ``\\foo``), is logged as a warning, which ``mkdocs build --strict`` turns into a failed
build.
"""

from __future__ import annotations

import html
import logging
import re

from latex2mathml.converter import convert

__all__ = ["ARITHMATEX", "UnknownTexError", "on_page_content", "to_mathml"]

log = logging.getLogger("mkdocs.hooks.mathml")

ARITHMATEX = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*'
    r"\\(?P<open>[(\[])(?P<tex>.*?)\\(?P<close>[)\]])\s*</(?P=tag)>",
    re.DOTALL,
)
"""What ``pymdownx.arithmatex`` (``generic: true``) writes for inline and display math."""

_LEFTOVER = re.compile(r">\s*(\\[A-Za-z]+)\s*<")


class UnknownTexError(ValueError):
    """A formula that ``latex2mathml`` cannot turn into MathML."""


def to_mathml(tex: str, *, display: bool) -> str:
    """The MathML ``<math>`` element of the TeX formula ``tex``.

    :raises UnknownTexError: when ``latex2mathml`` fails on ``tex`` or leaves one of its
        commands unconverted.
    """
    try:
        mathml = convert(tex, display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises its own and builtin exceptions
        raise UnknownTexError(f"cannot convert {tex!r} to MathML: {error}") from error
    leftover = _LEFTOVER.search(mathml)
    if leftover:
        raise UnknownTexError(
            f"cannot convert {tex!r} to MathML: {leftover[1]} is not a command latex2mathml "
            "knows; write it with supported commands"
        )
    return mathml


def _replace(match: re.Match, where: str) -> str:
    tex = html.unescape(match["tex"]).strip()
    try:
        mathml = to_mathml(tex, display=match["tag"] == "div")
    except UnknownTexError as error:
        log.warning("%s: %s", where, error)
        return match[0]
    return f'<{match["tag"]} class="arithmatex">{mathml}</{match["tag"]}>'


def on_page_content(content: str, page, **kwargs) -> str:
    """MkDocs event: the page's HTML with its math as MathML."""
    return ARITHMATEX.sub(lambda match: _replace(match, page.file.src_uri), content)
