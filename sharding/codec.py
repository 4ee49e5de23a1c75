"""Volume codecs: a numcodecs config <-> bytes, and the equivalent Zarr v3 codec."""

from __future__ import annotations

from typing import Any

import numpy as np


def deterministic_blosc() -> None:
    """Make Blosc compress on one thread in this process.

    Blosc's threaded compressor writes blocks in the order threads finish them: the same volume
    then encodes to different (equally valid) bytes from run to run, and shards would no longer
    be byte-identical across runs and worker counts. numcodecs threads by default in a main
    thread, which is where the in-process loop and Ray tasks run. Each scan task already uses
    one core, so nothing is lost there.
    """
    import numcodecs.blosc

    numcodecs.blosc.use_threads = False


def get_codec(config: dict[str, Any]):
    import numcodecs

    deterministic_blosc()
    return numcodecs.get_codec(dict(config))


def encode(vol: np.ndarray, config: dict[str, Any]) -> bytes:
    return bytes(get_codec(config).encode(np.ascontiguousarray(vol)))


def decode(data: bytes, config: dict[str, Any], shape, dtype=np.int16) -> np.ndarray:
    """Inverse of :func:`encode` (what a reader of ``KEY.volume.bin`` does)."""
    out = np.frombuffer(get_codec(config).decode(data), dtype=dtype)
    return out.reshape(shape)


def zarr_compressor(config: dict[str, Any]):
    """The Zarr v3 codec doing the same compression as ``config`` (for the volumes array)."""
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    cid = config["id"]
    if cid == "blosc":
        shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle", -1: "shuffle"}[int(config.get("shuffle", 1))]
        return BloscCodec(
            cname=config.get("cname", "lz4"),
            clevel=int(config.get("clevel", 5)),
            shuffle=shuffle,
            typesize=2,
            blocksize=int(config.get("blocksize", 0)),
        )
    if cid == "zstd":
        return ZstdCodec(level=int(config.get("level", 1)))
    if cid == "gzip":
        return GzipCodec(level=int(config.get("level", 1)))
    raise ValueError(f"codec id {cid!r} has no Zarr v3 equivalent here (use blosc, zstd or gzip)")
