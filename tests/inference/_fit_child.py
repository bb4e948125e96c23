"""A training run for the kill-and-resume test: ``python _fit_child.py DIR STEPS DELAY``.

Trains a tiny linear-regression guide with a checkpoint every step; ``DELAY`` seconds of
sleep per step give the parent time to kill it mid-run (the sleep draws no random
numbers, so it does not change the result).
"""

import sys
import time

import torch

from iai_prob.inference import FamilyTasks, IterativeAmortizedGuide, fit
from iai_prob.models import LinearRegression

OPTIONS = {"tasks_per_step": 4, "num_points": (8, 16), "seed": 3, "progress": False}


class SlowTasks(FamilyTasks):
    def __init__(self, family, delay):
        super().__init__(family)
        self.delay = delay

    def sample(self, num_tasks, num_points, generator):
        time.sleep(self.delay)
        return super().sample(num_tasks, num_points, generator)


def make_guide():
    torch.manual_seed(0)  # the refiner's initial weights
    return IterativeAmortizedGuide(
        LinearRegression(dim=2, noise_scale=0.5),
        encoder="deep_sets",
        encoder_options={"embed_dim": 16, "hidden_dim": 32},
        batch_size=8,
    )


def run(directory, steps, delay):
    guide = make_guide()
    tasks = SlowTasks(guide.family, delay)
    fit(guide, tasks, steps=steps, checkpoint_dir=directory, checkpoint_every=1, **OPTIONS)
    return guide


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
