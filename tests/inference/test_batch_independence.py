"""A task's posterior does not depend on the other tasks it is batched with (batch
inference stacks many groups into one call)."""

import pytest
import torch


@pytest.mark.parametrize("name", ["linear_regression", "logistic_regression"])
def test_batched_posteriors_equal_one_task_at_a_time(name, make_family, make_guide, simulate):
    family = make_family(name)
    torch.manual_seed(0)
    guide = make_guide(family, batch_size=8)
    _, x, y = simulate(family, 6, 30, seed=3)
    guide(x[0], y[0])
    with torch.no_grad():  # weights away from their initial (zero) head
        for parameter in guide.refiner.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    batched = guide.posterior(x, y)
    for task in range(6):
        alone = guide.posterior(x[task], y[task])
        torch.testing.assert_close(batched.mean[task], alone.mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            batched.covariance_matrix[task], alone.covariance_matrix, rtol=1e-4, atol=1e-5
        )
