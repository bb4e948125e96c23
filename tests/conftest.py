"""Fixtures for the whole suite."""

import pyro
import pytest
import torch

SEED = 20240611


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
