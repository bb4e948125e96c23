"""Which latent sites inside the data plate the guide can handle (both backends).

The guide infers the *global* latents (outside the data plate). A latent inside the data
plate (one value per row) is handled only when the log joint sums it out exactly: a
discrete site enumerated in parallel (``infer={"enumerate": "parallel"}``) with a finite
support, as in a mixture's assignments. Any other local latent would never be inferred
(the log joint would draw it from its prior), so it is refused by name, with the change
that makes the model fit. Both :mod:`iai_prob.inference.sites` (Pyro) and
:mod:`iai_prob.numpyro.sites` read a trace with their own handlers and ask this module,
so the two backends refuse the same models with the same words. Imports neither torch
nor JAX.
"""

from __future__ import annotations

__all__ = ["check_local_latent"]


def check_local_latent(
    name: str,
    data_plate: str,
    *,
    discrete: bool,
    enumerated: bool,
    enumerable: bool,
    distribution: str,
    primitive: str,
) -> None:
    """Refuse the local latent site ``name`` unless the log joint sums it out.

    :param discrete: whether its support is discrete.
    :param enumerated: whether it is marked ``infer={"enumerate": "parallel"}``.
    :param enumerable: whether its distribution has a finite support to enumerate.
    :param distribution: the distribution's class name, for the message.
    :param primitive: ``"pyro.sample"`` or ``"numpyro.sample"``, for the message.
    :raises ValueError: naming the site and what to change.
    """
    where = f"local latent site {name!r} (inside the data plate {data_plate!r})"
    if not discrete:
        raise ValueError(
            f"{where} is continuous; IterativeAmortizedGuide infers the global latents "
            f"outside the data plate only, so {name!r} would never be inferred. Integrate "
            "it out of the likelihood, or move it out of the data plate as a global latent"
        )
    if not enumerated:
        raise ValueError(
            f"{where} is discrete but not enumerated, so it would never be inferred; add "
            f"infer={{'enumerate': 'parallel'}} to its {primitive} (the log joint then sums "
            "it out exactly)"
        )
    if not enumerable:
        raise ValueError(
            f"{where} has no finite support to enumerate ({distribution}); give it a "
            "distribution with a finite support (e.g. Categorical) or integrate it out"
        )
