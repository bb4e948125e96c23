"""``iai demo``: the shipped guide on the shipped datasets, checked against exact posteriors.

Part 1 streams the 2,000-row ``linear_regression_demo.csv`` through the shipped
``linear_regression`` guide (trained on at most 256 points) in mini-batches of 64, and
compares the posterior with the exact one and with Pyro SVI. Part 2 is the main use
case: ``schools_demo.csv`` holds 120 small datasets; one posterior per school, groups
batched through the tasks plate, each compared with its exact posterior and its true
weights.
"""

from __future__ import annotations

import json
import time

from iai_prob.cli.helptext import HelpFormatter

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    """Register ``iai demo``."""
    parser = commands.add_parser(
        "demo",
        help="run the shipped guide on the shipped datasets",
        description=__doc__.split("\n\n")[1],
        epilog="example:\n  iai demo --svi-steps 300",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--svi-steps", type=int, default=1000, help="Adam steps of the Pyro SVI baseline"
    )
    parser.set_defaults(run=run)


def _stream_part(guide, svi_steps: int) -> None:
    import pyro
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoMultivariateNormal

    from iai_prob.datasets import load_linear_regression_demo

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
    for _ in range(svi_steps):
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
        f"Pyro SVI AutoMultivariateNormal, {svi_steps} Adam steps: KL = {svi_kl:.4f} nats "
        f"({svi_seconds:.2f} s, {svi_seconds / seconds:.0f}x the amortized time)"
    )


def _grouped_part(guide) -> None:
    import torch

    from iai_prob.datasets import dataset_path
    from iai_prob.io import Columns, Table, grouped_posteriors

    table = Table(dataset_path("schools_demo.csv"))
    truth = json.loads(dataset_path("schools_demo.json").read_text())["true_w"]
    columns = Columns.of([f"x{i}" for i in range(8)], "y", guide=guide)
    result = grouped_posteriors(guide, table, columns, group="school")
    data = result.data
    kls, covered, total = [], 0, 0
    for index, key in enumerate(result.keys):
        exact = guide.family.exact_posterior(*data.group(index))
        q = result.of(index)
        kls.append(float(torch.distributions.kl_divergence(q, exact)))
        sd = q.variance.sqrt()
        low, high = q.mean - 1.6449 * sd, q.mean + 1.6449 * sd
        w = torch.tensor(truth[str(key)])
        covered += int(((w >= low) & (w <= high)).sum())
        total += len(w)
    kls_sorted = sorted(kls)
    print(
        f"\nschools_demo.csv: {table.num_rows} rows, {len(result.keys)} schools of "
        f"{result.sizes.min()} to {result.sizes.max()} rows ({len(set(result.sizes))} sizes)"
    )
    print(
        f"one posterior per school in {result.seconds:.2f} s ({result.groups_per_second:.0f} "
        f"schools/s, {'batched through the tasks plate' if result.batched else 'one call each'})"
    )
    print(
        f"KL(q || exact) per school: median {kls_sorted[len(kls) // 2]:.4f}, "
        f"max {kls_sorted[-1]:.4f} nats; 90% intervals cover {covered}/{total} true weights "
        f"({100 * covered / total:.1f}%)"
    )
    print(
        f"the same from the shell:\n  iai infer linear_regression {table.path} --x x0:x7 --y y "
        "--group school --out schools.nc"
    )


def run(args) -> int:
    """Run the demo; returns the exit status."""
    from iai_prob import pretrained

    guide = pretrained.load("linear_regression")
    _stream_part(guide, args.svi_steps)
    _grouped_part(guide)
    return 0
