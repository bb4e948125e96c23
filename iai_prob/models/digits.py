"""Task families on real images: scikit-learn's bundled 8×8 digits (1,797 images, no download).

* :class:`DigitsFewShot` — few-shot classification. A task picks ``num_ways`` of the
  allowed classes at random (relabelled ``0 … num_ways−1`` in random order) and ``N``
  of their images; ``x`` are the images' first ``dim`` principal components (fitted
  on ``pca_classes`` only, so held-out classes are truly unseen), standardized. The
  parametric model is softmax regression,

      W ~ N(0, s₀² I)^{C×d},  b ~ N(0, s₀² I)^C,   y_n | x_n ~ Categorical(softmax(W x_n + b)).

* :class:`DigitsGeneration` — per-class generation. A task is ``N`` images of one
  class, binarized (pixel > ``threshold``); the parametric model treats pixels as
  independent coins with conjugate priors,

      p_j ~ Beta(α, α)   (j = 1..64),   y_nj | p ~ Bernoulli(p_j),

  whose posterior ``Beta(α + k_j, α + N − k_j)`` is exact (misspecified for real
  digits, whose pixels are dependent: the explicit regime's learned decoder can do
  better).

Out of distribution = classes held out of training (``classes=(7, 8, 9)``).
The simulators return real data and no latents (``simulates_latents = False``).
"""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from iai_prob.models.base import LatentSite, TaskFamily, check_positive, check_positive_int
from iai_prob.models.generative import GenerativeTaskFamily

__all__ = ["TRAIN_CLASSES", "DigitsFewShot", "DigitsGeneration", "load_digits_tensors"]

TRAIN_CLASSES = (0, 1, 2, 3, 4, 5, 6)
"""Digit classes seen in meta-training; the others (7, 8, 9) are held out."""


@functools.lru_cache(maxsize=1)
def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (1797, 64) in [0, 16], labels (1797,))`` from ``sklearn.datasets``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.as_tensor(digits.data, dtype=torch.float32), torch.as_tensor(digits.target)


def _check_classes(name: str, classes, minimum: int) -> tuple[int, ...]:
    classes = tuple(int(c) for c in classes)
    if len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
        raise ValueError(f"{name} must be distinct digits 0 … 9, got {classes!r}")
    if len(classes) < minimum:
        raise ValueError(f"{name} needs at least {minimum} classes, got {classes!r}")
    return classes


def _draw(pool: torch.Tensor, num_points: int, generator) -> torch.Tensor:
    """``num_points`` indices from ``pool``, without replacement while the pool lasts."""
    if num_points <= len(pool):
        return pool[torch.randperm(len(pool), generator=generator)[:num_points]]
    return pool[torch.randint(0, len(pool), (num_points,), generator=generator)]


