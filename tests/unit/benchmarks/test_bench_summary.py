"""Summary of the suite: headline figures per stage, the markdown table, the scaling chart."""

from __future__ import annotations

import json

import pytest

from tte_scale.benchmarks import build_summary, headlines, scaling_curves, to_markdown, write_summary

LOADER = {
    "machine": "m",
    "shape": [96, 128, 128],
    "volumes_per_s": {
        "decode limit (numcodecs zstd, 1 core)": 60.0,
        "MONAI NIfTI pipeline (1 process, 1 thread)": 6.0,
        "tte_scale loader, wds, 1 worker": 18.0,
        "tte_scale loader, wds, 2 workers": 30.0,
        "tte_scale loader, zarr, 1 worker": 40.0,
        "tte_scale loader, zarr, 2 workers": 45.0,
    },
}
TRAIN = {
    "machine": "m",
    "rows": [
        {
            "world_size": 1,
            "zero_stage": 2,
            "volumes_per_s": 100.0,
            "tokens_per_s": 6400.0,
            "mfu": 0.25,
            "data_wait_frac": 0.1,
            "scaling_efficiency": 1.0,
        },
        {
            "world_size": 2,
            "zero_stage": 2,
            "volumes_per_s": 150.0,
            "tokens_per_s": 9600.0,
            "mfu": None,
            "data_wait_frac": 0.05,
            "scaling_efficiency": 0.75,
        },
    ],
}
SHARD = {
    "machine": "m",
    "pick": "lz4",
    "codecs": [{"codec": "lz4", "ratio": 2.5, "decode_GBps": 2.0}],
    "jobs": [
        {"config": "demo", "runner": "plain loop (no Ray)", "volumes_per_s": 4.0},
        {"config": "demo", "runner": "Ray, 1 worker(s)", "volumes_per_s": 2.0},
        {"config": "demo", "runner": "Ray, 2 worker(s)", "volumes_per_s": 6.0},
    ],
}
LABELS = {
    "machine": "m",
    "cohort": {"events": 2_000_000},
    "tasks": 8192,
    "speedup_vs_pandas": 3.0,
    "results": [
        {"kind": "ours", "events_per_cpu_s": 1.2e6, "peak_rss_mb": 900.0},
        {"kind": "pandas", "events_per_cpu_s": 4e5, "peak_rss_mb": 9000.0},
    ],
}
LOSS = {
    "machine": "m",
    "device": "cpu",
    "dtype": "float32",
    "compiled_speedup_vs_eager": 2.0,
    "rows": [
        {"B": 8, "K": 1024, "eager": {"ms": 30.0}, "compiled": {"ms": 20.0}},
        {"B": 32, "K": 8192, "eager": {"ms": 400.0}, "compiled": {"ms": 150.0}},
    ],
}


def test_headlines_are_ratios_against_the_baselines():
    loader, total = headlines("loader", LOADER)
    assert loader["value"] == "45.0" and "zarr, 2 workers" in loader["figure"] and total["value"] == "45.0"
    assert loader["vs"] == "7.5x MONAI, 75% of decode limit"
    # With per-row core counts the figure is per core: 2 workers on 2 cores = 22.5 per core.
    rows = {
        k: {"volumes_per_s": v, "per_core_volumes_per_s": v / (2 if "2 workers" in k else 1)}
        for k, v in LOADER["volumes_per_s"].items()
    }
    loader, total = headlines("loader", {**LOADER, "rows": rows})
    assert loader["value"] == "40.0" and "zarr, 1 worker" in loader["figure"] and total["value"] == "45.0"
    one, two = headlines("train", TRAIN)
    assert one["value"] == "100.00 (6,400, 25.0%, 10%)" and one["vs"] == ""
    assert "n/a" in two["value"] and two["vs"] == "75% scaling efficiency"
    codec, job = headlines("shard", SHARD)
    assert codec["value"] == "2.50x, 2.00 GB/s" and job["vs"] == "1.50x plain loop" and "Ray, 2" in job["figure"]
    events, rss = headlines("labels", LABELS)
    assert events["vs"] == "3.0x pandas" and rss["vs"] == "10.0x less than pandas"
    eager, compiled = headlines("loss", LOSS)
    assert eager["value"] == "30.00-400.00 ms" and compiled["vs"].startswith("2.00x eager")


