"""Frozen-encoder embeddings of every scan of a shards folder: verified reads, a keyed cache.

The embedding itself is :func:`tte_scale.embed.scans.embed_scans`, the path `tte-scale embed`
uses too: volumes from the Zarr copy when the build wrote one, else from the WebDataset shards,
through the training loader's own readers (``tte_scale.data.readers``) with the same checks
(CRC-32C, a volume made only of the fill value reported as missing, shape, label digests, the
volume sha256 where no CRC covers it) and the same messages. A scan that fails is not embedded:
it is returned in ``Embeddings.excluded`` (and reported); more than ``max_bad_fraction`` of a
split (the loader's limit, ``LoaderConfig.max_bad_fraction``) stops the run with
``DataIntegrityError``. Every readable `ok` scan of a split is embedded exactly once, in
manifest order (the training loader drops a remainder per epoch; evaluation must not).

Cache: ``cache_dir/<name>-<digest>.npz``, where the digest is a sha256 of the *key*, a dict of
everything the embeddings depend on (:func:`embedding_key`: the encoder's weights and
architecture, the shards' manifest, the HU window, the splits, the device type). The key is
stored inside the file and compared when it is read: a file whose key differs, or that cannot
be read, is computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tte_scale.embed.digests import file_digest, weights_digest
from tte_scale.errors import InputError

__all__ = ["Embeddings", "embed_shards", "embedding_key", "file_digest", "weights_digest", "CACHE_VERSION"]

log = logging.getLogger("tte_scale.eval")

CACHE_VERSION = 2
"""Bump when what an embedding depends on, or the cache file layout, changes."""


@dataclass(frozen=True)
class Embeddings:
    """Per split: the scan ids (manifest order) and their pooled features [N, D]; the scans
    that could not be read, each ``{"split", "scan_id", "row", "kind", "reason", "where"}``."""

    scan_id: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    excluded: list[dict] = field(default_factory=list)


def _manifest(shards: str) -> str:
    """The manifest's samples table of the shards folder (a local path or an fsspec URL)."""
    from tte_scale.data.storage import exists, join

    path = join(shards, "manifest", "samples.parquet")
    if not exists(path):
        raise InputError(f"{path}: not found; is {shards} a folder written by `tte-scale shard`?")
    return path


def embedding_key(
    encoder: torch.nn.Module, shards_dir: str | Path, splits, hu_window, device: str | torch.device
) -> dict:
    """Everything the embeddings of ``encoder`` on ``shards_dir`` depend on (see the module doc)."""
    cfg = getattr(encoder, "cfg", None)
    arch = cfg.to_json() if hasattr(cfg, "to_json") else repr(cfg)
    return {
        "version": CACHE_VERSION,
        "encoder": {"class": type(encoder).__name__, "architecture": arch, "weights_sha256": weights_digest(encoder)},
        "shards_manifest_sha256": file_digest(_manifest(str(shards_dir))),
        "hu_window": [float(hu_window[0]), float(hu_window[1])],
        "splits": list(splits),
        "device_type": torch.device(device).type,
    }


def _key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def read_embeddings_file(path: str | Path, splits) -> tuple[dict, Embeddings]:
    """(key, embeddings of ``splits``) of a cache file this module wrote; no check of the key
    (a benchmark reading another run's embeddings compares by scan id itself)."""
    with np.load(path, allow_pickle=False) as z:
        key = json.loads(str(z["key"]))
        excluded = json.loads(str(z["excluded"]))
        return key, Embeddings(
            {s: z[f"{s}/scan_id"] for s in splits}, {s: z[f"{s}/features"] for s in splits}, excluded
        )


def _read_cache(path: Path, key: dict, splits) -> Embeddings | None:
    """The cached embeddings when ``path`` holds exactly ``key``'s, else None (reported)."""
    if not path.is_file():
        return None
    try:
        stored, emb = read_embeddings_file(path, splits)
        if stored != key:
            log.warning("%s: embeddings of another encoder or input (key differs); computing them again", path)
            return None
        return emb
    except Exception as exc:  # a damaged cache file is never trusted, only recomputed
        log.warning("%s: unreadable cached embeddings (%s: %s); computing them again", path, type(exc).__name__, exc)
        return None


def _write_cache(path: Path, key: dict, emb: Embeddings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    arrays = {f"{s}/scan_id": emb.scan_id[s] for s in emb.scan_id} | {
        f"{s}/features": v for s, v in emb.features.items()
    }
    np.savez(tmp, key=np.array(json.dumps(key, sort_keys=True)), excluded=np.array(json.dumps(emb.excluded)), **arrays)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({"key": key, "excluded": emb.excluded}, indent=1))


