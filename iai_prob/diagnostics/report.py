"""A self-contained HTML report of every diagnostic for one dataset or a batch of datasets.

The figures are PNGs embedded as base64 ``data:`` URIs, so the file opens anywhere
without its folder. Sections (those that do not apply are left out):

1. verdicts: PSIS k̂ (Yao et al. 2018), SBC, NUTS comparison, final exact KL;
2. posterior summary (``az.summary``) and marginal posteriors (``az.plot_posterior``);
3. importance weights: k̂ per dataset, log-weight spread, effective sample size;
4. posterior predictive check (``az.plot_ppc``) and PSIS-LOO (``az.loo``, ``az.plot_khat``);
5. ELBO / exact KL against the refinement step;
6. simulation-based calibration on datasets simulated from the task family
   (ECDF difference, rank histograms, coverage, z-score vs contraction);
7. guide vs NUTS: moments table, C2ST, overlaid pair plots (one dataset).
"""

from __future__ import annotations

import base64
import html
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iai_prob.diagnostics.adapter import approximate_posterior
from iai_prob.diagnostics.inference_data import to_inference_data
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
"""


@dataclass
class DiagnosticReport:
    """What :func:`report` wrote: the HTML path and the measured findings (JSON-friendly)."""

    path: Path
    findings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


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


def _importance_section(idata, batched: bool, findings: dict, notes: list, parts: list):
    from iai_prob.diagnostics.plots import plot_khat

    khat = np.atleast_1d(psis_khat(idata))
    smoothed, _ = smoothed_log_weights(idata)
    ess = 1.0 / np.exp(2 * smoothed).sum(0)
    findings["khat"] = khat.tolist() if batched else float(khat[0])
    findings["share_khat_below_0.7"] = float(np.mean(khat < 0.7))
    findings["importance_ess"] = ess.tolist() if batched else float(ess[0])
    parts.append("<h2>Importance weights (PSIS)</h2>")
    if batched:
        notes.append(
            f"PSIS k̂: {np.mean(khat < 0.7):.0%} of {len(khat)} datasets below 0.7 "
            f"(median {np.median(khat):.2f}, max {khat.max():.2f})."
        )
        parts.append(f"<p>{notes[-1]}</p>" + _png(plot_khat(khat)))
    else:
        notes.append(f"PSIS k̂ = {khat[0]:.2f}: {_khat_words(khat[0])}.")
        parts.append(
            f"<p>{_verdict(khat[0] < 0.7, notes[-1], notes[-1])} Effective sample size of "
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
    if batched:
        summary = summary.head(40)
    parts.append(summary.to_html(float_format=lambda v: f"{v:.3f}"))
    if not batched:
        panels = sum(idata.posterior[name][0, 0].size for name in site_names)
        rows = -(-min(panels, 16) // 4)
        with az.rc_context({"plot.max_subplots": 16}):
            axes = az.plot_posterior(
                idata, var_names=list(site_names), textsize=11, figsize=(14, 3.2 * rows)
            )
        parts.append(_png(np.ravel(axes)[0].figure))


def _predictive_section(idata, findings: dict, notes: list, parts: list):
    import arviz as az

    parts.append("<h2>Posterior predictive and PSIS-LOO</h2>")
    total = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    ax = az.plot_ppc(idata, num_pp_samples=min(100, total))
    parts.append(_png(np.ravel(ax)[0].figure))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata, pointwise=True)
    bad = float(np.mean(loo.pareto_k.values > 0.7))
    findings["loo"] = {"elpd_loo": float(loo.elpd_loo), "p_loo": float(loo.p_loo), "bad_k": bad}
    notes.append(
        f"PSIS-LOO: elpd_loo = {float(loo.elpd_loo):.1f} (se {float(loo.se):.1f}), p_loo = "
        f"{float(loo.p_loo):.1f}; {bad:.1%} of observations with Pareto k > 0.7."
    )
    parts.append(f"<p>{notes[-1]}</p>")
    parts.append(_png(np.ravel(az.plot_khat(loo))[0].figure))


def _refinement_section(guide, args, kwargs, findings: dict, notes: list, parts: list):
    from iai_prob.diagnostics.refinement import refinement_curve, refinement_plot

    curve = refinement_curve(guide, *args, **kwargs)
    parts.append("<h2>Refinement</h2>")
    text = (
        f"ELBO per dataset {curve.elbo[0]:.1f} at λ_0 → {curve.elbo[-1]:.1f} after "
        f"{curve.steps[-1]} refinement steps"
    )
    findings["elbo"] = [float(curve.elbo[0]), float(curve.elbo[-1])]
    if curve.kl is not None:
        findings["exact_kl"] = [float(curve.kl[0]), float(curve.kl[-1])]
        text += f"; exact KL(q ‖ p) {curve.kl[0]:.3g} → {curve.kl[-1]:.3g} nats"
    notes.append(text + ".")
    parts.append(f"<p>{notes[-1]}</p>" + _png(refinement_plot(curve)))


def _sbc_section(guide, family, settings: dict, findings: dict, notes: list, parts: list):
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
    notes.append(result.summary() + f" (N = {settings['num_points']} points per dataset).")
    parts.append("<h2>Simulation-based calibration</h2>")
    parts.append(f"<p>{_verdict(result.passed, notes[-1], notes[-1])}</p>")
    figures = [
        plots.plot_sbc_ecdf(result),
        plots.plot_coverage(result),
        plots.plot_z_contraction(result),
        plots.plot_rank_histograms(result),
    ]
    parts.append('<div class="row">' + "".join(_png(fig) for fig in figures) + "</div>")


def _nuts_section(source, nuts_options: dict, findings: dict, notes: list, parts: list):
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
    notes.append(
        f"Against NUTS ({comparison.nuts_seconds:.1f} s): max |Δmean| / sd_NUTS = "
        f"{comparison.max_abs_std_diff:.2f}, sd ratio "
        f"{comparison.table['sd_ratio'].min():.2f}–{comparison.table['sd_ratio'].max():.2f}"
        f"{c2st} (0.5 = indistinguishable)."
    )
    parts.append("<h2>Guide vs NUTS</h2>" + f"<p>{notes[-1]}</p>")
    parts.append(comparison.table.to_html(float_format=lambda v: f"{v:.3f}"))
    parts.append(_png(plot_nuts_pairs(comparison)))


def _backend(source) -> str:
    if type(source).__name__ == "NumPyroPosterior":
        import jax
        import numpyro

        return f"NumPyro {numpyro.__version__} (JAX {jax.__version__})"
    return f"Pyro (torch {torch.__version__})"


def report(
    guide,
    *args,
    path,
    model=None,
    family=None,
    title: str | None = None,
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
    :param int num_samples: posterior draws per dataset.
    :param int sbc_datasets: simulated datasets for SBC (0 skips it).
    :param int sbc_points: points per SBC dataset (default: the data's ``N``, at most 1,024).
    :param bool nuts: compare with NUTS (one dataset only; Pyro NUTS unless
        ``numpyro_model`` is given).
    :returns: :class:`DiagnosticReport` with the path and the measured findings.
    """
    started = time.perf_counter()
    path = Path(path)
    source = approximate_posterior(guide, model, *args, **kwargs)
    batched = source.batched
    if nuts and batched:
        raise ValueError("nuts=True compares one dataset; pass one dataset or nuts=False")
    if nuts and type(source).__name__ == "NumPyroPosterior":
        raise ValueError("nuts=True runs the Pyro model; it is not available for a NumPyro guide")
    # a NumPyro guide comes as the pair (guide, params)
    owner = guide[0] if isinstance(guide, tuple) and guide else guide
    family = family if family is not None else getattr(owner, "family", None)
    idata = to_inference_data(source, num_samples=num_samples, seed=seed)
    findings: dict = {"num_tasks": source.num_tasks, "num_points": source.num_points}
    notes: list[str] = []
    parts: list[str] = []
    _importance_section(idata, batched, findings, notes, parts)
    _posterior_section(idata, batched, source.layout.site_names, parts)
    if not batched:
        _predictive_section(idata, findings, notes, parts)
    if hasattr(owner, "refinement_trace"):
        _refinement_section(guide, args, kwargs, findings, notes, parts)
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
    findings["seconds"] = time.perf_counter() - started
    title = title or "iai_prob posterior diagnostics"
    tensors = [*source.task.data.args, *source.task.data.kwargs.values()]
    shape = next(("×".join(map(str, a.shape)) for a in tensors if np.ndim(a) > 0), "")
    header = (
        f"<h1>{html.escape(title)}</h1><p>Data: {source.num_tasks} dataset(s), "
        f"N = {source.num_points} points (first array argument {shape}); "
        f"{num_samples} posterior draws per dataset; generated in "
        f"{findings['seconds']:.1f} s with {_backend(source)}.</p>"
    )
    summary = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    body = header + f'<div class="note"><b>What the diagnostics say</b><ul>{summary}</ul></div>'
    document = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}{''.join(parts)}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return DiagnosticReport(path, findings, notes)
