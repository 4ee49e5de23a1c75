"""Embeddings of every scan of a shards folder by an exported encoder (``tte-scale embed``).

:mod:`~tte_scale.embed.scans` is the one embedding path (verified reads from WebDataset or Zarr,
the encoder's forward), used by ``tte-scale embed`` and by ``tte-scale eval``;
:mod:`~tte_scale.embed.parts` the part files; :mod:`~tte_scale.embed.run` the command's job
(ranks, resuming, the merged Parquet file).
"""

from tte_scale.embed.run import EmbedJob, run_embed

__all__ = ["EmbedJob", "run_embed"]
