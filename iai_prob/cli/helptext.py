"""Plain-text ``--help``: the docstrings without their reST markup, every default shown.

The commands' descriptions are their module docstrings, written in reStructuredText for
the API pages (``:func:`iai_prob.diagnostics.report```, double backticks around
literals). A terminal shows that markup as noise, so :class:`HelpFormatter` renders it
as plain text (:func:`plain`): a role keeps its target (its last component after
``~``, its title in ``:role:`title <target>```), a literal keeps its content, and a
paragraph ending in ``::`` ends in ``:``. Line breaks are kept (the descriptions are
laid out by hand, with lists and examples).

Every option's help then ends with its default, ``(default: 1)``, unless its help
already says what happens without it (``default: ...`` in words, for options whose
default is "not given", such as ``--batch-size``: the guide's own). Flags
(``store_true``) are off unless given and show no default.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["HelpFormatter", "plain"]

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`([^`]+)`")
_TITLED = re.compile(r"^(.*?)\s*<[^<>]+>$")
_LITERAL = re.compile(r"``(.+?)``")
_EMPHASIS = re.compile(r"\*\*(.+?)\*\*|(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_INTERPRETED = re.compile(r"(?<![\w`])`([^`\n]+)`(?![\w`])")


def _role_text(match: re.Match) -> str:
    target = match.group(1)
    titled = _TITLED.match(target)
    if titled:
        return titled.group(1)
    if target.startswith("~"):
        return target[1:].rsplit(".", 1)[-1]
    return target


def plain(text: str) -> str:
    """``text`` with reST roles, literals, emphasis and ``::`` rendered as plain text."""
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _EMPHASIS.sub(lambda m: m.group(1) or m.group(2), text)
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.MULTILINE)


def _default_text(default) -> str:
    if isinstance(default, (list, tuple)):
        return ", ".join(map(str, default)) or "none"
    return str(default)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (line breaks kept) but in plain text; option
    help in plain text, followed by the option's default."""

    def _fill_text(self, text, width, indent):
        return super()._fill_text(plain(text), width, indent)

    def _get_help_string(self, action):
        help = plain(action.help or "")
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        shown = "%(default)" in help or "default" in help
        if not (flag or shown or action.default in (None, argparse.SUPPRESS)):
            value = _default_text(action.default).replace("%", "%%")
            help += f" (default: {value})"
        return help
