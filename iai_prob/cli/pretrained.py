"""``iai pretrained``: the shipped guides, what each assumes about the data, and the
command that trained it.

For each guide: its model in words, the number of ``--x`` and ``--y`` columns, the
configuration fixed when it was trained (dimension, a noise scale the model does not
infer, the prior), the dataset sizes and the scale of the data it was trained on, the
range outside which ``iai infer`` warns, the training command and the quality measured
on held-out datasets of each size N, in words (:func:`quality_words`).
"""

from __future__ import annotations

from iai_prob.cli.helptext import HelpFormatter

__all__ = ["add_parser", "quality_words", "run"]


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


def _by_size(values: dict, words) -> str:
    """``words(value)`` for each dataset size, smallest first: ``0.021 at N = 16, …``."""
    return ", ".join(f"{words(values[size])} at N = {size}" for size in sorted(values, key=int))


def quality_words(quality: dict) -> str:
    """A card's ``quality`` (written by :mod:`iai_prob.pretrained.train`) in words."""
    parts = []
    for measure, values in quality.items():
        if measure == "median_kl_to_exact":
            parts.append(
                "median KL(q ‖ exact posterior) "
                + _by_size(values, lambda value: f"{value:.2g} nats")
            )
        elif measure == "elbo_per_point":
            parts.append("ELBO per data point " + _by_size(values, lambda value: f"{value:.3g}"))
        elif measure == "psis_khat":
            parts.append(
                "PSIS k̂ "
                + _by_size(
                    values,
                    lambda value: (
                        f"median {value['median_khat']:.2f} "
                        f"({value['share_khat_below_0.7']:.0%} of datasets below 0.7)"
                    ),
                )
            )
        else:
            parts.append(f"{measure.replace('_', ' ')}: {values}")
    return "; ".join(parts) + " (on held-out simulated datasets of N rows)"


def run(args) -> int:
    """Print every shipped guide's model, assumptions, training command and quality."""
    from iai_prob import pretrained
    from iai_prob.cli.assumptions import describe
    from iai_prob.models import get_family

    for name in pretrained.available():
        card = pretrained.card(name)
        family = get_family(card["model"]["family"], **card["model"]["config"])
        lines = [*describe(family, card), f"command: {card['command']}"]
        lines.append(f"quality: {quality_words(card['quality'])}")
        print(f"{name}: {family!r}\n" + "\n".join(f"  {line}" for line in lines))
    return 0
