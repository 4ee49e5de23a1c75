"""bench_loss over the 9 (B, K) cases of the GPU grid (issue 15, defect 2.10): every `compiled`
figure is a compiled one (a single torch.compile hit dynamo's recompile limit of 8 and ran the
last cases eager) and the results say so."""

from __future__ import annotations

import json

import pytest

from tte_scale.benchmarks import bench_loss


@pytest.mark.slow
def test_nine_shapes_are_all_compiled(tmp_path):
    argv = ["--device", "cpu", "--batch", "1", "2", "3", "--tasks", "8", "16", "24", "--bins", "2", "--rank", "4"]
    argv += ["--methods", "eager", "compiled", "--warmup", "1", "--repeats", "1", "--out", str(tmp_path)]
    assert bench_loss.main(argv) == 0
    rows = json.loads((tmp_path / "loss.json").read_text())["rows"]
    assert len(rows) == 9
    assert [r["compiled"]["ran"] for r in rows] == ["compiled"] * 9
    assert all(r["compiled"]["graphs_compiled"] >= 1 for r in rows)
    table = [ln for ln in (tmp_path / "loss.md").read_text().splitlines() if ln.startswith("| ")]
    assert len(table) == 10 and not any("EAGER" in ln for ln in table)


def test_a_case_that_captured_no_graph_is_marked_eager():
    row = {"B": 1, "K": 8, "eager": {"ms": 1.0, "iqr_rel": 0.0}, "compiled": {"ms": 1.0, "iqr_rel": 0.0}}
    row["compiled"].update(graphs_compiled=0, ran="eager (dynamo captured no graph)")
    result = {"methods": ["eager", "compiled"], "device": "cpu", "rows": [row], "benchmark": "b", "machine": "m"}
    result.update(dtype="float32", bins=2, rank=4, torch="x", repeats=1, warmup=1)
    assert "EAGER" in bench_loss.to_markdown(result).splitlines()[-1]
