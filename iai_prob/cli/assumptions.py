"""What a guide assumes about the data, in words, and a warning when the data do not fit.

A guide trained for a task family learned posteriors for datasets like the family's
prior predictive: the family's configuration is fixed (the dimension, a noise scale the
model does not infer, the prior), and the covariates and observations had the scale the
simulator draws. ``iai pretrained`` prints these assumptions (:func:`describe`), and
``iai infer`` / ``iai diagnose`` warn, in one line, when the data's scale is far
outside what training saw (:func:`scale_warning`). The run still completes: the
posterior is what the model says for these data, and how far off it is depends on the
family and the guide.

Rule. Over :data:`NUM_TASKS` datasets of the largest training size simulated from the
family (seeded), the root mean square (RMS) of each ``x`` column and of ``y`` per
dataset has a central 99% range ``[q₀.₀₀₅, q₀.₉₉₅]``. Data whose RMS (over the rows
read first, up to ``--chunk-rows``) is below ``q₀.₀₀₅ / 2`` or above ``2 q₀.₉₉₅`` are
flagged. With the shipped ``linear_regression`` guide on its 2,000-row demo dataset
(posterior mean 0.25 exact-posterior sds from the exact one), ``y × 3`` (RMS 8.4 against
an upper limit of 9.4) moved it to 0.76 sd and is not flagged; ``y × 5`` (RMS 14) moved
it to 1.3 sd and ``y × 10`` to 2.6 sd, both flagged, as are ``y × 1,000`` and
``y = 10¹²``; ``x × 0.1`` on 64 rows moved it 3.3 sd. The number of rows is not checked:
refinement streams a dataset of any size in mini-batches. Observations that are all
integers in the simulator (Bernoulli, categorical) have a scale fixed by the model, so
only their covariates are checked; a guide of your own model (no task family) is not
checked.

Support. Every observation must be a value the model's likelihood can produce: a
Bernoulli's ``y`` is 0 or 1, a categorical's a whole number below the number of
classes. :func:`support_error` names the first ``--y`` column, value and data row that is
not, in words (torch's own message blamed the columns and printed the whole tensor).

Spread. A guide infers only its model's latents; the rest of the model is fixed. The
shipped ``linear_regression`` guide's model has noise of sd 0.5 whatever the data, so on
data with a residual sd of 3 (10 groups of 50 rows) its posteriors were about 6 times
too narrow while PSIS k̂ stayed good: the guide matches the model's posterior, but the
model does not fit the data. ``iai diagnose`` shows this
(:mod:`iai_prob.diagnostics.model_fit`); ``iai infer`` runs the part of that check aimed
at it, on every dataset after inference, and warns in one line
(:func:`spread_warning`). For each dataset ``D`` and observed site ``y``,

    p = P(sd(y_rep) > sd(y) | D) + ½ P(sd(y_rep) = sd(y) | D),
    y_rep ~ p(y | θ_s),  θ_s ~ q(θ | D),

the posterior predictive p-value of ``sd(y)``
(:func:`~iai_prob.diagnostics.model_fit.predictive_pvalues`; Gelman, Meng, Stern 1996),
from :data:`PPC_DRAWS` draws on the first :data:`PPC_MAX_ROWS` rows of the dataset (its
spread is well measured by then, and the cost stays bounded). ``p`` below
``PPC_BOUNDS[0]`` means ``y`` varies more than the model allows (a fixed noise scale
too small, other units), above ``PPC_BOUNDS[1]`` less. A correct model leaves some
datasets outside by chance, so the warning needs more than :data:`PPC_CHANCE` of them
(any for fewer than 100 datasets). Measured with the shipped guides (100 draws): every
residual-sd-3 group above has ``p = 0``; the shipped datasets' p-values lie in
0.13–0.69 (120 schools) and at 0.58 (the 2,000-row dataset). Of datasets drawn from
the families themselves (2 to 256 rows, 8,900 per family), none of the linear and
logistic regressions had ``p < 0.005``, and 0.37% of 2-row linear ones, fewer for more
rows, had ``p > 0.995`` (2 points that happen to lie close); 0.2–1.7% of Gaussian
mixtures per size were outside (``iai diagnose`` flags them too: the guide's Gaussian
posterior misses some mixtures). The mean of ``y``, which ``iai diagnose`` also checks,
is left out here: for a model without an intercept its p-value is extreme by chance far
more often (0.011 on the 2,000-row dataset with the exact posterior, below 0.005 with
100 draws).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FACTOR",
    "NUM_TASKS",
    "PPC_CHANCE",
    "PPC_DRAWS",
    "PPC_MAX_ROWS",
    "TrainingScales",
    "describe",
    "grouped_sd_pvalues",
    "scale_warning",
    "sd_pvalues",
    "spread_warning",
    "support_error",
    "training_scales",
]

NUM_TASKS = 2048
"""Simulated datasets behind the training ranges (fewer when datasets are large)."""
FACTOR = 2.0
"""How far outside the central 99% training range a scale must be to be flagged."""
_QUANTILES = (0.005, 0.995)
_DEFAULT_POINTS = (16, 256)
PPC_DRAWS = 100
"""Posterior predictive draws per dataset of the spread check."""
PPC_MAX_ROWS = 4096
"""Rows of each dataset the spread check looks at (its first ones)."""
PPC_CHANCE = 0.01
"""Share of datasets the spread check may flag by chance without a warning."""
_VALUES_PER_CALL = 2**22  # draws x rows of one model call in the spread check


@dataclass(frozen=True)
class TrainingScales:
    """The per-dataset RMS ranges of the training tasks (central 99%).

    :ivar num_points: the training dataset sizes ``(lo, hi)``.
    :ivar x: ``(d, 2)``: the range of each covariate column's RMS.
    :ivar y: the range of the observations' RMS, ``None`` for integer observations.
    """

    num_points: tuple[int, int]
    x: np.ndarray
    y: tuple[float, float] | None

    @staticmethod
    def allowed(low: float, high: float) -> tuple[float, float]:
        """The limits beyond which a scale is flagged: ``[low / FACTOR, FACTOR high]``."""
        return low / FACTOR, high * FACTOR


def _rms(values, axes) -> np.ndarray:
    return np.sqrt(np.mean(np.square(np.asarray(values, dtype=np.float64)), axis=axes))


def training_scales(family, num_points=None) -> TrainingScales:
    """:class:`TrainingScales` of ``family``'s prior predictive at the largest of
    ``num_points`` (the card's training range; default 16 to 256)."""
    import torch

    low, high = (int(n) for n in (num_points or _DEFAULT_POINTS))
    tasks = max(64, min(NUM_TASKS, 2**20 // high))
    _, x, y = family.sample(tasks, high, generator=torch.Generator().manual_seed(0))
    x, y = x.double().numpy(), y.double().numpy()
    x_rms = _rms(x, 1) if x.ndim == 3 else np.zeros((tasks, 0))  # (T, d)
    x_range = np.quantile(x_rms, _QUANTILES, axis=0).T if x_rms.shape[1] else np.zeros((0, 2))
    y_range = None
    if not np.array_equal(y, np.round(y)):
        y_rms = _rms(y.reshape(tasks, -1), 1)
        y_range = tuple(float(q) for q in np.quantile(y_rms, _QUANTILES))
    return TrainingScales((low, high), x_range, y_range)


def _outside(value: float, low: float, high: float) -> bool:
    lower, upper = TrainingScales.allowed(low, high)
    return not lower <= value <= upper


def scale_warning(guide, x, y, *, x_names, checkpoint: str) -> str | None:
    """One line saying which columns' scale lies far outside the training range of
    ``guide`` (a guide with a task family), or ``None`` when every column fits."""
    family = getattr(guide, "family", None)
    if family is None or len(y) == 0:
        return None
    scales = training_scales(family, getattr(guide, "card", {}).get("budget", {}).get("num_points"))
    problems = []
    x_rms = _rms(x, 0) if np.ndim(x) == 2 else np.zeros(0)
    flagged = [
        (name, value)
        for name, value, (low, high) in zip(x_names, x_rms, scales.x, strict=False)
        if _outside(value, low, high)
    ]
    if flagged:
        names = ", ".join(name for name, _ in flagged[:4]) + (", …" if len(flagged) > 4 else "")
        values = [value for _, value in flagged]
        shown = f"{min(values):.3g}" + (f"–{max(values):.3g}" if len(values) > 1 else "")
        problems.append(
            f"--x {names} root mean square {shown} (training "
            f"{scales.x[:, 0].min():.2g}–{scales.x[:, 1].max():.2g})"
        )
    if scales.y is not None:
        value = float(_rms(np.asarray(y).reshape(len(y), -1), None))
        if _outside(value, *scales.y):
            problems.append(
                f"--y root mean square {value:.3g} (training {scales.y[0]:.2g}–{scales.y[1]:.2g})"
            )
    if not problems:
        return None
    return (
        f"the data's scale is far outside what checkpoint {checkpoint!r} was trained on: "
        f"{'; '.join(problems)} per dataset, flagged beyond {FACTOR:g}x that range; its "
        "posterior may be far off: check the units, or train a guide on data like these "
        "(iai train)"
    )


def _support_words(support) -> str:
    """What values ``support`` (a torch constraint, applied elementwise) allows, in words."""
    from torch.distributions import constraints

    kind = type(support)
    if kind is type(constraints.boolean):
        return "0 or 1"
    if kind is type(constraints.integer_interval(0, 1)):
        return f"a whole number from {support.lower_bound} to {support.upper_bound}"
    if kind is type(constraints.nonnegative_integer):
        return f"a whole number ≥ {support.lower_bound}"
    if kind is type(constraints.positive):
        return f"greater than {support.lower_bound:g}"
    if kind is type(constraints.nonnegative):
        return f"≥ {support.lower_bound:g}"
    if kind is type(constraints.unit_interval):
        return f"between {support.lower_bound:g} and {support.upper_bound:g}"
    return f"a value in {support}"


def support_error(model, x, y, *, y_names, source: str, first_row: int = 1) -> str | None:
    """One line naming the first ``--y`` column, value and data row outside the support
    of the model's likelihood (``y`` must be 0 or 1 for a Bernoulli), or ``None``.

    :param model: the Pyro model, run once as ``model(x, y)`` to read its observed sites
        (a model that fails on these columns gives ``None``: its error is for
        :func:`~iai_prob.cli.infer.check_fits` to report).
    :param y_names: the ``--y`` columns, in the order of ``y``'s columns.
    :param int first_row: the data row (1-based) of ``y[0]``.
    """
    import pyro
    import torch
    from pyro import poutine
    from torch.distributions import Independent, constraints

    try:
        with pyro.validation_enabled(False), poutine.block(), torch.no_grad():
            trace = poutine.trace(model).get_trace(x, y)
    except (ValueError, RuntimeError, IndexError, TypeError):
        return None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        support, value = site["fn"].support, site["value"]
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        outside = ~support.check(value)
        if not outside.any():
            continue
        distribution = site["fn"]
        while isinstance(distribution, Independent | pyro.distributions.MaskedDistribution):
            distribution = distribution.base_dist
        index = tuple(int(i) for i in outside.nonzero()[0])
        shown = f"{float(value[index]):g}"
        rule = (
            f"the model's {type(distribution).__name__} likelihood (site {name!r}) needs "
            f"{_support_words(support)}"
        )
        if value.shape != y.shape:
            return f"--y of {source}: the model observes {shown} at site {name!r}; {rule}"
        column = y_names[index[1]] if y.dim() > 1 else y_names[0]
        rows = int(outside.reshape(len(y), -1).any(-1).sum())
        return (
            f"--y column {column!r} of {source} holds {shown} in data row "
            f"{first_row + index[0]} ({rows} such row(s) among data rows {first_row}–"
            f"{first_row + len(y) - 1}): {rule}; recode the column, or use a checkpoint of a "
            "model for these values"
        )
    return None


def _parameter_words(family) -> dict[str, str]:
    """``name`` → its ``:param`` description in the family's docstring, as plain text."""
    from iai_prob.cli.helptext import plain

    doc = inspect.getdoc(type(family)) or ""
    return {
        name: plain(text).rstrip(".")
        for name, text in re.findall(r":param (?:\w+ )?(\w+):\s*(.+)", doc)
    }


def describe(family, card: dict) -> list[str]:
    """The assumptions of a guide of ``family`` with this card, one line each, in words."""
    import torch

    from iai_prob.cli.helptext import plain

    doc = (inspect.getdoc(type(family)) or "").split("\n\n")[0]
    _, x, y = family.sample(1, 1, generator=torch.Generator().manual_seed(0))
    words = _parameter_words(family)
    lines = [f"model: {plain(' '.join(doc.split()))}"]
    lines.append(
        f"data: {x.shape[-1] if x.dim() == 3 else 0} --x column(s) and "
        f"{int(np.prod(y.shape[2:]))} --y column(s)"
    )
    lines.append("fixed when trained (not inferred from the data):")
    for name, value in family.config().items():
        lines.append(f"  {name} = {value}: {words.get(name, name)}")
    budget = card.get("budget", {})
    scales = training_scales(family, budget.get("num_points"))
    low, high = scales.num_points
    lines.append(
        f"trained on: datasets of {low} to {high} rows (larger ones are fine: refinement "
        "streams them)"
    )
    scale = []
    if len(scales.x):
        lows, highs = scales.x[:, 0].min(), scales.x[:, 1].max()
        scale.append(f"x columns {lows:.2g}–{highs:.2g}")
    if scales.y is not None:
        scale.append(f"y {scales.y[0]:.2g}–{scales.y[1]:.2g}")
    else:
        lines.append("y: whole numbers, whose scale the model fixes (not checked)")
    if scale:
        limits = []
        if len(scales.x):
            limits.append("x {:.2g}–{:.2g}".format(*TrainingScales.allowed(lows, highs)))
        if scales.y is not None:
            limits.append("y {:.2g}–{:.2g}".format(*TrainingScales.allowed(*scales.y)))
        lines.append(
            f"scale: root mean square per dataset {', '.join(scale)} (99% of the prior "
            f"predictive); iai infer warns outside {', '.join(limits)}"
        )
    else:
        lines.append("scale: integer observations and no covariates: nothing to check")
    return lines


def sd_pvalues(guide, posterior, x, y, *, seed: int = 0, sizes=None) -> dict[str, np.ndarray]:
    """``{site: p}``: the p-value of ``sd`` of each observed site, per dataset.

    :param posterior: ``q(z | D)`` over the joint unconstrained latents, batch ``(T,)``
        for ``x`` of shape ``(T, N, d)`` or ``()`` for one dataset ``(N, d)``.
    :param sizes: ``(T,)`` rows of each dataset when they are padded to ``N`` (the rest
        is left out of the statistics); ``None``: every row counts.
    """
    from iai_prob.diagnostics import approximate_posterior
    from iai_prob.diagnostics.model_fit import predictive_pvalues

    source = approximate_posterior(lambda *args, **kwargs: posterior, guide.model, x, y)
    draws = source.sample_latent(PPC_DRAWS, seed=seed)
    replicated = source.posterior_predictive(draws, seed=seed + 1)
    observed = source.observed()
    tasks = source.num_tasks
    result = {}
    for site, named in replicated.items():
        values = observed[site].value.reshape(tasks, -1).numpy()
        valid = None
        if sizes is not None:  # the site's values are (T, N, …): a row's values together
            rows = np.arange(observed[site].value.shape[1]) < np.asarray(sizes)[:, None]
            valid = np.repeat(rows, values.shape[1] // rows.shape[1], axis=1)
        pvalues = predictive_pvalues(
            named.value.reshape(PPC_DRAWS, tasks, -1).numpy(), values, site, valid
        )
        result[site] = pvalues[f"sd({site})"]
    return result


def grouped_sd_pvalues(guide, result, *, seed: int = 0) -> dict[str, np.ndarray]:
    """:func:`sd_pvalues` of every group of a
    :class:`~iai_prob.io.grouped.GroupedPosterior` (at most :data:`PPC_MAX_ROWS` rows of
    each), in the batches its posteriors were computed in
    (:func:`~iai_prob.io.grouped.size_batches`: padded together, or of one size)."""

    from iai_prob.io.grouped import size_batches

    data = result.data
    used = np.minimum(data.sizes, PPC_MAX_ROWS)
    pvalues: dict[str, np.ndarray] = {}
    for members, rows in size_batches(used, len(used), result.padded):
        width = int(used[members[0]]) if rows is None else rows
        per_call = max(1, _VALUES_PER_CALL // (PPC_DRAWS * width))
        for start in range(0, len(members), per_call):
            chunk = members[start : start + per_call]
            x, y = data.stack(chunk, rows)  # a group past PPC_MAX_ROWS is cut below
            part = result.of(chunk)
            sizes = None if rows is None else used[chunk]
            found = sd_pvalues(guide, part, x[:, :width], y[:, :width], seed=seed, sizes=sizes)
            for site, values in found.items():
                pvalues.setdefault(site, np.full(len(data.keys), 0.5))[chunk] = values
    return pvalues


def _listed(labels, limit: int = 5) -> str:
    """The first ``limit`` labels and how many more."""
    shown = ", ".join(str(label) for label in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def spread_warning(pvalues: dict[str, np.ndarray], labels, *, family=None) -> str | None:
    """One line naming the datasets whose ``sd`` p-value lies outside
    :data:`~iai_prob.diagnostics.model_fit.PPC_BOUNDS` and what to try, or ``None`` when
    there are none or no more than :data:`PPC_CHANCE` of the datasets (chance).

    :param labels: the datasets' names (group keys), ``None`` for one dataset.
    :param family: the guide's task family, whose fixed settings the line lists.
    """
    from iai_prob.diagnostics.model_fit import PPC_BOUNDS

    low, high = PPC_BOUNDS
    if not pvalues:
        return None
    outside = np.logical_or.reduce([(p < low) | (p > high) for p in pvalues.values()])
    if outside.sum() <= PPC_CHANCE * len(outside):
        return None
    problems = []
    for site, values in pvalues.items():
        for flagged, what in ((values < low, "more"), (values > high, "less")):
            if not flagged.any():
                continue
            bound = f"below {low}" if what == "more" else f"above {high}"
            if labels is None:
                where = f"p-value of sd({site}) {values[0]:.3f}, {bound}"
            else:
                names = _listed([labels[i] for i in np.flatnonzero(flagged)])
                where = f"p-value of sd({site}) {bound} in {flagged.sum()} of {len(values)} "
                where += f"groups: {names}"
            problems.append(f"{site} varies {what} than the model allows ({where})")
    if not problems:
        return None
    fixed = ""
    if family is not None:
        settings = ", ".join(f"{name} = {value}" for name, value in family.config().items())
        fixed = f" (fixed when the guide was trained: {settings})"
    return (
        f"posterior predictive check: {'; '.join(problems)}: the model{fixed} does not fit "
        "these data, so the posteriors may be far off (too narrow when y varies more); "
        "check them with iai diagnose, and for noisier data train a guide for a model that "
        "infers its noise (e.g. iai train linear_regression_unknown_noise)"
    )
