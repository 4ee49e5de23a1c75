"""The benchmark suite behind `tte-scale bench`: stage registry, in-process runner, summary.

The top-level folder ``benchmarks/`` of the repository, installed as ``tte_scale.benchmarks``:
one script per stage (``bench_<stage>.py``, each runnable alone with ``python -m``), their
shared helpers (``common``), the suite that runs them with one machine description
(``stages``, ``suite``) and the combined summary and chart (``summary``). The committed figures
in ``benchmarks/results/`` are not part of the package.
"""

from tte_scale.benchmarks.stages import ORDER, STAGES, Stage, select
from tte_scale.benchmarks.suite import load_results, run_stage
from tte_scale.benchmarks.summary import build_summary, headlines, scaling_curves, to_markdown, write_summary

__all__ = [
    "ORDER",
    "STAGES",
    "Stage",
    "build_summary",
    "headlines",
    "load_results",
    "run_stage",
    "scaling_curves",
    "select",
    "to_markdown",
    "write_summary",
]
