"""Scale-out on existing engines: data-parallel meta-training under ``torchrun``
(:mod:`iai_prob.distributed.train`) and batch inference over many groups with Dask
distributed (:mod:`iai_prob.distributed.batch_inference`).

JAX training sharded over devices belongs to the NumPyro port (``iai_prob.numpyro``)
and is not here.
"""

__all__: list[str] = []
