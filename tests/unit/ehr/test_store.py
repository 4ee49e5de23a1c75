"""The chunk-staging Zarr writer of the labels: any block sizes in, the same arrays out."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from tte_scale.ehr.store import TteWriter, open_tte_arrays


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("chunk_rows,block_rows", [(4, 3), (4, 4), (5, 11), (64, 7)])
def test_writer_blocks_to_chunks(tmp_path, background, chunk_rows, block_rows):
    rng = np.random.default_rng(chunk_rows * 100 + block_rows)
    N, K = 37, 6
    time_NK = rng.random((N, K)).astype(np.float32)
    event_NK = rng.random((N, K)) < 0.3
    w = TteWriter(tmp_path / "tte.zarr", N, K, chunk_rows, block_rows, background=background)
    a = 0
    while a < N:  # blocks of varying size, sometimes larger than planned (a subject with many rows)
        n = min(N - a, int(rng.integers(1, 3 * block_rows)))
        t, e = w.reserve(n)
        t[:], e[:] = time_NK[a : a + n], event_NK[a : a + n]
        w.commit(n)
        a += n
    w.close()
    g = zarr.open_group(str(tmp_path / "tte.zarr"), mode="r")
    assert g["time"].chunks == (min(chunk_rows, N), K)
    np.testing.assert_array_equal(g["time"][:], time_NK)
    np.testing.assert_array_equal(g["event"][:], event_NK)


def test_chunk_files_are_the_bytes_zarr_writes(tmp_path):
    """The writer's direct chunk files (numcodecs, no Zarr pipeline) equal Zarr's own."""
    rng = np.random.default_rng(0)
    N, K, chunk_rows = 10, 16, 4
    time_NK = np.repeat(rng.random((N, 1)), K, axis=1).astype(np.float32)
    time_NK[rng.random((N, K)) < 0.2] = 0.5
    event_NK = rng.random((N, K)) < 0.2
    w = TteWriter(tmp_path / "ours.zarr", N, K, chunk_rows, 3, background=False)
    t, e = w.reserve(N)
    t[:], e[:] = time_NK, event_NK
    w.commit(N)
    w.close()
    ref_t, ref_e = open_tte_arrays(tmp_path / "zarr.zarr", N, K, chunk_rows)
    ref_t[:], ref_e[:] = time_NK, event_NK
    for name in ("time", "event"):
        for i in range(-(-N // chunk_rows)):
            key = f"{name}/c/{i}/0"
            assert (tmp_path / "ours.zarr" / key).read_bytes() == (tmp_path / "zarr.zarr" / key).read_bytes(), key


def test_writer_refuses_too_many_rows_and_unfinished(tmp_path):
    w = TteWriter(tmp_path / "a.zarr", 5, 2, 4, 2)
    w.reserve(5)
    w.commit(5)
    with pytest.raises(ValueError, match="6 rows > 5"):
        w.reserve(1)
    w.close()
    w = TteWriter(tmp_path / "b.zarr", 5, 2, 4, 2)
    w.reserve(4)
    w.commit(4)
    with pytest.raises(RuntimeError, match="wrote 4 of 5 rows"):
        w.close()


def test_writer_surfaces_background_errors(tmp_path):
    w = TteWriter(tmp_path / "c.zarr", 8, 2, 4, 4)

    def boom(*_):
        raise OSError("disk full")

    w._write = boom
    w.reserve(4)
    w.commit(4)  # handed to the background thread, which fails
    with pytest.raises(OSError, match="disk full"):
        w.close()
