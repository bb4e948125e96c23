"""Scale-out on existing engines: data-parallel meta-training under ``torchrun``
(:mod:`iai_prob.distributed.train`, ``iai train --nproc``), batch inference over many
groups with Dask distributed (:mod:`iai_prob.distributed.batch_inference`: partitioned
files in, per-group summaries out) and ``iai infer --group --dask``
(:mod:`iai_prob.distributed.grouped_inference`: the one-process output, computed by the
workers).

JAX training sharded over devices belongs to the NumPyro port (``iai_prob.numpyro``)
and is not here.
"""

__all__: list[str] = []
