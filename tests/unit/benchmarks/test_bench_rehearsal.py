"""benchmarks/bench_rehearsal.py's pure parts: the process-tree sampler on real child processes,
the per-role summary, the training design, the report from a result, and its registration."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tte_scale.benchmarks import ORDER, STAGES
from tte_scale.benchmarks.bench_rehearsal import TreeSampler, by_role, measure, to_markdown, train_sets, variants
from tte_scale.benchmarks.summary import headlines

# A parent that fills ~60 MB and starts a child that fills ~120 MB, both alive a while.
TREE = """
import subprocess, sys, time
a = b"x" * (60 * 2**20)  # written, so resident (a zeroed bytearray may stay unmapped)
child = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * (120 * 2**20); time.sleep(2.0)"])
time.sleep(0.5)
child.wait()
"""


def test_sampler_sees_the_peak_rss_of_each_process_of_the_tree(tmp_path):
    # Roles come from each process's environment: without the launcher variables an in-process
    # DeepSpeed start of an earlier test may have left in this one, the child is a plain worker.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    rec = measure("tree", [sys.executable, "-c", TREE], log_dir=tmp_path, env=env, interval=0.05, timeout=60)
    assert rec["rc"] == 0 and rec["wall_s"] >= 1.5
    procs = {p["role"]: p for p in rec["processes"]}
    assert set(procs) == {"driver", "worker"}, rec["processes"]
    assert 60 <= procs["driver"]["peak_rss_mib"] < 120 and procs["worker"]["peak_rss_mib"] >= 120
    assert 0 < procs["worker"]["peak_pss_mib"] <= procs["worker"]["peak_rss_mib"]
    assert rec["peak_rss_mib"] == procs["worker"]["peak_rss_mib"]
    assert rec["cpu_s"] >= rec["cpu_s_sampled"] > 0 and rec["samples"] > 5
    assert by_role(rec["processes"])["worker"]["n"] == 1


def test_sampler_of_a_finished_process_records_nothing():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    time.sleep(0.1)
    s = TreeSampler(p.pid, 0.05).start()
    assert s.stop()["processes"] == []


def test_training_design_covers_each_setting_twice_and_the_sets_match_the_variant(tmp_path):
    vs = variants(2, 3, 1, quick=False)
    four = vs[:4]
    for attr, values in (("precision", {"fp32", "bf16"}), ("zero", {2, 3}), ("checkpointing", {True, False})):
        assert sorted(getattr(v, attr) for v in four) == sorted(list(values) * 2)
    assert vs[4].depth == 12 and vs[4].steps == 1
    assert len(variants(1, 1, 1, quick=True)) == 1
    sets = train_sets(four[3], tmp_path / "s", tmp_path / "l", tmp_path / "o", 2)
    for want in ("zero.stage=3", "zero.precision=bf16", "model.grad_checkpointing=false", "model.depth=2",
                 "optim.global_batch_size=2", "cluster.gpus_per_node=2", "max_steps=3"):  # fmt: skip
        assert want in sets, want


def _result() -> dict:
    proc = [{"pid": 1, "role": "rank 0", "name": "python", "peak_rss_mib": 900.0, "cpu_s": 5.0}]
    stage = {"stage": "train_bf16-z3", "rc": 0, "wall_s": 12.0, "cpu_s": 20.0, "shm_peak_growth_mib": 96.0,
             "processes": proc, "roles": by_role(proc), "variant": {"name": "bf16-z3", "depth": 2},
             "train": {"steps": [1, 2], "step_s": [3.0, 3.1], "model_state_gib_per_rank": 0.5,
                       "measured_over_estimate": 0.9},
             "estimate": {"params": 30e6, "per_device_gib": 0.55}}  # fmt: skip
    meta = {"cpu": "cpu", "cpu_count": 2, "mem_gib": 24, "load_avg_1m": 3.0, "date": "today"}
    config = {"quick": False, "subjects": 12, "generic_codes": 20000, "zipf": 0.5, "depth": 2, "steps": 3}
    return {"machine": "box", "meta": meta, "load_avg_end": 4.0, "total_wall_s": 600.0, "scans": 17,
            "config": config, "stages": [stage], "command": "python -m x"}  # fmt: skip


def test_report_and_summary_headlines_from_a_result():
    md = to_markdown(_result())
    assert "# Full-size rehearsal (box)" in md and "load average 3.0 at the start, 4.0 at the end" in md
    assert "| train_bf16-z3 | 12.0 | 20.0 | rank 0 900 | 96.0 |" in md
    assert "| bf16-z3 | 2 | 30.0 M | 0.500 | 0.550 | 0.9 | 900 |" in md
    rows = headlines("rehearsal", _result())
    assert rows[0]["value"] == "10.0 min" and rows[1]["vs"] == "0.90x DeepSpeed's estimate"


def test_registered_as_the_last_stage_of_bench_all():
    assert ORDER[-1] == "rehearsal" and STAGES["rehearsal"].argv("cpu", False) == ["--quick"]
    assert STAGES["rehearsal"].argv("cpu", True) == []
