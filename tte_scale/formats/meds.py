"""The MEDS input folder (docs/formats.md, "MEDS input"): the rules tte_scale relies on.

``metadata/subject_splits.parquet`` names each subject's split; these are the only split names
the stages accept (MEDS's own ``train`` / ``tuning`` / ``held_out``), in the order the stages
list them (shards, reports).
"""

SPLITS = ("train", "tuning", "held_out")
"""The split names, in the order every stage lists them."""