def _blocks(n: int, batch_size: int, rank: int, world: int) -> list[range]:
    """Rank ``rank``'s blocks of ``batch_size`` consecutive manifest positions (block b goes to
    rank b % world). A batch is one block less its unreadable scans, whatever the world size, so
    1 and N ranks embed the same batches and give bit-identical vectors."""
    return [range(b, min(b + batch_size, n)) for b in range(rank * batch_size, n, world * batch_size)]


def _embed_split(encoder, scans, batch_size, hu_window, device, rank, world, progress) -> dict:
    """This rank's blocks of one split: {"positions": [...], "features": [n, E], "bad": [...]}."""
    from tqdm import tqdm

    from tte_scale.embed.scans import embed_scans, open_reader

    blocks = _blocks(len(scans), batch_size, rank, world)
    bad: list[dict] = []
    got, out = [], []
    bar = tqdm(
        total=sum(len(b) for b in blocks), desc=f"embed {scans.split}", disable=not progress or rank != 0, unit="scan"
    )
    reader = open_reader(scans)
    try:
        for block in blocks:
            for pos, f in embed_scans(
                encoder, scans, block, batch_size=batch_size, hu_window=hu_window, device=device, bad=bad, reader=reader
            ):
                out.append(f)
                got += pos
            bar.update(len(block))
    finally:
        reader.close()
        bar.close()
    feats = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
    return {"positions": got, "features": feats, "bad": bad}


@torch.no_grad()
def embed_shards(
    encoder: torch.nn.Module,
    shards_dir: str | Path,
    splits: tuple[str, ...],
    *,
    batch_size: int = 8,
    hu_window: tuple[float, float] = (-1000.0, 1000.0),
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    name: str = "model",
    max_bad_fraction: float | None = None,
    progress: bool = True,
    comm=None,
) -> Embeddings | None:
    """Embed every readable `ok` scan of ``splits``; reuse ``cache_dir`` when its key matches.

    On several ranks (``comm``: a ``tte_scale.embed.run._Comm``: rank, world, broadcast, gather; every rank calls this with the same arguments) each rank embeds its
    blocks of ``batch_size`` scans (:func:`_blocks`), rank 0 gathers them in manifest order,
    checks and caches; rank 0 returns the Embeddings, the other ranks None. A failure on any
    rank is raised on every rank."""
    from tte_scale.data import DataIntegrityError, LoaderConfig
    from tte_scale.embed.run import _agreed, _all_ok
    from tte_scale.embed.scans import resolve_format, split_scans

    rank, world = (comm.rank, comm.world) if comm is not None else (0, 1)
    shards = str(shards_dir)  # a local folder or an fsspec URL
    limit = LoaderConfig().max_bad_fraction if max_bad_fraction is None else max_bad_fraction
    key = embedding_key(encoder, shards, splits, hu_window, device)
    cache = Path(cache_dir) / f"{name}-{_key_digest(key)}.npz" if cache_dir is not None else None

    found: list = [None]

    def cached() -> bool:  # rank 0 reads the cache; the others learn only whether it hit
        found[0] = _read_cache(cache, key, splits) if cache is not None else None
        return found[0] is not None

    if _agreed(comm, cached) if comm is not None else cached():
        return found[0] if rank == 0 else None
    encoder = encoder.to(device).eval()

    def mine():
        fmt = resolve_format(shards, "auto")  # the Zarr copy when there is one, else WebDataset
        return {
            split: _embed_split(
                encoder, split_scans(shards, split, fmt), batch_size, hu_window, device, rank, world, progress
            )  # fmt: skip
            for split in splits
        }

    parts = _all_ok(comm, mine) if comm is not None else [mine()]
    if rank != 0:
        return None
    ids, feats, excluded = {}, {}, []
    fmt = resolve_format(shards, "auto")
    for split in splits:
        scan_ids = split_scans(shards, split, fmt).scan_ids
        bad = [b for p in parts for b in p[split]["bad"]]
        bad.sort(key=lambda b: b["row"])
        pos = [i for p in parts for i in p[split]["positions"]]
        good = [p[split]["features"] for p in parts if len(p[split]["positions"])]
        order = np.argsort(np.asarray(pos, np.int64), kind="stable")
        if len(bad) > limit * len(scan_ids):
            first = "; ".join(f"{b['scan_id']} (row {b['row']}, {b['where']}: {b['reason']})" for b in bad[:10])
            raise DataIntegrityError(
                f"{len(bad)} corrupt or missing samples of split {split!r} under {shards}, more than "
                f"max_bad_fraction={limit} of {len(scan_ids)}; first ones: {first}"
            )
        if not pos:
            raise InputError(f"{shards}: no readable scans in split {split!r}")
        ids[split] = np.asarray([scan_ids[pos[k]] for k in order])
        feats[split] = np.concatenate(good)[order].astype(np.float32)
        excluded += bad
    emb = Embeddings(ids, feats, excluded)
    if cache is not None:
        _write_cache(cache, key, emb)
    return emb
