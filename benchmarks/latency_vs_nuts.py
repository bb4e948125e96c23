"""Time per posterior, one dataset at a time, at the converged default: the PyTorch guide,
its NumPyro twin and NumPyro NUTS on the same datasets (issue 18, target 1).

    .venv/bin/python benchmarks/latency_vs_nuts.py            # N = 1,024, 8 datasets
    .venv/bin/python benchmarks/latency_vs_nuts.py --quick    # N = 256, 3 datasets

For the shipped ``logistic_regression`` and ``linear_regression`` guides (d = 8): the
median wall time of ``guide.posterior`` (PyTorch), ``guide.posterior(params, …)``
(NumPyro, after its compile) and NUTS (500 warmup + 1,000 draws, compiled once with
``jit_model_args``) over the datasets after one warm-up dataset each (PyTorch:
``guide.precompile``, as JAX and NUTS compile at their first call); their ratios; and
the accuracy the target requires (logistic: C2ST of 1,000 PyTorch-guide draws against
the NUTS draws; linear: median KL to the exact posterior). A second table times 1,000
draws (issue 18, target 4): ``guide.sample``, Pyro's sequential ``Predictive`` and
``iai_prob.inference.Predictive`` (the same call, one solve and one vectorized model
run) against one ``guide.posterior``.
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np
import torch
from common import Report, base_parser, limit_threads, markdown_table, verdict

from iai_prob import pretrained
from iai_prob.diagnostics.compare import c2st_accuracy

GUIDES = ("logistic_regression", "linear_regression")


def _median_seconds(run, count: int, warm_up=None) -> float:
    (warm_up or run)(0)  # compiles (JAX at its first call, PyTorch by guide.precompile)
    times = []
    for index in range(1, count + 1):
        start = time.perf_counter()
        run(index)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, num_points: int, count: int) -> list[object]:
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    from iai_prob.numpyro import pretrained as numpyro_pretrained

    guide = pretrained.load(name)
    jax_guide, params = numpyro_pretrained.load(name)
    _, x, y = guide.family.sample(count + 1, num_points, generator=torch.Generator().manual_seed(7))
    xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    mcmc = MCMC(
        NUTS(jax_guide.family.model),
        num_warmup=500,
        num_samples=1000,
        progress_bar=False,
        jit_model_args=True,
    )
    answers = {}

    def torch_posterior(index):
        answers[index] = guide.posterior(x[index], y[index])

    def jax_posterior(index):
        jax.block_until_ready(jax_guide.posterior(params, xj[index], yj[index]).mean)

    def nuts(index):
        mcmc.run(jax.random.PRNGKey(index), xj[index], yj[index])
        jax.block_until_ready(mcmc.get_samples())

    def torch_precompile(index):
        guide.precompile(x[index], y[index])

    seconds = {
        "torch": _median_seconds(torch_posterior, count, torch_precompile),
        "jax": _median_seconds(jax_posterior, count),
        "nuts": _median_seconds(nuts, count),
    }
    last = count
    if name == "logistic_regression":  # the NUTS draws of the last dataset are in mcmc
        draws = answers[last].sample((1000,)).numpy()
        accuracy = c2st_accuracy(draws, np.asarray(mcmc.get_samples()["w"]))
        quality, ok = f"C2ST {accuracy:.3f}", accuracy <= 0.6
    else:
        kls = []
        for index in range(1, count + 1):
            exact = guide.family.exact_posterior(x[index : index + 1], y[index : index + 1])
            q = answers[index]
            exact_q = torch.distributions.MultivariateNormal(q.mean, q.covariance_matrix)
            kls.append(float(torch.distributions.kl_divergence(exact_q, exact)[0]))
        kl = statistics.median(kls)
        quality, ok = f"median KL {kl:.2g}", kl <= 0.1
    ratio_nuts = seconds["nuts"] / seconds["torch"]
    ratio_nuts_jax = seconds["nuts"] / seconds["jax"]
    ratio_twin = seconds["torch"] / seconds["jax"]
    return [
        name,
        f"{seconds['torch'] * 1e3:.1f} ms",
        f"{seconds['jax'] * 1e3:.1f} ms",
        f"{seconds['nuts'] * 1e3:.0f} ms",
        f"{ratio_twin:.2f}x {verdict(ratio_twin <= 1.5)}",
        f"{ratio_nuts:.0f}x {verdict(ratio_nuts >= 100)}",
        f"{ratio_nuts_jax:.0f}x {verdict(ratio_nuts_jax >= 100)}",
        f"{quality} {verdict(ok)}",
    ]


def measure_draws(name: str, num_points: int, count: int, num_samples: int = 1000) -> list:
    """Issue 18, target 4: ``guide.sample`` and both ``Predictive`` with ``num_samples``
    draws against one ``guide.posterior``, medians over ``count`` datasets (after a
    precompile; Pyro's sequential ``Predictive`` on two of them: it takes seconds)."""
    import pyro.infer

    from iai_prob.inference import Predictive

    guide = pretrained.load(name)
    _, x, y = guide.family.sample(count + 1, num_points, generator=torch.Generator().manual_seed(8))
    guide.precompile(x[0], y[0])
    options = {"guide": guide, "num_samples": num_samples, "return_sites": ["w"]}
    predictive = pyro.infer.Predictive(guide.family.model, **options)
    ours = Predictive(guide.family.model, **options)
    seconds = {
        "posterior": _median_seconds(lambda i: guide.posterior(x[i], y[i]), count),
        "sample": _median_seconds(
            lambda i: guide.sample(x[i], y[i], num_samples=num_samples), count
        ),
        "predictive": _median_seconds(lambda i: predictive(x[i], y[i]), min(count, 2)),
        "ours": _median_seconds(lambda i: ours(x[i], y[i]), count),
    }
    ratios = {key: seconds[key] / seconds["posterior"] for key in ("sample", "predictive", "ours")}
    return [
        name,
        f"{seconds['posterior'] * 1e3:.1f} ms",
        f"{seconds['sample'] * 1e3:.1f} ms",
        f"{seconds['predictive'] * 1e3:.0f} ms",
        f"{seconds['ours'] * 1e3:.1f} ms",
        *(f"{ratios[key]:.2f}x {verdict(ratios[key] <= 1.2)}" for key in ("sample", "ours")),
        f"{ratios['predictive']:.0f}x {verdict(ratios['predictive'] <= 1.2)}",
    ]


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1024, help="N per dataset")
    parser.add_argument("--datasets", type=int, default=8, help="timed datasets per guide")
    args = parser.parse_args()
    limit_threads(args.threads)
    num_points, count = (256, 3) if args.quick else (args.points, args.datasets)
    warnings.simplefilter("ignore")  # PosteriorWarnings are counted in the tests, not here
    rows = [measure(name, num_points, count) for name in GUIDES]
    report = Report()
    report.add(
        f"### Time per posterior, one dataset at a time (N = {num_points}, {count} datasets, "
        f"{args.threads} thread(s))\n\n"
        + markdown_table(
            [
                "guide",
                "PyTorch",
                "NumPyro",
                "NUTS 500 + 1,000",
                "PyTorch ÷ NumPyro (≤ 1.5x)",
                "NUTS ÷ PyTorch (≥ 100x)",
                "NUTS ÷ NumPyro (≥ 100x)",
                "accuracy",
            ],
            rows,
        )
    )
    draws = [measure_draws(name, num_points, count) for name in GUIDES]
    report.add(
        f"### 1,000 draws of one dataset (N = {num_points}, {count} datasets): "
        "`guide.sample` and `Predictive(model, guide=guide, num_samples=1000)`, Pyro's and "
        "`iai_prob.inference`'s\n\n"
        + markdown_table(
            [
                "guide",
                "posterior",
                "sample(1,000)",
                "Pyro Predictive(1,000)",
                "iai_prob Predictive(1,000)",
                "sample ÷ posterior (≤ 1.2x)",
                "iai_prob Predictive ÷ posterior (≤ 1.2x)",
                "Pyro Predictive ÷ posterior (≤ 1.2x)",
            ],
            draws,
        )
    )
    report.save(args.out)


if __name__ == "__main__":
    main()
