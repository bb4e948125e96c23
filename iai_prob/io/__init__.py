"""Reading datasets from CSV and Parquet files for amortized inference.

* :class:`Table`: a file read lazily in chunks of rows (files larger than memory);
* :class:`Columns`: which columns are the model's ``x`` and ``y``;
* :func:`stream_posterior`: one dataset of any size, streamed through ``guide.refine``
  (and :func:`stream_log_joint`: ``log p(z_s, D)`` of posterior draws over all its rows);
* :func:`grouped_posteriors`: one posterior per group of rows (many small datasets in
  one file), equal-size groups batched through the model's tasks plate;
* :func:`inference_data`, :func:`summary_table`: the posteriors as ArviZ InferenceData
  (a ``group`` dimension when grouped) and its summary.
"""

from iai_prob.io.columns import Columns, observation_dtype
from iai_prob.io.export import GROUP_DIM, inference_data, summary_table
from iai_prob.io.grouped import GroupedPosterior, grouped_posteriors, read_groups
from iai_prob.io.streaming import (
    StreamedPosterior,
    minibatches,
    stream_log_joint,
    stream_posterior,
)
from iai_prob.io.tables import FORMATS, Table

__all__ = [
    "FORMATS",
    "GROUP_DIM",
    "Columns",
    "GroupedPosterior",
    "StreamedPosterior",
    "Table",
    "grouped_posteriors",
    "inference_data",
    "minibatches",
    "observation_dtype",
    "read_groups",
    "stream_log_joint",
    "stream_posterior",
    "summary_table",
]
