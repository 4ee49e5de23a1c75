"""The one embedding path: the scans of a shards folder, read verified, through a frozen encoder.

``tte-scale embed`` (:mod:`tte_scale.embed.run`) and ``tte-scale eval``
(:func:`tte_scale.eval.embed.embed_shards`) both call :func:`embed_scans`, so a scan gets the
same vector from either, from WebDataset or Zarr and on any number of ranks.

Volumes are read through the training loader's own readers (``tte_scale.data.readers``:
``WdsReader`` or ``ZarrReader``), with the same checks (CRC-32C of the encoded volume or of each
Zarr chunk, a volume made only of the fill value reported as missing, header and shape, label
digests, the volume sha256 where no CRC covers it) and the same messages. A scan that fails is
not embedded: it is appended to the caller's ``bad`` list as ``{"split", "scan_id", "row",
"kind", "reason", "where"}`` and logged; the caller decides what fraction is acceptable.

Scans are visited in *manifest order* (the row order of ``manifest/samples.parquet``) within a
split; batches are consecutive scans of the order given, so the same scans in the same order
give bit-identical vectors whichever format or rank reads them (the forward of a batch depends
on its members only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tte_scale.errors import InputError

__all__ = ["SplitScans", "FORMATS", "resolve_format", "split_scans", "embed_scans", "COMPUTE_DTYPES"]

log = logging.getLogger("tte_scale.embed")

FORMATS = ("auto", "wds", "zarr")
"""``auto``: the Zarr copy when the build wrote one (what eval always read), else WebDataset."""

COMPUTE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
"""The encoder's compute dtype: float32, or bfloat16 autocast (vectors are stored as float32)."""


@dataclass(frozen=True)
class SplitScans:
    """The ``ok`` scans of one split in manifest order.

    ``index`` is the loader's split index of format ``fmt``; position ``i`` of this list is the
    index's sample ``order[i]``."""

    split: str
    fmt: str
    index: object  # tte_scale.data.split_index.SplitIndex
    order: np.ndarray  # int64 [N]: split-local sample id per manifest position
    subject_ids: np.ndarray  # int64 [N], manifest order

    @property
    def scan_ids(self) -> list[str]:
        return [self.index.scan_ids[k] for k in self.order.tolist()]

    def __len__(self) -> int:
        return len(self.order)


def resolve_format(shards: str, fmt: str) -> str:
    """``wds`` or ``zarr``: the format asked for when the build wrote it, else one clear line."""
    from tte_scale.data.build_info import read_shards_info
    from tte_scale.data.storage import exists, join

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    samples = join(shards, "manifest", "samples.parquet")
    if not exists(samples):
        raise InputError(f"{samples}: not found; is {shards} a folder written by `tte-scale shard`?")
    built = read_shards_info(shards).formats
    if fmt == "auto":
        if not built:
            raise InputError(f"{join(shards, 'manifest', 'shards.parquet')}: the build holds neither wds nor zarr")
        return "zarr" if "zarr" in built else "wds"
    if fmt not in built:
        raise InputError(
            f"--format {fmt}: the shards {shards} hold no {fmt} output (built with: {', '.join(built) or 'none'})"
        )
    if fmt == "zarr" and not exists(join(shards, "zarr", "zarr.json")):
        raise InputError(f"{join(shards, 'zarr')}: not found although the manifest lists a Zarr copy")
    return fmt


def split_scans(shards: str, split: str, fmt: str) -> SplitScans:
    """The ``ok`` scans of ``split`` in manifest order, indexed for format ``fmt`` (wds or zarr)."""
    from tte_scale.data.split_index import read_manifest_table, read_split_index
    from tte_scale.data.storage import join

    index = read_split_index(str(shards), split, fmt)
    table = read_manifest_table(join(shards, "manifest", "samples.parquet"), ["row", "subject_id"]).to_pydict()
    rows = np.asarray(table["row"], np.int64)
    position = np.full(int(rows.max(initial=-1)) + 1, -1, np.int64)
    position[rows] = np.arange(len(rows))
    order = np.argsort(position[index.rows], kind="stable")
    subject = np.asarray([-1 if s is None else s for s in table["subject_id"]], np.int64)
    return SplitScans(split, fmt, index, order.astype(np.int64), subject[position[index.rows[order]]])


