"""Models a statistician would write, on real datasets that ship inside installed packages.

Each model is written once with pyro-api's dispatch (``pyroapi.pyro``,
``pyroapi.distributions``, ``pyroapi.ops``): it is a Pyro model by default, the guide's
model, and a NumPyro model under ``pyro_backend("numpy")`` (:func:`numpyro_model`), the
model of NUTS and of the Laplace baseline. ``model(x, y=None)`` takes covariates ``x`` of
shape ``(N, d)``, or ``(T, N, d)`` for a batch of ``T`` tasks (an outer ``"tasks"`` plate at
``dim=-2``, as the guide's training vectorizes), and observations ``y`` in a ``"data"``
plate. Priors are written as analysts write them, on the data's raw units.

Datasets come from ``statsmodels.datasets`` and scikit-learn's bundled ``load_*`` files
(nothing is downloaded; scikit-learn's ``fetch_*`` would download and is not used):

============================  =========================================  ==========================
name                          model                                      data
============================  =========================================  ==========================
``diabetes_linear``           linear, a ~ N(0, 100²), b ~ N(0, 10²),     ``load_diabetes(scaled=
                              σ ~ HalfNormal(100)                        False)``: progression on
                                                                         bmi, bp, s5 (N = 442)
``engel_loglinear``           log food expenditure on log income,        statsmodels ``engel``
                              a, b ~ N(0, 10²), σ ~ HalfNormal(10)       (N = 235)
``spector_logistic``          logistic, a, b ~ N(0, 10²)                 statsmodels ``spector``:
                                                                         grade on GPA, TUCE, PSI
                                                                         (N = 32)
``breast_cancer_logistic``    logistic, a ~ N(0, 100²), b ~ N(0, 10²)    ``load_breast_cancer``:
                                                                         malignant on mean radius,
                                                                         texture, smoothness
                                                                         (N = 569)
``randhie_poisson``           Poisson, log link, a ~ N(0, 2.5²),         statsmodels ``randhie``:
                              b ~ N(0, 0.5²)                             doctor visits on 8
                                                                         covariates (a seeded
                                                                         2,000 of 20,190 rows)
``randhie_negbinom``          negative binomial (mean μ, concentration   the same
                              φ ~ HalfNormal(10)), priors as Poisson
``stackloss_student_t``       robust Student-t regression,               statsmodels ``stackloss``
                              a ~ N(0, 100²), b ~ N(0, 10²),             (N = 21)
                              σ ~ HalfNormal(10), ν ~ Gamma(2, 0.1)
``anes96_shares``             days of TV news ~ Poisson(K λ s_PID):      statsmodels ``anes96``
                              shares s ~ Dirichlet(1) over the 7 party-  (N = 944)
                              identification categories, λ ~ Gamma(2,
                              0.5): a positive and a simplex latent
``grunfeld_firms``            linear per firm, a ~ N(0, 100²),           statsmodels ``grunfeld``:
                              b ~ N(0, 10²), σ ~ HalfNormal(100)         investment on value and
                                                                         capital, 11 firms of 20
                                                                         years, one dataset each
============================  =========================================  ==========================

The count models leave out randhie's ``disea`` (0 to 58.6): with any coefficient prior an
analyst would call wide, ``exp`` of its raw-unit linear predictor overflows, so no prior
predictive (and no honest training) exists on that scale. Their priors are the widest that
keep the prior predictive simulable: with a ~ N(0, 5²), b ~ N(0, 1) some training tasks
have rates past 1e19, where ``torch.poisson`` returns invalid counts and ``fit`` stops with
a ``ValueError`` (measured). They run on 2,000 of randhie's
20,190 rows (a fixed seeded subset) so that the NUTS reference and floor (about 40 s a chain
on all rows) fit a run on a shared CPU; N = 2,000 is still eight times the guide's largest
training N.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pyroapi import distributions as dist
from pyroapi import ops, pyro, pyro_backend

__all__ = [
    "MODELS",
    "Dataset",
    "RealDesign",
    "RealModel",
    "numpyro_model",
]


# ------------------------------------------------------------------------------- models
def _tasks(x):
    """The ``"tasks"`` plate when ``x`` is a batch ``(T, N, d)``, else nothing."""
    return pyro.plate("tasks", x.shape[0], dim=-2) if x.ndim == 3 else contextlib.nullcontext()


def _linear_predictor(x, intercept_scale: float, slope_scale: float):
    """``a + xᵀb`` with ``a ~ N(0, intercept_scale²)``, ``b ~ N(0, slope_scale² I)``."""
    a = pyro.sample("intercept", dist.Normal(0.0, intercept_scale))
    b = pyro.sample("slopes", dist.Normal(0.0, slope_scale).expand([x.shape[-1]]).to_event(1))
    return a + (x * b).sum(-1)


def _observe(x, likelihood, y):
    with pyro.plate("data", x.shape[-2], dim=-1):
        return pyro.sample("y", likelihood, obs=y)


def diabetes_linear(x, y=None):
    """Disease progression on bmi, blood pressure and s5, raw units."""
    with _tasks(x):
        mean = _linear_predictor(x, 100.0, 10.0)
        sigma = pyro.sample("sigma", dist.HalfNormal(100.0))
        return _observe(x, dist.Normal(mean, sigma), y)


def engel_loglinear(x, y=None):
    """Engel curve: log food expenditure on log income."""
    with _tasks(x):
        mean = _linear_predictor(x, 10.0, 10.0)
        sigma = pyro.sample("sigma", dist.HalfNormal(10.0))
        return _observe(x, dist.Normal(mean, sigma), y)


def spector_logistic(x, y=None):
    """Grade improvement on GPA, TUCE score and the PSI teaching method."""
    with _tasks(x):
        logits = _linear_predictor(x, 10.0, 10.0)
        return _observe(x, dist.Bernoulli(logits=logits), y)


def breast_cancer_logistic(x, y=None):
    """Malignancy on mean radius, texture and smoothness, raw units."""
    with _tasks(x):
        logits = _linear_predictor(x, 100.0, 10.0)
        return _observe(x, dist.Bernoulli(logits=logits), y)


def randhie_poisson(x, y=None):
    """Doctor visits, Poisson with a log link."""
    with _tasks(x):
        rate = ops.exp(_linear_predictor(x, 2.5, 0.5))
        return _observe(x, dist.Poisson(rate), y)


def randhie_negbinom(x, y=None):
    """Doctor visits, negative binomial (NB2): mean ``exp(a + xᵀb)``, concentration ``φ``."""
    with _tasks(x):
        mean = ops.exp(_linear_predictor(x, 2.5, 0.5))
        concentration = pyro.sample("concentration", dist.HalfNormal(10.0))
        return _observe(x, dist.GammaPoisson(concentration, concentration / mean), y)


def stackloss_student_t(x, y=None):
    """Stack loss on air flow, water temperature and acid concentration, Student-t noise."""
    with _tasks(x):
        mean = _linear_predictor(x, 100.0, 10.0)
        sigma = pyro.sample("sigma", dist.HalfNormal(10.0))
        nu = pyro.sample("nu", dist.Gamma(2.0, 0.1))
        return _observe(x, dist.StudentT(nu, mean, sigma), y)


def anes96_shares(x, y=None):
    """Days of TV news a week, Poisson with rate ``K λ s_k`` for party identification ``k``
    (``x`` one-hot over the ``K = 7`` categories): ``λ`` is the mean rate over categories."""
    categories = x.shape[-1]
    with _tasks(x):
        shares = pyro.sample("shares", dist.Dirichlet(ops.ones(categories)))
        rate = pyro.sample("rate", dist.Gamma(2.0, 0.5))
        return _observe(x, dist.Poisson(categories * rate * (x * shares).sum(-1)), y)


def grunfeld_firms(x, y=None):
    """Gross investment on firm value and capital stock, one firm."""
    with _tasks(x):
        mean = _linear_predictor(x, 100.0, 10.0)
        sigma = pyro.sample("sigma", dist.HalfNormal(100.0))
        return _observe(x, dist.Normal(mean, sigma), y)


def numpyro_model(model: Callable) -> Callable:
    """``model`` run as a NumPyro model (pyro-api's ``"numpy"`` backend)."""

    def run(*args, **kwargs):
        with pyro_backend("numpy"):
            return model(*args, **kwargs)

    run.__name__ = run.__qualname__ = f"numpyro_{model.__name__}"
    return run


# ----------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class Dataset:
    """One dataset: covariates ``x`` ``(N, d)`` and observations ``y`` ``(N,)``, float64."""

    name: str
    x: np.ndarray
    y: np.ndarray


class RealDesign:
    """Covariates for the guide's training: rows drawn with replacement from a real design.

    ``RealDesign(x)(T, N, generator)`` is the tuple ``(x_batch,)`` of shape ``(T, N, d)``
    (the ``covariates`` of :class:`~iai_prob.inference.PriorPredictiveTasks`).
    """

    def __init__(self, x: np.ndarray):
        self.x = torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype())

    def __call__(self, num_tasks: int, num_points: int, generator: torch.Generator) -> tuple:
        rows = torch.randint(0, len(self.x), (num_tasks, num_points), generator=generator)
        return (self.x[rows],)

    def digest(self) -> str:
        """A short hash of the design (names a cached guide's folder)."""
        return hashlib.sha256(self.x.numpy().tobytes()).hexdigest()[:10]


