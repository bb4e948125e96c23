"""A self-contained HTML report of every diagnostic for one dataset or a batch of datasets.

The figures are PNGs embedded as base64 ``data:`` URIs, so the file opens anywhere
without its folder. Sections (those that do not apply are left out):

1. verdicts: does the guide match the model's posterior (PSIS k̂, Yao et al. 2018; SBC;
   NUTS; final exact KL) and does the model fit the data (posterior predictive p-values
   and PSIS-LOO's p_loo, :mod:`.model_fit`), each marked as passing or failing;
2. posterior summary (``az.summary``) and marginal posteriors (``az.plot_posterior``);
3. importance weights: k̂ per dataset, log-weight spread, effective sample size;
4. model fit: posterior predictive check and PSIS-LOO per dataset, with the figures
   ``az.plot_ppc`` and ``az.plot_khat`` for one dataset;
5. ELBO / exact KL against the refinement step;
6. simulation-based calibration on datasets simulated from the task family
   (ECDF difference, rank histograms, coverage, z-score vs contraction);
7. guide vs NUTS: moments table, C2ST, overlaid pair plots (one dataset).

Names stay names: ``group_names`` label the datasets of a batch and ``column_names`` the
columns of each data argument, as coordinates of the InferenceData behind every table
(``w[school_07, 0]``, not ``w[6, 0]``). Whatever is cut short says so: the posterior
table's first rows, the first marginals plotted, and, through ``description``, a subset
of a file's groups chosen by the caller.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iai_prob.checks import check_positive_int
from iai_prob.diagnostics.adapter import approximate_posterior
from iai_prob.diagnostics.inference_data import to_inference_data
from iai_prob.diagnostics.model_fit import model_fit
from iai_prob.diagnostics.psis import psis_khat, smoothed_log_weights

__all__ = ["DiagnosticReport", "report"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; }
img { max-width: 100%; display: block; margin: .5em 0; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.ok { color: #17693a; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
.note { background: #f6f8fa; border-left: 4px solid #888; padding: .6em 1em; }
li.ok::marker { content: "✓ "; } li.bad::marker { content: "✗ "; color: #b3261e; }
"""
SUMMARY_ROWS = 40
"""Rows of the posterior summary table shown for a batch of datasets."""
MARGINAL_PANELS = 16
"""Marginal posteriors plotted for one dataset."""


@dataclass
class DiagnosticReport:
    """What :func:`report` wrote: the HTML path, the measured findings (JSON-friendly),
    the sentences of its summary and, in ``findings["verdict"]``, which checks passed."""

    path: Path
    findings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Notes:
    """The summary's sentences; those with a verdict are marked passing or failing."""

    texts: list[str] = field(default_factory=list)
    marks: dict[int, bool] = field(default_factory=dict)
    verdict: dict[str, bool] = field(default_factory=dict)

    def add(self, text: str, check: str | None = None, ok: bool = True) -> str:
        self.texts.append(text)
        if check is not None:
            self.marks[len(self.texts) - 1] = bool(ok)
            self.verdict[check] = bool(ok)
        return text

    def html(self) -> str:
        items = []
        for index, text in enumerate(self.texts):
            mark = self.marks.get(index)
            css = "" if mark is None else f' class="{"ok" if mark else "bad"}"'
            items.append(f"<li{css}>{html.escape(text)}</li>")
        return "".join(items)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="figure">'


def _verdict(ok: bool, good: str, bad: str) -> str:
    return f'<span class="ok">{good}</span>' if ok else f'<span class="bad">{bad}</span>'


def _khat_words(khat: float) -> str:
    if khat < 0.5:
        return "good (k̂ < 0.5): q is close to the posterior"
    if khat < 0.7:
        return "usable (0.5 ≤ k̂ < 0.7): PSIS-corrected estimates are reliable"
    return "unreliable (k̂ ≥ 0.7): q misses posterior mass; do not trust it for this dataset"


