"""``iai pretrained``: list the shipped guides with the command that trained them."""

from __future__ import annotations

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    """Register ``iai pretrained``."""
    parser = commands.add_parser("pretrained", help="list the shipped guides", description=__doc__)
    parser.set_defaults(run=run)


def run(args) -> int:
    """Print every shipped guide's model, training command and measured quality."""
    from iai_prob import pretrained

    for name in pretrained.available():
        card = pretrained.card(name)
        print(
            f"{name}: {card['model']}\n  command: {card['command']}\n  quality: {card['quality']}"
        )
    return 0
