"""The check that a run's shards, labels and format belong together (tte_scale.data.build_info)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cohort import write_labels

from tte_scale.data.build_info import check_run_inputs, labels_num_tasks, read_shards_info
from tte_scale.errors import InputError
from tte_scale.provenance import labels_fingerprint  # noqa: E402


def _labels(folder: Path, K=6, seed=0) -> Path:
    ids = [f"s{i}" for i in range(7)]
    return write_labels(folder, ids, list(range(7)), ["train"] * 5 + ["tuning"] * 2, K=K, seed=seed)


def test_streamed_fingerprint_is_the_sharding_jobs(tmp_path):
    """One recipe: the trainer's streamed digest equals what `tte-scale shard` records."""
    from tte_scale.sharding.labels import read_labels

    labels = _labels(tmp_path / "labels")
    assert labels_fingerprint(labels) == read_labels(labels).fingerprint
    assert labels_fingerprint(_labels(tmp_path / "other", seed=1)) != labels_fingerprint(labels)
    assert labels_num_tasks(labels) == 6


def _shards(tmp_path: Path, fingerprint: str | None, formats=("wds", "zarr"), K=6) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "shards"
    (root / "manifest").mkdir(parents=True)
    pq.write_table(pa.table({"format": list(formats)}), root / "manifest" / "shards.parquet")
    pq.write_table(
        pa.table({"status": ["ok", "ok", "failed"], "shape": [[4, 8, 8], [4, 8, 8], None]}),
        root / "manifest" / "samples.parquet",
    )
    (root / "manifest" / "build.json").write_text(json.dumps({"labels_fingerprint": fingerprint}))
    if "zarr" in formats:
        (root / "zarr").mkdir()
        (root / "zarr" / "zarr.json").write_text(json.dumps({"attributes": {"num_tasks": K}}))
    return root


def test_matching_inputs_pass_and_give_the_volume_shape(tmp_path):
    labels = _labels(tmp_path / "labels")
    info = check_run_inputs(_shards(tmp_path, labels_fingerprint(labels)), labels, "zarr")
    assert info.volume_shape == (4, 8, 8) and info.num_tasks == 6 and info.formats == ("wds", "zarr")


def test_other_cohort_names_both_fingerprints(tmp_path):
    labels, other = _labels(tmp_path / "labels"), _labels(tmp_path / "other", seed=1)
    shards = _shards(tmp_path, labels_fingerprint(labels))
    check_run_inputs(shards, other, "zarr", fingerprint=False)  # the metadata alone cannot tell
    with pytest.raises(InputError) as err:
        check_run_inputs(shards, other, "zarr")
    msg = str(err.value)
    assert labels_fingerprint(other)[:16] in msg and labels_fingerprint(labels)[:16] in msg and "--relabel" in msg


def test_other_k_and_missing_format_are_refused_from_metadata(tmp_path):
    labels = _labels(tmp_path / "labels", K=4)
    with pytest.raises(InputError, match=r"K=4.*K=6"):
        check_run_inputs(_shards(tmp_path, None), labels, "zarr", fingerprint=False)
    wds_only = _shards(tmp_path / "w", None, formats=("wds",))
    with pytest.raises(InputError, match=r"data.format=zarr: .* hold no zarr output \(built with: wds\)"):
        check_run_inputs(wds_only, labels, "zarr")
    assert read_shards_info(wds_only).num_tasks is None


def test_a_split_without_scans_is_refused_before_the_ranks_start(tmp_path):
    """Issue 17 rehearsal: two subjects give no `tuning` split; the trainer used to find out only
    when it built the evaluation loader, after DeepSpeed had started (minutes on a CPU)."""
    from support.shards import write_shards

    from tte_scale.config import ConfigError, load_config
    from tte_scale.train import PretrainConfig
    from tte_scale.train.loop import _check_inputs

    shards = tmp_path / "shards"
    write_shards(shards, n=4, shape=(32, 64, 64), splits=["held_out", "held_out", "train", "train"])
    labels = _labels(tmp_path / "labels")
    assert read_shards_info(shards).splits == ("held_out", "train")
    sets = [f"data.shards_dir={shards}", f"data.labels_dir={labels}", f"out_dir={tmp_path / 'run'}"]
    cfg = load_config(PretrainConfig, "configs/pretrain/demo.yaml", sets)
    with pytest.raises(ConfigError, match=r"data.eval_split=tuning: .* no `ok` scans in split 'tuning' \(splits: "
                       r"held_out, train\); set data.eval_split"):  # fmt: skip
        _check_inputs(cfg)
    ok = load_config(PretrainConfig, "configs/pretrain/demo.yaml", [*sets, "data.eval_split=held_out"])
    assert tuple(_check_inputs(ok).model.img_size) == (32, 64, 64)
