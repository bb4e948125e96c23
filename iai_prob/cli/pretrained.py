"""``iai pretrained``: the shipped guides, what each assumes about the data, and the
command that trained it.

For each guide: its model in words, the number of ``--x`` and ``--y`` columns, the
configuration fixed when it was trained (dimension, a noise scale the model does not
infer, the prior), the dataset sizes and the scale of the data it was trained on, the
range outside which ``iai infer`` warns, the training command and the measured quality.
"""

from __future__ import annotations

from iai_prob.cli.helptext import HelpFormatter

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    """Register ``iai pretrained``."""
    parser = commands.add_parser(
        "pretrained",
        help="the shipped guides and what they assume about the data",
        description=__doc__.split("\n\n", 1)[1],
        epilog="example:\n  iai pretrained",
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    """Print every shipped guide's model, assumptions, training command and quality."""
    from iai_prob import pretrained
    from iai_prob.cli.assumptions import describe
    from iai_prob.models import get_family

    for name in pretrained.available():
        card = pretrained.card(name)
        family = get_family(card["model"]["family"], **card["model"]["config"])
        lines = [*describe(family, card), f"command: {card['command']}"]
        lines.append(f"quality: {card['quality']}")
        print(f"{name}: {family!r}\n" + "\n".join(f"  {line}" for line in lines))
    return 0
