"""The on-disk formats of docs/formats.md, each defined once and imported by writer and reader.

One module per folder format, named after the folder it describes (not after who writes it):

- :mod:`tte_scale.formats.shards`: the shards folder of `tte-scale shard` (WebDataset sample
  keys and members, label member order and dtypes, the Zarr layout, the manifest tables).
  Written by :mod:`tte_scale.sharding`, read by :mod:`tte_scale.data` and the eval stage, and
  written again by the test writer ``tests/support/shards.py``.
- :mod:`tte_scale.formats.meds`: what the stages rely on in a MEDS input folder (split names).
- :mod:`tte_scale.formats.units`: the time units every stage shares (microsecond timestamps,
  float32 days).

Only constants and pure functions live here (numpy at most at import time); reading and
writing stay with the stages. A change here is a change of contract: bump the version it names.
"""
