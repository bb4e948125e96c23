"""Train a shipped guide: ``python -m iai_prob.pretrained.train NAME [--steps S]``.

Each recipe fixes the task family, the guide and the training budget; the command
writes ``iai_prob/pretrained/NAME.safetensors`` and its card with the command line,
the budget, the wall time and the quality measured on held-out tasks.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.inference.evaluation import (
    evaluate_exact_kl,
    evaluate_khat,
    held_out_elbo_per_point,
)
from iai_prob.models import get_family

__all__ = ["RECIPES", "main", "train"]

# the shipped guides were trained from the standard-normal start (their cards predate
# iai_prob.prior_standardization): kept, so that each card's command reproduces its weights
_GUIDE = {
    "family": "full_rank",
    "encoder": "set_transformer",
    "batch_size": 64,
    "standardize": False,
}
_FIT = {
    "steps": 400,
    "tasks_per_step": 32,
    "num_points": (16, 256),
    "objective": "mixed",
    "learning_rate": 3e-3,
}

RECIPES = {
    "linear_regression": {
        "family": ("linear_regression", {"dim": 8, "noise_scale": 0.5, "prior_scale": 1.0}),
        "guide": _GUIDE,
        "fit": _FIT,
        "evaluate": {"num_points": (16, 64, 256, 16384)},
    },
    "logistic_regression": {
        "family": ("logistic_regression", {"dim": 8, "prior_scale": 1.0}),
        "guide": _GUIDE,
        "fit": _FIT,
        "evaluate": {"num_points": (64, 1024)},
    },
    "gaussian_mixture": {
        "family": ("gaussian_mixture", {"dim": 2, "num_components": 3}),
        "guide": _GUIDE,
        # reverse KL only: the forward KL would punish a posterior that finds the
        # components under another labelling
        "fit": {**_FIT, "steps": 1500, "tasks_per_step": 16, "objective": "reverse_kl"},
        "evaluate": {"num_points": (64, 1024)},
    },
}
"""Family, guide and training budget of each shipped guide."""


def train(name: str, *, steps: int | None = None, folder: Path | None = None, seed: int = 0):
    """Train recipe ``name``, measure it, and write the checkpoint; returns the card."""
    if name not in RECIPES:
        raise ValueError(f"no recipe named {name!r}; known: {sorted(RECIPES)}")
    recipe = RECIPES[name]
    family_name, family_config = recipe["family"]
    family = get_family(family_name, **family_config)
    guide = IterativeAmortizedGuide(family, **recipe["guide"])
    options = dict(recipe["fit"])
    if steps is not None:
        options["steps"] = steps
    folder = folder or Path(__file__).parent
    # the training state survives a crash or a kill (in training or in the evaluation
    # below): rerunning the command resumes from it, and it is removed once shipped
    training_dir = folder / f".{name}.training"
    result = fit(guide, family, seed=seed, checkpoint_dir=training_dir, resume=True, **options)
    seconds = result.seconds  # training time, over every resumed run
    sizes = recipe["evaluate"]["num_points"]
    _, x, y = family.sample(1, 8)
    if family.has_exact_posterior:
        quality = {"median_kl_to_exact": evaluate_exact_kl(guide, family, sizes)}
    elif guide.prepare(x, y).log_joint.enumerate:
        # enumerated models: the held-out ELBO per point (their k̂ is in docs/benchmarks.md)
        quality = {
            "elbo_per_point": {str(n): held_out_elbo_per_point(guide, family, n) for n in sizes}
        }
    else:
        quality = {"psis_khat": evaluate_khat(guide, family, sizes)}
    card = {
        "command": "python -m iai_prob.pretrained.train " + " ".join(sys.argv[1:] or [name]),
        "budget": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            "seed": seed,
            "seconds": round(seconds, 1),
            "machine": f"{torch.get_num_threads()} CPU threads",
        },
        "quality": quality,
        "final_loss": result.losses[-1],
    }
    guide.save(folder / name, **card)
    shutil.rmtree(training_dir, ignore_errors=True)
    return card


def main(argv=None) -> None:
    """``python -m iai_prob.pretrained.train NAME``: train and write a shipped guide."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    card = train(args.name, steps=args.steps, seed=args.seed)
    print(card["quality"])


if __name__ == "__main__":
    main()
