"""The ``iai`` command: ``iai demo``, ``iai train``, ``iai pretrained``.

Examples::

    iai demo                                   # the shipped guide on the shipped dataset
    iai train linear_regression --dim 4 --steps 300 --out runs/lr4
    iai pretrained                             # list the shipped guides and their cards
"""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["main"]


def _demo(args) -> int:
    import pyro
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoMultivariateNormal

    from iai_prob import pretrained
    from iai_prob.datasets import load_linear_regression_demo

    guide = pretrained.load("linear_regression")
    family = guide.family
    x, y, info = load_linear_regression_demo()
    print(f"iai demo: shipped guide 'linear_regression' ({family!r})")
    print(f"dataset: linear_regression_demo.csv, N = {len(y)} rows, columns {info['columns']}")
    print(f"guide trained on N in {guide.card['budget']['num_points']}; here N = {len(y)}")

    started = time.perf_counter()
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64)]
    posterior = guide.refine(batches, num_points=len(y))
    seconds = time.perf_counter() - started
    exact = family.exact_posterior(x, y)
    kl = torch.distributions.kl_divergence(posterior, exact)

    started = time.perf_counter()
    pyro.clear_param_store()
    svi_guide = AutoMultivariateNormal(family.model)
    svi = SVI(family.model, svi_guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(args.svi_steps):
        svi.step(x, y)
    svi_seconds = time.perf_counter() - started
    with torch.no_grad():
        svi_kl = torch.distributions.kl_divergence(svi_guide.get_posterior(), exact)

    mean, sd = posterior.mean, posterior.variance.sqrt()
    print(f"\nstreamed {len(batches)} mini-batches of 64 in {seconds * 1e3:.0f} ms\n")
    print(f"{'site':6} {'true':>8} {'mean':>8} {'sd':>8} {'exact mean':>11} {'exact sd':>9}")
    for i, true in enumerate(info["true_w"]):
        print(
            f"w[{i}]   {true:8.3f} {mean[i]:8.3f} {sd[i]:8.4f} {exact.mean[i]:11.3f} "
            f"{exact.variance[i].sqrt():9.4f}"
        )
    print(f"\nKL(q || exact posterior) = {kl:.4f} nats (amortized, {seconds:.2f} s)")
    print(
        f"Pyro SVI AutoMultivariateNormal, {args.svi_steps} Adam steps: KL = {svi_kl:.4f} nats "
        f"({svi_seconds:.2f} s, {svi_seconds / seconds:.0f}x the amortized time)"
    )
    return 0


def _train(args) -> int:
    from iai_prob.inference import IterativeAmortizedGuide, fit
    from iai_prob.models import FAMILIES, get_family

    config = json.loads(args.config) if args.config else {}
    if args.family not in FAMILIES:
        print(
            f"iai train: unknown family {args.family!r}; known: {sorted(FAMILIES)}", file=sys.stderr
        )
        return 2
    family = get_family(args.family, **config)
    guide = IterativeAmortizedGuide(
        family, family=args.posterior, encoder=args.encoder, batch_size=args.batch_size
    )
    result = fit(
        guide,
        family,
        steps=args.steps,
        tasks_per_step=args.tasks_per_step,
        num_points=(args.min_points, args.max_points),
        objective=args.objective,
        checkpoint_dir=args.out,
        seed=args.seed,
    )
    print(f"trained {result.steps} steps in {result.seconds:.1f} s; guide in {args.out}/guide.json")
    return 0


def _pretrained(args) -> int:
    from iai_prob import pretrained

    for name in pretrained.available():
        card = pretrained.card(name)
        print(
            f"{name}: {card['model']}\n  command: {card['command']}\n  quality: {card['quality']}"
        )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="iai",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the shipped guide on the shipped dataset")
    demo.add_argument("--svi-steps", type=int, default=1000, help="steps of the SVI baseline")
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="meta-train a guide for a task family")
    train.add_argument("family", help="task family name, e.g. linear_regression")
    train.add_argument("--config", help="family arguments as JSON, e.g. '{\"dim\": 4}'")
    train.add_argument("--posterior", default="full_rank", help="diagonal, low_rank, full_rank")
    train.add_argument("--encoder", default="set_transformer", help="set_transformer, deep_sets")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--steps", type=int, default=500)
    train.add_argument("--tasks-per-step", type=int, default=32)
    train.add_argument("--min-points", type=int, default=16)
    train.add_argument("--max-points", type=int, default=256)
    train.add_argument("--objective", default="reverse_kl", help="reverse_kl, forward_kl, mixed")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="checkpoint folder (resumes if present)")
    train.set_defaults(run=_train)

    listing = commands.add_parser("pretrained", help="list the shipped guides")
    listing.set_defaults(run=_pretrained)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"iai {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