def _frame(name: str):
    import statsmodels.api as sm

    return getattr(sm.datasets, name).load_pandas().data


def _one(name: str, frame, columns: list[str], target) -> list[Dataset]:
    y = target if isinstance(target, np.ndarray) else frame[target].to_numpy()
    x = frame[columns].to_numpy(dtype=np.float64)
    return [Dataset(name, x, np.asarray(y, dtype=np.float64))]


def _diabetes() -> list[Dataset]:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(scaled=False, as_frame=True).frame
    return _one("diabetes", frame, ["bmi", "bp", "s5"], "target")


def _engel() -> list[Dataset]:
    frame = np.log(_frame("engel"))
    return _one("engel", frame, ["income"], "foodexp")


def _spector() -> list[Dataset]:
    return _one("spector", _frame("spector"), ["GPA", "TUCE", "PSI"], "GRADE")


def _breast_cancer() -> list[Dataset]:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    malignant = (frame["target"] == 0).to_numpy(dtype=np.float64)  # sklearn: 0 = malignant
    columns = ["mean radius", "mean texture", "mean smoothness"]
    return _one("breast_cancer", frame, columns, malignant)


RANDHIE_COLUMNS = ["lncoins", "idp", "lpi", "fmde", "physlm", "hlthg", "hlthf", "hlthp"]