class DigitsFewShot(TaskFamily):
    """Few-shot digit classification with a softmax-regression model (see module docstring).

    :param int num_ways: classes per task ``C``.
    :param int dim: principal components per image ``d``.
    :param classes: digits tasks are drawn from.
    :param pca_classes: digits the principal components are fitted on.
    :param float prior_scale: ``s₀``.
    """

    name = "digits_few_shot"
    simulates_latents = False

    def __init__(
        self,
        num_ways: int = 3,
        dim: int = 8,
        classes=TRAIN_CLASSES,
        pca_classes=TRAIN_CLASSES,
        prior_scale: float = 2.0,
    ):
        self.num_ways = check_positive_int("num_ways", num_ways)
        self.dim = check_positive_int("dim", dim)
        self.classes = _check_classes("classes", classes, self.num_ways)
        self.pca_classes = _check_classes("pca_classes", pca_classes, 1)
        self.prior_scale = check_positive("prior_scale", prior_scale)
        if self.dim > 64:
            raise ValueError(f"dim must be at most 64 (pixels per image), got {dim!r}")
        images, labels = load_digits_tensors()
        fitted = images[torch.isin(labels, torch.tensor(self.pca_classes))] / 16
        mean = fitted.mean(0)
        _, _, vectors = torch.linalg.svd(fitted - mean, full_matrices=False)
        projected = (images / 16 - mean) @ vectors[: self.dim].T
        self.features = projected / projected[
            torch.isin(labels, torch.tensor(self.pca_classes))
        ].std(0)
        self.labels = labels

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
        return (
            LatentSite("weights", (self.num_ways, self.dim), constraints.real),
            LatentSite("bias", (self.num_ways,), constraints.real),
        )

    def config(self) -> dict:
        return {
            "num_ways": self.num_ways,
            "dim": self.dim,
            "classes": list(self.classes),
            "pca_classes": list(self.pca_classes),
            "prior_scale": self.prior_scale,
        }

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points = self.plates(x, point_dims=1)
        zero = x.new_zeros(())
        with tasks:
            weights = pyro.sample(
                "weights",
                dist.Normal(zero, self.prior_scale).expand([self.num_ways, self.dim]).to_event(2),
            )
            bias = pyro.sample(
                "bias", dist.Normal(zero, self.prior_scale).expand([self.num_ways]).to_event(1)
            )
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            logits = (x.unsqueeze(-2) * weights).sum(-1) + bias
            return pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    def _simulate(self, draws, num_tasks, num_points):
        generator = draws.generator
        xs, ys = [], []
        for _ in range(num_tasks):
            order = torch.randperm(len(self.classes), generator=generator)[: self.num_ways]
            chosen = torch.tensor(self.classes)[order]
            pool = torch.isin(self.labels, chosen).nonzero().squeeze(-1)
            index = _draw(pool, num_points, generator)
            xs.append(self.features[index])
            ys.append((self.labels[index].unsqueeze(-1) == chosen).float().argmax(-1))
        return {}, torch.stack(xs), torch.stack(ys)


class DigitsGeneration(GenerativeTaskFamily):
    """Per-class binarized digits with independent Beta–Bernoulli pixels (see module docstring).

    :param classes: digits tasks are drawn from (one class per task).
    :param int threshold: a pixel (0 … 16) is on when above ``threshold``.
    :param float concentration: ``α`` of the symmetric Beta prior of each pixel.
    """

    name = "digits_generation"
    simulates_latents = False
    has_exact_posterior = True
    observation_shape = (64,)

    def __init__(self, classes=TRAIN_CLASSES, threshold: int = 8, concentration: float = 0.5):
        self.classes = _check_classes("classes", classes, 1)
        if int(threshold) != threshold or not 0 <= threshold < 16:
            raise ValueError(f"threshold must be an integer in 0 … 15, got {threshold!r}")
        self.threshold = int(threshold)
        self.concentration = check_positive("concentration", concentration)
        images, self.labels = load_digits_tensors()
        self.images = (images > self.threshold).float()

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
        return (LatentSite("probs", (64,), constraints.unit_interval),)

    def config(self) -> dict:
        return {
            "classes": list(self.classes),
            "threshold": self.threshold,
            "concentration": self.concentration,
        }

    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points, like = self._data_plates(x, y)
        with tasks:
            alpha = like.new_full((64,), self.concentration)
            probs = pyro.sample("probs", dist.Beta(alpha, alpha).to_event(1))
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            return pyro.sample("y", dist.Bernoulli(probs).to_event(1), obs=y)

    def exact_posterior(self, x: torch.Tensor, y: torch.Tensor):
        y = self._observations(x, y)
        ones = y.sum(-2)
        return dist.Beta(
            self.concentration + ones, self.concentration + y.shape[-2] - ones
        ).to_event(1)

    def _simulate(self, draws, num_tasks, num_points):
        generator = draws.generator
        picks = torch.randint(0, len(self.classes), (num_tasks,), generator=generator)
        ys = []
        for pick in picks.tolist():
            pool = (self.labels == self.classes[pick]).nonzero().squeeze(-1)
            ys.append(self.images[_draw(pool, num_points, generator)])
        return {}, self.ppl.empty_covariates(num_tasks, num_points), torch.stack(ys)