def open_reader(scans: SplitScans):
    """The loader's reader of ``scans``' format (opens files lazily; ``close()`` when done)."""
    from tte_scale.data import LoaderConfig
    from tte_scale.data.readers import WdsReader, ZarrReader
    from tte_scale.data.storage import ShardCache

    if scans.fmt == "zarr":
        return ZarrReader(scans.index)
    cfg = LoaderConfig()
    return WdsReader(scans.index, ShardCache(cfg.cache_dir, cfg.cache_max_bytes))


def verified_batches(
    scans: SplitScans, positions: Sequence[int], batch_size: int, bad: list[dict], reader=None
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Yield (int16 [n, 1, D, H, W], manifest positions) batches of the scans at ``positions``
    (indices into ``scans``, in the order given) that pass the loader's checks; each scan that
    does not is appended to ``bad`` and logged. The array is reused: consume it before the next.

    ``reader``: one from :func:`open_reader` kept across calls (a WebDataset shard is indexed
    once, not once per part); without it one is opened and closed here."""
    from tte_scale.data.readers import SampleError

    index = scans.index
    own = reader is None
    reader = open_reader(scans) if own else reader
    vol_B1DHW = np.empty((batch_size, 1, *index.shape), np.int16)
    got: list[int] = []
    try:
        for i in positions:
            k = int(scans.order[i])
            try:
                reader.read(k, vol_B1DHW[len(got), 0])
            except SampleError as exc:
                bad.append(
                    {
                        "split": scans.split,
                        "scan_id": index.scan_ids[k],
                        "row": int(index.rows[k]),
                        "kind": exc.kind,
                        "reason": exc.reason,
                        "where": exc.shard,
                    }
                )
                b = bad[-1]
                log.warning(
                    "%s sample scan_id=%s row=%d shard=%s: %s; not embedded",
                    b["kind"],
                    b["scan_id"],
                    b["row"],
                    b["where"],
                    b["reason"],
                )
                continue
            except Exception as exc:  # the store itself (not one sample) cannot be opened
                raise InputError(
                    f"{index.root}/{scans.fmt}: cannot read the {scans.fmt} shards: {type(exc).__name__}: {exc}"
                ) from None
            got.append(int(i))
            if len(got) == batch_size:
                yield vol_B1DHW, got
                got = []
        if got:
            yield vol_B1DHW[: len(got)], got
    finally:
        if own:
            reader.close()


@torch.no_grad()
def embed_scans(
    encoder: torch.nn.Module,
    scans: SplitScans,
    positions: Sequence[int],
    *,
    batch_size: int,
    hu_window: tuple[float, float],
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    bad: list[dict],
    reader=None,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (manifest positions, float32 [n, E] pooled features) per batch of readable scans.

    ``encoder`` must already be on ``device`` in eval mode; ``reader`` as in :func:`verified_batches`. Volumes become floats with
    ``tte_scale.data.hu_to_float`` and ``hu_window``, as in training."""
    from tte_scale.data import hu_to_float

    if dtype not in COMPUTE_DTYPES:
        raise InputError(f"--dtype {dtype}: expected one of {', '.join(COMPUTE_DTYPES)}")
    device = torch.device(device)
    cast = COMPUTE_DTYPES[dtype]
    for vol_B1DHW, got in verified_batches(scans, positions, batch_size, bad, reader):
        x = hu_to_float(torch.from_numpy(vol_B1DHW).to(device), *hu_window)
        with torch.autocast(device.type, dtype=cast, enabled=cast is not None):
            feats = encoder(x)
        yield got, feats.float().cpu().numpy()