RANDHIE_ROWS = 2_000


def _randhie() -> list[Dataset]:
    frame = _frame("randhie")
    rows = np.sort(np.random.default_rng(0).choice(len(frame), RANDHIE_ROWS, replace=False))
    return _one("randhie", frame.iloc[rows], RANDHIE_COLUMNS, "mdvis")


def _stackloss() -> list[Dataset]:
    columns = ["AIRFLOW", "WATERTEMP", "ACIDCONC"]
    return _one("stackloss", _frame("stackloss"), columns, "STACKLOSS")


def _anes96() -> list[Dataset]:
    frame = _frame("anes96")
    party = frame["PID"].to_numpy(dtype=int)
    one_hot = np.eye(party.max() + 1)[party]
    return [Dataset("anes96", one_hot, frame["TVnews"].to_numpy(dtype=np.float64))]


def _grunfeld() -> list[Dataset]:
    frame = _frame("grunfeld")
    return [
        Dataset(
            str(firm),
            rows[["value", "capital"]].to_numpy(dtype=np.float64),
            rows["invest"].to_numpy(dtype=np.float64),
        )
        for firm, rows in frame.groupby("firm", sort=True)
    ]


@dataclass(frozen=True)
class RealModel:
    """A suite entry: the model, its datasets and what it stands for."""

    name: str
    model: Callable
    load: Callable[[], list[Dataset]]
    kind: str

    def datasets(self) -> list[Dataset]:
        return self.load()


MODELS: dict[str, RealModel] = {
    entry.name: entry
    for entry in (
        RealModel("diabetes_linear", diabetes_linear, _diabetes, "linear, wide priors"),
        RealModel("engel_loglinear", engel_loglinear, _engel, "log-linear"),
        RealModel("spector_logistic", spector_logistic, _spector, "logistic, N = 32"),
        RealModel("breast_cancer_logistic", breast_cancer_logistic, _breast_cancer, "logistic"),
        RealModel("randhie_poisson", randhie_poisson, _randhie, "Poisson"),
        RealModel("randhie_negbinom", randhie_negbinom, _randhie, "negative binomial"),
        RealModel("stackloss_student_t", stackloss_student_t, _stackloss, "robust Student-t"),
        RealModel("anes96_shares", anes96_shares, _anes96, "simplex + positive"),
        RealModel("grunfeld_firms", grunfeld_firms, _grunfeld, "per group, 20 rows"),
    )
}
"""The suite, by name (the order of the table)."""
