"""Evaluation of frozen encoders: linear probes, survival/classification metrics, reports.

Entry points::

    from tte_scale.eval import EvalConfig, evaluate_embeddings, compare_models, write_report
    res = evaluate_embeddings(emb, tables, ["mortality_12m"], EvalConfig(bootstrap=200))
    print(format_table(compare_models({"vit_s": res})))

What each metric is: ``compare.METRICS``; the headline: ``report.HEADLINE`` (the logistic
probe's AUROC and the Cox probe's Harrell C at each task's horizon, averaged over the tasks).
Embeddings come from ``embed.embed_shards`` (the one boundary between encoders and probes).

Heavy dependencies (matplotlib) are imported inside the report functions only.
"""

from tte_scale.eval.calibration import expected_calibration_error, km_calibration, recalibration
from tte_scale.eval.compare import compare_models, format_differences, format_table, paired_differences
from tte_scale.eval.concordance import HarrellCIndex, antolini_cindex, harrell_cindex, harrell_counts, uno_cindex
from tte_scale.eval.config import EvalConfig
from tte_scale.eval.efficiency import label_efficiency
from tte_scale.eval.protocol import EvalResult, evaluate_embeddings, evaluate_risk_scores
from tte_scale.eval.report import read_loss_curve, write_report
from tte_scale.eval.survival import brier_score, censoring_km, integrated_brier_score, kaplan_meier
from tte_scale.eval.tables import BenchTable, bench_tables_from_long, outcome_groups

__all__ = [
    "BenchTable",
    "EvalConfig",
    "EvalResult",
    "HarrellCIndex",
    "antolini_cindex",
    "bench_tables_from_long",
    "brier_score",
    "censoring_km",
    "compare_models",
    "evaluate_embeddings",
    "evaluate_risk_scores",
    "expected_calibration_error",
    "format_differences",
    "format_table",
    "harrell_cindex",
    "harrell_counts",
    "integrated_brier_score",
    "kaplan_meier",
    "km_calibration",
    "label_efficiency",
    "outcome_groups",
    "paired_differences",
    "read_loss_curve",
    "recalibration",
    "uno_cindex",
    "write_report",
]