def test_unrecognised_results_point_to_the_stage_file():
    (h,) = headlines("loader", {"machine": "m", "rows": []})
    assert h["value"] == "see loader.md" and "KeyError" in h["vs"]


def test_markdown_table_has_one_row_per_headline_and_marks_failures():
    recs = [
        {"stage": "train", "status": "ok", "result": TRAIN, "command": "python benchmarks/bench_train.py"},
        {"stage": "loader", "status": "failed", "error": "exit status 2", "command": "python x"},
    ]
    meta = {"cpu": "Test CPU", "cpu_count": 2, "mem_gib": 8, "software": {"torch": "2.x"}, "date": "today"}
    summary = build_summary(recs, meta, "test box")
    md = to_markdown(summary, chart="scaling.png")
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| stage | figure |")
    assert len(rows) == 1 + 2 + 1  # header, two train headlines, one failed loader row
    assert "| loader | **failed** | exit status 2 |" in md
    assert "Test CPU, 2 cores" in md and "torch 2.x" in md and "![scaling curves](scaling.png)" in md


def test_scaling_curves_from_train_loader_and_shard():
    panels = scaling_curves({"train": TRAIN, "loader": LOADER, "shard": SHARD})
    assert panels["train: volumes/s vs ranks"] == {"ZeRO-2": [(1, 100.0), (2, 150.0)]}
    loader = panels["loader: volumes/s vs workers"]
    assert loader["zarr"] == [(1, 40.0), (2, 45.0)] and loader["MONAI NIfTI pipeline (1 core)"] == [(1, 6.0)]
    assert panels["sharding: volumes/s vs Ray workers (0 = plain loop)"]["demo config"] == [
        (0, 4.0),
        (1, 2.0),
        (2, 6.0),
    ]
    assert scaling_curves({"loss": LOSS}) == {}
    # Newer shard results name the runner and give the worker count apart.
    jobs = [
        {"config": "demo", "runner": "plain loop (no Ray)", "workers": 0, "volumes_per_s": 4.0},
        {"config": "demo", "runner": "Ray Data", "workers": 2, "volumes_per_s": 5.0},
        {"config": "demo", "runner": "Ray tasks", "workers": 1, "volumes_per_s": 3.0},
    ]
    shard = scaling_curves({"shard": {"jobs": jobs}})["sharding: volumes/s vs Ray workers (0 = plain loop)"]
    assert shard == {"demo config, Ray Data": [(0, 4.0), (2, 5.0)], "demo config, Ray tasks": [(0, 4.0), (1, 3.0)]}


def test_write_summary_writes_json_markdown_and_png(tmp_path):
    recs = [
        {"stage": s, "status": "ok", "result": r, "command": "c"}
        for s, r in (("train", TRAIN), ("loader", LOADER), ("shard", SHARD))
    ]
    paths = write_summary(tmp_path, recs, {"software": {}}, "test box")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    assert [s["stage"] for s in data["stages"]] == ["train", "loader", "shard"]
    assert data["machine"] == "test box"


@pytest.mark.parametrize("stage", ["synth", "labels", "shard", "loader", "loss", "model", "train", "eval"])
def test_committed_results_have_headlines(stage):
    """The committed benchmarks/results/<stage>.json must stay readable by the summary."""
    from tte_scale.benchmarks.common import REPO

    path = REPO / "benchmarks" / "results" / f"{stage}.json"
    if not path.is_file():
        pytest.skip(f"no committed {path.name}")
    hs = headlines(stage, json.loads(path.read_text()))
    assert hs and all(not h["figure"].startswith("(") for h in hs), hs
