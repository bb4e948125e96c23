"""Explicit-regime task families: a task latent ``z`` and a learned decoder ``f_γ``.

In the explicit regime of Mittal, Mahajan, Lajoie, Pezeshki (2025, §2) both the
adaptation ``g_φ`` and the predictor ``f_γ`` are learned, as in neural processes
(Garnelo et al. 2018) and the neural statistician (Edwards & Storkey, ICLR 2017):

    z ~ N(0, I_{d_z}),      y_n | x_n, z ~ p_γ(y_n | x_n, z)      (n = 1..N).

The decoder ``p_γ`` is a :class:`~pyro.nn.PyroModule` called inside the Pyro model
(its parameters appear as ``pyro.param`` sites, so Pyro's ``SVI`` could train them
too); the amortized posterior over ``z`` is the ordinary
:class:`~iai_prob.inference.IterativeAmortizedGuide`, and
:func:`~iai_prob.inference.fit` learns ``γ`` jointly with the guide's ``φ`` on the
ELBO because the family is an :class:`torch.nn.Module`. Tasks come from a *data
family* (any :class:`~iai_prob.models.base.TaskFamily` simulator or a dataset
source): the explicit family only replaces its likelihood with a learned one.

Each decoder gets a unique Pyro name (``<family>_decoder_<n>``): Pyro's global param
store would otherwise hand a freshly loaded decoder the weights of an earlier one of
the same name.
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn
from torch.distributions import constraints

from iai_prob.models.base import LatentSite, TaskFamily, check_positive_int
from iai_prob.models.pyro_networks import mlp

__all__ = ["Decoder", "ExplicitTaskFamily", "broadcast_concat"]

_DECODER_IDS = itertools.count()


def broadcast_concat(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate on the last dim after broadcasting all the leading dims."""
    lead = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*lead, t.shape[-1]) for t in tensors], dim=-1)


class Decoder(PyroModule):
    """``f_γ``: an MLP (GELU) of ``sizes`` plus ``num_extra`` free parameters (e.g. a log
    noise scale), a :class:`~pyro.nn.PyroModule` named ``name``."""

    def __init__(self, name: str, sizes: list[int], *, num_extra: int = 0):
        super().__init__(name)
        net = mlp(sizes)
        to_pyro_module_(net)
        self.net = net
        self.extra = nn.Parameter(torch.zeros(num_extra))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)


class ExplicitTaskFamily(TaskFamily, nn.Module):
    """Base of the explicit families: latent ``z``, a decoder, tasks from ``data_family``.

    Subclasses build ``self.decoder`` (via :meth:`_make_decoder`) and implement
    :meth:`model` and :meth:`config`. The simulator returns the data family's datasets
    and no latents (the decoder's ``z`` has no ground truth): train with
    ``objective="reverse_kl"``.

    :param TaskFamily data_family: where tasks come from.
    :param int latent_dim: ``d_z``.
    """

    simulates_latents = False

    def __init__(self, data_family: TaskFamily, *, latent_dim: int):
        nn.Module.__init__(self)
        if not isinstance(data_family, TaskFamily):
            raise ValueError(f"data_family must be a TaskFamily, got {data_family!r}")
        self.data_family = data_family
        self.z_dim = check_positive_int("latent_dim", latent_dim)

    def _make_decoder(self, sizes: list[int], *, num_extra: int = 0) -> Decoder:
        """A :class:`Decoder` with a unique Pyro name (see module docstring)."""
        return Decoder(f"{self.name}_decoder_{next(_DECODER_IDS)}", sizes, num_extra=num_extra)

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
        return (LatentSite("z", (self.z_dim,), constraints.real),)

    def _sample_latent(self, like: torch.Tensor, tasks) -> torch.Tensor:
        """``z ~ N(0, I)`` under the tasks plate; value ``(T, 1, d_z)`` or ``(d_z,)``."""
        with tasks:
            prior = dist.Normal(like.new_zeros(()), 1.0).expand([self.z_dim]).to_event(1)
            return pyro.sample("z", prior)

    def _simulate(self, draws, num_tasks, num_points):
        generator = draws.generator
        _, x, y = self.data_family.sample(num_tasks, num_points, generator=generator)
        return {}, x, y

    def _base_config(self) -> dict:
        return {
            "data_family": self.data_family.name,
            "data_config": self.data_family.config(),
            "latent_dim": self.z_dim,
        }

    __repr__ = TaskFamily.__repr__
