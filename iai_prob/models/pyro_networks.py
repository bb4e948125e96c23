"""Torch network building blocks shared by the Pyro side: the guide's set encoders and
update networks (:mod:`iai_prob.inference`) and the learned decoders of the explicit
regime (:mod:`iai_prob.models.explicit`). The NumPyro twin is
:class:`iai_prob.numpyro.encoders.MLP`."""

from __future__ import annotations

import itertools

from torch import nn

__all__ = ["mlp"]


def mlp(sizes: list[int]) -> nn.Sequential:
    """A multilayer perceptron with GELU between the linear layers of ``sizes``."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)