def _importance_section(idata, labels, findings: dict, notes: _Notes, parts: list):
    from iai_prob.diagnostics.plots import plot_khat

    batched = labels is not None
    khat = np.atleast_1d(psis_khat(idata))
    smoothed, _ = smoothed_log_weights(idata)
    ess = 1.0 / np.exp(2 * smoothed).sum(0)
    findings["khat"] = khat.tolist() if batched else float(khat[0])
    findings["share_khat_below_0.7"] = float(np.mean(khat < 0.7))
    findings["importance_ess"] = ess.tolist() if batched else float(ess[0])
    parts.append("<h2>Importance weights (PSIS)</h2>")
    ok = bool(np.all(khat < 0.7))
    if batched:
        worst = labels[int(np.argmax(khat))]
        text = notes.add(
            f"PSIS k̂: {np.mean(khat < 0.7):.0%} of {len(khat)} datasets below 0.7 "
            f"(median {np.median(khat):.2f}, max {khat.max():.2f} for {worst}).",
            "guide",
            ok,
        )
        parts.append(f"<p>{html.escape(text)}</p>" + _png(plot_khat(khat)))
    else:
        text = notes.add(f"PSIS k̂ = {khat[0]:.2f}: {_khat_words(khat[0])}.", "guide", ok)
        parts.append(
            f"<p>{_verdict(ok, text, text)} Effective sample size of "
            f"the smoothed weights: {ess[0]:.0f} of {smoothed.shape[0]} draws.</p>"
        )
        import matplotlib.pyplot as plt

        log_w = idata.sample_stats["log_importance_weight"].values.ravel()
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(log_w - log_w.max(), bins=40, color="C0")
        ax.set_xlabel("log w − max log w")
        ax.set_title("log importance weights")
        parts.append(_png(fig))


