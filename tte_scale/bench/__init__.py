"""The benchmark suite behind `tte-scale bench`: stage registry, in-process runner, summary.

The per-stage scripts stay in ``benchmarks/`` of a repository checkout; this package finds
them, runs them with one machine description, and writes the combined summary and chart.
"""

from tte_scale.bench.registry import ORDER, STAGES, Stage, find_repo, select
from tte_scale.bench.suite import load_results, run_stage
from tte_scale.bench.summary import build_summary, headlines, scaling_curves, to_markdown, write_summary

__all__ = ["ORDER", "STAGES", "Stage", "build_summary", "find_repo", "headlines", "load_results", "run_stage",
           "scaling_curves", "select", "to_markdown", "write_summary"]
