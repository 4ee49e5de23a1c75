"""benchmarks/common.py: the timing statistics and table helpers every benchmark script uses."""

from __future__ import annotations

import pytest

from tte_scale.benchmarks.common import machine_info, md_table, summarize, time_fn, time_interleaved, write_results


def test_summarize_median_and_spread():
    s = summarize([4.0, 1.0, 2.0, 3.0, 100.0])
    assert s["median_s"] == 3.0 and s["min_s"] == 1.0 and s["max_s"] == 100.0 and s["n"] == 5
    q1, q3 = 1.5, 52.0  # statistics.quantiles(n=4), "exclusive" method
    assert s["iqr_rel"] == pytest.approx((q3 - q1) / 3.0)
    assert summarize([2.0])["iqr_rel"] == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_warmup_calls_are_not_timed_and_interleaving_alternates():
    calls = []
    s = time_fn(lambda: calls.append("f"), warmup=2, repeats=3)
    assert len(calls) == 5 and s["n"] == 3
    order = []
    out = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, repeats=2)
    assert order == ["a", "b", "a", "b", "a", "b"] and set(out) == {"a", "b"} and out["a"]["n"] == 2


def test_md_table_and_write_results(tmp_path):
    lines = md_table(["x", "y"], [[1, "a"], [2, "b"]])
    assert lines == ["| x | y |", "|---|---|", "| 1 | a |", "| 2 | b |"]
    with pytest.raises(ValueError, match="row of 1 cells under 2 columns"):
        md_table(["x", "y"], [[1]])
    js, md = write_results(tmp_path / "r", "stage", {"v": 1}, "# t")
    assert js.read_text().strip().startswith("{") and md.read_text() == "# t\n"


def test_machine_info_names_cpu_and_software():
    info = machine_info("cpu")
    assert info["cpu_count"] >= 1 and info["software"]["torch"] and info["device"] == "cpu"


def test_script_exit_turns_bad_input_into_one_line_and_status_2(capsys):
    from tte_scale.benchmarks.common import script_exit
    from tte_scale.errors import InputError

    def bad() -> int:
        raise InputError("runs/demo/pretrain/encoder: missing")

    with pytest.raises(SystemExit) as exc:
        script_exit(bad, "bench_x")
    assert exc.value.code == 2
    assert capsys.readouterr().err == "bench_x: error: runs/demo/pretrain/encoder: missing\n"
    with pytest.raises(SystemExit) as exc:
        script_exit(lambda: 0, "bench_x")
    assert exc.value.code == 0
