"""Fixtures for the whole suite.

The io, cli and examples tests share the shipped linear-regression guide and grouped
tables; helpers reach them as fixtures (``make_grouped_frame``, ``x_columns``).
"""

import os

import numpy as np
import pandas as pd
import pyro
import pytest
import torch

from iai_prob import pretrained

SEED = 20240611

# The suite replays traced log joints without compiling them: a test that evaluates one
# shape hundreds of times would otherwise wait seconds for TorchInductor (and CI's clean
# machine has no kernel cache). tests/inference/test_compiled_log_joint.py turns it on.
os.environ.setdefault("IAI_COMPILE_LOG_JOINT", "0")


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    """Seed every test, clear Pyro's parameter store, and run torch on one thread.

    The suite runs one xdist worker per core; intra-op threads on top of that contend and
    slow small tensor operations (NUTS, refinement steps) down several-fold.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.set_rng_seed(SEED)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
    torch.set_num_threads(threads)


X_COLUMNS = [f"x{i}" for i in range(8)]


@pytest.fixture(scope="session")
def shipped_guide():
    """The shipped ``linear_regression`` guide (d = 8, trained on N in [16, 256])."""
    return pretrained.load("linear_regression")


def grouped_frame(family, sizes, *, seed: int = 0) -> pd.DataFrame:
    """One group per entry of ``sizes`` (keys ``g00``, ``g01`` …), rows shuffled."""
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for index, size in enumerate(sizes):
        _, x, y = family.sample(1, size, generator=generator)
        frame = pd.DataFrame(x[0].double().numpy(), columns=X_COLUMNS[: x.shape[-1]])
        frame["y"] = y[0].double().numpy()
        frame["unit"] = f"g{index:02d}"
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    return frame.iloc[np.random.default_rng(seed).permutation(len(frame))]


@pytest.fixture
def make_grouped_frame():
    """:func:`grouped_frame`."""
    return grouped_frame


@pytest.fixture
def x_columns():
    """Covariate columns of the shipped guide's family: ``x0 … x7``."""
    return list(X_COLUMNS)


@pytest.fixture
def grouped_csv(tmp_path, shipped_guide):
    """A CSV of 24 groups of 3 distinct sizes drawn from the shipped guide's family."""
    path = tmp_path / "grouped.csv"
    grouped_frame(shipped_guide.family, [12, 20, 33] * 8).to_csv(path, index=False)
    return path
