import torch

from iai_prob.inference.numerics import flush_denormals, flushing_denormals

SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


def _product():
    return float(torch.tensor(SUBNORMAL) * 1.0)


def test_nested_flushing_stays_on_until_the_outermost_block_ends():
    @flushing_denormals
    def inner():
        return _product()

    with flush_denormals():
        assert inner() == 0.0
        assert _product() == 0.0  # still flushing after the nested block closed
    assert _product() > 0.0