def _posterior_section(idata, batched: bool, site_names, parts: list):
    import arviz as az

    parts.append("<h2>Posterior</h2>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata, var_names=list(site_names), kind="stats")
    if batched and len(summary) > SUMMARY_ROWS:
        parts.append(
            f"<p>The first {SUMMARY_ROWS} of {len(summary)} rows (every dataset's "
            "numbers are in the findings and in the sections below).</p>"
        )
        summary = summary.head(SUMMARY_ROWS)
    parts.append(summary.to_html(float_format=lambda v: f"{v:.3f}"))
    if not batched:
        panels = sum(idata.posterior[name][0, 0].size for name in site_names)
        if panels > MARGINAL_PANELS:
            parts.append(f"<p>Marginal posteriors of the first {MARGINAL_PANELS} of {panels}.</p>")
        rows = -(-min(panels, MARGINAL_PANELS) // 4)
        with az.rc_context({"plot.max_subplots": MARGINAL_PANELS}):
            axes = az.plot_posterior(
                idata, var_names=list(site_names), textsize=11, figsize=(14, 3.2 * rows)
            )
        parts.append(_png(np.ravel(axes)[0].figure))


def _fit_table(fit) -> str:
    """Per-dataset p-values and p_loo of a batch, at most :data:`SUMMARY_ROWS` rows."""
    import pandas as pd

    columns = {f"p {name}": values for name, values in fit.pvalues.items()}
    for site, result in fit.loo.items():
        columns[f"p_loo ({site})"] = result["p_loo"]
        columns[f"share k > 0.7 ({site})"] = result["bad_k"]
    table = pd.DataFrame(columns, index=pd.Index(fit.labels, name="dataset"))
    table["fits"] = np.where(fit.ppc_ok & fit.loo_ok, "yes", "no")
    shown = table.head(SUMMARY_ROWS).to_html(float_format=lambda v: f"{v:.3f}")
    if len(table) > SUMMARY_ROWS:
        shown = f"<p>The first {SUMMARY_ROWS} of {len(table)} datasets.</p>" + shown
    return shown


def _model_fit_section(idata, num_params, labels, findings: dict, notes: _Notes, parts: list):
    import arviz as az

    tasks_dim = None
    if labels is not None:
        tasks_dim = idata.sample_stats["log_importance_weight"].dims[-1]
    fit = model_fit(idata, num_params, tasks_dim=tasks_dim)
    findings["posterior_predictive_pvalues"] = {
        name: values.tolist() if labels is not None else float(values[0])
        for name, values in fit.pvalues.items()
    }
    findings["loo"] = {
        site: {
            key: values.tolist() if labels is not None else float(values[0])
            for key, values in result.items()
        }
        for site, result in fit.loo.items()
    }
    if len(fit.loo) == 1:  # one observed site: its numbers at the top level, as before
        findings["loo"].update(next(iter(findings["loo"].values())))
    parts.append("<h2>Model fit: posterior predictive check and PSIS-LOO</h2>")
    checks = [(fit.ppc_text(), "posterior_predictive", bool(fit.ppc_ok.all()))]
    # too few observations per parameter to read p_loo: said, but neither pass nor fail
    checks.append((fit.loo_text(), "loo" if fit.loo_judged else None, bool(fit.loo_ok.all())))
    for text, check, ok in checks:
        notes.add(text, check, ok)
        parts.append(f"<p>{_verdict(ok, text, text) if check else html.escape(text)}</p>")
    if labels is not None:
        parts.append(_fit_table(fit))
        return
    total = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    ax = az.plot_ppc(idata, num_pp_samples=min(100, total))
    parts.append(_png(np.ravel(ax)[0].figure))
    for site in fit.loo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loo = az.loo(idata, pointwise=True, var_name=site)
        parts.append(_png(np.ravel(az.plot_khat(loo))[0].figure))


def _refinement_section(guide, args, kwargs, findings: dict, notes: _Notes, parts: list):
    from iai_prob.diagnostics.refinement import refinement_curve, refinement_plot

    curve = refinement_curve(guide, *args, **kwargs)
    parts.append("<h2>Refinement</h2>")
    text = (
        f"ELBO per dataset {curve.elbo[0]:.1f} at λ_0 → {curve.elbo[-1]:.1f} after "
        f"{curve.steps[-1]} refinement steps"
    )
    findings["elbo"] = [float(curve.elbo[0]), float(curve.elbo[-1])]
    findings["refinement_steps"] = int(curve.steps[-1])
    if curve.kl is not None:
        findings["exact_kl"] = [float(curve.kl[0]), float(curve.kl[-1])]
        text += f"; exact KL(q ‖ p) {curve.kl[0]:.3g} → {curve.kl[-1]:.3g} nats"
    notes.add(text + ".")
    parts.append(f"<p>{html.escape(text)}.</p>" + _png(refinement_plot(curve)))


def _sbc_section(guide, family, settings: dict, findings: dict, notes: _Notes, parts: list):
    from iai_prob.diagnostics import plots
    from iai_prob.diagnostics.sbc import sbc

    result = sbc(guide, family, **settings)
    findings["sbc"] = {
        "passed": result.passed,
        "num_datasets": len(result.ranks),
        "num_points": settings["num_points"],
        "ecdf_max": result.ecdf_max.tolist(),
        "band": result.band,
        "min_chi2_pvalue": float(result.chi2_pvalue.min()),
        "z_score_sd": float(result.z_scores.std()),
    }
    if result.khat is not None:
        findings["sbc"]["share_khat_below_0.7"] = float(np.mean(result.khat < 0.7))
    text = result.summary() + f" (N = {settings['num_points']} points per dataset)."
    notes.add(text, "sbc", result.passed)
    parts.append("<h2>Simulation-based calibration</h2>")
    parts.append(f"<p>{_verdict(result.passed, text, text)}</p>")
    figures = [
        plots.plot_sbc_ecdf(result),
        plots.plot_coverage(result),
        plots.plot_z_contraction(result),
        plots.plot_rank_histograms(result),
    ]
    parts.append('<div class="row">' + "".join(_png(fig) for fig in figures) + "</div>")


def _nuts_section(source, nuts_options: dict, findings: dict, notes: _Notes, parts: list):
    from iai_prob.diagnostics.compare import compare_with_nuts
    from iai_prob.diagnostics.plots import plot_nuts_pairs

    comparison = compare_with_nuts(source, **nuts_options)
    findings["nuts"] = {
        "max_abs_std_diff": comparison.max_abs_std_diff,
        "sd_ratio": comparison.table["sd_ratio"].tolist(),
        "c2st": comparison.c2st,
        "nuts_seconds": comparison.nuts_seconds,
    }
    c2st = "" if comparison.c2st is None else f", C2ST accuracy {comparison.c2st:.2f}"
    text = notes.add(
        f"Against NUTS ({comparison.nuts_seconds:.1f} s): max |Δmean| / sd_NUTS = "
        f"{comparison.max_abs_std_diff:.2f}, sd ratio "
        f"{comparison.table['sd_ratio'].min():.2f}–{comparison.table['sd_ratio'].max():.2f}"
        f"{c2st} (0.5 = indistinguishable)."
    )
    parts.append("<h2>Guide vs NUTS</h2>" + f"<p>{html.escape(text)}</p>")
    parts.append(comparison.table.to_html(float_format=lambda v: f"{v:.3f}"))
    parts.append(_png(plot_nuts_pairs(comparison)))


def _backend(source) -> str:
    if type(source).__name__ == "NumPyroPosterior":
        import jax
        import numpyro

        return f"NumPyro {numpyro.__version__} (JAX {jax.__version__})"
    return f"Pyro (torch {torch.__version__})"


def _label(idata, args, labels, column_names):
    """``idata`` with the datasets and the data's columns named (see the module docstring)."""
    coords = {}
    if labels is not None:
        coords[idata.sample_stats["log_importance_weight"].dims[-1]] = labels
    data = [idata[group] for group in ("observed_data", "constant_data") if group in idata.groups()]
    shown = []
    column_names = [None] * len(args) if column_names is None else list(column_names)
    if len(column_names) != len(args):
        raise ValueError(
            f"column_names has {len(column_names)} entries for {len(args)} data arguments"
        )
    for position, (arg, names) in enumerate(zip(args, column_names, strict=True)):
        if names is None:
            continue
        value = arg.detach().cpu().numpy() if torch.is_tensor(arg) else np.asarray(arg)
        found = [
            variable
            for dataset in data
            for variable in dataset.data_vars.values()
            if variable.shape == value.shape and np.array_equal(variable.values, value, True)
        ]
        if not found or found[0].ndim < 2 or found[0].shape[-1] != len(names):
            raise ValueError(
                f"column_names[{position}] names {len(names)} column(s), but data argument "
                f"{position} of shape {tuple(value.shape)} has no such last dimension"
            )
        coords[found[0].dims[-1]] = [str(name) for name in names]
        shown.append(f"{found[0].name}: {', '.join(map(str, names))}")
    for group in idata.groups():
        dataset = idata[group]
        present = {dim: values for dim, values in coords.items() if dim in dataset.dims}
        if present:
            setattr(idata, group, dataset.assign_coords(present))
    return idata, shown


def report(
    guide,
    *args,
    path,
    model=None,
    family=None,
    title: str | None = None,
    description: str | None = None,
    group_names=None,
    column_names=None,
    passes: int = 1,
    num_samples: int = 1000,
    sbc_datasets: int = 200,
    sbc_points: int | None = None,
    nuts: bool = False,
    numpyro_model=None,
    nuts_warmup: int = 500,
    seed: int = 0,
    progress: bool = True,
    **kwargs,
) -> DiagnosticReport:
    """Write a self-contained HTML report of the guide's posterior for the data ``*args``.

    :param guide: an :class:`~iai_prob.inference.IterativeAmortizedGuide`, a NumPyro guide
        as the pair ``(guide, params)``, or a callable posterior (see
        :func:`~iai_prob.diagnostics.approximate_posterior`; the refinement section needs
        a guide).
    :param args: the model's data: one dataset ``(N, …)`` or a batch ``(T, N, …)``.
    :param path: the HTML file to write.
    :param model: the Pyro model (default: the guide's).
    :param family: the task family for SBC (default: ``guide.family``; ``None`` skips SBC).
    :param str description: a sentence shown under the title (which data these are, and
        what was left out of them).
    :param group_names: names of the ``T`` datasets of a batch (default: ``0 … T-1``).
    :param column_names: one entry per data argument: ``None`` or the names of the
        columns of its last dimension, e.g. ``(["x0", "x1"], None)`` for ``x`` of shape
        ``(N, 2)`` and ``y`` of shape ``(N,)``.
    :param int passes: refinement passes over each dataset
        (:meth:`~iai_prob.inference.IterativeAmortizedGuide.refine`; a Pyro guide only).
    :param int num_samples: posterior draws per dataset.
    :param int sbc_datasets: simulated datasets for SBC (0 skips it).
    :param int sbc_points: points per SBC dataset (default: the data's ``N``, at most 1,024).
    :param bool nuts: compare with NUTS (one dataset only; Pyro NUTS unless
        ``numpyro_model`` is given).
    :returns: :class:`DiagnosticReport` with the path and the measured findings.
    """
    started = time.perf_counter()
    path = Path(path)
    passes = check_positive_int("passes", passes)
    # a NumPyro guide comes as the pair (guide, params)
    owner = guide[0] if isinstance(guide, tuple) and guide else guide
    posterior = guide
    if passes > 1:
        from iai_prob.inference import IterativeAmortizedGuide

        if not isinstance(guide, IterativeAmortizedGuide):
            raise ValueError(
                f"passes={passes} refines a Pyro IterativeAmortizedGuide; got "
                f"{type(owner).__name__}: use passes=1"
            )
        posterior = functools.partial(guide.refine, passes=passes)
        model = model if model is not None else guide.model
    source = approximate_posterior(posterior, model, *args, **kwargs)
    batched = source.batched
    if nuts and batched:
        raise ValueError("nuts=True compares one dataset; pass one dataset or nuts=False")
    if nuts and type(source).__name__ == "NumPyroPosterior":
        raise ValueError("nuts=True runs the Pyro model; it is not available for a NumPyro guide")
    labels = None
    if batched:
        labels = [
            str(name) for name in (range(source.num_tasks) if group_names is None else group_names)
        ]
        if len(labels) != source.num_tasks:
            raise ValueError(
                f"group_names has {len(labels)} names for a batch of {source.num_tasks} datasets"
            )
    elif group_names is not None and len(group_names) != 1:
        raise ValueError(f"group_names has {len(group_names)} names for one dataset")
    family = family if family is not None else getattr(owner, "family", None)
    idata = to_inference_data(source, num_samples=num_samples, seed=seed)
    idata, columns = _label(idata, args, labels, column_names)
    findings: dict = {"num_tasks": source.num_tasks, "num_points": source.num_points}
    if labels is not None:
        findings["datasets"] = labels
    notes = _Notes()
    parts: list[str] = []
    _importance_section(idata, labels, findings, notes, parts)
    _posterior_section(idata, batched, source.layout.site_names, parts)
    _model_fit_section(idata, source.layout.latent_dim, labels, findings, notes, parts)
    if hasattr(owner, "refinement_trace"):
        options = dict(kwargs)
        if passes > 1:
            options["num_steps"] = passes * math.ceil(
                source.num_points / guide.config["batch_size"]
            )
        _refinement_section(guide, args, options, findings, notes, parts)
    if family is not None and sbc_datasets:
        points = sbc_points or min(source.num_points, 1024)
        settings = {
            "num_datasets": sbc_datasets,
            "num_points": points,
            # k̂ of an enumerated model sums out its discrete sites one draw at a time
            "khat": not source.task.log_joint.enumerate,
            "seed": seed,
            "progress": progress,
        }
        _sbc_section(guide, family, settings, findings, notes, parts)
    if nuts:
        options = {
            "num_samples": num_samples,
            "num_warmup": nuts_warmup,
            "numpyro_model": numpyro_model,
            "seed": seed,
            "progress": progress,
        }
        _nuts_section(source, options, findings, notes, parts)
    findings["verdict"] = dict(notes.verdict)
    findings["seconds"] = time.perf_counter() - started
    title = title or "iai_prob posterior diagnostics"
    tensors = [*source.task.data.args, *source.task.data.kwargs.values()]
    shape = next(("×".join(map(str, a.shape)) for a in tensors if np.ndim(a) > 0), "")
    named = f" ({_shown(labels)})" if labels is not None else ""
    header = (
        f"<h1>{html.escape(title)}</h1>"
        + (f"<p>{html.escape(description)}</p>" if description else "")
        + f"<p>Data: {source.num_tasks} dataset(s){html.escape(named)}, N = "
        f"{source.num_points} points (first array argument {shape})"
        + "".join(f"; {html.escape(text)}" for text in columns)
        + f"; {num_samples} posterior draws per dataset"
        + (f" after {passes} refinement passes" if passes > 1 else "")
        + f"; generated in {findings['seconds']:.1f} s with {_backend(source)}.</p>"
    )
    failed = [check for check, ok in notes.verdict.items() if not ok]
    verdict = (
        "Every check passed." if not failed else f"Failed: {', '.join(_CHECKS[c] for c in failed)}."
    )
    body = header + (
        f'<div class="note"><b>What the diagnostics say</b> ({html.escape(verdict)})'
        f"<ul>{notes.html()}</ul></div>"
    )
    document = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}{''.join(parts)}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return DiagnosticReport(path, findings, notes.texts)


_CHECKS = {
    "guide": "the guide's fit to the posterior (PSIS k̂)",
    "posterior_predictive": "the posterior predictive check",
    "loo": "PSIS-LOO (p_loo)",
    "sbc": "simulation-based calibration",
}


def _shown(labels, limit: int = 10) -> str:
    head = ", ".join(labels[:limit])
    return head + (f", … ({len(labels) - limit} more)" if len(labels) > limit else "")
