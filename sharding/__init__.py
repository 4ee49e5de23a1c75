"""The Ray preprocessing job: scans + labels -> WebDataset / Zarr shards + manifest.

Imports from :mod:`tte_scale` (imaging, config), never the other way round; the `tte-scale
shard` command calls :func:`sharding.cli.run`. See docs/formats.md "Shards folder".
"""
