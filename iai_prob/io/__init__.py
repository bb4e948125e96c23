"""Reading datasets from CSV and Parquet files for amortized inference.

* :class:`Table`: a file read lazily in chunks of rows (files larger than memory);
* :class:`Columns`: which columns are the model's ``x`` and ``y``;
* :func:`stream_posterior`: one dataset of any size, streamed through ``guide.refine``;
* :func:`grouped_posteriors`: one posterior per group of rows (many small datasets in
  one file), equal-size groups batched through the model's tasks plate.
"""

from iai_prob.io.columns import Columns, observation_dtype
from iai_prob.io.grouped import GroupedPosterior, grouped_posteriors, read_groups
from iai_prob.io.streaming import StreamedPosterior, minibatches, stream_posterior
from iai_prob.io.tables import FORMATS, Table

__all__ = [
    "FORMATS",
    "Columns",
    "GroupedPosterior",
    "StreamedPosterior",
    "Table",
    "grouped_posteriors",
    "minibatches",
    "observation_dtype",
    "read_groups",
    "stream_posterior",
]
