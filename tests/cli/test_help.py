"""Every ``iai`` subcommand's ``--help``: plain text, every option explained with its
default."""

import argparse
import re

import pytest

from iai_prob.cli import COMMANDS, _parser, main
from iai_prob.cli.helptext import plain

SPHINX = re.compile(r":[a-z]+:`|``|`[^`\s]+`")


def _subparsers():
    commands = next(
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    return commands.choices


def test_every_command_is_walked():
    assert set(_subparsers()) == {module.__name__.rsplit(".", 1)[1] for module in COMMANDS}


@pytest.mark.parametrize("command", [None, *sorted(_subparsers())])
def test_help_is_plain_text(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"] if command else ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert not SPHINX.search(out), SPHINX.search(out)


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_has_help_and_shows_its_default(command):
    parser = _subparsers()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"iai {command} {name} has no help"
        # what --help prints for this option
        text = " ".join(parser._get_formatter()._format_action(action).split())
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.default is None or flag:
            continue
        shown = str(action.default)
        if isinstance(action.default, list):
            shown = ", ".join(map(str, action.default)) or "none"
        assert f"(default: {shown}" in text, f"iai {command} {name}: {text}"


def test_passes_is_shared_by_infer_and_diagnose():
    infer, diagnose = (
        next(a for a in _subparsers()[c]._actions if a.dest == "passes")
        for c in ("infer", "diagnose")
    )
    assert (infer.default, infer.type, infer.help) == (
        diagnose.default,
        diagnose.type,
        diagnose.help,
    )
    assert infer.default is None  # iai infer --group: padded batches, no learned pass


@pytest.mark.parametrize(
    ("rst", "text"),
    [
        ("writes :func:`iai_prob.diagnostics.report`.", "writes iai_prob.diagnostics.report."),
        ("a :class:`~iai_prob.inference.IterativeAmortizedGuide`", "a IterativeAmortizedGuide"),
        ("see :meth:`the guide <iai_prob.Guide.refine>`", "see the guide"),
        ("``--x`` and ``(N, d)``", "--x and (N, d)"),
        ("**bold** and *emphasis* but 2 * 3 * 4", "bold and emphasis but 2 * 3 * 4"),
        ("Examples::\n\n    iai demo", "Examples:\n\n    iai demo"),
    ],
)
def test_plain_renders_restructured_text(rst, text):
    assert plain(rst) == text
